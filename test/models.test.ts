// The model family against its oracles: REFERENCE.md's parameter and MAC counts (measured with
// PyTorch), torchvision's state-dict keys and shapes (fixture from scripts/fixtures/models_keys.py),
// and the analytic walk against the modules and a real forward pass.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { initBackend } from '../src/backend/index.js';
import {
  BasicBlock, ResNet, ResidualBlock, cifarResNeXt, createModel, featureNames, getModel, imagenetSpecs, modelNames, resnet18, resnet20,
  resnet50, resnetSpec, traceModel, traceNet, type ModelOptions, type TraceResult,
} from '../src/models/index.js';
import { BatchNorm2d, Conv2d, Linear, manualSeed } from '../src/nn/index.js';
import { Tensor, crossEntropy, noGrad, tidy } from '../src/tensor/index.js';
import { readJsonFixture } from './helpers.js';

before(async () => {
  await initBackend();
});

// REFERENCE.md: params and GMACs at 3x224x224 (ImageNet), MMACs at 3x32x32 (CIFAR), batch 1.
const IMAGENET: [string, number, string][] = [
  ['resnet18', 11_689_512, '1.814'],
  ['resnet34', 21_797_672, '3.664'],
  ['resnet50', 25_557_032, '4.089'],
  ['resnet101', 44_549_160, '7.801'],
  ['resnet152', 60_192_808, '11.514'],
  ['resnext50_32x4d', 25_028_904, '4.230'],
  ['resnext101_32x8d', 88_791_336, '16.414'],
  ['resnext101_64x4d', 83_455_272, '15.460'],
  ['wide_resnet50_2', 68_883_240, '11.398'],
  ['wide_resnet101_2', 126_886_696, '22.753'],
];
const CIFAR: [string, number, string][] = [
  ['resnet20', 269_722, '40.6'],
  ['resnet32', 464_154, '68.9'],
  ['resnet44', 658_586, '97.2'],
  ['resnet56', 853_018, '125.5'],
  ['resnet110', 1_727_962, '252.9'],
  ['resnet1202', 19_421_274, '2829.2'],
];

interface KeysFixture {
  models: Record<string, [string, number[]][]>;
}
const torchvisionKeys = readJsonFixture<KeysFixture>('models/torchvision_keys.json').models;

/** The state-dict entries the walk predicts, in order. */
function walkState(t: TraceResult): [string, number[]][] {
  return t.layers.flatMap((l) => l.state.map((s): [string, number[]] => [s.key, s.shape]));
}

function moduleState(m: ResNet): [string, number[]][] {
  return [...m.stateDict()].map(([k, e]) => [k, e.shape]);
}

describe('parameter and MAC counts (REFERENCE.md)', () => {
  for (const [name, params, gmacs] of IMAGENET) {
    it(`${name}: ${params} params, ${gmacs} GMACs at 224x224`, () => {
      const t = traceModel(name);
      assert.equal(t.params, params);
      assert.equal((t.macs / 1e9).toFixed(3), gmacs);
      assert.deepEqual(t.outputShape, [1, 1000]);
    });
  }
  for (const [name, params, mmacs] of CIFAR) {
    it(`${name}: ${params} params, ${mmacs} MMACs at 32x32`, () => {
      const t = traceModel(name);
      assert.equal(t.params, params);
      assert.equal((t.macs / 1e6).toFixed(1), mmacs);
      // The plain twin has the same layers and, with option A shortcuts, the same parameters.
      const plain = name.replace('resnet', 'plain');
      if (modelNames().includes(plain)) assert.equal(traceModel(plain).params, params);
    });
  }
  it('ResNeXt-29: 34.4M (8x64d) and 68.1M (16x64d) as in the ResNeXt paper', () => {
    assert.equal(traceModel('resnext29_8x64d').params, 34_426_698);
    assert.equal(traceModel('resnext29_16x64d').params, 68_155_210);
  });
  it('Fashion-MNIST ResNet-20 with one input channel: 269,434 params (REFERENCE.md)', () => {
    assert.equal(traceModel('resnet20', [1, 28, 28], { inChannels: 1 }).params, 269_434);
  });
});

describe('torchvision state-dict keys and shapes', () => {
  for (const [name] of IMAGENET) {
    it(`${name}: the walk's entries equal torchvision's, in order`, () => {
      assert.deepEqual(walkState(traceModel(name)), torchvisionKeys[name]);
    });
  }
  // Building a model draws all its weights, so the modules are checked on one of each structure.
  for (const name of ['resnet18', 'resnet34', 'resnet50', 'resnext50_32x4d', 'wide_resnet50_2']) {
    it(`${name}: the built module's state dict equals torchvision's, in order`, () => {
      const m = createModel(name, {}, { initWeights: false });
      try {
        assert.deepEqual(moduleState(m), torchvisionKeys[name]);
      } finally {
        m.dispose();
      }
    });
  }
  it('every small registry model: the walk predicts the module state dict exactly', () => {
    for (const name of modelNames()) {
      if (traceModel(name).params > 2_000_000) continue;
      const m = createModel(name, {}, { initWeights: false });
      try {
        assert.deepEqual(moduleState(m), walkState(traceModel(name)), name);
        assert.equal(m.parameterCount(), traceModel(name).params, name);
      } finally {
        m.dispose();
      }
    }
  });
  it('plain18 is resnet18 without any shortcut (no downsample entries)', () => {
    const expected = torchvisionKeys.resnet18.filter(([k]) => !k.includes('.downsample.'));
    assert.deepEqual(walkState(traceModel('plain18')), expected);
  });
  it('CIFAR option B adds projections only where a stage changes shape', () => {
    const keys = walkState(traceModel('resnet20', undefined, { shortcut: 'B' })).map(([k]) => k);
    assert.deepEqual(keys.filter((k) => k.includes('downsample')).map((k) => k.split('.').slice(0, 2).join('.')),
      [...Array(6).fill('layer2.0'), ...Array(6).fill('layer3.0')]);
  });
});

describe('builders and options', () => {
  it('BasicBlock models refuse groups, widthPerGroup and dilation as torchvision does', () => {
    assert.throws(() => imagenetSpecs.resnet18({ groups: 2 }), /BasicBlock only supports groups=1 and widthPerGroup=64/);
    assert.throws(() => imagenetSpecs.resnet34({ widthPerGroup: 32 }), /BasicBlock only supports/);
    assert.throws(() => imagenetSpecs.resnet18({ replaceStrideWithDilation: [false, false, true] }), /dilation > 1 is not supported in BasicBlock/);
  });
  it('builders that fix groups or width refuse a conflicting value', () => {
    assert.throws(() => imagenetSpecs.resnext50_32x4d({ groups: 8 }), /groups is fixed at 32/);
    assert.doesNotThrow(() => imagenetSpecs.resnext50_32x4d({ groups: 32 }));
  });
  it('the width formula int(planes * widthPerGroup / 64) * groups', () => {
    const spec = resnetSpec('custom', 'bottleneck', [1, 1, 1, 1], { groups: 3, widthPerGroup: 10 });
    // planes 64, 128, 256, 512 -> floor(10, 20, 40, 80) * 3
    assert.deepEqual(spec.stages.map((s) => s[0].width), [30, 60, 120, 240]);
    assert.deepEqual(imagenetSpecs.resnext101_64x4d().stages.map((s) => s[0].width), [256, 512, 1024, 2048]);
  });
  it('stride sits on the 3x3 conv and projections only on the first block of a stage', () => {
    const t = traceModel('resnet50');
    const spec = imagenetSpecs.resnet50();
    assert.deepEqual(spec.stages.map((s) => s.map((b) => b.shortcut === 'projection')), [
      [true, false, false], [true, false, false, false], [true, false, false, false, false, false], [true, false, false]]);
    assert.deepEqual(spec.stages.map((s) => s[0].stride), [1, 2, 2, 2]);
    const conv2 = t.layers.find((l) => l.name === 'layer2.0.conv2')!;
    const conv1 = t.layers.find((l) => l.name === 'layer2.0.conv1')!;
    assert.deepEqual(conv1.outShape, [1, 128, 56, 56]);
    assert.deepEqual(conv2.outShape, [1, 128, 28, 28]);
  });
  it('replaceStrideWithDilation keeps the resolution (output stride 8) and the parameters', () => {
    const t = traceModel('resnet50', [3, 224, 224], { replaceStrideWithDilation: [false, true, true] });
    assert.equal(t.params, 25_557_032);
    const beforePool = t.layers[t.layers.findIndex((l) => l.name === 'avgpool') - 1];
    assert.deepEqual(beforePool.outShape, [1, 2048, 28, 28]);
    const spec = imagenetSpecs.resnet50({ replaceStrideWithDilation: [false, true, true] });
    assert.deepEqual(spec.stages[2].map((b) => b.dilation), [1, 2, 2, 2, 2, 2]); // the first block keeps the previous dilation
    assert.deepEqual(spec.stages[3].map((b) => b.dilation), [2, 4, 4]);
  });
  it('unknown model names list the known ones', () => {
    assert.throws(() => getModel('resnet19'), (e: Error) => /unknown model "resnet19"/.test(e.message) && e.message.includes('resnext50_32x4d'));
  });
  it('CIFAR depths must be 6n+2 and ResNeXt depths 9n+2', () => {
    assert.throws(() => resnet20({ numClasses: 0 }), /numClasses must be a positive integer/);
    assert.throws(() => cifarResNeXt({ cardinality: 2, bottleneckWidth: 4, depth: 30 }), /depth 9n\+2/);
  });
  it('torchvision init: He normal fan_out convs, BN 1/0, zeroInitResidual zeroes the last BN of each branch', () => {
    manualSeed(3);
    const m = resnet20({ zeroInitResidual: true });
    try {
      const conv = m.getModule('layer3')!.namedModules().map(([, x]) => x).find((x): x is Conv2d => x instanceof Conv2d)!;
      const w = conv.weight.toArray();
      const std = Math.sqrt(w.reduce((a, v) => a + v * v, 0) / w.length);
      const expected = Math.sqrt(2 / (conv.outChannels * 9));
      assert.ok(Math.abs(std - expected) / expected < 0.05, `conv std ${std} vs ${expected}`);
      assert.ok(m.getModule('layer1')!.namedChildren().every(([, b]) => b instanceof BasicBlock));
      for (const [name, mod] of m.namedModules()) {
        if (mod instanceof ResidualBlock) {
          assert.ok(mod.lastNorm.weight.toArray().every((v) => v === 0), `${name}: last BN scale`);
          assert.ok(mod.norms[0].weight.toArray().every((v) => v === 1), `${name}: first BN scale`);
        }
        if (mod instanceof BatchNorm2d) assert.ok(mod.bias.toArray().every((v) => v === 0));
      }
    } finally {
      m.dispose();
    }
  });
});

describe('forward passes (small inputs)', () => {
  /** Feature shapes from the walk: the output of each stage's last layer. */
  function walkFeatureShapes(t: TraceResult, names: string[]): Record<string, number[]> {
    const out: Record<string, number[]> = {};
    for (const n of names) {
      const layers = n === 'stem' ? t.layers.filter((l) => !l.name.startsWith('layer') && l.name !== 'avgpool' && l.name !== 'fc')
        : t.layers.filter((l) => l.name.startsWith(`${n}.`));
      if (n === 'logits') out[n] = t.outputShape;
      else if (n === 'pool') out[n] = t.layers.find((l) => l.name === 'avgpool')!.outShape.slice(0, 2);
      else out[n] = layers[layers.length - 1].outShape;
    }
    return out;
  }

  const cases: [string, number[], ModelOptions][] = [
    ['resnet18', [3, 45, 37], {}],
    ['resnet50', [3, 40, 33], { replaceStrideWithDilation: [false, false, true] }],
    ['resnext50_32x4d', [3, 33, 33], {}],
    ['plain18', [3, 32, 40], { numClasses: 7 }],
    ['resnet20', [1, 28, 28], { inChannels: 1 }],
    ['plain20', [3, 17, 23], {}],
  ];
  for (const [name, input, opts] of cases) {
    it(`${name} at ${input.join('x')}: every feature's shape is the one the walk predicts`, () => {
      manualSeed(1);
      const m = createModel(name, opts).eval();
      try {
        const names = featureNames(m.spec);
        const x = Tensor.fromArray(Float32Array.from({ length: 2 * input.reduce((a, b) => a * b) }, (_, i) => Math.sin(i)), [2, ...input]);
        const shapes = noGrad(() => tidy(() => {
          const f = m.forwardFeatures(x, names);
          return Object.fromEntries(Object.entries(f).map(([k, v]) => [k, [...v.shape]]));
        }) as unknown as Record<string, number[]>);
        const walk = walkFeatureShapes(traceNet(m.spec, [2, ...input]), names);
        assert.deepEqual(shapes, walk);
        x.dispose();
      } finally {
        m.dispose();
      }
    });
  }

  // The walk must describe what forward really runs: the same conv, BN and linear layers, in the
  // same order, with the same output shapes (and so the same MACs).
  const executed: [string, ModelOptions, number[]][] = [
    ['resnet18', {}, [3, 40, 36]],
    ['resnet50', { replaceStrideWithDilation: [false, true, true] }, [3, 36, 36]],
    ['resnet20', {}, [3, 20, 20]],
    ['resnet20', { shortcut: 'B' }, [3, 20, 20]],
  ];
  for (const [name, opts, input] of executed) {
    it(`${name} ${JSON.stringify(opts)}: the layers forward runs are the walk's, in order, with its shapes`, () => {
      manualSeed(9);
      const m = createModel(name, opts).eval();
      const ran: [string, number[]][] = [];
      for (const [path, mod] of m.namedModules()) {
        if (!(mod instanceof Conv2d || mod instanceof BatchNorm2d || mod instanceof Linear)) continue;
        const original = mod.forward.bind(mod);
        mod.forward = (x: Tensor) => {
          const y = original(x);
          ran.push([path, [...y.shape]]);
          return y;
        };
      }
      try {
        const x = Tensor.fromArray(new Float32Array(input.reduce((a, b) => a * b)).fill(0.25), [1, ...input]);
        noGrad(() => tidy(() => { m.forward(x); }));
        x.dispose();
        const walked = traceModel(name, input, opts).layers
          .filter((l) => ['Conv2d', 'BatchNorm2d', 'Linear'].includes(l.type)).map((l): [string, number[]] => [l.name, l.outShape]);
        assert.deepEqual(ran, walked);
      } finally {
        m.dispose();
      }
    });
  }

  it('forwardFeatures returns only what was asked, and the logits equal forward()', () => {
    manualSeed(2);
    const m = resnet20().eval();
    try {
      const x = Tensor.fromArray(Float32Array.from({ length: 2 * 3 * 16 * 16 }, (_, i) => Math.cos(i * 0.37)), [2, 3, 16, 16]);
      noGrad(() => tidy(() => {
        const f = m.forwardFeatures(x, ['layer2', 'logits']);
        assert.deepEqual(Object.keys(f).sort(), ['layer2', 'logits']);
        assert.deepEqual([...f.layer2.shape], [2, 32, 8, 8]);
        assert.deepEqual([...f.logits.toArray()], [...m.forward(x).toArray()]);
      }));
      assert.throws(() => m.forwardFeatures(x, ['layer4']), /unknown feature "layer4"; this model has stem, layer1, layer2, layer3, pool, logits/);
      assert.throws(() => m.forward(Tensor.fromArray(new Float32Array(16 * 16), [1, 1, 16, 16])), /input must be \[N, 3, H, W\]/);
      x.dispose();
    } finally {
      m.dispose();
    }
  });

  it('replaceHead swaps fc for a new one of the asked size', () => {
    manualSeed(4);
    const m = resnet18({ numClasses: 1000 });
    try {
      const before = m.stateDict();
      m.replaceHead(5);
      const after = m.stateDict();
      assert.deepEqual(after.get('fc.weight')!.shape, [5, 512]);
      assert.deepEqual(after.get('fc.bias')!.shape, [5]);
      assert.deepEqual([...after.keys()], [...before.keys()]);
      assert.deepEqual(after.get('layer4.1.conv2.weight')!.data, before.get('layer4.1.conv2.weight')!.data);
      assert.equal(m.numClasses, 5);
    } finally {
      m.dispose();
    }
  });

  it('trains: a step of resnet20 gives every parameter a gradient and moves BN statistics', () => {
    manualSeed(5);
    const m = resnet20({ numClasses: 4 }).train();
    try {
      const x = Tensor.fromArray(Float32Array.from({ length: 4 * 3 * 12 * 12 }, (_, i) => Math.sin(i * 0.11)), [4, 3, 12, 12]);
      tidy(() => {
        crossEntropy(m.forward(x), [0, 1, 2, 3]).backward();
      });
      for (const [k, p] of m.namedParameters()) assert.ok(p.grad, `${k} has no gradient`);
      const sd = m.stateDict();
      assert.equal(sd.get('layer1.0.bn1.num_batches_tracked')!.data[0], 1);
      assert.ok(sd.get('bn1.running_mean')!.data.some((v) => v !== 0));
      m.zeroGrad();
      x.dispose();
    } finally {
      m.dispose();
    }
  });

  it('a CIFAR ResNeXt from the general builder runs (cardinality 4, width 2, base 8)', () => {
    manualSeed(6);
    const m = cifarResNeXt({ cardinality: 4, bottleneckWidth: 2, baseChannels: 8, numClasses: 3 }).eval();
    try {
      assert.deepEqual(m.spec.stages.map((s) => [s[0].width, s[0].outChannels, s[0].groups]), [[8, 32, 4], [16, 64, 4], [32, 128, 4]]);
      const x = Tensor.fromArray(new Float32Array(2 * 3 * 8 * 8).fill(0.5), [2, 3, 8, 8]);
      const y = noGrad(() => m.forward(x));
      assert.deepEqual([...y.shape], [2, 3]);
      assert.ok(y.toArray().every(Number.isFinite));
      x.dispose();
      y.dispose();
    } finally {
      m.dispose();
    }
  });

  it('resnet50 eval forward is deterministic and finite', () => {
    manualSeed(7);
    const m = resnet50({ numClasses: 10 }).eval();
    try {
      const x = Tensor.fromArray(Float32Array.from({ length: 3 * 32 * 32 }, (_, i) => Math.sin(i)), [1, 3, 32, 32]);
      const a = noGrad(() => m.forward(x)).toArray();
      const b = noGrad(() => m.forward(x)).toArray();
      assert.deepEqual(a, b);
      assert.ok(a.every(Number.isFinite));
      x.dispose();
    } finally {
      m.dispose();
    }
  });
});
