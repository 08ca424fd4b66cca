// loadClassifier (src/infer/classifier.ts): predict (kernels off the main thread), predictSync and
// the eager eval-mode model agree within 1e-4 on seeded random weights; preprocessing is the
// documented transform (ImageNet eval at 224, direct resize otherwise, luma for 1-channel models, a
// run folder's dataset from its state.json); bad input gives errors that name it.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { initBackend } from '../src/backend/index.js';
import {
  FASHION_MNIST_MEAN, FASHION_MNIST_STD, IMAGENET_MEAN, IMAGENET_STD, ImageDecodeError, Rng, applyTransforms, decodeImage, imagenetEvalTransforms,
} from '../src/data/index.js';
import { loadClassifier, type Classification } from '../src/infer/index.js';
import { saveStateDictFile } from '../src/io/index.js';
import { createModel, type ResNet } from '../src/models/index.js';
import { manualSeed } from '../src/nn/index.js';
import { Tensor, noGrad, tidy } from '../src/tensor/index.js';
import { assertClose } from './helpers.js';
import { blockPng } from './images.js';

const dir = mkdtempSync(join(tmpdir(), 'residual-classifier-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function softmax(row: ArrayLike<number>): number[] {
  const max = Math.max(...Array.from(row));
  const e = Array.from(row, (v) => Math.exp(v - max));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

/** Probabilities by class index from a top-k list that covers every class. */
function byClass(top: Classification[], classes: number): number[] {
  assert.equal(top.length, classes);
  const p = new Array<number>(classes).fill(NaN);
  for (const t of top) p[t.class] = t.probability;
  return p;
}

function eager(model: ResNet, x: Float32Array, shape: number[]): Float32Array {
  model.eval();
  return noGrad(() => tidy(() => model.forward(Tensor.fromArray(x, shape)).toArray()));
}

describe('loadClassifier', () => {
  before(async () => {
    await initBackend('native');
  });

  it('predict, predictSync and the eager model agree (resnet20, seeded weights, batches split at maxBatch)', async () => {
    manualSeed(3);
    const c = await loadClassifier({ model: 'resnet20', labels: 'cifar10', maxBatch: 4 });
    manualSeed(3);
    const model = createModel('resnet20');
    try {
      assert.equal(c.engine, 'compiled');
      assert.deepEqual(c.input, [3, 32, 32]);
      assert.equal(c.labels[3], 'cat');
      const images = await Promise.all([[40, 30], [32, 32], [17, 60], [100, 80], [33, 33], [64, 48]].map(([w, h], i) => blockPng(w!, h!, i + 1)));
      const xs = await Promise.all(images.map((im) => c.preprocess(im)));
      const per = 3 * 32 * 32;
      const batch = new Float32Array(xs.length * per);
      xs.forEach((x, i) => { assert.equal(x.length, per); batch.set(x, i * per); });

      const asyncTop = await c.predict(batch, xs.length, 10);
      const syncTop = c.predictSync(batch, xs.length, 10);
      const logits = eager(model, batch, [xs.length, 3, 32, 32]);
      assert.equal(asyncTop.length, 6);
      for (let i = 0; i < xs.length; i++) {
        const expected = softmax(logits.subarray(i * 10, (i + 1) * 10));
        assertClose(byClass(asyncTop[i]!, 10), expected, 1e-4, `predict image ${i}`);
        assertClose(byClass(syncTop[i]!, 10), expected, 1e-4, `predictSync image ${i}`);
        const probs = asyncTop[i]!.map((t) => t.probability);
        assert.deepEqual(probs, [...probs].sort((a, b) => b - a), 'sorted by probability');
        assert.equal(asyncTop[i]![0]!.label, c.labels[asyncTop[i]![0]!.class]);
      }
      // The default top (5) and classify() on the raw bytes give the same answer.
      const classified = await c.classify(images);
      assert.equal(classified[0]!.length, 5);
      for (let i = 0; i < xs.length; i++) assert.deepEqual(classified[i]!.map((t) => t.class), asyncTop[i]!.slice(0, 5).map((t) => t.class));
    } finally {
      c.dispose();
      model.dispose();
    }
  });

  it('predict lets the event loop run while the kernels work', async () => {
    const c = await loadClassifier({ model: 'resnet20', input: [3, 96, 96], maxBatch: 8 });
    try {
      const x = Float32Array.from({ length: 8 * 3 * 96 * 96 }, (_, i) => Math.sin(i));
      let turns = 0, done = false;
      const spin = () => { if (!done) { turns++; setImmediate(spin); } };
      setImmediate(spin);
      const [a, b] = await Promise.all([c.predict(x, 8), c.predict(x, 8)]); // two at once are serialized, both right
      done = true;
      assert.ok(turns > 0, 'the event loop turned during predict()');
      assert.deepEqual(a, b);
      assert.deepEqual(a, c.predictSync(x, 8));
    } finally {
      c.dispose();
    }
  });

  it('3x224x224 inputs get torchvision\'s ImageNet eval transform', async () => {
    const c = await loadClassifier({ model: 'resnet20', input: [3, 224, 224], maxBatch: 1 });
    try {
      assert.equal(c.labels[0], 'class 0'); // 10 outputs and no labels: numbered
      const image = await blockPng(300, 260, 9);
      const img = await decodeImage(image);
      const expected = applyTransforms({ data: img.data, channels: 3, height: img.height, width: img.width }, imagenetEvalTransforms(), new Rng(0));
      const x = await c.preprocess(image);
      assert.equal(x.length, 3 * 224 * 224);
      assertClose(x, expected.data, 0, 'preprocessed 224 input');
      assert.deepEqual([IMAGENET_MEAN, IMAGENET_STD], [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]);
    } finally {
      c.dispose();
    }
  });

  it('a run folder: 1-channel Fashion-MNIST preprocessing (luma, 28x28) and class names from state.json', async () => {
    manualSeed(8);
    const model = createModel('resnet20', { inChannels: 1 });
    const run = join(dir, 'run');
    mkdirSync(run);
    saveStateDictFile(join(run, 'model.safetensors'), model.stateDict());
    writeFileSync(join(run, 'state.json'), JSON.stringify({ epoch: 1, batch: 0, iteration: 1, run: { data: 'fashion-mnist' } }));
    const file = join(dir, 'shirt.png');
    writeFileSync(file, await blockPng(40, 50, 4));
    const c = await loadClassifier({ model: 'resnet20', weights: run });
    try {
      assert.deepEqual(c.input, [1, 28, 28]);
      assert.equal(c.labels[0], 'T-shirt/top');
      const img = await decodeImage(file);
      const plane = img.height * img.width;
      const gray = Uint8Array.from({ length: plane }, (_, i) => Math.round(0.299 * img.data[i]! + 0.587 * img.data[plane + i]! + 0.114 * img.data[2 * plane + i]!));
      const expected = applyTransforms({ data: gray, channels: 1, height: img.height, width: img.width },
        [{ type: 'resize', size: [28, 28] }, { type: 'normalize', mean: FASHION_MNIST_MEAN, std: FASHION_MNIST_STD }], new Rng(0));
      const x = await c.preprocess(file);
      assertClose(x, expected.data, 0, 'preprocessed 1x28x28 input');
      const [top] = await c.predict(x, 1, 10);
      assertClose(byClass(top!, 10), softmax(eager(model, x, [1, 1, 28, 28])), 1e-4, 'run folder weights');
    } finally {
      c.dispose();
      model.dispose();
    }
  });

  it('bad input: errors that name it and say what to do', async () => {
    const c = await loadClassifier({ model: 'resnet20', maxBatch: 2, maxPixels: 1000 });
    try {
      await assert.rejects(c.preprocess(Buffer.from('hello, not an image')), (e: Error) =>
        e instanceof ImageDecodeError && e.problem === 'not-an-image' && /not a decodable image/.test(e.message) && /png/.test(e.message));
      await assert.rejects(c.preprocess(Buffer.alloc(0)), (e: Error) => e instanceof ImageDecodeError && /empty/.test(e.message));
      await assert.rejects(c.preprocess(await blockPng(50, 40, 1)), (e: Error) =>
        e instanceof ImageDecodeError && e.problem === 'too-many-pixels' && /50x40 = 2000 pixels/.test(e.message));
      await assert.rejects(c.preprocess(join(dir, 'missing.png')), /missing\.png: no such file/);
      await assert.rejects(c.predict(new Float32Array(5), 1), /needs 3072/);
      assert.throws(() => c.predictSync(new Float32Array(3072), 1, 0), /top must be a positive integer/);
      // dispose() while a predict is in flight: it finishes, later calls are refused.
      const pending = c.predict(new Float32Array(3072), 1);
      c.dispose();
      assert.equal((await pending)[0]!.length, 5);
      await assert.rejects(c.predict(new Float32Array(3072), 1), /after dispose/);
    } finally {
      c.dispose();
    }
    await assert.rejects(loadClassifier({ model: 'resnet20', labels: 'imagenet' }), /1000 class names, but the model has 10 outputs/);
    await assert.rejects(loadClassifier({ model: 'resnet21' }), /unknown model "resnet21"/);
    await assert.rejects(loadClassifier({ model: 'resnet20', input: [3, 32] }), /input must be \[C, H, W\]/);
    await assert.rejects(loadClassifier({ model: 'resnet20', weights: join(dir, 'nope.pth') }), /nope\.pth do not exist/);
  });
});
