// `--data` as the CLI and the experiments spell it, turned into datasets with their standard recipes:
//   fashion-mnist          Debian's dataset-fashion-mnist (the built-in default)
//   cifar10:DIR            CIFAR-10 binary version in DIR
//   cifar100:DIR           CIFAR-100 binary version in DIR
//   folder:DIR             DIR/train/<class>/* and DIR/val/<class>/* (or DIR/<class>/*, split 90/10)
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { ModelCard } from '../models/card.js';
import {
  DATASET_PRESETS, DataLoader, IMAGENET_MEAN,
  IMAGENET_STD, ImageFolder, Subset, cifar10, cifar100, fashionMnist, isSyncDataset, randomSplit, type AnyDataset, type Dataset, type TransformSpec,
} from '../data/index.js';

export interface DataSpec {
  name: string;
  train: AnyDataset;
  test: AnyDataset;
  trainTransforms: TransformSpec[];
  testTransforms: TransformSpec[];
  classNames: readonly string[];
  /** [C, H, W] of a transformed sample. */
  input: [number, number, number];
  /** Image folders: the shorter side test images are resized to before the center crop. */
  evalResize?: number;
}

/** The model card of a model trained on this data: its classes and the eval transform its inputs need. */
export function cardFor(model: string, d: DataSpec, extra: { finetunedFrom?: string } = {}): ModelCard {
  const norm = d.testTransforms.find((t) => t.type === 'normalize');
  if (!norm || norm.type !== 'normalize') throw new Error(`${d.name}: the test transforms have no normalize step`);
  return {
    model, classes: [...d.classNames], input: [...d.input], mean: [...norm.mean], std: [...norm.std],
    ...(d.evalResize !== undefined ? { resize: d.evalResize } : {}),
    dataset: d.name,
    ...(extra.finetunedFrom ? { finetunedFrom: extra.finetunedFrom } : {}),
  };
}

function augmented(size: number, padding: number, mean: readonly number[], std: readonly number[]): TransformSpec[] {
  return [{ type: 'randomCrop', size, padding }, { type: 'hflip', p: 0.5 }, { type: 'normalize', mean, std }];
}

function sized(ds: Dataset, what: string): [number, number, number] {
  if (ds.height === null || ds.width === null) throw new Error(`${what}: images have no fixed size`);
  return [ds.channels, ds.height, ds.width];
}

/**
 * Opens the datasets `text` names. `imageSize` applies to image folders (default 224, the ImageNet
 * crop; images are resized so the shorter side is imageSize * 8/7, then cropped).
 */
export async function openData(text: string, opts: { imageSize?: number; skipBad?: boolean } = {}): Promise<DataSpec> {
  const [kind, ...rest] = text.split(':');
  const dir = rest.join(':');
  const needDir = () => {
    if (!dir) throw new Error(`--data ${kind} needs a directory: --data ${kind}:DIR`);
    if (!existsSync(dir)) throw new Error(`--data ${text}: directory ${dir} does not exist`);
  };
  switch (kind) {
    case 'fashion-mnist': {
      const train = fashionMnist('train');
      const p = DATASET_PRESETS['fashion-mnist'];
      return {
        name: 'fashion-mnist', train, test: fashionMnist('test'), classNames: train.classNames, input: sized(train, 'fashion-mnist'),
        trainTransforms: augmented(p.input[1], p.cropPadding, p.mean, p.std),
        testTransforms: [{ type: 'normalize', mean: p.mean, std: p.std }],
      };
    }
    case 'cifar10':
    case 'cifar100': {
      needDir();
      const load = kind === 'cifar10' ? cifar10 : cifar100;
      const p = DATASET_PRESETS[kind];
      const train = load('train', dir);
      return {
        name: kind, train, test: load('test', dir), classNames: train.classNames, input: sized(train, kind),
        trainTransforms: augmented(p.input[1], p.cropPadding, p.mean, p.std), testTransforms: [{ type: 'normalize', mean: p.mean, std: p.std }],
      };
    }
    case 'folder': {
      needDir();
      const size = opts.imageSize ?? 224;
      const resizeTo = Math.round((size * 8) / 7);
      const folderOpts = { size: [resizeTo, resizeTo] as [number, number], fit: 'cover' as const, skipBad: opts.skipBad };
      let train: AnyDataset;
      let test: AnyDataset;
      let classNames: readonly string[];
      if (existsSync(join(dir, 'train'))) {
        const tr = new ImageFolder(join(dir, 'train'), folderOpts);
        const valDir = existsSync(join(dir, 'val')) ? join(dir, 'val') : join(dir, 'test');
        if (!existsSync(valDir)) throw new Error(`--data ${text}: found ${join(dir, 'train')} but no val/ or test/ beside it`);
        train = tr;
        test = new ImageFolder(valDir, folderOpts);
        classNames = tr.classNames;
      } else {
        // One folder: decode it once and hold out a seeded 10% for testing.
        const all = await new ImageFolder(dir, folderOpts).load();
        const [held, rest] = randomSplit(all, Math.max(1, Math.round(all.length / 10)), 0);
        train = rest;
        test = held;
        classNames = all.classNames;
      }
      return {
        name: `folder:${dir}`, train, test, classNames, input: [3, size, size], evalResize: resizeTo,
        trainTransforms: augmented(size, 0, IMAGENET_MEAN, IMAGENET_STD),
        testTransforms: [{ type: 'centerCrop', size }, { type: 'normalize', mean: IMAGENET_MEAN, std: IMAGENET_STD }],
      };
    }
    default:
      throw new Error(`--data must be fashion-mnist, cifar10:DIR, cifar100:DIR or folder:DIR, got "${text}"`);
  }
}

/**
 * The first `n` training samples and the first ceil(n / 5) test samples: a quick run, or a CI test,
 * on real data.
 */
export function subsetData(d: DataSpec, n: number): DataSpec {
  const cut = (ds: AnyDataset, k: number): AnyDataset => {
    if (!isSyncDataset(ds)) throw new Error(`--subset needs a dataset held in memory; ${d.name} is decoded lazily`);
    return new Subset(ds, Array.from({ length: Math.min(k, ds.length) }, (_, i) => i));
  };
  return { ...d, train: cut(d.train, n), test: cut(d.test, Math.ceil(n / 5)) };
}

export function loadersFor(d: DataSpec, o: { batchSize: number; seed: number; evalBatchSize?: number }): { train: DataLoader; test: DataLoader } {
  return {
    train: new DataLoader(d.train, { batchSize: o.batchSize, shuffle: true, seed: o.seed, transforms: d.trainTransforms }),
    test: new DataLoader(d.test, { batchSize: o.evalBatchSize ?? 256, transforms: d.testTransforms }),
  };
}
