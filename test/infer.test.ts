// The compiled inference plan (src/infer, native/inference.cc) against the unfused eval path
// (model.eval() + a noGrad forward on the same engine): ImageNet nets with bottleneck, basic and
// grouped blocks on a small non-square input, CIFAR ResNet-20 (option A) and a plain net, at batch
// 1 and 3 from one plan, with random BN statistics so that the folding is not an identity.
// Tolerance: 1e-4 of the largest logit. bf16 plans: top-1 agreement with f32. Also: the kernels oneDNN chose are no reference ones, bad
// input and use after dispose() give clear errors, and the reference backend is refused.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { initBackend, referenceBackend, setDefaultBackend } from '../src/backend/index.js';
import type { NativeBackend } from '../src/backend/native.js';
import { compileForInference } from '../src/infer/index.js';
import { createModel, type ResNet } from '../src/models/index.js';
import { BatchNorm2d, manualSeed } from '../src/nn/index.js';
import { Tensor, noGrad, tidy } from '../src/tensor/index.js';
import { assertClose, rng } from './helpers.js';

const TOL = 1e-4;

function randomArray(n: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => 2 * r() - 1);
}

/** Random BN scales, shifts and running statistics (eval BN, and so its folding, is no identity). */
function randomizeBatchNorm(model: ResNet, seed: number): void {
  const r = rng(seed);
  const u = (n: number, lo: number, hi: number) => Float32Array.from({ length: n }, () => lo + (hi - lo) * r());
  for (const [, m] of model.namedModules()) {
    if (!(m instanceof BatchNorm2d)) continue;
    const n = m.numFeatures;
    m.weight.assign(u(n, 0.5, 1.5));
    m.bias.assign(u(n, -0.3, 0.3));
    m.runningMean.assign(u(n, -0.3, 0.3));
    m.runningVar.assign(u(n, 0.5, 2));
  }
}

function unfused(model: ResNet, x: Float32Array, shape: number[]): Float32Array {
  model.eval();
  return noGrad(() => tidy(() => model.forward(Tensor.fromArray(x, shape)).toArray()));
}

const CASES: { name: string; input: [number, number, number] }[] = [
  { name: 'resnet18', input: [3, 48, 64] },
  { name: 'resnet50', input: [3, 48, 64] },
  { name: 'resnext50_32x4d', input: [3, 48, 64] },
  { name: 'resnet20', input: [3, 32, 24] },
  { name: 'plain20', input: [1, 28, 28] },
];

describe('compiled inference', () => {
  before(async () => {
    await initBackend('native');
  });

  for (const { name, input } of CASES) {
    it(`${name} ${input.join('x')}: matches the unfused eval path at batch 1 and 3`, () => {
      manualSeed(5);
      const model = createModel(name, { inChannels: input[0] });
      randomizeBatchNorm(model, 7);
      const per = input[0] * input[1] * input[2];
      const x = randomArray(3 * per, 11);
      const expected = unfused(model, x, [3, ...input]);
      const plan = compileForInference(model, { input, maxBatch: 3 });
      try {
        assert.equal(plan.numClasses, model.numClasses);
        const y3 = plan.run(x, 3);
        assertClose(y3, expected, TOL, `${name} batch 3`);
        const y1 = plan.run(x.subarray(0, per), 1);
        assertClose(y1, unfused(model, x.subarray(0, per), [1, ...input]), TOL, `${name} batch 1`);
        // Runs again on the same buffers give the same answer (nothing stale left in a buffer).
        assertClose(plan.run(x, 3), y3, 0, `${name} second run`);
        const refs = plan.implementations().filter((e) => e.impl.startsWith('ref'));
        assert.deepEqual(refs, [], `reference kernels chosen: ${JSON.stringify(refs)}`);
      } finally {
        plan.dispose();
        model.dispose();
      }
    });
  }

  // bf16 changes the numbers by bf16 rounding (about 3 significant digits), so the check is top-1
  // agreement with f32 on smooth, image-like inputs, and a bounded deviation.
  for (const { name, input, n } of [
    { name: 'resnet20', input: [3, 32, 32] as [number, number, number], n: 32 },
    { name: 'resnet18', input: [3, 64, 64] as [number, number, number], n: 8 },
    { name: 'resnext50_32x4d', input: [3, 64, 64] as [number, number, number], n: 4 },
  ]) {
    it(`bf16 ${name}: top-1 agrees with f32 on at least 99% of a batch (or bf16 is refused with a reason)`, (t) => {
      manualSeed(3);
      const model = createModel(name);
      randomizeBatchNorm(model, 5);
      const per = input[0] * input[1] * input[2];
      const r = rng(17);
      const x = new Float32Array(n * per);
      for (let b = 0; b < n; b++) {
        const fy = 2 + 6 * r(), fx = 2 + 6 * r(), ph = 6 * r();
        for (let c = 0; c < input[0]; c++) {
          for (let i = 0; i < input[1]; i++) {
            for (let j = 0; j < input[2]; j++) {
              x[((b * input[0] + c) * input[1] + i) * input[2] + j] =
                Math.sin((fy * i) / input[1] + ph + c) * Math.cos((fx * j) / input[2]) + 0.1 * (r() - 0.5);
            }
          }
        }
      }
      const f32 = compileForInference(model, { input, maxBatch: n });
      let bf16;
      try {
        bf16 = compileForInference(model, { input, maxBatch: n, dtype: 'bf16' });
      } catch (e) {
        f32.dispose();
        model.dispose();
        assert.match((e as Error).message, /bf16 needs a CPU with AVX512-BF16 or AMX/);
        t.skip('this CPU has no bf16');
        return;
      }
      try {
        assert.equal(bf16.dtype, 'bf16');
        const a = f32.run(x, n), b = bf16.run(x, n);
        const k = model.numClasses;
        let agree = 0, dev = 0, scale = 0;
        for (let s = 0; s < n; s++) {
          let ia = 0, ib = 0;
          for (let j = 0; j < k; j++) {
            if (a[s * k + j]! > a[s * k + ia]!) ia = j;
            if (b[s * k + j]! > b[s * k + ib]!) ib = j;
            dev = Math.max(dev, Math.abs(a[s * k + j]! - b[s * k + j]!));
            scale = Math.max(scale, Math.abs(a[s * k + j]!));
          }
          if (ia === ib) agree++;
        }
        t.diagnostic(`${name} bf16: top-1 ${agree}/${n}, max deviation ${(dev / scale).toExponential(2)} of the largest logit`);
        assert.ok(agree >= Math.ceil(0.99 * n), `top-1 agreement ${agree}/${n}`);
        assert.ok(dev <= 0.05 * scale, `bf16 deviates by ${dev} (largest logit ${scale})`);
        assert.ok(bf16.implementations().every((e) => !e.impl.startsWith('ref')));
      } finally {
        f32.dispose();
        bf16.dispose();
        model.dispose();
      }
    });
  }

  it('the plan copies the weights: later model changes are not seen; dispose frees it', () => {
    manualSeed(1);
    const model = createModel('resnet20');
    model.eval();
    const x = randomArray(2 * 3 * 32 * 32, 3);
    const plan = compileForInference(model, { input: [3, 32, 32], maxBatch: 2 });
    const before = plan.run(x, 2);
    randomizeBatchNorm(model, 9);
    assertClose(plan.run(x, 2), before, 0, 'after changing the model');
    assert.ok(plan.bytes > 0);
    plan.dispose();
    assert.equal(plan.disposed, true);
    plan.dispose(); // twice is harmless
    assert.throws(() => plan.run(x, 2), /after dispose/);
    model.dispose();
  });

  it('compiling and disposing plans gives their memory back', async () => {
    const nb = (await initBackend('native')) as unknown as NativeBackend;
    manualSeed(1);
    const model = createModel('resnet20');
    const x = randomArray(4 * 3 * 32 * 32, 3);
    const warm = compileForInference(model, { input: [3, 32, 32], maxBatch: 4 });
    warm.run(x, 4);
    warm.dispose();
    const base = nb.stats().footprintBytes;
    for (let i = 0; i < 20; i++) {
      const plan = compileForInference(model, { input: [3, 32, 32], maxBatch: 4 });
      plan.run(x, 4);
      plan.run(x.subarray(0, 3 * 32 * 32), 1);
      assert.ok(nb.stats().footprintBytes >= base + plan.bytes);
      plan.dispose();
    }
    assert.equal(nb.stats().footprintBytes, base);
    model.dispose();
  });

  it('winograd: false keeps Winograd out of a ResNet-50 plan (less memory), true puts it in; same logits', () => {
    manualSeed(4);
    const model = createModel('resnet50');
    randomizeBatchNorm(model, 6);
    const input: [number, number, number] = [3, 64, 64];
    const x = randomArray(2 * 3 * 64 * 64, 8);
    const off = compileForInference(model, { input, maxBatch: 2, winograd: false });
    const on = compileForInference(model, { input, maxBatch: 2, winograd: true });
    try {
      const wino = (p: typeof on) => p.implementations().filter((e) => /wino/.test(e.impl)).length;
      assert.equal(wino(off), 0);
      assert.ok(wino(on) > 0, `no Winograd kernel: ${JSON.stringify(on.implementations())}`);
      assert.ok(off.bytes < on.bytes, `plan bytes ${off.bytes} (off) vs ${on.bytes} (on)`);
      assertClose(on.run(x, 2), off.run(x, 2), TOL, 'Winograd vs direct');
      assert.throws(() => compileForInference(model, { input, winograd: 'yes' as unknown as boolean }), /winograd must be true, false or unset, got "yes"/);
    } finally {
      off.dispose();
      on.dispose();
      model.dispose();
    }
  });

  it('rejects bad input with messages that say what to do', () => {
    manualSeed(1);
    const model = createModel('resnet20');
    const plan = compileForInference(model, { input: [3, 32, 32], maxBatch: 2 });
    try {
      assert.throws(() => plan.run(new Float32Array(3 * 3 * 32 * 32), 3), /batch 3 is outside 1\.\.2; compile with a larger maxBatch/);
      assert.throws(() => plan.run(new Float32Array(10), 1), /input has 10 values, but 1 x \[3, 32, 32\] needs 3072/);
      assert.throws(() => compileForInference(model, { input: [1, 32, 32] }), /takes 3-channel input/);
      assert.throws(() => compileForInference(model, { input: [3, 32] }), /input must be \[C, H, W\]/);
      assert.throws(() => compileForInference(model, { input: [3, 32, 32], maxBatch: 0 }), /maxBatch must be a positive integer/);
    } finally {
      plan.dispose();
      model.dispose();
    }
  });

  it('refuses the reference backend with a clear error', async () => {
    const native = await initBackend('native');
    manualSeed(1);
    const model = createModel('resnet20');
    setDefaultBackend(referenceBackend());
    try {
      assert.throws(() => compileForInference(model, { input: [3, 32, 32] }), /needs the native backend.*noGrad/s);
    } finally {
      setDefaultBackend(native);
      model.dispose();
    }
  });
});
