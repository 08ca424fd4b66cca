// Datasets: labelled images, stored compactly, read one sample at a time.
//
// Value convention: `get(i).image` is CHW float32 with values in [0, 1] (the stored uint8 / 255),
// NOT normalized. Normalization (per-channel mean/std) is a transform, applied by the DataLoader.
//
// In-memory datasets (IDX, CIFAR, a decoded image folder) keep raw uint8 CHW pixels in one
// SharedArrayBuffer, so a loader worker thread reads them without a copy, and convert to float only
// when a batch is built.

import { Rng, deriveSeed } from './rng.js';

export interface Sample {
  /** CHW, float32, values in [0, 1] (not normalized). */
  image: Float32Array;
  label: number;
  /** Height and width of this sample (equal to the dataset's for fixed-size datasets). */
  height: number;
  width: number;
}

/** A sample in its stored form: uint8 CHW, no copy where possible. Do not modify `data`. */
export interface RawSample {
  data: Uint8Array;
  label: number;
  height: number;
  width: number;
}

interface DatasetInfo {
  readonly length: number;
  readonly channels: number;
  /** Image height for fixed-size datasets; null when images differ in size (a lazily decoded image folder). */
  readonly height: number | null;
  readonly width: number | null;
  readonly numClasses: number;
  readonly classNames: readonly string[];
  /** Optional: names sample i in error messages (e.g. its file). */
  describeSample?(i: number): string;
}

/** A dataset whose samples can be read synchronously. */
export interface Dataset extends DatasetInfo {
  get(i: number): Sample;
  /** Optional fast path used by the loader: the stored uint8 pixels. */
  getRaw?(i: number): RawSample;
  /** Optional: a description the loader's worker thread can rebuild the dataset from. */
  workerSource?(): WorkerSource;
}

/** A dataset whose samples are decoded asynchronously (e.g. an image folder read lazily with sharp). */
export interface AsyncDataset extends DatasetInfo {
  getAsync(i: number): Promise<Sample>;
  getRawAsync?(i: number): Promise<RawSample>;
  workerSource?(): WorkerSource;
}

export type AnyDataset = Dataset | AsyncDataset;

export function isSyncDataset(d: AnyDataset): d is Dataset {
  return typeof (d as Dataset).get === 'function';
}

/** Serializable (structured-clone) descriptions of datasets, rebuilt inside the loader's worker. */
export type WorkerSource =
  | {
      kind: 'memory';
      name: string;
      data: Uint8Array; // backed by a SharedArrayBuffer
      labels: Int32Array; // backed by a SharedArrayBuffer
      channels: number;
      height: number;
      width: number;
      classNames: string[];
    }
  | { kind: 'subset'; base: WorkerSource; indices: Int32Array }
  | {
      kind: 'image-folder';
      root: string;
      files: string[];
      labels: number[];
      classNames: string[];
      options: { size: [number, number] | null; fit: 'fill' | 'cover'; skipBad: boolean };
    };

export function checkIndex(i: number, length: number, what: string): void {
  if (!Number.isInteger(i) || i < 0 || i >= length) {
    throw new RangeError(`${what}: index ${i} is out of range [0, ${length})`);
  }
}

/** uint8 -> float32 in [0, 1]. */
export function toUnitFloat(data: Uint8Array): Float32Array {
  const out = new Float32Array(data.length);
  for (let k = 0; k < data.length; k++) out[k] = data[k]! / 255;
  return out;
}

function sharedUint8(n: number): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(n));
}

function isShared(a: ArrayBufferView): boolean {
  return typeof SharedArrayBuffer !== 'undefined' && a.buffer instanceof SharedArrayBuffer;
}

/** A fixed-size dataset held in memory as uint8 CHW (shared with loader workers without copying). */
export class InMemoryDataset implements Dataset {
  readonly length: number;
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  readonly numClasses: number;
  readonly classNames: readonly string[];
  /** All pixels, sample after sample, each CHW. Backed by a SharedArrayBuffer. */
  readonly data: Uint8Array;
  /** Backed by a SharedArrayBuffer. */
  readonly labels: Int32Array;
  /** A name for messages, e.g. "fashion-mnist train" or a file path. */
  readonly name: string;

  /**
   * `data` holds `labels.length` images of channels×height×width bytes each (CHW). Arrays not
   * already on a SharedArrayBuffer are copied onto one.
   */
  constructor(opts: {
    name: string;
    data: Uint8Array;
    labels: Int32Array | ArrayLike<number>;
    channels: number;
    height: number;
    width: number;
    classNames: readonly string[];
  }) {
    const { channels, height, width, classNames } = opts;
    for (const [k, v] of [['channels', channels], ['height', height], ['width', width]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new Error(`${opts.name}: ${k} must be a positive integer, got ${v}`);
    }
    const n = opts.labels.length;
    const size = channels * height * width;
    if (opts.data.length !== n * size) {
      throw new Error(`${opts.name}: pixel data has ${opts.data.length} bytes, expected ${n} images × ${channels}×${height}×${width} = ${n * size}`);
    }
    if (classNames.length < 1) throw new Error(`${opts.name}: classNames is empty`);
    let data = opts.data;
    if (!isShared(data)) {
      data = sharedUint8(opts.data.length);
      data.set(opts.data);
    }
    let labels: Int32Array;
    if (opts.labels instanceof Int32Array && isShared(opts.labels)) labels = opts.labels;
    else {
      labels = new Int32Array(new SharedArrayBuffer(n * 4));
      for (let i = 0; i < n; i++) labels[i] = opts.labels[i]!;
    }
    for (let i = 0; i < n; i++) {
      const l = labels[i]!;
      if (!Number.isInteger(l) || l < 0 || l >= classNames.length) {
        throw new Error(`${opts.name}: label ${l} of sample ${i} is out of range [0, ${classNames.length})`);
      }
    }
    this.name = opts.name;
    this.data = data;
    this.labels = labels;
    this.length = n;
    this.channels = channels;
    this.height = height;
    this.width = width;
    this.classNames = [...classNames];
    this.numClasses = classNames.length;
  }

  getRaw(i: number): RawSample {
    checkIndex(i, this.length, this.name);
    const size = this.channels * this.height * this.width;
    return { data: this.data.subarray(i * size, (i + 1) * size), label: this.labels[i]!, height: this.height, width: this.width };
  }

  get(i: number): Sample {
    const r = this.getRaw(i);
    return { image: toUnitFloat(r.data), label: r.label, height: r.height, width: r.width };
  }

  workerSource(): WorkerSource {
    return {
      kind: 'memory',
      name: this.name,
      data: this.data,
      labels: this.labels,
      channels: this.channels,
      height: this.height,
      width: this.width,
      classNames: [...this.classNames],
    };
  }

  static fromWorkerSource(src: Extract<WorkerSource, { kind: 'memory' }>): InMemoryDataset {
    return new InMemoryDataset(src);
  }
}

/** A view of some samples of another dataset (e.g. a validation split), in the given order. */
export class Subset implements Dataset {
  readonly length: number;
  readonly channels: number;
  readonly height: number | null;
  readonly width: number | null;
  readonly numClasses: number;
  readonly classNames: readonly string[];
  readonly indices: Int32Array;

  constructor(readonly base: Dataset, indices: ArrayLike<number>) {
    this.indices = Int32Array.from(indices);
    for (const i of this.indices) checkIndex(i, base.length, 'Subset');
    this.length = this.indices.length;
    this.channels = base.channels;
    this.height = base.height;
    this.width = base.width;
    this.numClasses = base.numClasses;
    this.classNames = base.classNames;
  }

  get(i: number): Sample {
    checkIndex(i, this.length, 'Subset');
    return this.base.get(this.indices[i]!);
  }

  getRaw(i: number): RawSample {
    checkIndex(i, this.length, 'Subset');
    if (!this.base.getRaw) throw new Error('Subset.getRaw: the base dataset has no getRaw');
    return this.base.getRaw(this.indices[i]!);
  }

  workerSource(): WorkerSource {
    if (!this.base.workerSource) throw new Error('Subset: the base dataset cannot be sent to a worker (it has no workerSource())');
    return { kind: 'subset', base: this.base.workerSource(), indices: this.indices };
  }
}

/**
 * Splits 0..length-1 into two Subsets: `count` samples picked at random (from `seed`) and the rest,
 * e.g. a validation split: `const [val, train] = randomSplit(ds, 5000, 0)`.
 */
export function randomSplit(ds: Dataset, count: number, seed: number): [Subset, Subset] {
  if (!Number.isInteger(count) || count < 0 || count > ds.length) throw new Error(`randomSplit: count ${count} is not in [0, ${ds.length}]`);
  const perm = new Rng(deriveSeed(seed, 0x5b17)).permutation(ds.length);
  const a = perm.slice(0, count).sort();
  const b = perm.slice(count).sort();
  return [new Subset(ds, a), new Subset(ds, b)];
}
