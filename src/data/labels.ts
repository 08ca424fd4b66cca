// Class names for predictions: ImageNet's 1000 (torchvision's list, the order of its weights) and
// the built-in datasets', or one name per line from a file.
import { readFileSync } from 'node:fs';
import imagenet from './imagenet_classes.json' with { type: 'json' };
import { FASHION_MNIST_CLASSES } from './idx.js';
import { CIFAR10_CLASSES } from './cifar.js';

export const IMAGENET_CLASSES: readonly string[] = Object.freeze(imagenet as string[]);

/** `imagenet`, `fashion-mnist`, `cifar10`, or a text file with one class name per line. */
export function classNames(spec: string): readonly string[] {
  switch (spec) {
    case 'imagenet':
      return IMAGENET_CLASSES;
    case 'fashion-mnist':
      return FASHION_MNIST_CLASSES;
    case 'cifar10':
      return CIFAR10_CLASSES;
    default: {
      let text: string;
      try {
        text = readFileSync(spec, 'utf8');
      } catch (e) {
        throw new Error(`--labels ${spec}: not imagenet, fashion-mnist or cifar10, and not a readable file (${(e as Error).message})`);
      }
      const names = text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
      if (names.length === 0) throw new Error(`--labels ${spec}: the file has no class names (one per line)`);
      return names;
    }
  }
}
