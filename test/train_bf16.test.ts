// bf16 mixed-precision training (issue #13, part 1).
//
// Op level: a bf16 convolution (forward, backward-data, backward-weights, bias) reads x, w and dy
// rounded to bfloat16 and accumulates in f32; its output is stored as bf16. The reference backend does
// exactly that (round, then its f32 conv, then round y), so the native result must match it to
// accumulation-order noise (1e-4 of the largest value; 4e-3, a bf16 ulp, where a value is stored as bf16
// and a different summation order may round it the other way), must match the f32 path only
// to bf16's precision (2e-2), and must be clearly closer to the bf16 reference than to the f32 one
// (so bf16 really ran). Training level: a small net trains in bf16 as well as in f32 from the same
// start, the parameters stay f32, and a bf16 run resumes in f32. A CPU without AVX512-BF16 (oneDNN's
// ISA capped in a child process) is refused with the reason, by the library and by the addon itself.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { initBackend, referenceBackend, tryNativeBackend } from '../src/backend/index.js';
import type { NativeBackend } from '../src/backend/native.js';
import { roundToBf16 } from '../src/backend/reference.js';
import type { Backend, BackendTensor, Conv2dParams } from '../src/backend/types.js';
import { DataLoader, FASHION_MNIST_MEAN, FASHION_MNIST_STD, Subset, fashionMnist } from '../src/data/index.js';
import { AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, ReLU, Sequential, manualSeed } from '../src/nn/index.js';
import { Tensor, autocast, autocastDtype, conv2d, crossEntropy, flatten, globalAvgPool, linear, tidy } from '../src/tensor/index.js';
import { loadCheckpoint } from '../src/train/checkpoint.js';
import { train } from '../src/train/trainer.js';
import { repoRoot, rng } from './helpers.js';

const refOnly = !!process.env.RESIDUAL_TEST_REFERENCE_ONLY;
await initBackend(refOnly ? 'reference' : 'native');
const native = refOnly ? null : (await tryNativeBackend()) as unknown as NativeBackend & Backend;
const hasBf16 = native !== null && ['avx512_core_bf16', 'avx512_core_amx'].includes(native.info().isa ?? '');

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function random(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => (r() * 2 - 1) * scale);
}

/** max |a - b| and max |b| */
function diff(a: Float32Array, b: Float32Array): { d: number; scale: number } {
  let d = 0, scale = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return { d, scale };
}

interface Case { name: string; n: number; c: number; h: number; w: number; o: number; k: number; stride: number; pad: number; groups: number; bias: boolean; narrow?: boolean }
const cases: Case[] = [
  { name: '3x3 s1 (ResNet body)', n: 2, c: 32, h: 10, w: 9, o: 48, k: 3, stride: 1, pad: 1, groups: 1, bias: false },
  { name: '3x3 s2', n: 2, c: 32, h: 11, w: 11, o: 32, k: 3, stride: 2, pad: 1, groups: 1, bias: true },
  { name: '1x1 s2 (projection shortcut)', n: 3, c: 64, h: 8, w: 8, o: 32, k: 1, stride: 2, pad: 0, groups: 1, bias: false },
  { name: '7x7 s2, 3 input channels (ImageNet stem)', n: 2, c: 3, h: 20, w: 20, o: 16, k: 7, stride: 2, pad: 3, groups: 1, bias: false },
  { name: '3x3 s1, 1 input channel (Fashion-MNIST stem)', n: 2, c: 1, h: 12, w: 12, o: 16, k: 3, stride: 1, pad: 1, groups: 1, bias: false },
  { name: 'grouped, 4 ch/group, s1 (our narrow kernel)', n: 2, c: 64, h: 9, w: 10, o: 64, k: 3, stride: 1, pad: 1, groups: 16, bias: false, narrow: true },
  { name: 'grouped, 8 ch/group, s2 (our narrow kernel, oneDNN bwd)', n: 2, c: 64, h: 10, w: 10, o: 64, k: 3, stride: 2, pad: 1, groups: 8, bias: false, narrow: true },
  { name: 'grouped, 16 ch/group (oneDNN)', n: 2, c: 64, h: 8, w: 8, o: 64, k: 3, stride: 1, pad: 1, groups: 4, bias: true },
];

/** y, dx, dw, db of one conv on one backend in one precision. */
function convAll(b: Backend, cs: Case, precision: 'f32' | 'bf16'): Record<string, Float32Array> {
  const p: Conv2dParams = { stride: [cs.stride, cs.stride], padding: [cs.pad, cs.pad], dilation: [1, 1], groups: cs.groups, precision };
  const oh = Math.floor((cs.h + 2 * cs.pad - cs.k) / cs.stride) + 1, ow = Math.floor((cs.w + 2 * cs.pad - cs.k) / cs.stride) + 1;
  const made: BackendTensor[] = [];
  const t = (data: Float32Array, shape: number[]) => { const h = b.fromArray(data, shape); made.push(h); return h; };
  const x = t(random(cs.n * cs.c * cs.h * cs.w, 1), [cs.n, cs.c, cs.h, cs.w]);
  const w = t(random(cs.o * (cs.c / cs.groups) * cs.k * cs.k, 2, 0.3), [cs.o, cs.c / cs.groups, cs.k, cs.k]);
  const bias = cs.bias ? t(random(cs.o, 3), [cs.o]) : null;
  const dy = t(random(cs.n * cs.o * oh * ow, 4), [cs.n, cs.o, oh, ow]);
  const y = b.conv2d(x, w, bias, p);
  const g = b.conv2dBackward(x, w, dy, p, { input: true, weight: true, bias: cs.bias });
  const out: Record<string, Float32Array> = { y: b.read(y), dx: b.read(g.dx!), dw: b.read(g.dw!) };
  if (cs.bias) out.db = b.read(g.db!);
  for (const h of [...made, y, g.dx!, g.dw!, ...(g.db ? [g.db] : [])]) b.dispose(h);
  return out;
}

describe('bf16 rounding (the reference emulation)', () => {
  it('rounds to nearest, ties to even, and passes infinities and NaN', () => {
    const one = 1, ulp = 2 ** -7; // bf16 keeps 8 significant bits: 1 + 2^-7 is the next value after 1
    const v = Float32Array.from([one + ulp / 2, one + ulp * 1.5, one + ulp / 2 + 2 ** -20, -(one + ulp * 0.49), 3.14159, Infinity, -Infinity, NaN, 0, -0]);
    const r = roundToBf16(v);
    assert.deepEqual([...r.slice(0, 5)], [1, 1 + 2 * ulp, 1 + ulp, -1, 3.140625]);
    assert.equal(r[5], Infinity);
    assert.equal(r[6], -Infinity);
    assert.ok(Number.isNaN(r[7]));
    assert.ok(Object.is(r[9], -0));
  });

  it('a bf16 conv on the reference backend is the f32 conv of the rounded x and w', () => {
    const ref = referenceBackend();
    const x = random(2 * 4 * 5 * 5, 7), w = random(6 * 4 * 9, 8);
    const p: Conv2dParams = { stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1 };
    const run = (xv: Float32Array, wv: Float32Array, precision: 'f32' | 'bf16') => {
      const xt = ref.fromArray(xv, [2, 4, 5, 5]), wt = ref.fromArray(wv, [6, 4, 3, 3]);
      return ref.read(ref.conv2d(xt, wt, null, { ...p, precision }));
    };
    // The output is stored as bf16: the rounded f32 result.
    assert.deepEqual(run(x, w, 'bf16'), roundToBf16(run(roundToBf16(x), roundToBf16(w), 'f32')));
    assert.ok(diff(run(x, w, 'bf16'), run(x, w, 'f32')).d > 1e-4, 'rounding changed the result');
  });
});

describe('bf16 convolutions: native against the reference emulation and the f32 path', { skip: !hasBf16 && 'needs the native backend on a CPU with AVX512-BF16' }, () => {
  const ref = referenceBackend();
  for (const cs of cases) {
    it(cs.name, () => {
      const nat = convAll(native!, cs, 'bf16');
      const emu = convAll(ref, cs, 'bf16');
      const f32 = convAll(ref, cs, 'f32');
      for (const k of Object.keys(emu)) {
        // y is stored as bf16 (and our narrow kernel stores dx as bf16 too): a different summation order
        // may round a value the other way, one bf16 ulp.
        const tol = k === 'y' || (cs.narrow && k === 'dx' && cs.stride === 1) ? 4e-3 : 1e-4;
        const toEmu = diff(nat[k]!, emu[k]!), toF32 = diff(nat[k]!, f32[k]!), emuToF32 = diff(emu[k]!, f32[k]!);
        const what = `${cs.name} ${k}: |native - bf16 reference| ${toEmu.d}, |native - f32| ${toF32.d}, |bf16 ref - f32| ${emuToF32.d}, scale ${toEmu.scale}`;
        assert.ok(toEmu.d <= tol * Math.max(1, toEmu.scale), what);
        assert.ok(toF32.d <= 2e-2 * Math.max(1, toF32.scale), what);
        assert.ok(emuToF32.d > 1e-4 * toEmu.scale, `bf16 rounding shows: ${what}`);
        if (tol === 1e-4) assert.ok(toEmu.d < 0.25 * emuToF32.d, `native bf16 is the bf16 conv, not the f32 one: ${what}`);
      }
    });
  }

  it('oneDNN runs every bf16 conv on its AVX512-BF16 kernels (no reference kernel, no f32 fallback)', () => {
    const impls = native!.implementations().filter((r) => /^conv_.*:bf16/.test(r.key));
    assert.ok(impls.length >= 3 * (cases.length - 2), `bf16 convs recorded: ${impls.length}`);
    for (const r of impls) assert.match(r.impl, /avx512_core_bf16|avx512_core_amx|^residual:grouped3x3/, `${r.key}: ${r.impl}`);
  });
});

describe('autocast', () => {
  it('sets the conv precision inside, restores it after (also on a throw), and the backward keeps the forward\'s precision', async () => {
    assert.equal(autocastDtype(), 'f32');
    assert.throws(() => autocast('bf16', () => { assert.equal(autocastDtype(), 'bf16'); throw new Error('boom'); }), /boom/);
    assert.equal(autocastDtype(), 'f32');
    assert.throws(() => autocast('f16' as 'bf16', () => 0), /dtype must be "f32" or "bf16"/);
    // dL/dw of mean(conv(x, w)) -> linear -> cross-entropy, backward called outside autocast: on each
    // backend, the bf16 forward's gradient differs from the f32 one, and native bf16 matches reference bf16.
    const grads = (b: Backend, dtype: 'f32' | 'bf16') => tidy(() => {
      const x = Tensor.fromArray(random(2 * 8 * 6 * 6, 11), [2, 8, 6, 6], { backend: b });
      const w = Tensor.fromArray(random(16 * 8 * 9, 12, 0.3), [16, 8, 3, 3], { backend: b, requiresGrad: true });
      const fc = Tensor.fromArray(random(3 * 16, 13), [3, 16], { backend: b, requiresGrad: true });
      const y = autocast(dtype, () => conv2d(x, w, null, { padding: 1 }));
      const loss = crossEntropy(linearOf(flatten(globalAvgPool(y)), fc), [0, 2]);
      loss.backward();
      return w.grad!.toArray();
    });
    const ref = referenceBackend();
    const refBf = grads(ref, 'bf16'), refF32 = grads(ref, 'f32');
    assert.ok(diff(refBf, refF32).d > 0, 'bf16 changed the reference gradient');
    if (hasBf16) {
      const natBf = grads(native!, 'bf16');
      assert.ok(diff(natBf, refBf).d < 0.25 * diff(refBf, refF32).d, 'the native backward ran in bf16 too');
    }
  });
});

// y = x w^T through the tensor API (no bias)
function linearOf(x: Tensor, w: Tensor): Tensor {
  return linear(x, w, null);
}

function tinyNet() {
  manualSeed(3);
  return new Sequential(
    new Conv2d(1, 16, 3, { stride: 2, padding: 1, bias: false }), new BatchNorm2d(16), new ReLU(),
    new Conv2d(16, 32, 3, { stride: 2, padding: 1, bias: false }), new BatchNorm2d(32), new ReLU(),
    new AdaptiveAvgPool2d(1), new Flatten(), new Linear(32, 10),
  );
}
const normalize = { type: 'normalize', mean: FASHION_MNIST_MEAN, std: FASHION_MNIST_STD } as const;
const trainSet = new Subset(fashionMnist('train'), Array.from({ length: 2048 }, (_, i) => i));
const testSet = new Subset(fashionMnist('test'), Array.from({ length: 512 }, (_, i) => i));
const loaders = () => ({
  train: new DataLoader(trainSet, { batchSize: 64, shuffle: true, seed: 5, transforms: [normalize] }),
  test: new DataLoader(testSet, { batchSize: 256, transforms: [normalize] }),
});
const recipe = { epochs: 2, lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 5e-4, schedule: { kind: 'onecycle', pctStart: 0.2 } } as const;

describe('bf16 training', { skip: !refOnly && !hasBf16 && 'needs a CPU with AVX512-BF16' }, () => {
  it('trains as well as f32 from the same start; the weights differ (bf16 ran) and stay f32; a bf16 run resumes in f32', async () => {
    const f32 = await train(tinyNet(), loaders().train, loaders().test, recipe);
    const dir = mkdtempSync(join(tmpdir(), 'residual-bf16-'));
    dirs.push(dir);
    const first = await train(tinyNet(), loaders().train, loaders().test, { ...recipe, dtype: 'bf16', outDir: dir, stopAfterEpochs: 1 });
    assert.equal(first.stopped, 'stopAfterEpochs');
    const ck = loadCheckpoint(dir);
    for (const [k, v] of ck.model) assert.equal(v.dtype === 'I64' ? 'F32' : v.dtype, 'F32', `${k} is saved as f32`);
    // Same start, same batches: the first epoch's loss follows f32's closely, not exactly.
    const l32 = f32.history[0]!.train_loss, l16 = first.history[0]!.train_loss;
    assert.ok(Math.abs(l16 - l32) < 0.03 * l32, `epoch-1 train loss bf16 ${l16} vs f32 ${l32}`);
    assert.notEqual(l16, l32, 'bf16 changed the arithmetic');
    const resumed = await train(tinyNet(), loaders().train, loaders().test, { ...recipe, dtype: 'f32', outDir: dir, resume: true });
    assert.equal(resumed.history.length, 2);
    assert.deepEqual(resumed.history.map((h) => h.dtype), ['bf16', 'f32'], 'each epoch records the precision it trained in');
    const a32 = f32.history[1]!.test_acc!, amixed = resumed.history[1]!.test_acc!;
    assert.ok(amixed > 0.4 && Math.abs(amixed - a32) < 0.03, `test accuracy after 2 epochs: bf16 then f32 ${amixed}, f32 ${a32}`);
  });
});

describe('a CPU without AVX512-BF16 (oneDNN capped at avx512_core in a child process)', { skip: refOnly && 'native only' }, () => {
  const child = (code: string) => spawnSync(process.execPath, ['--input-type=module', '-e', code], {
    encoding: 'utf8', cwd: repoRoot, env: { ...process.env, DNNL_MAX_CPU_ISA: 'AVX512_CORE', OMP_NUM_THREADS: '1' },
  });
  const dist = (p: string) => JSON.stringify(join(repoRoot, 'dist', p));

  it('the trainer refuses dtype bf16 with the reason, before any step', () => {
    const r = child(`
      import { initBackend } from ${dist('src/backend/index.js')};
      import { Conv2d, Sequential } from ${dist('src/nn/index.js')};
      import { train } from ${dist('src/train/trainer.js')};
      const b = await initBackend('native');
      console.log(b.info().isa);
      try { await train(new Sequential(new Conv2d(1, 4, 3)), { batchesPerEpoch: 1, batchSize: 1, epoch() { throw new Error('a step ran'); } }, null,
        { epochs: 1, lr: 0.1, schedule: { kind: 'constant' }, dtype: 'bf16' }); console.log('trained'); }
      catch (e) { console.log(e.message); }`);
    assert.equal(r.status, 0, r.stderr);
    const [isa, msg] = r.stdout.trim().split('\n');
    assert.equal(isa, 'avx512_core');
    assert.match(msg!, /^train: bf16 training needs a CPU with AVX512-BF16 \(or AMX\), and oneDNN reports this one as avx512_core .*train with dtype f32/);
  });

  it('the addon itself refuses a bf16 convolution (a caller that skips the check gets the reason, not emulation)', () => {
    const r = child(`
      import { initBackend } from ${dist('src/backend/index.js')};
      const b = await initBackend('native');
      const x = b.fromArray(new Float32Array(16), [1, 1, 4, 4]), w = b.fromArray(new Float32Array(9), [1, 1, 3, 3]);
      try { b.conv2d(x, w, null, { stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1, precision: 'bf16' }); console.log('ran'); }
      catch (e) { console.log(e.message); }
      console.log(b.read(b.conv2d(x, w, null, { stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1 })).length);`);
    assert.equal(r.status, 0, r.stderr);
    const [msg, f32] = r.stdout.trim().split('\n');
    assert.match(msg!, /native conv2d: bf16 training needs a CPU with AVX512-BF16 \(or AMX\), and oneDNN reports this one as avx512_core/);
    assert.equal(f32, '16', 'f32 still runs');
  });
});
