import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { initBackend } from '../../backend/index.js';
import {
  CIFAR100_MEAN, CIFAR100_STD, CIFAR10_MEAN, CIFAR10_STD, FASHION_MNIST_MEAN, FASHION_MNIST_STD, IMAGENET_MEAN, IMAGENET_STD, Rng,
  applyTransforms, classNames, decodeImageFile, type TransformSpec,
} from '../../data/index.js';
import { getModel, loadModel, resolveWeightsPath } from '../../models/index.js';
import { Tensor, noGrad, tidy } from '../../tensor/index.js';
import { parse, shapeOption } from '../args.js';

export const summary = 'classify images: top-5 classes with probabilities';

const usage = `usage: residual predict --model M --weights W [--labels imagenet|fashion-mnist|cifar10|FILE] [--input CxHxW] [--top 5] [--json] IMAGE...

  --weights W   torchvision .pth/.safetensors, or a run folder from \`residual train\` (its preprocessing
                and class names are then taken from the run)
  --input       the model's input size; 3x224x224 uses torchvision's ImageNet eval transform
                (resize 256, center crop 224, ImageNet mean/std)`;

interface Preprocess {
  channels: number;
  height: number;
  width: number;
  mean: readonly number[];
  std: readonly number[];
  labels: string | null;
}

/** Preprocessing and labels for a run folder's dataset, read from its checkpoint's state.json. */
function fromRun(weightsFile: string): Preprocess | null {
  const state = join(dirname(weightsFile), 'state.json');
  if (!existsSync(state)) return null;
  const run = (JSON.parse(readFileSync(state, 'utf8')) as { run?: { data?: string } }).run;
  switch (run?.data) {
    case 'fashion-mnist': return { channels: 1, height: 28, width: 28, mean: FASHION_MNIST_MEAN, std: FASHION_MNIST_STD, labels: 'fashion-mnist' };
    case 'cifar10': return { channels: 3, height: 32, width: 32, mean: CIFAR10_MEAN, std: CIFAR10_STD, labels: 'cifar10' };
    case 'cifar100': return { channels: 3, height: 32, width: 32, mean: CIFAR100_MEAN, std: CIFAR100_STD, labels: null };
    default: return null;
  }
}

function softmax(row: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of row) max = Math.max(max, v);
  const e = Float64Array.from(row, (v) => Math.exp(v - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

export async function run(argv: string[]): Promise<number> {
  const { values: v, positionals: images } = parse('predict', argv, {
    model: { type: 'string' }, weights: { type: 'string' }, labels: { type: 'string' }, input: { type: 'string' },
    top: { type: 'string' }, json: { type: 'boolean' },
  }, true);
  if (v.help) {
    console.log(usage);
    return 0;
  }
  if (!v.model || images.length === 0) throw new Error(`predict: --model and at least one IMAGE are required\n${usage}`);
  if (!v.weights) console.error('predict: no --weights: the model has random weights, so the classes are meaningless');
  const top = v.top ? Number(v.top) : 5;
  if (!Number.isInteger(top) || top < 1) throw new Error(`predict: --top must be a positive integer, got "${v.top}"`);
  await initBackend();

  const weightsFile = v.weights ? resolveWeightsPath(v.weights) : null;
  const [dc, dh, dw] = v.input ? shapeOption('predict', 'input', v.input) : getModel(v.model).defaultInput;
  const pre: Preprocess = (weightsFile && !v.input ? fromRun(weightsFile) : null)
    ?? { channels: dc, height: dh, width: dw, mean: dc === 3 ? IMAGENET_MEAN : FASHION_MNIST_MEAN, std: dc === 3 ? IMAGENET_STD : FASHION_MNIST_STD, labels: null };
  const model = loadModel(v.model, weightsFile, { inChannels: pre.channels }, (m) => console.error(`predict: ${m}`));
  model.eval();
  const numClasses = model.parameters().at(-1)!.shape[0];
  const labelSpec = v.labels ?? pre.labels ?? (numClasses === 1000 ? 'imagenet' : null);
  const names = labelSpec ? classNames(labelSpec) : Array.from({ length: numClasses }, (_, i) => `class ${i}`);
  if (names.length !== numClasses) throw new Error(`predict: ${labelSpec} has ${names.length} class names but the model has ${numClasses} outputs`);

  // torchvision's eval transform at 224; smaller inputs are resized directly.
  const transforms: TransformSpec[] = pre.height === 224 && pre.width === 224
    ? [{ type: 'resize', size: 256 }, { type: 'centerCrop', size: 224 }, { type: 'normalize', mean: pre.mean, std: pre.std }]
    : [{ type: 'resize', size: [pre.height, pre.width] }, { type: 'normalize', mean: pre.mean, std: pre.std }];
  const results = [];
  for (const file of images) {
    const img = await decodeImageFile(file);
    let chw = { data: img.data as Uint8Array | Float32Array, channels: 3, height: img.height, width: img.width };
    if (pre.channels === 1) {
      // Luma, as PIL's convert('L'): 0.299 R + 0.587 G + 0.114 B.
      const plane = img.height * img.width;
      const gray = new Uint8Array(plane);
      for (let i = 0; i < plane; i++) gray[i] = Math.round(0.299 * img.data[i] + 0.587 * img.data[plane + i] + 0.114 * img.data[2 * plane + i]);
      chw = { data: gray, channels: 1, height: img.height, width: img.width };
    }
    const x = applyTransforms(chw, transforms, new Rng(0));
    const logits = noGrad(() => tidy(() => model.forward(Tensor.fromArray(Float32Array.from(x.data), [1, x.channels, x.height, x.width])).toArray()));
    const probs = softmax(logits);
    const order = [...probs.keys()].sort((a, b) => probs[b] - probs[a]).slice(0, top);
    results.push({ image: file, top: order.map((k) => ({ class: k, label: names[k], probability: probs[k] })) });
  }
  model.dispose();
  if (v.json) console.log(JSON.stringify(results));
  else {
    for (const r of results) {
      console.log(r.image);
      for (const t of r.top) console.log(`  ${(100 * t.probability).toFixed(2).padStart(6)}%  ${t.label} (${t.class})`);
    }
  }
  return 0;
}
