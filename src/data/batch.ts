// Building one batch: the code shared by the DataLoader's worker thread and its in-thread mode, so
// both produce identical batches.
//
// Determinism: the sample order of epoch e is a permutation drawn from Rng(deriveSeed(seed, e, 0));
// the augmentation of dataset sample i in epoch e draws from Rng(deriveSeed(seed, e, 1, i)). Nothing
// else is random, so a batch depends only on (seed, epoch, batch index) — not on worker timing,
// earlier epochs, or where a run was resumed.

import { isSyncDataset, type AnyDataset, type Dataset, type RawSample } from './dataset.js';
import { Rng, deriveSeed } from './rng.js';
import { applyTransforms, type ImageCHW, type Transform, type TransformSpec } from './transforms.js';

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

function sizeMismatch(ds: AnyDataset, i: number, got: readonly number[], first: number, want: readonly number[]): Error {
  return new Error(
    `${describe(ds, i)} is ${got.join('×')} after the transforms but ${describe(ds, first)} is ${want.join('×')}: ` +
      `a batch needs one size; add resize/centerCrop transforms (e.g. imagenetEvalTransforms()) or give the dataset a fixed size`,
  );
}

function readSampleSync(ds: Dataset, i: number): { img: ImageCHW; label: number } {
  if (ds.getRaw) {
    const raw = ds.getRaw(i);
    return { img: { data: raw.data, channels: ds.channels, height: raw.height, width: raw.width }, label: raw.label };
  }
  const s = ds.get(i);
  return { img: { data: s.image, channels: ds.channels, height: s.height, width: s.width }, label: s.label };
}

async function readSample(ds: AnyDataset, i: number): Promise<{ img: ImageCHW; label: number }> {
  let raw: RawSample | null = null;
  if (isSyncDataset(ds)) {
    return readSampleSync(ds, i);
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

  const fused = fusedPlan(transforms);
  const place = (k: number, i: number, img: ImageCHW, label: number) => {
    const rng = new Rng(deriveSeed(plan.seed, epoch, 1, i));
    if (fused) {
      // Fast path: crops / flips / normalize written straight into the batch, no intermediate images.
      const [c, h, w] = fusedShape(img, fused, rng);
      const size = c * h * w;
      if (!st.shape) {
        st.shape = [c, h, w];
        st.x = new Float32Array(n * size);
        st.firstIdx = i;
      } else if (st.shape[0] !== c || st.shape[1] !== h || st.shape[2] !== w) {
        throw sizeMismatch(ds, i, [c, h, w], st.firstIdx, st.shape);
      }
      writeFused(img, fused, st.x!, k * size);
      y[k] = label;
      return;
    }
    const out = applyTransforms(img, transforms, rng);
    const size = out.channels * out.height * out.width;
    if (out.data.length !== size) throw new Error(`${describe(ds, i)}: a transform returned ${out.data.length} values for a ${out.channels}×${out.height}×${out.width} image`);
    const shape = st.shape;
    if (!shape) {
      st.shape = [out.channels, out.height, out.width];
      st.x = new Float32Array(n * size);
      st.firstIdx = i;
    } else if (shape[0] !== out.channels || shape[1] !== out.height || shape[2] !== out.width) {
      throw sizeMismatch(ds, i, [out.channels, out.height, out.width], st.firstIdx, shape);
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
      const { img, label } = readSampleSync(ds, i);
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

// ---- fused fast path for the usual augmentation: [randomCrop | hflip]* then optional normalize ----
//
// Produces exactly what applyTransforms would (same RNG draws in the same order, same float32
// arithmetic) but writes the result straight into the batch. The geometry is tracked as a map from
// output to source coordinates, srcY = y + ty, srcX = sx * x + tx (sx = ±1), plus the window of
// output pixels that come from the source (the rest is zero padding).

interface FusedPlan {
  geo: (Extract<TransformSpec, { type: 'randomCrop' }> | Extract<TransformSpec, { type: 'hflip' }>)[];
  mean: Float32Array | null;
  std: Float32Array | null;
  // per-sample state, set by fusedShape
  h: number;
  w: number;
  ty: number;
  tx: number;
  sx: number;
  vy0: number;
  vy1: number;
  vx0: number;
  vx1: number;
}

function fusedPlan(ts: readonly Transform[]): FusedPlan | null {
  const geo: FusedPlan['geo'] = [];
  let norm: Extract<TransformSpec, { type: 'normalize' }> | null = null;
  for (const t of ts) {
    if (typeof t === 'function') return null;
    if (norm && t.type !== 'toFloat') return null; // only toFloat may follow normalize
    if (t.type === 'randomCrop' || t.type === 'hflip') geo.push(t);
    else if (t.type === 'normalize') norm = t;
    else if (t.type !== 'toFloat') return null;
  }
  return {
    geo,
    mean: norm ? Float32Array.from(norm.mean) : null,
    std: norm ? Float32Array.from(norm.std) : null,
    h: 0, w: 0, ty: 0, tx: 0, sx: 1, vy0: 0, vy1: 0, vx0: 0, vx1: 0,
  };
}

/** Draws this sample's random parameters; returns the output [c, h, w]. */
function fusedShape(img: ImageCHW, f: FusedPlan, rng: Rng): [number, number, number] {
  let h = img.height;
  let w = img.width;
  let ty = 0;
  let tx = 0;
  let sx = 1;
  let vy0 = 0;
  let vy1 = h;
  let vx0 = 0;
  let vx1 = w;
  for (const g of f.geo) {
    if (g.type === 'randomCrop') {
      const [th, tw] = typeof g.size === 'number' ? [g.size, g.size] : g.size;
      const p = g.padding ?? 0;
      const ph = h + 2 * p;
      const pw = w + 2 * p;
      if (th > ph || tw > pw) throw new Error(`randomCrop: crop ${th}×${tw} is larger than the padded image ${ph}×${pw}`);
      const top = rng.int(ph - th + 1) - p;
      const left = rng.int(pw - tw + 1) - p;
      ty += top;
      tx += sx * left;
      vy0 = Math.max(vy0 - top, 0);
      vy1 = Math.min(vy1 - top, th);
      vx0 = Math.max(vx0 - left, 0);
      vx1 = Math.min(vx1 - left, tw);
      h = th;
      w = tw;
    } else if (rng.next() < (g.p ?? 0.5)) {
      tx += sx * (w - 1);
      sx = -sx;
      const a = w - vx1;
      vx1 = w - vx0;
      vx0 = a;
    }
  }
  if (f.mean && f.mean.length !== img.channels) {
    throw new Error(`normalize: the image has ${img.channels} channel(s) but mean has ${f.mean.length} and std ${f.std!.length} values`);
  }
  Object.assign(f, { h, w, ty, tx, sx, vy0, vy1, vx0, vx1 });
  return [img.channels, h, w];
}

function writeFused(img: ImageCHW, f: FusedPlan, dst: Float32Array, off: number): void {
  const { h, w, ty, tx, sx, vy0, vy1, vx0, vx1, mean, std } = f;
  const src = img.data;
  const H = img.height;
  const W = img.width;
  const isU8 = src instanceof Uint8Array;
  const rowsOk = vy1 > vy0 && vx1 > vx0;
  for (let c = 0; c < img.channels; c++) {
    const m = mean ? mean[c]! : 0;
    const s = std ? std[c]! : 1;
    const zero = mean ? Math.fround(0 - m) / s : 0;
    const sb = c * H * W;
    const ob = off + c * h * w;
    for (let y = 0; y < h; y++) {
      const o = ob + y * w;
      if (!rowsOk || y < vy0 || y >= vy1) {
        dst.fill(zero, o, o + w);
        continue;
      }
      if (vx0 > 0) dst.fill(zero, o, o + vx0);
      if (vx1 < w) dst.fill(zero, o + vx1, o + w);
      const row = sb + (y + ty) * W + tx;
      if (isU8) {
        if (mean) for (let x = vx0; x < vx1; x++) dst[o + x] = Math.fround(Math.fround(src[row + sx * x]! / 255) - m) / s;
        else for (let x = vx0; x < vx1; x++) dst[o + x] = src[row + sx * x]! / 255;
      } else {
        if (mean) for (let x = vx0; x < vx1; x++) dst[o + x] = Math.fround(src[row + sx * x]! - m) / s;
        else for (let x = vx0; x < vx1; x++) dst[o + x] = src[row + sx * x]!;
      }
    }
  }
}
