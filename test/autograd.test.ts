// The tape against PyTorch: a small conv-bn-relu-add-pool-linear net gives PyTorch's loss, parameter
// gradients and running statistics (fixture made by scripts/fixtures/make_small_net.py), on every backend.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Backend } from '../src/backend/types.js';
import {
  Tensor, add, batchNorm, conv2d, crossEntropy, flatten, globalAvgPool, linear, maxPool2d, mulScalar, noGrad, relu, tidy,
} from '../src/tensor/index.js';
import { assertClose, readJsonFixture, testBackends } from './helpers.js';

interface Fixture {
  input: { shape: number[]; data: number[] };
  labels: number[];
  params: Record<string, { shape: number[]; data: number[] }>;
  initial_stats: Record<string, number[]>;
  loss: number;
  logits: number[];
  grads: Record<string, number[]>;
  stats_after: Record<string, number[]>;
  eval_logits: number[];
}

const fx = readJsonFixture<Fixture>('small_net.json');
const backends = await testBackends();

function smallNet(b: Backend) {
  const p: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(fx.params)) p[k] = Tensor.fromArray(new Float32Array(v.data), v.shape, { requiresGrad: true, backend: b });
  const s: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(fx.initial_stats)) s[k] = Tensor.fromArray(new Float32Array(v), [v.length], { backend: b });
  const x = Tensor.fromArray(new Float32Array(fx.input.data), fx.input.shape, { backend: b });
  const forward = (training: boolean) => {
    let h = conv2d(x, p['conv1.weight'], null, { padding: 1 });
    h = batchNorm(h, p['bn1.weight'], p['bn1.bias'], s['bn1.running_mean'], s['bn1.running_var'], { training });
    const a = relu(h);
    h = conv2d(a, p['conv2.weight'], p['conv2.bias'], { padding: 1, groups: 2 });
    h = batchNorm(h, p['bn2.weight'], p['bn2.bias'], s['bn2.running_mean'], s['bn2.running_var'], { training });
    h = relu(add(h, a));
    h = maxPool2d(h, { kernel: 3, stride: 2, padding: 1 });
    h = conv2d(h, p['conv3.weight'], null, { stride: 2 });
    return linear(flatten(globalAvgPool(h)), p['fc.weight'], p['fc.bias']);
  };
  return { p, s, x, forward };
}

for (const b of backends) {
  describe(`autograd on the ${b.name} backend`, () => {
    it('matches PyTorch loss, gradients and running statistics', () => {
      const { p, s, forward } = smallNet(b);
      tidy(() => {
        const logits = forward(true);
        assertClose(logits.toArray(), fx.logits, 1e-4, 'logits');
        const loss = crossEntropy(logits, fx.labels, { labelSmoothing: 0.1 });
        assertClose([loss.item()], [fx.loss], 1e-5, 'loss');
        loss.backward();
      });
      for (const [k, g] of Object.entries(fx.grads)) {
        assert.ok(p[k].grad, `${k} has a gradient`);
        assertClose(p[k].grad!.toArray(), g, 1e-4, `grad ${k}`);
      }
      for (const [k, v] of Object.entries(fx.stats_after)) assertClose(s[k].toArray(), v, 1e-5, k);
      const evalLogits = noGrad(() => tidy(() => forward(false).toArray()));
      assertClose(evalLogits, fx.eval_logits, 1e-4, 'eval logits');
    });

    it('accumulates gradients over two backward passes like PyTorch', () => {
      const { p, forward } = smallNet(b);
      for (let i = 0; i < 2; i++) {
        tidy(() => crossEntropy(forward(true), fx.labels, { labelSmoothing: 0.1 }).backward());
      }
      // Running statistics moved between the passes, but batch-statistics gradients do not depend on them.
      assertClose(p['fc.bias'].grad!.toArray(), fx.grads['fc.bias'].map((v) => 2 * v), 1e-4, 'doubled fc.bias grad');
    });

    it('routes a gradient used twice (x + x, x * k) correctly', () => {
      const x = Tensor.fromArray([1, -2, 3, 4], [1, 1, 2, 2], { requiresGrad: true, backend: b });
      tidy(() => {
        const y = add(add(x, x), mulScalar(x, 3)); // 5x
        const w = Tensor.fromArray([1, 1, 1, 1], [1, 4], { backend: b });
        linear(flatten(y), w).backward();
      });
      assertClose(x.grad!.toArray(), [5, 5, 5, 5], 1e-6, 'd(5x)/dx');
    });

    it('records nothing under noGrad', () => {
      const w = Tensor.fromArray([1, 2, 3, 4], [1, 1, 2, 2], { requiresGrad: true, backend: b });
      const y = noGrad(() => relu(w));
      assert.equal(y.requiresGrad, false);
      assert.equal(y.gradNode, null);
      assert.throws(() => y.backward(), /does not require grad/);
      y.dispose();
      w.dispose();
    });

    it('tidy frees what it made except what it returns', () => {
      const x = Tensor.fromArray([1, -1], [1, 2, 1, 1], { backend: b });
      let inner: Tensor | undefined;
      const kept = tidy(() => {
        inner = relu(x);
        return relu(inner);
      });
      assert.equal(inner!.isDisposed, true);
      assert.equal(kept.isDisposed, false);
      assert.equal(x.isDisposed, false);
      assert.deepEqual([...kept.toArray()], [1, 0]);
      kept.dispose();
      x.dispose();
    });

    it('a disposed tensor used again is an Error naming it, not a crash', () => {
      const x = Tensor.fromArray([1, 2, 3, 4], [1, 1, 2, 2], { backend: b });
      x.dispose();
      x.dispose(); // twice is fine
      assert.throws(() => relu(x), /tensor \[1,1,2,2\] was disposed/);
      assert.throws(() => x.toArray(), /disposed/);
    });
  });
}

describe('argument checks name the op and the shapes', () => {
  const b = backends[0];
  const t = (shape: number[]) => Tensor.zeros(shape, { backend: b });
  it('conv2d', () => {
    assert.throws(() => conv2d(t([1, 3, 8, 8]), t([8, 4, 3, 3])), /conv2d: input has 3 channels but the weight expects 4/);
    assert.throws(() => conv2d(t([1, 6, 8, 8]), t([8, 3, 3, 3]), null, { groups: 4 }), /conv2d: input channels 6 are not divisible by groups 4/);
    assert.throws(() => conv2d(t([1, 3, 2, 2]), t([8, 3, 5, 5])), /conv2d: the kernel does not fit/);
    assert.throws(() => conv2d(t([1, 3, 8, 8]), t([8, 3, 3, 3]), null, { stride: 0 }), /conv2d: stride\[0\] must be an integer >= 1, got 0/);
    assert.throws(() => conv2d(t([1, 3, 8, 8]), t([8, 3, 3, 3]), null, { padding: NaN }), /padding\[0\] must be an integer >= 0, got NaN/);
    assert.throws(() => conv2d(t([3, 8, 8]), t([8, 3, 3, 3])), /conv2d: input must be 4-D NCHW, got \[3,8,8\]/);
  });
  it('sizes', () => {
    assert.throws(() => Tensor.zeros([2, 0, 3], { backend: b }), /shape \[2,0,3\] must hold positive integers/);
    assert.throws(() => Tensor.zeros([2, -1], { backend: b }), /positive integers/);
    assert.throws(() => Tensor.zeros([NaN], { backend: b }), /positive integers/);
    assert.throws(() => Tensor.fromArray([1, 2, 3], [2, 2], { backend: b }), /3 values do not fill shape \[2,2\]/);
  });
  it('pooling, batch norm, linear, loss, add', () => {
    assert.throws(() => maxPool2d(t([1, 1, 4, 4]), { kernel: 3, padding: 2 }), /max_pool2d: padding \[2,2\] must be at most half the kernel/);
    assert.throws(() => batchNorm(t([1, 4, 1, 1]), t([4]), t([4]), t([4]), t([4]), { training: true }), /more than one value per channel/);
    assert.throws(() => batchNorm(t([2, 4, 3, 3]), t([3]), t([4]), t([4]), t([4]), { training: true }), /weight must be \[4\]/);
    assert.throws(() => linear(t([2, 5]), t([3, 4])), /linear: input \[2,5\] has 5 features but weight \[3,4\] expects 4/);
    assert.throws(() => crossEntropy(t([2, 3]), [0, 3]), /label 3 at index 1 is outside \[0, 3\)/);
    assert.throws(() => crossEntropy(t([2, 3]), [0]), /1 labels for 2 rows/);
    assert.throws(() => add(t([1, 2]), t([2, 1])), /add: shapes differ: \[1,2\] and \[2,1\]/);
  });
});
