// The compiled inference plan (src/infer, native/inference.cc) against the unfused eval path
// (model.eval() + a noGrad forward on the same engine): ImageNet nets with bottleneck, basic and
// grouped blocks on a small non-square input, CIFAR ResNet-20 (option A) and a plain net, at batch
// 1 and 3 from one plan, with random BN statistics so that the folding is not an identity.
// Tolerance: 1e-4 of the largest logit. Also: the kernels oneDNN chose are no reference ones, bad
// input and use after dispose() give clear errors, and the reference backend is refused.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { initBackend, referenceBackend, setDefaultBackend } from '../src/backend/index.js';
import { compileForInference } from '../src/infer/index.js';
import { createModel, type ResNet } from '../src/models/index.js';
import { BatchNorm2d, manualSeed } from '../src/nn/index.js';
import { Tensor, noGrad, tidy } from '../src/tensor/index.js';
import { assertClose } from './helpers.js';

const TOL = 1e-4;

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

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
