// The native (oneDNN) backend against the reference backend: every op forward and backward on
// random inputs over many shapes, plus memory, errors, caching and the implementations oneDNN picks.
// Tolerance: max |native - reference| <= 1e-4 * max |reference| (per output tensor).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Worker } from 'node:worker_threads';

import { NativeBackend, type NativeTensor } from '../src/backend/native.js';
import { ReferenceBackend, type RefTensor } from '../src/backend/reference.js';
import type { Conv2dParams, Pool2dParams, SgdOptions, Shape } from '../src/backend/types.js';
import { rng } from './helpers.js';

const nb = new NativeBackend();
const rb = new ReferenceBackend();
const TOL = 1e-4;

// ---------- helpers ----------

const rand = rng(1234);

function numel(shape: Shape): number {
  return shape.reduce((a, b) => a * b, 1);
}

function randomArray(shape: Shape, lo = -1, hi = 1): Float32Array {
  const a = new Float32Array(numel(shape));
  for (let i = 0; i < a.length; i++) a[i] = lo + (hi - lo) * rand();
  return a;
}

interface Pair {
  n: NativeTensor;
  r: RefTensor;
}

function pair(shape: Shape, data: Float32Array = randomArray(shape)): Pair {
  return { n: nb.fromArray(data, shape), r: rb.fromArray(data, shape) };
}

/** The same values as a native tensor in the activation layout (NHWC), made by an op, not fromArray. */
function nhwc(p: Pair): NativeTensor {
  // add(x, 0) runs on the activation layout and so returns NHWC for 4-D tensors.
  const z = nb.zeros(p.r.shape);
  const y = nb.add(p.n, z);
  nb.dispose(z);
  return y;
}

function maxAbs(a: Float32Array): number {
  let m = 0;
  for (const v of a) m = Math.max(m, Math.abs(v));
  return m;
}

function assertClose(actual: Float32Array, expected: Float32Array, label: string, tol = TOL): void {
  assert.equal(actual.length, expected.length, `${label}: length`);
  const scale = Math.max(maxAbs(expected), 1e-6);
  let worst = 0, at = -1;
  for (let i = 0; i < actual.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (!(d <= worst)) { worst = d; at = i; }
  }
  assert.ok(worst <= tol * scale, `${label}: max error ${worst} at ${at} (native ${actual[at]}, reference ${expected[at]}), scale ${scale}`);
}

function check(n: NativeTensor | undefined, r: RefTensor | undefined, label: string, tol = TOL): void {
  assert.ok(n && r, `${label}: missing output`);
  assert.deepEqual([...n.shape], [...r.shape], `${label}: shape`);
  assertClose(nb.read(n), rb.read(r), label, tol);
}

const convP = (s: number | [number, number], p: number | [number, number], d: number | [number, number], groups: number): Conv2dParams => ({
  stride: typeof s === 'number' ? [s, s] : s,
  padding: typeof p === 'number' ? [p, p] : p,
  dilation: typeof d === 'number' ? [d, d] : d,
  groups,
});

// ---------- info and memory ----------

describe('native backend: info and memory', () => {
  it('reports oneDNN version, ISA and threads', () => {
    const i = nb.info();
    assert.equal(i.backend, 'native');
    assert.match(i.onednnVersion ?? '', /^2\.\d+\.\d+$/);
    assert.match(i.isa ?? '', /^(avx|sse|avx2|avx512)/);
    assert.ok(i.threads >= 1);
  });

  it('round-trips values through fromArray/read for ranks 0 to 5', () => {
    for (const shape of [[], [5], [3, 4], [2, 3, 4], [2, 3, 5, 7], [1, 2, 3, 2, 2]] as Shape[]) {
      const d = randomArray(shape);
      const t = nb.fromArray(d, shape);
      assert.deepEqual([...t.shape], [...shape]);
      assert.deepEqual(nb.read(t), d);
      nb.dispose(t);
    }
    const z = nb.zeros([2, 3, 4, 5]);
    assert.ok(nb.read(z).every((v) => v === 0));
    assert.equal(nb.read(nb.zeros([0, 3])).length, 0);
  });

  it('reads NHWC tensors back in logical NCHW order and reshapes them', () => {
    const p = pair([2, 3, 5, 4]);
    const y = nhwc(p);
    assert.equal(y.layout, 'nhwc');
    assert.deepEqual(nb.read(y), rb.read(p.r));
    const flat = nb.reshape(y, [2, 60]);
    assert.deepEqual(nb.read(flat), rb.read(p.r));
    const back = nb.reshape(flat, [2, 3, 5, 4]);
    assert.deepEqual(nb.read(back), rb.read(p.r));
    const one = pair([2, 1, 5, 4]);
    assert.deepEqual(nb.read(nb.reshape(nhwc(one), [2, 20])), rb.read(one.r));
    // reshape copies: mutating the copy leaves the source alone
    nb.addInPlace(flat, flat);
    assert.deepEqual(nb.read(y), rb.read(p.r));
  });

  it('frees memory on dispose, reports it, and throws on use after dispose', () => {
    const before = nb.stats();
    const t = nb.fromArray(randomArray([4, 8, 16, 16]), [4, 8, 16, 16]);
    assert.equal(nb.byteSize(t), 4 * 8 * 16 * 16 * 4);
    assert.equal(nb.stats().liveTensors, before.liveTensors + 1);
    assert.equal(nb.stats().liveBytes, before.liveBytes + 4 * 8 * 16 * 16 * 4);
    nb.dispose(t);
    assert.equal(t.disposed, true);
    assert.equal(nb.byteSize(t), 0);
    assert.equal(nb.stats().liveTensors, before.liveTensors);
    assert.equal(nb.stats().liveBytes, before.liveBytes);
    nb.dispose(t); // twice is harmless
    assert.throws(() => nb.read(t), /disposed/);
    assert.throws(() => nb.relu(t), (e: unknown) => e instanceof Error && /relu/.test(e.message) && /disposed/.test(e.message));
    assert.throws(() => nb.conv2d(t, t, null, convP(1, 0, 1, 1)), Error);
    assert.ok(nb.info().threads >= 1);
  });

  it('leaves nothing for the garbage collector once disposed (synchronous loops stay flat)', () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const x = pair([8, 16, 12, 12]);
    const step = () => {
      const y = nb.relu(x.n);
      nb.dispose(nb.add(y, y));
      nb.dispose(y);
    };
    for (let i = 0; i < 2000; i++) step();
    gc();
    const before = process.memoryUsage().rss;
    // no await: Node would only run pending finalizers when the event loop turns
    for (let i = 0; i < 30000; i++) step();
    gc();
    const grewMb = (process.memoryUsage().rss - before) / 2 ** 20;
    // 60,000 tensors pending finalization would hold over 60 MB
    assert.ok(grewMb < 20, `resident memory grew ${grewMb.toFixed(1)} MB`);
  });

  it('frees tensors that were never disposed when the garbage collector finalizes them', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const before = nb.stats().liveTensors;
    (() => {
      for (let i = 0; i < 200; i++) nb.relu(nb.fromArray(randomArray([2, 3, 4, 5]), [2, 3, 4, 5]));
    })();
    assert.ok(nb.stats().liveTensors >= before + 400);
    for (let i = 0; i < 10 && nb.stats().liveTensors > before + 10; i++) {
      gc();
      await new Promise((r) => setImmediate(r));
    }
    assert.ok(nb.stats().liveTensors <= before + 10, `still live: ${nb.stats().liveTensors - before}`);
  });

  it('reuses freed buffers and gives them back on releasePool', () => {
    const shape = [3, 5, 7, 9];
    const t = nb.fromArray(randomArray(shape), shape);
    nb.dispose(t);
    assert.ok(nb.stats().pooledBytes >= numel(shape) * 4);
    const u = nb.zeros(shape); // a recycled buffer must still come back zeroed
    assert.ok(nb.read(u).every((v) => v === 0));
    const st = nb.stats();
    assert.ok(st.footprintBytes >= st.liveBytes + st.pooledBytes, 'the reported footprint covers live and pooled buffers');
    nb.releasePool();
    assert.equal(nb.stats().pooledBytes, 0);
    assert.equal(nb.stats().footprintBytes, st.footprintBytes - st.pooledBytes);
  });

  it('works from a worker thread alongside the main thread', async () => {
    const url = new URL('../src/backend/native.js', import.meta.url).href;
    const code = `
      const { parentPort } = require('node:worker_threads');
      import(${JSON.stringify(url)}).then(({ NativeBackend }) => {
        const nb = new NativeBackend();
        const x = nb.fromArray(new Float32Array(2 * 4 * 5 * 5).fill(1), [2, 4, 5, 5]);
        const w = nb.fromArray(new Float32Array(8 * 4 * 3 * 3).fill(0.5), [8, 4, 3, 3]);
        const y = nb.conv2d(x, w, null, { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1 });
        parentPort.postMessage(Array.from(nb.read(y)));
      }).catch((e) => parentPort.postMessage(String(e)));`;
    const worker = new Worker(code, { eval: true });
    // meanwhile, the main thread keeps computing
    const x = pair([2, 8, 9, 9]);
    check(nb.relu(x.n), rb.relu(x.r), 'relu on the main thread');
    const out = await new Promise<unknown>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    await worker.terminate();
    assert.ok(Array.isArray(out), `worker failed: ${String(out)}`);
    assert.equal(out.length, 2 * 8 * 3 * 3);
    assert.ok((out as number[]).every((v) => Math.abs(v - 18) < 1e-5));
    // a tensor of one thread's environment is not one of another's: an Error, not a crash
    assert.throws(() => nb.read({ shape: [1] } as unknown as NativeTensor), /not a native tensor/);
  });

  it('counts cached weight copies in byteSize and frees them with the tensor', () => {
    const x = pair([2, 16, 8, 8]);
    const w = pair([32, 16, 3, 3]);
    const plain = nb.byteSize(w.n);
    nb.dispose(nb.conv2d(x.n, w.n, null, convP(1, 1, 1, 1)));
    assert.ok(nb.byteSize(w.n) >= plain, 'the reordered weight copy is accounted');
    const live = nb.stats().liveBytes;
    const held = nb.byteSize(w.n);
    nb.dispose(w.n);
    assert.equal(nb.stats().liveBytes, live - held);
  });

  it('rejects bad input with an Error instead of crashing', () => {
    assert.throws(() => nb.fromArray(new Float32Array(5), [2, 3]), /5 elements/);
    assert.throws(() => nb.fromArray(new Float64Array(6) as unknown as Float32Array, [2, 3]), /Float32Array/);
    assert.throws(() => nb.read({ shape: [1] } as unknown as NativeTensor), /not a native tensor/);
    const a = pair([2, 3]).n, b = pair([3, 2]).n;
    assert.throws(() => nb.add(a, b), /same shape/);
    const logits = pair([2, 3]).n;
    assert.throws(() => nb.crossEntropy(logits, Int32Array.of(0, 3), 0), /outside/);
    assert.throws(() => nb.crossEntropy(logits, Int32Array.of(0), 0), /one label per row/);
    const x = pair([1, 4, 5, 5]).n, w = pair([4, 3, 3, 3]).n;
    assert.throws(() => nb.conv2d(x, w, null, convP(1, 0, 1, 1)), /conv2d/);
    const big = pair([1, 4, 2, 2]).n, wk = pair([4, 4, 5, 5]).n;
    assert.throws(() => nb.conv2d(big, wk, null, convP(1, 0, 1, 1)), /conv2d/);
    const { argmax } = nb.maxPool2d(pair([1, 2, 6, 6]).n, { kernel: [2, 2], stride: [2, 2], padding: [0, 0], ceilMode: false, countIncludePad: true });
    assert.throws(() => nb.read(argmax), /opaque/);
    assert.throws(() => nb.relu(argmax), /opaque/);
    const pool = { kernel: [2, 2], stride: [2, 2], padding: [0, 0], ceilMode: false, countIncludePad: true } as const;
    assert.throws(() => nb.maxPool2dBackward(pair([1, 2, 8, 8]).n, argmax, pair([1, 2, 4, 4]).n, pool), /argmax/);
    const proto = Object.getPrototypeOf(pair([1]).n) as object;
    // an object that only has the prototype has no native side, like a disposed tensor
    assert.throws(() => nb.read(Object.create(proto) as NativeTensor), /disposed|not a native tensor/);
    assert.throws(() => nb.concatChannels([{ shape: [1, 1, 1, 1] } as unknown as NativeTensor]), /native tensors/);
    const sgd: SgdOptions = { lr: 0.1, momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: false };
    assert.throws(() => nb.sgdStep(pair([3]).n, pair([3]).n, null, true, sgd), /momentum buffer/);
    assert.throws(() => nb.zeros([1e6, 1e6, 1e6]), /too many/);
    assert.throws(() => nb.zeros([-1]), /non-negative/);
  });
});

// ---------- elementwise ----------

describe('native backend: elementwise', () => {
  // small ones run as plain loops, large ones (over 65536 elements) as oneDNN primitives
  for (const shape of [[7, 5, 3, 9], [1, 33, 1, 1], [4, 11], [17], [4, 32, 24, 24], [300, 250]] as Shape[]) {
    it(`add, addInPlace, scale, relu, reluBackward on [${shape}]`, () => {
      const a = pair(shape), b = pair(shape);
      check(nb.add(a.n, b.n), rb.add(a.r, b.r), 'add');
      // mixed layouts: a plain tensor plus an NHWC one
      check(nb.add(a.n, nhwc(b)), rb.add(a.r, b.r), 'add mixed');
      check(nb.scale(a.n, -2.5), rb.scale(a.r, -2.5), 'scale');
      const y = nb.relu(a.n), yr = rb.relu(a.r);
      check(y, yr, 'relu');
      const dy = pair(shape);
      check(nb.reluBackward(y, dy.n), rb.reluBackward(yr, dy.r), 'reluBackward');
      const acc = pair(shape);
      nb.addInPlace(acc.n, a.n);
      rb.addInPlace(acc.r, a.r);
      nb.addInPlace(acc.n, nhwc(b));
      rb.addInPlace(acc.r, b.r);
      check(acc.n, acc.r, 'addInPlace');
      const z = nb.zeros(shape), zr = rb.zeros(shape);
      nb.addInPlace(z, y);
      rb.addInPlace(zr, yr);
      nb.addInPlace(z, a.n);
      rb.addInPlace(zr, a.r);
      check(z, zr, 'addInPlace into zeros');
    });
  }
});

// ---------- convolution ----------

interface ConvCase {
  n: number; c: number; h: number; w: number; o: number; k: [number, number];
  s: number | [number, number]; p: number | [number, number]; d: number | [number, number]; g: number; bias: boolean;
}

const convCases: ConvCase[] = [
  { n: 1, c: 3, h: 9, w: 9, o: 8, k: [3, 3], s: 1, p: 1, d: 1, g: 1, bias: true },
  { n: 7, c: 5, h: 11, w: 7, o: 6, k: [3, 3], s: 2, p: 0, d: 1, g: 1, bias: false },
  { n: 2, c: 3, h: 15, w: 13, o: 8, k: [7, 7], s: 2, p: 3, d: 1, g: 1, bias: false },
  { n: 2, c: 16, h: 9, w: 9, o: 32, k: [1, 1], s: 1, p: 0, d: 1, g: 1, bias: false },
  { n: 3, c: 16, h: 9, w: 9, o: 32, k: [1, 1], s: 2, p: 0, d: 1, g: 1, bias: true },
  { n: 2, c: 8, h: 10, w: 9, o: 6, k: [3, 3], s: 1, p: 2, d: 2, g: 2, bias: true },
  { n: 7, c: 6, h: 7, w: 7, o: 4, k: [3, 3], s: 2, p: 1, d: 1, g: 2, bias: false },
  { n: 1, c: 64, h: 9, w: 9, o: 64, k: [3, 3], s: 1, p: 1, d: 1, g: 32, bias: false },
  { n: 2, c: 128, h: 7, w: 7, o: 128, k: [3, 3], s: 2, p: 1, d: 1, g: 32, bias: true },
  { n: 2, c: 64, h: 5, w: 5, o: 64, k: [3, 3], s: 1, p: 1, d: 2, g: 32, bias: false },
  { n: 2, c: 16, h: 9, w: 11, o: 16, k: [3, 3], s: 1, p: 1, d: 1, g: 16, bias: true }, // depthwise
  { n: 7, c: 8, h: 8, w: 8, o: 16, k: [3, 3], s: 2, p: 1, d: 1, g: 8, bias: false }, // depthwise x2
  { n: 1, c: 4, h: 13, w: 13, o: 5, k: [5, 3], s: [2, 1], p: [3, 1], d: [1, 2], g: 1, bias: true },
  { n: 2, c: 32, h: 5, w: 5, o: 32, k: [3, 3], s: 1, p: 3, d: 2, g: 32, bias: false }, // depthwise, pad 3
  // 4 and 8 channels per group, 3x3: our own kernel (forward, and backward-data at stride 1)
  { n: 3, c: 64, h: 9, w: 14, o: 64, k: [3, 3], s: 1, p: 1, d: 1, g: 16, bias: true },
  { n: 2, c: 128, h: 8, w: 13, o: 128, k: [3, 3], s: 1, p: 1, d: 1, g: 16, bias: false },
  { n: 2, c: 48, h: 11, w: 9, o: 48, k: [3, 3], s: 2, p: 1, d: 1, g: 6, bias: true },
];

describe('native backend: convolution vs reference', () => {
  for (const cc of convCases) {
    const label = `n${cc.n} c${cc.c} ${cc.h}x${cc.w} o${cc.o} k${cc.k} s${cc.s} p${cc.p} d${cc.d} g${cc.g}${cc.bias ? ' bias' : ''}`;
    it(label, () => {
      const x = pair([cc.n, cc.c, cc.h, cc.w]);
      const w = pair([cc.o, cc.c / cc.g, cc.k[0], cc.k[1]]);
      const b = cc.bias ? pair([cc.o]) : null;
      const p = convP(cc.s, cc.p, cc.d, cc.g);
      const yr = rb.conv2d(x.r, w.r, b ? b.r : null, p);
      const y = nb.conv2d(x.n, w.n, b ? b.n : null, p);
      check(y, yr, 'forward (plain input)');
      const xa = nhwc(x);
      check(nb.conv2d(xa, w.n, b ? b.n : null, p), yr, 'forward (NHWC input)');
      const dy = pair(yr.shape);
      const needs = { input: true, weight: true, bias: cc.bias };
      const gr = rb.conv2dBackward(x.r, w.r, dy.r, p, needs);
      const gn = nb.conv2dBackward(xa, w.n, nhwc(dy), p, needs);
      check(gn.dx, gr.dx, 'dx');
      check(gn.dw, gr.dw, 'dw');
      if (cc.bias) check(gn.db, gr.db, 'db');
      else assert.equal(gn.db, undefined);
      // partial needs: only weight, only bias, only input
      const onlyB = nb.conv2dBackward(x.n, w.n, dy.n, p, { input: false, weight: false, bias: true });
      assert.equal(onlyB.dx, undefined);
      assert.equal(onlyB.dw, undefined);
      check(onlyB.db, rb.conv2dBackward(x.r, w.r, dy.r, p, { input: false, weight: false, bias: true }).db, 'db alone');
      const onlyW = nb.conv2dBackward(x.n, w.n, dy.n, p, { input: false, weight: true, bias: false });
      assert.equal(onlyW.dx, undefined);
      check(onlyW.dw, gr.dw, 'dw alone');
    });
  }

  it('also computes right when oneDNN picks the activation layout (reorders around the conv)', () => {
    nb.setConvLayout('any');
    try {
      for (const cc of [convCases[1], convCases[4], convCases[8], convCases[11]]) {
        const x = pair([cc.n, cc.c, cc.h, cc.w]);
        const w = pair([cc.o, cc.c / cc.g, cc.k[0], cc.k[1]]);
        const b = cc.bias ? pair([cc.o]) : null;
        const p = convP(cc.s, cc.p, cc.d, cc.g);
        const yr = rb.conv2d(x.r, w.r, b ? b.r : null, p);
        check(nb.conv2d(x.n, w.n, b ? b.n : null, p), yr, 'forward');
        const dy = pair(yr.shape);
        const needs = { input: true, weight: true, bias: cc.bias };
        const gn = nb.conv2dBackward(x.n, w.n, dy.n, p, needs), gr = rb.conv2dBackward(x.r, w.r, dy.r, p, needs);
        check(gn.dx, gr.dx, 'dx');
        check(gn.dw, gr.dw, 'dw');
        if (cc.bias) check(gn.db, gr.db, 'db');
      }
      assert.ok(nb.implementations().some((i) => i.key.startsWith('conv_fwd')));
    } finally {
      nb.setConvLayout('nhwc');
    }
  });

  it('sees a weight update made in place (the cached reordered weight is refreshed)', () => {
    const x = pair([2, 16, 7, 7]);
    const w = pair([32, 16, 3, 3]);
    const p = convP(1, 1, 1, 1);
    check(nb.conv2d(x.n, w.n, null, p), rb.conv2d(x.r, w.r, null, p), 'before');
    const dy = pair([2, 32, 7, 7]);
    const needs = { input: true, weight: true, bias: false };
    check(nb.conv2dBackward(x.n, w.n, dy.n, p, needs).dx, rb.conv2dBackward(x.r, w.r, dy.r, p, needs).dx, 'dx before');
    const g = pair(w.r.shape);
    const o: SgdOptions = { lr: 0.5, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false };
    nb.sgdStep(w.n, g.n, null, true, o);
    rb.sgdStep(w.r, g.r, null, true, o);
    check(nb.conv2d(x.n, w.n, null, p), rb.conv2d(x.r, w.r, null, p), 'after sgdStep');
    check(nb.conv2dBackward(x.n, w.n, dy.n, p, needs).dx, rb.conv2dBackward(x.r, w.r, dy.r, p, needs).dx, 'dx after sgdStep');
    nb.addInPlace(w.n, g.n);
    rb.addInPlace(w.r, g.r);
    check(nb.conv2d(x.n, w.n, null, p), rb.conv2d(x.r, w.r, null, p), 'after addInPlace');
  });

  it('creates primitives once per shape', () => {
    const x = pair([2, 8, 6, 6]), w = pair([8, 8, 3, 3]);
    const p = convP(1, 1, 1, 1);
    const dy = pair([2, 8, 6, 6]);
    const needs = { input: true, weight: true, bias: true };
    nb.conv2dBackward(x.n, w.n, dy.n, p, needs);
    nb.conv2d(x.n, w.n, null, p);
    const made = nb.stats().primitivesCreated;
    for (let i = 0; i < 3; i++) {
      nb.conv2d(x.n, w.n, null, p);
      nb.conv2dBackward(x.n, w.n, dy.n, p, needs);
    }
    assert.equal(nb.stats().primitivesCreated, made);
  });

  it("loads libgomp with a short barrier spin unless the user chose one, and leaves the environment as it was", () => {
    // libgomp prints its settings at load with OMP_DISPLAY_ENV=verbose (BENCHMARKS.md: why 1,000)
    const load = (env: Record<string, string>) => {
      const module = new URL('../src/backend/native.js', import.meta.url).href;
      const code = `import(${JSON.stringify(module)}).then((m) => { new m.NativeBackend(); console.log(String(process.env.GOMP_SPINCOUNT)); })`;
      const base = { ...process.env };
      delete base.GOMP_SPINCOUNT;
      delete base.OMP_WAIT_POLICY;
      const r = spawnSync(process.execPath, ['-e', code], { env: { ...base, OMP_DISPLAY_ENV: 'verbose', ...env }, encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      return { spin: /GOMP_SPINCOUNT = '(\d+)'/.exec(r.stderr)?.[1], env: r.stdout.trim() };
    };
    assert.deepEqual(load({}), { spin: '1000', env: 'undefined' });
    assert.deepEqual(load({ GOMP_SPINCOUNT: '20000' }), { spin: '20000', env: '20000' });
    assert.notEqual(load({ OMP_WAIT_POLICY: 'active' }).spin, '1000');
  });

  it("initBackend's threads option: OpenMP's count for every kernel thread before the addon loads, the caller's after", () => {
    const module = new URL('../src/backend/index.js', import.meta.url).href;
    const code = `import(${JSON.stringify(module)}).then(async (m) => {
      const b = await m.initBackend('native', { threads: 1 });
      const first = [process.env.OMP_NUM_THREADS, b.info().threads];
      await m.initBackend('native', { threads: 2 });
      const again = [process.env.OMP_NUM_THREADS, b.info().threads];
      const bad = await m.initBackend('native', { threads: 0 }).then(() => 'accepted', (e) => e.message);
      console.log(JSON.stringify({ first, again, bad }));
    })`;
    const env = { ...process.env };
    delete env.OMP_NUM_THREADS;
    const r = spawnSync(process.execPath, ['-e', code], { env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    // After the load the environment is not touched again: libgomp read it once.
    assert.deepEqual(JSON.parse(r.stdout), { first: ['1', 1], again: ['1', 2], bad: 'threads must be a positive integer, got 0' });
  });

  it('a new thread count gets primitives of its own (oneDNN runs one with its creation count), same results', () => {
    const x = pair([2, 16, 9, 9]), w = pair([32, 16, 3, 3]);
    const p = convP(1, 1, 1, 1);
    const before = nb.info().threads;
    try {
      const y = nb.read(nb.conv2d(x.n, w.n, null, p));
      const other = before > 1 ? 1 : 2;
      nb.setNumThreads(other);
      assert.equal(nb.info().threads, other);
      const made = nb.stats().primitivesCreated;
      const y2 = nb.read(nb.conv2d(x.n, w.n, null, p));
      assert.ok(nb.stats().primitivesCreated > made, 'no primitive was made for the new thread count');
      for (let i = 0; i < y.length; i++) assert.ok(Math.abs(y[i]! - y2[i]!) <= 1e-5 * (1 + Math.abs(y[i]!)), `index ${i}: ${y[i]} vs ${y2[i]}`);
      nb.setNumThreads(before);
      const again = nb.stats().primitivesCreated;
      nb.conv2d(x.n, w.n, null, p);
      assert.equal(nb.stats().primitivesCreated, again, "the first count's primitives are still cached");
    } finally {
      nb.setNumThreads(before);
    }
  });
});

// ---------- batch norm ----------

describe('native backend: batch norm vs reference', () => {
  for (const shape of [[7, 5, 9, 11], [1, 16, 4, 3], [5, 3, 1, 1], [6, 4]] as Shape[]) {
    it(`train, eval, backward and running stats on [${shape}]`, () => {
      const c = shape[1];
      const x = pair(shape, randomArray(shape, -2, 3));
      const gamma = pair([c], randomArray([c], 0.5, 1.5)), beta = pair([c]);
      const rm = pair([c]), rv = pair([c], randomArray([c], 0.5, 2));
      const eps = 1e-5, momentum = 0.1;
      const tn = nb.batchNormTrain(x.n, gamma.n, beta.n, rm.n, rv.n, momentum, eps);
      const tr = rb.batchNormTrain(x.r, gamma.r, beta.r, rm.r, rv.r, momentum, eps);
      check(tn.y, tr.y, 'y');
      check(tn.mean, tr.mean, 'mean');
      check(tn.invStd, tr.invStd, 'invStd');
      check(rm.n, rm.r, 'running mean');
      check(rv.n, rv.r, 'running var (unbiased)');
      // A second step moves the running stats again.
      nb.batchNormTrain(x.n, gamma.n, beta.n, rm.n, rv.n, momentum, eps);
      rb.batchNormTrain(x.r, gamma.r, beta.r, rm.r, rv.r, momentum, eps);
      check(rv.n, rv.r, 'running var after two steps');
      const dy = pair(shape);
      const bn = nb.batchNormBackward(nhwcIf4(x), gamma.n, tn.mean, tn.invStd, dy.n);
      const br = rb.batchNormBackward(x.r, gamma.r, tr.mean, tr.invStd, dy.r);
      check(bn.dx, br.dx, 'dx');
      check(bn.dgamma, br.dgamma, 'dgamma');
      check(bn.dbeta, br.dbeta, 'dbeta');
      check(nb.batchNormEval(x.n, gamma.n, beta.n, rm.n, rv.n, eps), rb.batchNormEval(x.r, gamma.r, beta.r, rm.r, rv.r, eps), 'eval');
    });
  }
});

function nhwcIf4(p: Pair): NativeTensor {
  return p.r.shape.length === 4 ? nhwc(p) : p.n;
}

// ---------- pooling ----------

const poolCases: { shape: Shape; p: Pool2dParams }[] = [
  { shape: [2, 8, 12, 12], p: { kernel: [3, 3], stride: [2, 2], padding: [1, 1], ceilMode: false, countIncludePad: true } },
  { shape: [7, 3, 9, 11], p: { kernel: [2, 2], stride: [2, 2], padding: [0, 0], ceilMode: false, countIncludePad: true } },
  { shape: [1, 5, 9, 9], p: { kernel: [3, 3], stride: [2, 2], padding: [0, 0], ceilMode: true, countIncludePad: true } },
  { shape: [2, 4, 10, 7], p: { kernel: [3, 2], stride: [2, 2], padding: [1, 1], ceilMode: true, countIncludePad: true } },
  { shape: [2, 4, 10, 7], p: { kernel: [3, 2], stride: [2, 2], padding: [1, 1], ceilMode: true, countIncludePad: false } },
  { shape: [3, 6, 8, 8], p: { kernel: [3, 3], stride: [1, 1], padding: [1, 1], ceilMode: false, countIncludePad: false } },
  { shape: [2, 3, 11, 11], p: { kernel: [5, 5], stride: [3, 3], padding: [2, 2], ceilMode: true, countIncludePad: false } },
  { shape: [1, 2, 7, 7], p: { kernel: [7, 7], stride: [7, 7], padding: [3, 3], ceilMode: false, countIncludePad: true } },
];

describe('native backend: pooling vs reference', () => {
  for (const pc of poolCases) {
    const { p } = pc;
    it(`[${pc.shape}] k${p.kernel} s${p.stride} p${p.padding}${p.ceilMode ? ' ceil' : ''}${p.countIncludePad ? ' incl' : ' excl'}`, () => {
      const x = pair(pc.shape);
      const mn = nb.maxPool2d(x.n, p), mr = rb.maxPool2d(x.r, p);
      check(mn.y, mr.y, 'max y');
      assert.deepEqual([...mn.argmax.shape], [...mr.argmax.shape]);
      const dy = pair(mr.y.shape);
      check(nb.maxPool2dBackward(x.n, mn.argmax, dy.n, p), rb.maxPool2dBackward(x.r, mr.argmax, dy.r, p), 'max dx');
      const an = nb.avgPool2d(nhwc(x), p), ar = rb.avgPool2d(x.r, p);
      check(an, ar, 'avg y');
      check(nb.avgPool2dBackward(dy.n, pc.shape, p), rb.avgPool2dBackward(dy.r, pc.shape, p), 'avg dx');
    });
  }

  for (const shape of [[2, 8, 7, 7], [7, 3, 5, 9], [1, 4, 1, 1]] as Shape[]) {
    it(`global average pool on [${shape}]`, () => {
      const x = pair(shape);
      const yr = rb.globalAvgPool(x.r);
      check(nb.globalAvgPool(nhwc(x)), yr, 'y');
      check(nb.reshape(nb.globalAvgPool(nhwc(x)), [shape[0], shape[1]]), rb.reshape(yr, [shape[0], shape[1]]), 'flattened y');
      const dy = pair(yr.shape);
      check(nb.globalAvgPoolBackward(dy.n, shape), rb.globalAvgPoolBackward(dy.r, shape), 'dx');
      // flattened gradient, as a Linear head hands it back after reshape
      const flat = nb.reshape(dy.n, [shape[0], shape[1]]);
      check(nb.globalAvgPoolBackward(nb.reshape(flat, yr.shape), shape), rb.globalAvgPoolBackward(dy.r, shape), 'dx from reshape');
    });
  }
});

// ---------- linear and loss ----------

describe('native backend: linear and cross-entropy vs reference', () => {
  for (const [n, k, m, bias] of [[1, 7, 3, true], [7, 64, 10, false], [5, 2048, 1000, true], [3, 1, 1, true]] as [number, number, number, boolean][]) {
    it(`linear n${n} k${k} m${m}${bias ? ' bias' : ''}`, () => {
      const x = pair([n, k]), w = pair([m, k]), b = bias ? pair([m]) : null;
      const yr = rb.linear(x.r, w.r, b ? b.r : null);
      check(nb.linear(x.n, w.n, b ? b.n : null), yr, 'y');
      const dy = pair(yr.shape);
      const needs = { input: true, weight: true, bias };
      const gn = nb.linearBackward(x.n, w.n, dy.n, needs), gr = rb.linearBackward(x.r, w.r, dy.r, needs);
      check(gn.dx, gr.dx, 'dx');
      check(gn.dw, gr.dw, 'dw');
      if (bias) check(gn.db, gr.db, 'db');
      const onlyB = nb.linearBackward(x.n, w.n, dy.n, { input: false, weight: false, bias: true });
      check(onlyB.db, rb.linearBackward(x.r, w.r, dy.r, { input: false, weight: false, bias: true }).db, 'db alone');
    });
  }

  for (const [n, k, smoothing] of [[1, 3, 0], [7, 10, 0], [7, 10, 0.1], [4, 1000, 0.2]] as [number, number, number][]) {
    it(`cross-entropy n${n} k${k} smoothing ${smoothing}`, () => {
      const logits = pair([n, k], randomArray([n, k], -5, 5));
      const labels = Int32Array.from({ length: n }, () => Math.floor(rand() * k));
      const cn = nb.crossEntropy(logits.n, labels, smoothing), cr = rb.crossEntropy(logits.r, labels, smoothing);
      assert.deepEqual([...cn.loss.shape], []);
      check(cn.loss, cr.loss, 'loss');
      check(cn.probs, cr.probs, 'probs');
      check(nb.crossEntropyBackward(cn.probs, labels, smoothing, 0.7), rb.crossEntropyBackward(cr.probs, labels, smoothing, 0.7), 'dlogits');
    });
  }
});

// ---------- channel plumbing ----------

describe('native backend: concat, split, shortcut A vs reference', () => {
  it('concatChannels and splitChannels on 4-D and 2-D tensors', () => {
    for (const rest of [[5, 3], []] as number[][]) {
      const parts = [2, 5, 1].map((c) => pair([3, c, ...rest]));
      // mix a plain and an NHWC input
      const natives = parts.map((p, i) => (i === 1 && rest.length === 2 ? nhwc(p) : p.n));
      const cn = nb.concatChannels(natives), cr = rb.concatChannels(parts.map((p) => p.r));
      check(cn, cr, `concat [${rest}]`);
      const sn = nb.splitChannels(cn, [4, 0, 4]), sr = rb.splitChannels(cr, [4, 0, 4]);
      assert.equal(sn.length, 3);
      for (let i = 0; i < 3; i++) check(sn[i], sr[i], `split ${i} [${rest}]`);
    }
  });

  for (const [shape, outC, stride] of [[[2, 16, 8, 8], 32, 2], [[3, 5, 7, 9], 8, 2], [[1, 4, 5, 5], 4, 1], [[2, 3, 6, 6], 10, 1]] as [Shape, number, number][]) {
    it(`shortcutA [${shape}] -> ${outC} channels, stride ${stride}`, () => {
      const x = pair(shape);
      const yr = rb.shortcutA(x.r, outC, stride);
      check(nb.shortcutA(x.n, outC, stride), yr, 'y');
      check(nb.shortcutA(nhwc(x), outC, stride), yr, 'y from NHWC');
      const dy = pair(yr.shape);
      check(nb.shortcutABackward(dy.n, shape, stride), rb.shortcutABackward(dy.r, shape, stride), 'dx');
    });
  }
});

// ---------- optimizer ----------

describe('native backend: sgdStep vs reference', () => {
  const opts: SgdOptions[] = [
    { lr: 0.1, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false },
    { lr: 0.1, momentum: 0, dampening: 0, weightDecay: 1e-2, nesterov: false },
    { lr: 0.05, momentum: 0.9, dampening: 0, weightDecay: 5e-4, nesterov: false },
    { lr: 0.05, momentum: 0.9, dampening: 0.3, weightDecay: 0, nesterov: false },
    { lr: 0.05, momentum: 0.9, dampening: 0, weightDecay: 1e-4, nesterov: true },
  ];
  for (const o of opts) {
    it(`lr ${o.lr} momentum ${o.momentum} dampening ${o.dampening} wd ${o.weightDecay}${o.nesterov ? ' nesterov' : ''}`, () => {
      for (const shape of [[16, 8, 3, 3], [10], [512, 300]] as Shape[]) {
        const p = pair(shape);
        const buf = o.momentum !== 0 ? pair(shape, new Float32Array(numel(shape))) : null;
        for (let step = 0; step < 3; step++) {
          const g = pair(shape);
          nb.sgdStep(p.n, g.n, buf ? buf.n : null, step === 0, o);
          rb.sgdStep(p.r, g.r, buf ? buf.r : null, step === 0, o);
          check(p.n, p.r, `param after step ${step}`, 1e-5);
          if (buf) check(buf.n, buf.r, `buffer after step ${step}`, 1e-5);
        }
      }
    });
  }
});

// ---------- implementations chosen for the real networks ----------

interface NetConv { c: number; o: number; k: number; s: number; h: number; g: number }

// Every distinct convolution of ResNet-50 and ResNeXt-50 32x4d (224 input; torchvision v1.5 puts
// the stride on the 3x3) and of the CIFAR ResNets (32 input).
function bottleneckStage(inCh: number, width: number, out: number, hin: number, stride: number, groups: number): NetConv[] {
  const hout = hin / stride;
  return [
    { c: inCh, o: width, k: 1, s: 1, h: hin, g: 1 },
    { c: width, o: width, k: 3, s: stride, h: hin, g: groups },
    { c: width, o: out, k: 1, s: 1, h: hout, g: 1 },
    { c: inCh, o: out, k: 1, s: stride, h: hin, g: 1 }, // downsample
    { c: out, o: width, k: 1, s: 1, h: hout, g: 1 },
    { c: width, o: width, k: 3, s: 1, h: hout, g: groups },
  ];
}
const resnetConvs: NetConv[] = [
  { c: 3, o: 64, k: 7, s: 2, h: 224, g: 1 },
  ...bottleneckStage(64, 64, 256, 56, 1, 1),
  ...bottleneckStage(256, 128, 512, 56, 2, 1),
  ...bottleneckStage(512, 256, 1024, 28, 2, 1),
  ...bottleneckStage(1024, 512, 2048, 14, 2, 1),
  ...bottleneckStage(64, 128, 256, 56, 1, 32),
  ...bottleneckStage(256, 256, 512, 56, 2, 32),
  ...bottleneckStage(512, 512, 1024, 28, 2, 32),
  ...bottleneckStage(1024, 1024, 2048, 14, 2, 32),
  { c: 3, o: 16, k: 3, s: 1, h: 32, g: 1 },
  { c: 16, o: 16, k: 3, s: 1, h: 32, g: 1 },
  { c: 16, o: 32, k: 3, s: 2, h: 32, g: 1 },
  { c: 32, o: 32, k: 3, s: 1, h: 16, g: 1 },
  { c: 32, o: 64, k: 3, s: 2, h: 16, g: 1 },
  { c: 64, o: 64, k: 3, s: 1, h: 8, g: 1 },
];

describe('native backend: no reference (ref:) kernels on ResNet/ResNeXt shapes', () => {
  it('every primitive of a ResNet-50 / ResNeXt-50 / CIFAR training step is optimized', () => {
    nb.clearImplementations();
    const n = 1;
    const seen = new Set<string>();
    const seenOut = new Set<string>();
    for (const cv of resnetConvs) {
      const key = JSON.stringify(cv);
      if (seen.has(key)) continue;
      seen.add(key);
      const x = nb.zeros([n, cv.c, cv.h, cv.h]);
      const w = nb.zeros([cv.o, cv.c / cv.g, cv.k, cv.k]);
      const p = convP(cv.s, (cv.k - 1) / 2, 1, cv.g);
      const y = nb.conv2d(x, w, null, p);
      const r = nb.conv2dBackward(x, w, y, p, { input: cv.c !== 3, weight: true, bias: false });
      for (const t of [x, w, r.dx, r.dw]) if (t) nb.dispose(t);
      // the ops that follow a conv, on its NHWC output (once per output shape)
      const outKey = y.shape.join('x');
      if (!seenOut.has(outKey)) {
        seenOut.add(outKey);
        const c = () => nb.zeros([cv.o]);
        const bn = nb.batchNormTrain(y, c(), c(), c(), c(), 0.1, 1e-5);
        const a = nb.relu(bn.y);
        nb.batchNormBackward(y, c(), bn.mean, bn.invStd, nb.reluBackward(a, nb.add(a, y)));
        for (const t of [bn.y, bn.mean, bn.invStd, a]) nb.dispose(t);
      }
      nb.dispose(y);
    }
    const x = nb.relu(nb.zeros([n, 64, 112, 112]));
    const pool = { kernel: [3, 3], stride: [2, 2], padding: [1, 1], ceilMode: false, countIncludePad: true } as const;
    const mp = nb.maxPool2d(x, pool);
    nb.maxPool2dBackward(x, mp.argmax, mp.y, pool);
    const f = nb.relu(nb.zeros([n, 2048, 7, 7]));
    const gp = nb.globalAvgPool(f);
    nb.globalAvgPoolBackward(gp, f.shape);
    const feat = nb.reshape(gp, [n, 2048]);
    const fw = nb.zeros([1000, 2048]);
    const logits = nb.linear(feat, fw, nb.zeros([1000]));
    nb.linearBackward(feat, fw, logits, { input: true, weight: true, bias: true });

    const impls = nb.implementations();
    assert.ok(impls.length > 50, `expected many primitives, saw ${impls.length}`);
    const bad = impls.filter((i) => i.impl.startsWith('ref') || /gemm:ref/.test(i.impl));
    assert.deepEqual(bad, [], `reference kernels chosen:\n${bad.map((b) => `${b.key} -> ${b.impl}`).join('\n')}`);
  });
});
