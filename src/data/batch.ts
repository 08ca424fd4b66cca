// Building one batch: the code shared by the DataLoader's worker thread and its in-thread mode, so
// both produce identical batches.
//
// Determinism: the sample order of epoch e is a permutation drawn from Rng(deriveSeed(seed, e, 0));
// the augmentation of dataset sample i in epoch e draws from Rng(deriveSeed(seed, e, 1, i)). Nothing
// else is random, so a batch depends only on (seed, epoch, batch index) — not on worker timing,
// earlier epochs, or where a run was resumed.

import { isSyncDataset, type AnyDataset, type RawSample } from './dataset.js';
import { Rng, deriveSeed } from './rng.js';
import { applyTransforms, type ImageCHW, type Transform } from './transforms.js';

export interface Batch {
  /** NCHW float32, n × channels × height × width. */
  x: Float32Array;
  /** n labels. */
  y: Int32Array;
  /** Samples in this batch (batchSize, or fewer for the last batch without dropLast). */
  n: number;
  /** [n, channels, height, width] of x. */
  shape: [number, number, number, number];
  epoch: number;
  /** Batch number within the epoch, from 0. */
  index: number;
  /** The dataset index of each sample. */
  indices: Int32Array;
}

export interface BatchPlan {
  batchSize: number;
  dropLast: boolean;
  shuffle: boolean;
  seed: number;
}

export function batchesPerEpoch(length: number, batchSize: number, dropLast: boolean): number {
  return dropLast ? Math.floor(length / batchSize) : Math.ceil(length / batchSize);
}

/** The dataset indices of epoch `epoch`, in the order they are served. */
export function epochOrder(length: number, plan: BatchPlan, epoch: number): Int32Array {
  if (!plan.shuffle) {
    const o = new Int32Array(length);
    for (let i = 0; i < length; i++) o[i] = i;
    return o;
  }
  return new Rng(deriveSeed(plan.seed, epoch, 0)).permutation(length);
}

function describe(ds: AnyDataset, i: number): string {
  return ds.describeSample ? `sample ${i} (${ds.describeSample(i)})` : `sample ${i}`;
}

async function readSample(ds: AnyDataset, i: number): Promise<{ img: ImageCHW; label: number }> {
  let raw: RawSample | null = null;
  if (isSyncDataset(ds)) {
    if (ds.getRaw) raw = ds.getRaw(i);
    else {
      const s = ds.get(i);
      return { img: { data: s.image, channels: ds.channels, height: s.height, width: s.width }, label: s.label };
    }
  } else if (ds.getRawAsync) {
    raw = await ds.getRawAsync(i);
  } else {
    const s = await ds.getAsync(i);
    return { img: { data: s.image, channels: ds.channels, height: s.height, width: s.width }, label: s.label };
  }
  return { img: { data: raw.data, channels: ds.channels, height: raw.height, width: raw.width }, label: raw.label };
}

/** How many samples an async dataset decodes at once while building a batch. */
const ASYNC_CONCURRENCY = 8;

/** Builds batch `index` of epoch `epoch` from the epoch's `order`. */
export async function buildBatch(ds: AnyDataset, order: Int32Array, index: number, epoch: number, plan: BatchPlan, transforms: readonly Transform[]): Promise<Batch> {
  const start = index * plan.batchSize;
  const n = Math.min(plan.batchSize, order.length - start);
  if (n <= 0) throw new RangeError(`batch ${index} is past the end of the epoch (${order.length} samples, batch size ${plan.batchSize})`);
  const indices = order.slice(start, start + n);
  const y = new Int32Array(n);
  const st: { x: Float32Array | null; shape: [number, number, number] | null; firstIdx: number } = { x: null, shape: null, firstIdx: -1 };

  const place = (k: number, i: number, img: ImageCHW, label: number) => {
    const out = applyTransforms(img, transforms, new Rng(deriveSeed(plan.seed, epoch, 1, i)));
    const size = out.channels * out.height * out.width;
    if (out.data.length !== size) throw new Error(`${describe(ds, i)}: a transform returned ${out.data.length} values for a ${out.channels}×${out.height}×${out.width} image`);
    const shape = st.shape;
    if (!shape) {
      st.shape = [out.channels, out.height, out.width];
      st.x = new Float32Array(n * size);
      st.firstIdx = i;
    } else if (shape[0] !== out.channels || shape[1] !== out.height || shape[2] !== out.width) {
      throw new Error(
        `${describe(ds, i)} is ${out.channels}×${out.height}×${out.width} after the transforms but ${describe(ds, st.firstIdx)} is ${shape.join('×')}: ` +
          `a batch needs one size; add resize/centerCrop transforms (e.g. imagenetEvalTransforms()) or give the dataset a fixed size`,
      );
    }
    const dst = st.x!;
    const off = k * size;
    const d = out.data;
    if (d instanceof Uint8Array) {
      for (let t = 0; t < size; t++) dst[off + t] = d[t]! / 255;
    } else {
      dst.set(d, off);
    }
    y[k] = label;
  };

  if (isSyncDataset(ds)) {
    for (let k = 0; k < n; k++) {
      const i = indices[k]!;
      const { img, label } = await readSample(ds, i);
      place(k, i, img, label);
    }
  } else {
    // Decode several samples concurrently, place them in order.
    const pending: Promise<{ img: ImageCHW; label: number }>[] = [];
    let issued = 0;
    let placed = 0;
    const issue = () => {
      while (issued < n && issued - placed < ASYNC_CONCURRENCY) {
        const p = readSample(ds, indices[issued]!);
        p.catch(() => {}); // handled when awaited below
        pending.push(p);
        issued++;
      }
    };
    issue();
    for (let k = 0; k < n; k++) {
      const { img, label } = await pending[k]!;
      placed++;
      issue();
      place(k, indices[k]!, img, label);
    }
  }
  const [c, h, w] = st.shape!;
  return { x: st.x!, y, n, shape: [n, c, h, w], epoch, index, indices };
}
