// The ResNeXt paper's claim, run: its three block forms compute the same function. Form (c) gets
// random weights and BN statistics; its weights are converted to (a) and (b); all three must agree
// within 1e-5 in eval mode and in training mode (batch statistics), and in their gradients.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { initBackend } from '../src/backend/index.js';
import { BasicBlock, convertDepthTwoState, convertResNeXtBlockState, depthTwoBlock, resnextBlock, type ResNeXtBlockConfig, type ResNeXtForm } from '../src/models/index.js';
import { InitRandom, type Module, type StateDict } from '../src/nn/index.js';
import { Tensor, noGrad, tidy } from '../src/tensor/index.js';
import { assertClose } from './helpers.js';

before(async () => {
  await initBackend();
});

/** Random weights, non-trivial BN affine and running statistics, in place of the defaults. */
function randomize(sd: StateDict, rng: InitRandom): StateDict {
  const out: StateDict = new Map();
  for (const [k, e] of sd) {
    const data = new Float32Array(e.data.length);
    for (let i = 0; i < data.length; i++) {
      if (k.endsWith('num_batches_tracked')) data[i] = 3;
      else if (k.endsWith('running_var')) data[i] = 0.5 + rng.next();
      else if (k.endsWith('running_mean') || k.endsWith('bias')) data[i] = 0.2 * rng.normal();
      else if (/bn\d\.weight|downsample\.1\.weight/.test(k)) data[i] = 0.5 + rng.next();
      else data[i] = rng.normal() * Math.sqrt(2 / (e.shape[1] * (e.shape[2] ?? 1) * (e.shape[3] ?? 1)));
    }
    out.set(k, { ...e, data });
  }
  return out;
}

function input(shape: number[], rng: InitRandom): Tensor {
  return Tensor.fromArray(Float32Array.from({ length: shape.reduce((a, b) => a * b) }, () => rng.normal()), shape, { requiresGrad: true });
}

const configs: [string, ResNeXtBlockConfig][] = [
  ['identity shortcut, C=8, d=4', { inChannels: 32, outChannels: 32, cardinality: 8, pathWidth: 4 }],
  ['projection shortcut with stride 2, C=4, d=3', { inChannels: 12, outChannels: 24, cardinality: 4, pathWidth: 3, stride: 2 }],
];

describe('ResNeXt block forms (a), (b), (c)', () => {
  for (const [label, config] of configs) {
    const rng = new InitRandom(11);
    const blocks = {} as Record<ResNeXtForm, Module>;
    let grouped: StateDict;

    it(`${label}: weights convert c -> a, b and load into those forms`, () => {
      blocks.c = resnextBlock('c', config);
      grouped = randomize(blocks.c.stateDict(), rng);
      blocks.c.loadStateDict(grouped);
      for (const form of ['a', 'b'] as const) {
        blocks[form] = resnextBlock(form, config);
        const converted = convertResNeXtBlockState(grouped, 'c', form, config.cardinality);
        assert.deepEqual([...converted.keys()], [...blocks[form].stateDict().keys()], `form ${form} keys`);
        blocks[form].loadStateDict(converted);
      }
      const keysA = [...blocks.a.stateDict().keys()];
      assert.ok(keysA.includes('paths.0.conv3.weight') && keysA.includes('bn3.weight') && !keysA.includes('conv3.weight'));
      const keysB = [...blocks.b.stateDict().keys()];
      assert.ok(keysB.includes('paths.0.conv2.weight') && keysB.includes('conv3.weight') && !keysB.includes('paths.0.conv3.weight'));
    });

    it(`${label}: conversions round-trip exactly (a -> c, b -> c, a -> b -> c)`, () => {
      for (const from of ['a', 'b'] as const) {
        const back = convertResNeXtBlockState(blocks[from].stateDict(), from, 'c', config.cardinality);
        assert.deepEqual([...back.keys()], [...grouped.keys()]);
        for (const [k, e] of grouped) assert.deepEqual(back.get(k)!.data, e.data, `${from} -> c: ${k}`);
      }
      const viaB = convertResNeXtBlockState(convertResNeXtBlockState(blocks.a.stateDict(), 'a', 'b', config.cardinality), 'b', 'c', config.cardinality);
      for (const [k, e] of grouped) assert.deepEqual(viaB.get(k)!.data, e.data, `a -> b -> c: ${k}`);
    });

    for (const mode of ['eval', 'train'] as const) {
      it(`${label}: the three forms agree within 1e-5 in ${mode} mode, outputs and input gradients`, () => {
        const shape = [3, config.inChannels, 9, 7];
        const x = input(shape, new InitRandom(5));
        const results = {} as Record<ResNeXtForm, { y: Float32Array; dx: Float32Array }>;
        for (const form of ['a', 'b', 'c'] as const) {
          const block = blocks[form].train(mode === 'train');
          results[form] = tidy(() => {
            const y = block.forward(x);
            const values = y.toArray();
            // A fixed random cotangent: the gradient of <y, g> with respect to x.
            const g = Tensor.fromArray(Float32Array.from({ length: values.length }, (_, i) => Math.sin(i * 1.7)), [...y.shape]);
            let dx: Float32Array = new Float32Array(0);
            if (mode === 'train') {
              y.backward(g);
              dx = x.grad!.toArray();
              x.grad!.dispose();
              x.grad = null;
              block.zeroGrad();
            }
            return { y: values, dx } as never;
          }) as { y: Float32Array; dx: Float32Array };
        }
        for (const form of ['a', 'b'] as const) {
          assertClose(results[form].y, results.c.y, 1e-5, `${mode}: form ${form} vs c output`);
          if (mode === 'train') assertClose(results[form].dx, results.c.dx, 1e-5, `${mode}: form ${form} vs c input gradient`);
        }
        x.dispose();
      });
    }

    it(`${label}: training updates the same running statistics in every form`, () => {
      const stats = {} as Record<ResNeXtForm, StateDict>;
      const x = input([2, config.inChannels, 6, 6], new InitRandom(9));
      for (const form of ['a', 'b', 'c'] as const) {
        noGrad(() => tidy(() => { blocks[form].train().forward(x); }));
        stats[form] = form === 'c' ? blocks.c.stateDict() : convertResNeXtBlockState(blocks[form].stateDict(), form, 'c', config.cardinality);
      }
      for (const form of ['a', 'b'] as const) {
        for (const [k, e] of stats.c) assertClose(stats[form].get(k)!.data, e.data, 1e-5, `form ${form}: ${k}`);
      }
      x.dispose();
      for (const b of Object.values(blocks)) b.dispose();
    });
  }

  it('rejects unknown forms and state dicts of another shape', () => {
    assert.throws(() => resnextBlock('d' as ResNeXtForm, configs[0][1]), /form must be 'a', 'b' or 'c'/);
    assert.throws(() => convertResNeXtBlockState(new Map(), 'a', 'c', 4), /has no "paths.0.conv1.weight"/);
  });
});

// ResNeXt's Fig. 4: at depth 2, aggregating C paths is a basic block C*d wide, nothing more.
describe('a ResNeXt block of depth 2 is a wider basic block', () => {
  for (const [name, config] of configs) {
    it(`${name}: the paths form and the wide form agree, converted either way`, () => {
      const rng = new InitRandom(7);
      const wide = depthTwoBlock('wide', config);
      assert.ok(wide instanceof BasicBlock, 'the wide form is an ordinary torchvision BasicBlock');
      const wideWeights = randomize(wide.stateDict(), rng);
      wide.loadStateDict(wideWeights);
      const paths = depthTwoBlock('paths', config);
      const pathWeights = convertDepthTwoState(wideWeights, 'wide', 'paths', config.cardinality);
      paths.loadStateDict(pathWeights);
      const back = convertDepthTwoState(pathWeights, 'paths', 'wide', config.cardinality);
      assert.deepEqual([...back.keys()], [...wideWeights.keys()]);
      for (const [k, v] of wideWeights) assert.deepEqual([...back.get(k)!.data], [...v.data], `${k} survives the round trip`);
      const x = input([2, config.inChannels, 9, 9], rng);
      for (const mode of ['eval', 'train'] as const) {
        const run = (m: Module) => { m.train(mode === 'train'); return noGrad(() => tidy(() => m.forward(x).toArray() as never)) as Float32Array; };
        assertClose(run(paths), run(wide), 1e-5, `${name}, ${mode} mode`);
      }
      x.dispose();
      wide.dispose();
      paths.dispose();
    });
  }
});
