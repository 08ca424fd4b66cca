// Shared by the int8 tests (our int8 plan, the QDQ ONNX export): the trained Fashion-MNIST ResNet-20
// they quantize, its test batches, top-1 classes and deterministic random inputs.
import { join } from 'node:path';
import { DataLoader, FASHION_MNIST_MEAN, FASHION_MNIST_STD } from '../src/data/index.js';
import { argmax } from '../src/infer/index.js';
import { repoRoot } from './helpers.js';

/** A ResNet-20 trained 12 epochs on Fashion-MNIST (committed by the degradation experiment). */
export const TRAINED = join(repoRoot, 'experiments', 'degradation-12e', 'models', 'resnet20', 'checkpoints', 'epoch-0012', 'model.safetensors');
export const normalize = { type: 'normalize', mean: FASHION_MNIST_MEAN, std: FASHION_MNIST_STD } as const;

/** The first batch of `n` samples of a loader over `ds`, normalized as the model was trained. */
export async function firstBatch(ds: ConstructorParameters<typeof DataLoader>[0], n: number, shuffle: boolean): Promise<{ x: Float32Array; y: Int32Array }> {
  const loader = new DataLoader(ds, { batchSize: n, shuffle, seed: 0, transforms: [normalize], worker: false });
  for await (const b of loader.epoch(0)) return { x: b.x, y: b.y };
  throw new Error('no batch');
}

/** The class of each of the `n` rows of `logits`. */
export function top1(logits: ArrayLike<number>, n: number): number[] {
  const k = logits.length / n;
  return Array.from({ length: n }, (_, i) => argmax(logits as Float32Array, i * k, k));
}

/** Largest |a - b| as a share of the largest |b|. */
export function deviation(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0, m = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!)), m = Math.max(m, Math.abs(b[i]!));
  return d / m;
}

/** Deterministic inputs in [-2, 2]. */
export function inputs(count: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: count }, () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return (s / 2147483648) * 4 - 2;
  });
}
