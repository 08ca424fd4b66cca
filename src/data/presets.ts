// The built-in datasets' presets, written once: what a sample looks like, how it is normalised,
// how it is augmented for training, and whose class names label it. Training (train/data_spec.ts)
// and the classifier reading an older run folder (infer/preprocess.ts) both take them from here.
import { CIFAR100_MEAN, CIFAR100_STD, CIFAR10_MEAN, CIFAR10_STD } from './cifar.js';
import { FASHION_MNIST_MEAN, FASHION_MNIST_STD } from './idx.js';

export interface DatasetPreset {
  /** [C, H, W] of a sample. */
  input: readonly [number, number, number];
  mean: readonly number[];
  std: readonly number[];
  /** Zero padding before the random crop of training (the papers': 4 on CIFAR; 2 on 28x28 Fashion-MNIST). */
  cropPadding: number;
  /** A name classNames() knows, or null when the dataset's own file carries them. */
  labels: 'fashion-mnist' | 'cifar10' | null;
}

export const DATASET_PRESETS: Readonly<Record<'fashion-mnist' | 'cifar10' | 'cifar100', DatasetPreset>> = Object.freeze({
  'fashion-mnist': { input: [1, 28, 28], mean: FASHION_MNIST_MEAN, std: FASHION_MNIST_STD, cropPadding: 2, labels: 'fashion-mnist' },
  cifar10: { input: [3, 32, 32], mean: CIFAR10_MEAN, std: CIFAR10_STD, cropPadding: 4, labels: 'cifar10' },
  cifar100: { input: [3, 32, 32], mean: CIFAR100_MEAN, std: CIFAR100_STD, cropPadding: 4, labels: null },
});

export function datasetPreset(name: string): DatasetPreset | null {
  return Object.prototype.hasOwnProperty.call(DATASET_PRESETS, name) ? DATASET_PRESETS[name as keyof typeof DATASET_PRESETS] : null;
}
