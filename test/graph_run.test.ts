// The lowered graph (models/graph.ts) is the one description of a network that the plan, the ONNX
// exporter and the trace read. Run eagerly node by node with the modules it names (runGraph), it must
// compute exactly what the module's own forward computes: otherwise a reader of the graph would
// build a different network than the one trained. Covered: basic and bottleneck blocks, option-A
// shortcuts, grouped convs, ResNet-D's deep stem and average-pool shortcut, and ResNeXt form (b)'s
// concatenation.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { initBackend } from '../src/backend/index.js';
import { createModel, runGraph, type Lowerable } from '../src/models/index.js';
import { resnextBlock } from '../src/models/resnext_forms.js';
import { manualSeed, type Module } from '../src/nn/index.js';
import { Tensor, noGrad } from '../src/tensor/index.js';

function randomInput(shape: number[], seed: number): Tensor {
  let s = seed;
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1)).map(() => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  });
  return Tensor.fromArray(data, shape);
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

describe('runGraph: the lowered graph computes the module forward', () => {
  before(async () => { await initBackend(); });

  for (const [name, input, classes] of [
    ['resnet20', [3, 32, 32], 10], ['resnet18', [3, 64, 64], 7], ['resnet50', [3, 64, 64], 5],
    ['resnext50_32x4d', [3, 64, 64], 5], ['resnet26d', [3, 64, 64], 5],
  ] as const) {
    it(`${name} at [${input.join(', ')}]: every value made once, the output equal to forward`, () => {
      manualSeed(7);
      const model = createModel(name, { numClasses: classes }).eval();
      const g = model.lower(input);
      const x = randomInput([2, ...input], 11);
      noGrad(() => {
        const want = model.forward(x);
        const seen: number[] = [];
        const got = runGraph(g, model, x, (id, node, v) => {
          seen.push(id);
          assert.deepEqual(v.shape, [2, ...node.out], `${node.path} (${node.op}) shape`);
        });
        assert.deepEqual(seen, g.nodes.map((_, i) => i + 1));
        assert.deepEqual(got.shape, want.shape);
        // The same kernels in the same order: equal up to summation-order noise only.
        assert.ok(maxAbsDiff(got.toArray(), want.toArray()) <= 1e-5 * Math.max(1, ...Array.from(want.toArray(), Math.abs)));
      });
    });
  }

  it('a ResNeXt form (b) block, lowered on its own, concatenates its paths as its forward does', () => {
    manualSeed(3);
    const block = resnextBlock('b', { inChannels: 64, outChannels: 128, cardinality: 4, pathWidth: 4, stride: 2 }).eval() as
      Module & Lowerable & { forward(x: Tensor): Tensor };
    const g = block.lower([64, 8, 8]);
    assert.ok(g.nodes.some((n) => n.op === 'concat'));
    const x = randomInput([2, 64, 8, 8], 5);
    noGrad(() => {
      const want = block.forward(x);
      assert.ok(maxAbsDiff(runGraph(g, block, x).toArray(), want.toArray()) <= 1e-5 * Math.max(1, ...Array.from(want.toArray(), Math.abs)));
    });
  });

  it('names the path when the graph and the module disagree', () => {
    const model = createModel('resnet20', { numClasses: 10 }).eval();
    const g = model.lower([3, 32, 32]);
    const other = createModel('resnet18', { numClasses: 10 }).eval();
    assert.throws(() => noGrad(() => runGraph(g, other, randomInput([1, 3, 32, 32], 1))), /runGraph: resnet20 has no module at layer1\.2\.conv1/);
  });
});
