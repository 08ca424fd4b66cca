// CIFAR-10 and CIFAR-100, "binary version" (https://www.cs.toronto.edu/~kriz/cifar.html).
//
// CIFAR-10: cifar-10-batches-bin/data_batch_{1..5}.bin (train), test_batch.bin, batches.meta.txt;
//   each record is 1 label byte + 3072 pixel bytes (1024 R, 1024 G, 1024 B; rows of 32) = 3073 bytes.
// CIFAR-100: cifar-100-binary/train.bin, test.bin, fine_label_names.txt, coarse_label_names.txt;
//   each record is 2 label bytes (coarse, fine) + 3072 pixel bytes = 3074 bytes.
// The pixel bytes are already CHW, so they are stored as they are.

import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { InMemoryDataset } from './dataset.js';

export type CifarName = 'cifar10' | 'cifar100';

export const CIFAR10_MEAN: readonly number[] = Object.freeze([0.4914, 0.4822, 0.4465]);
export const CIFAR10_STD: readonly number[] = Object.freeze([0.247, 0.2435, 0.2616]);
export const CIFAR100_MEAN: readonly number[] = Object.freeze([0.5071, 0.4865, 0.4409]);
export const CIFAR100_STD: readonly number[] = Object.freeze([0.2673, 0.2564, 0.2762]);

/** The class names of the official batches.meta.txt, in label order. */
export const CIFAR10_CLASSES: readonly string[] = Object.freeze([
  'airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck',
]);

const PIXELS = 3 * 32 * 32;

/** The folder name inside the official archive. */
export function cifarFolderName(which: CifarName): string {
  return which === 'cifar10' ? 'cifar-10-batches-bin' : 'cifar-100-binary';
}

function markerFile(which: CifarName): string {
  return which === 'cifar10' ? 'test_batch.bin' : 'test.bin';
}

/**
 * Finds the dataset folder given either the folder itself (…/cifar-10-batches-bin) or its parent.
 * Returns null when neither holds the dataset.
 */
export function findCifarDir(which: CifarName, dir: string): string | null {
  const marker = markerFile(which);
  if (existsSync(join(dir, marker))) return dir;
  const sub = join(dir, cifarFolderName(which));
  if (existsSync(join(sub, marker))) return sub;
  return null;
}

function resolveDir(which: CifarName, dir: string): string {
  const found = findCifarDir(which, dir);
  if (!found) {
    const name = cifarFolderName(which);
    throw new Error(
      `${which === 'cifar10' ? 'CIFAR-10' : 'CIFAR-100'} not found in ${dir}: expected ${join(dir, name, markerFile(which))} ` +
        `(or ${join(dir, markerFile(which))}); download it with downloadCifar('${which}', ${JSON.stringify(dir)}) or unpack the official ${name.replace('-batches', '')} archive there`,
    );
  }
  return found;
}

function readLines(file: string): string[] {
  return readFileSync(file, 'utf8')
    .split(/\r?\n/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

function readNames(file: string, expected: number, fallback: readonly string[] | null): string[] {
  if (!existsSync(file)) {
    if (fallback) return [...fallback];
    throw new Error(`${file} is missing: it holds the class names; unpack the official archive again`);
  }
  const names = readLines(file);
  if (names.length !== expected) {
    throw new Error(`${file}: expected ${expected} class names (one per line), found ${names.length}; the file is corrupt: unpack the official archive again`);
  }
  return names;
}

interface RecordFormat {
  labelBytes: number; // 1 (CIFAR-10) or 2 (CIFAR-100: coarse, fine)
  labelIndex: number; // which of the label bytes to use
  numClasses: number;
}

function readRecords(files: string[], fmt: RecordFormat): { data: Uint8Array; labels: Int32Array } {
  const rec = fmt.labelBytes + PIXELS;
  let total = 0;
  for (const f of files) {
    if (!existsSync(f)) throw new Error(`${f} is missing; unpack the official archive again (or download it with downloadCifar)`);
    const size = statSync(f).size;
    if (size === 0 || size % rec !== 0) {
      throw new Error(
        `${f}: file size ${size} is not a multiple of the ${rec}-byte record (${fmt.labelBytes} label byte${fmt.labelBytes > 1 ? 's' : ''} + 3072 pixels); ` +
          `the file is truncated or is not a ${fmt.labelBytes === 1 ? 'CIFAR-10' : 'CIFAR-100'} binary batch: download it again`,
      );
    }
    total += size / rec;
  }
  const data = new Uint8Array(new SharedArrayBuffer(total * PIXELS));
  const labels = new Int32Array(new SharedArrayBuffer(total * 4));
  let n = 0;
  for (const f of files) {
    const buf = readFileSync(f);
    const count = buf.length / rec;
    for (let r = 0; r < count; r++) {
      const off = r * rec;
      for (let b = 0; b < fmt.labelBytes; b++) {
        const lim = fmt.labelBytes === 2 && b === 0 ? 20 : fmt.labelBytes === 2 ? 100 : fmt.numClasses;
        const v = buf[off + b]!;
        if (v >= lim) {
          const kind = fmt.labelBytes === 2 ? (b === 0 ? 'coarse label' : 'fine label') : 'label';
          throw new Error(`${f}: record ${r}: ${kind} ${v} is out of range 0..${lim - 1}; the file is corrupt or belongs to another dataset (CIFAR-10 records have 1 label byte, CIFAR-100 records 2)`);
        }
      }
      labels[n] = buf[off + fmt.labelIndex]!;
      data.set(buf.subarray(off + fmt.labelBytes, off + rec), n * PIXELS);
      n++;
    }
  }
  return { data, labels };
}

/** CIFAR-10 (50000 train / 10000 test, 3×32×32) from the cifar-10-batches-bin folder or its parent. */
export function cifar10(split: 'train' | 'test', dir: string): InMemoryDataset {
  if (split !== 'train' && split !== 'test') throw new Error(`cifar10: split must be 'train' or 'test', got ${JSON.stringify(split)}`);
  const d = resolveDir('cifar10', dir);
  const files = split === 'train' ? [1, 2, 3, 4, 5].map((k) => join(d, `data_batch_${k}.bin`)) : [join(d, 'test_batch.bin')];
  const classNames = readNames(join(d, 'batches.meta.txt'), 10, CIFAR10_CLASSES);
  const { data, labels } = readRecords(files, { labelBytes: 1, labelIndex: 0, numClasses: 10 });
  return new InMemoryDataset({ name: `cifar10 ${split} (${d})`, data, labels, channels: 3, height: 32, width: 32, classNames });
}

/**
 * CIFAR-100 (50000 train / 10000 test, 3×32×32) from the cifar-100-binary folder or its parent.
 * `labels: 'fine'` (default, 100 classes) or `'coarse'` (20 superclasses).
 */
export function cifar100(split: 'train' | 'test', dir: string, opts: { labels?: 'fine' | 'coarse' } = {}): InMemoryDataset {
  if (split !== 'train' && split !== 'test') throw new Error(`cifar100: split must be 'train' or 'test', got ${JSON.stringify(split)}`);
  const which = opts.labels ?? 'fine';
  if (which !== 'fine' && which !== 'coarse') throw new Error(`cifar100: labels must be 'fine' or 'coarse', got ${JSON.stringify(which)}`);
  const d = resolveDir('cifar100', dir);
  const n = which === 'fine' ? 100 : 20;
  const classNames = readNames(join(d, `${which}_label_names.txt`), n, null);
  const { data, labels } = readRecords([join(d, split === 'train' ? 'train.bin' : 'test.bin')], {
    labelBytes: 2,
    labelIndex: which === 'fine' ? 1 : 0,
    numClasses: n,
  });
  return new InMemoryDataset({ name: `cifar100 ${split} (${d})`, data, labels, channels: 3, height: 32, width: 32, classNames });
}
