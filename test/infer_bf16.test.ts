// bf16 inference on real images: a ResNet-20 trained briefly on Fashion-MNIST, run as f32 and bf16
// plans over the first 1,000 test images, must pick the same class for at least 99% of them; and
// random-weight ImageNet models (torchvision init) on natural-looking inputs — Fashion-MNIST
// photographs scaled to 224x224 and tinted into three channels, with ImageNet normalization — too,
// with one exception stated below. Every case also bounds the maximum deviation (relative to the
// largest f32 logit) and reports it. Skipped with a reason where the CPU has no bf16.
import assert from 'node:assert/strict';
import { before, describe, it, type TestContext } from 'node:test';
import { initBackend } from '../src/backend/index.js';
import { DataLoader, FASHION_MNIST_MEAN, FASHION_MNIST_STD, IMAGENET_MEAN, IMAGENET_STD, Subset, fashionMnist } from '../src/data/index.js';
import { argmax, compareLogits, compileForInference, mergeAgreement, type CompiledModel, type LogitAgreement } from '../src/infer/index.js';
import { createModel, type ResNet } from '../src/models/index.js';
import { manualSeed } from '../src/nn/index.js';
import { train } from '../src/train/trainer.js';

const normalize = { type: 'normalize', mean: FASHION_MNIST_MEAN, std: FASHION_MNIST_STD } as const;
/**
 * Largest logit deviation allowed, as a share of the largest logit: bf16 keeps 8 significant bits
 * (0.4% per rounding), and roundings add up over 20-50 layers. Measured 0.46-1.50% for the trained
 * ResNet-20 (its weights depend on the thread count), 0.6% for the random ImageNet nets.
 */
const MAX_DEVIATION = 0.03;

/** The f32 and bf16 plans of `model`, or null (the test skipped) when this CPU has no bf16. */
function plans(t: TestContext, model: ResNet, input: [number, number, number], maxBatch: number): [CompiledModel, CompiledModel] | null {
  const f32 = compileForInference(model, { input, maxBatch });
  try {
    return [f32, compileForInference(model, { input, maxBatch, dtype: 'bf16' })];
  } catch (e) {
    f32.dispose();
    assert.match((e as Error).message, /bf16 needs a CPU with AVX512-BF16 or AMX/);
    t.skip('this CPU has no bf16');
    return null;
  }
}

function report(t: TestContext, what: string, a: LogitAgreement): void {
  t.diagnostic(`${what}: top-1 same on ${a.top1Same}/${a.samples} (${(100 * a.top1Agreement).toFixed(2)}%), ` +
    `max deviation ${a.maxDeviation.toExponential(2)} = ${(100 * a.relativeDeviation).toFixed(3)}% of the largest logit ${a.largestLogit.toFixed(2)}`);
}

describe('bf16 inference on real images', () => {
  before(async () => {
    await initBackend('native');
  });

  it('a ResNet-20 trained on Fashion-MNIST: bf16 and f32 agree on top-1 for >= 99% of 1,000 test images', async (t) => {
    manualSeed(0);
    const model = createModel('resnet20', { inChannels: 1 });
    // 100 iterations of batch 128: far from converged (about 80%), so many images sit near a
    // decision boundary, which makes agreement harder than on a fully trained model.
    const trainSet = new Subset(fashionMnist('train'), Array.from({ length: 12800 }, (_, i) => i));
    const loader = new DataLoader(trainSet, { batchSize: 128, shuffle: true, seed: 1, transforms: [normalize] });
    await train(model, loader, null, { epochs: 1, lr: 0.1, momentum: 0.9, weightDecay: 5e-4, schedule: { kind: 'onecycle', pctStart: 0.3 } });
    model.eval();
    const compiled = plans(t, model, [1, 28, 28], 250);
    if (!compiled) return;
    const [f32, bf16] = compiled;
    const test = new DataLoader(new Subset(fashionMnist('test'), Array.from({ length: 1000 }, (_, i) => i)), { batchSize: 250, transforms: [normalize] });
    const parts: LogitAgreement[] = [];
    let correct = 0;
    for await (const { x, y, n } of test.epoch(0)) {
      const a = f32.run(x, n);
      parts.push(compareLogits(a, bf16.run(x, n), n, 10));
      for (let s = 0; s < n; s++) if (argmax(a, s * 10, 10) === y[s]) correct++;
    }
    f32.dispose();
    bf16.dispose();
    const agreement = mergeAgreement(parts);
    report(t, `Fashion-MNIST ResNet-20 (f32 test accuracy ${(correct / 10).toFixed(1)}%)`, agreement);
    assert.equal(agreement.samples, 1000);
    assert.ok(correct > 600, `the model should have learned something: ${correct}/1000 correct`);
    assert.ok(agreement.top1Agreement >= 0.99, `top-1 agreement ${agreement.top1Same}/1000 is below 99%`);
    assert.ok(agreement.relativeDeviation < MAX_DEVIATION, `bf16 deviates by ${(100 * agreement.relativeDeviation).toFixed(2)}% of the largest logit`);
  });

  // ResNeXt-50 under torchvision's init is the exception: the init ignores the groups, so its
  // activations shrink layer by layer and its logits span only ~0.16 (ResNet-50's: ~54). Its bf16
  // error is the same share of the logits as ResNet-50's (0.6%), but the top two classes of most
  // images are nearly tied, and 8 of 200 flip (measured 2026-11-28). A trained net has real margins.
  for (const { name, minAgreement } of [{ name: 'resnet50', minAgreement: 0.99 }, { name: 'resnext50_32x4d', minAgreement: 0.95 }]) {
    it(`random-weight ${name} on natural-looking inputs: top-1 agrees on >= ${100 * minAgreement}% of 200 images`, async (t) => {
      manualSeed(1);
      const model = createModel(name);
      const size = 224, n = 200, per = 25;
      // Photographs of clothes (Fashion-MNIST test images), bilinearly scaled from 28 to 112 and
      // tinted per image, normalized with ImageNet's mean and std as torchvision's transform does.
      const source = fashionMnist('test');
      const batches: Float32Array[] = [];
      for (let start = 0; start < n; start += per) {
        const x = new Float32Array(per * 3 * size * size);
        for (let b = 0; b < per; b++) {
          const img = source.data.subarray((start + b) * 784, (start + b + 1) * 784);
          const tint = [0.6 + 0.4 * Math.sin(b), 0.6 + 0.4 * Math.sin(b + 2), 0.6 + 0.4 * Math.sin(b + 4)];
          for (let i = 0; i < size; i++) {
            const fy = Math.min(27, Math.max(0, ((i + 0.5) * 28) / size - 0.5)), y0 = Math.floor(fy), y1 = Math.min(27, y0 + 1), wy = fy - y0;
            for (let j = 0; j < size; j++) {
              const fx = Math.min(27, Math.max(0, ((j + 0.5) * 28) / size - 0.5)), x0 = Math.floor(fx), x1 = Math.min(27, x0 + 1), wx = fx - x0;
              const v = ((1 - wy) * ((1 - wx) * img[y0 * 28 + x0]! + wx * img[y0 * 28 + x1]!) + wy * ((1 - wx) * img[y1 * 28 + x0]! + wx * img[y1 * 28 + x1]!)) / 255;
              for (let c = 0; c < 3; c++) x[((b * 3 + c) * size + i) * size + j] = (tint[c]! * v - IMAGENET_MEAN[c]!) / IMAGENET_STD[c]!;
            }
          }
        }
        batches.push(x);
      }
      model.eval();
      const compiled = plans(t, model, [3, size, size], per);
      if (!compiled) return;
      const [f32, bf16] = compiled;
      const parts = batches.map((x) => compareLogits(f32.run(x, per), bf16.run(x, per), per, 1000));
      f32.dispose();
      bf16.dispose();
      model.dispose();
      const agreement = mergeAgreement(parts);
      report(t, `${name} (random weights) at ${size}x${size}`, agreement);
      assert.ok(agreement.top1Agreement >= minAgreement, `top-1 agreement ${agreement.top1Same}/${n} is below ${100 * minAgreement}%`);
      assert.ok(agreement.relativeDeviation < MAX_DEVIATION, `bf16 deviates by ${(100 * agreement.relativeDeviation).toFixed(2)}% of the largest logit`);
    });
  }
});
