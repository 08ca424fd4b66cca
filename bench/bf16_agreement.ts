// bf16 against f32 on real images: a trained Fashion-MNIST model (a `residual train` run folder or
// its weights) run as an f32 and a bf16 compiled plan over the whole test set. Prints one JSON
// object: top-1 agreement, the maximum logit deviation (absolute and relative to the largest logit)
// and each plan's test accuracy.
//
//   node dist/bench/bf16_agreement.js --model resnet20 --weights runs/fmnist-resnet20-15ep [--batch 250] [--limit N]
import { parseArgs } from 'node:util';
import { initBackend } from '../src/backend/index.js';
import { DataLoader, FASHION_MNIST_MEAN, FASHION_MNIST_STD, Subset, fashionMnist } from '../src/data/index.js';
import { argmax, compareLogits, compileForInference, mergeAgreement, type LogitAgreement } from '../src/infer/index.js';
import { loadModel, resolveWeightsPath } from '../src/models/index.js';

const { values: v } = parseArgs({
  options: { model: { type: 'string', default: 'resnet20' }, weights: { type: 'string' }, batch: { type: 'string', default: '250' }, limit: { type: 'string' } },
});
if (!v.weights) throw new Error('bf16_agreement: --weights (a run folder or a weights file of a Fashion-MNIST model) is required');
const batch = Number(v.batch);
if (!Number.isInteger(batch) || batch < 1) throw new Error(`bf16_agreement: --batch must be a positive integer, got "${v.batch}"`);

await initBackend('native');
const weights = resolveWeightsPath(v.weights);
const model = loadModel(v.model!, weights, { inChannels: 1 });
const f32 = compileForInference(model, { input: [1, 28, 28], maxBatch: batch });
const bf16 = compileForInference(model, { input: [1, 28, 28], maxBatch: batch, dtype: 'bf16' });
const test = fashionMnist('test');
const limit = v.limit ? Math.min(Number(v.limit), test.length) : test.length;
const loader = new DataLoader(new Subset(test, Array.from({ length: limit }, (_, i) => i)), {
  batchSize: batch, transforms: [{ type: 'normalize', mean: FASHION_MNIST_MEAN, std: FASHION_MNIST_STD }],
});
const classes = model.numClasses;
const parts: LogitAgreement[] = [];
const correct = { f32: 0, bf16: 0 };
for await (const { x, y, n } of loader.epoch(0)) {
  const a = f32.run(x, n), b = bf16.run(x, n);
  parts.push(compareLogits(a, b, n, classes));
  for (let s = 0; s < n; s++) {
    if (argmax(a, s * classes, classes) === y[s]) correct.f32++;
    if (argmax(b, s * classes, classes) === y[s]) correct.bf16++;
  }
}
const agreement = mergeAgreement(parts);
console.log(JSON.stringify({
  model: v.model, weights, images: agreement.samples,
  top1_same: agreement.top1Same, top1_agreement: agreement.top1Agreement,
  max_deviation: agreement.maxDeviation, largest_logit: agreement.largestLogit, relative_deviation: agreement.relativeDeviation,
  accuracy_f32: correct.f32 / agreement.samples, accuracy_bf16: correct.bf16 / agreement.samples,
}));
f32.dispose();
bf16.dispose();
