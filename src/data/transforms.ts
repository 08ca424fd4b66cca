// Per-sample image transforms on CHW images, with seeded randomness.
//
// An image flows through the transforms as uint8 (0..255, the stored form) until a transform turns it
// into float; at the end of the pipeline the loader converts any uint8 result to float in [0, 1].
// This mirrors torchvision with PIL images: resize / crop / flip on 8-bit pixels, then ToTensor and
// Normalize. `resize` on uint8 images reproduces Pillow's antialiased bilinear resampling exactly
// (same filter support, coefficients and 22-bit fixed-point rounding, horizontal pass first); on
// float images it runs the same filter in floating point.
//
// Transforms are described by plain objects (TransformSpec) so the loader's worker thread can
// rebuild them; a custom function (img, rng) => img is accepted when the loader runs without a worker.

import { Rng } from './rng.js';

export interface ImageCHW {
  /** CHW pixels: uint8 0..255, or float32 (0..1 or normalized). */
  data: Uint8Array | Float32Array;
  channels: number;
  height: number;
  width: number;
}

export type Size = number | readonly [number, number];

export type TransformSpec =
  /** Zero-pad by `padding` on each side, then crop a random size×size (or [h, w]) window. */
  | { type: 'randomCrop'; size: Size; padding?: number }
  /** Flip left-right with probability p (default 0.5). */
  | { type: 'hflip'; p?: number }
  /** Per-channel (x - mean) / std on values in [0, 1] (uint8 input is divided by 255 first). Output float. */
  | { type: 'normalize'; mean: readonly number[]; std: readonly number[] }
  /** Bilinear (antialiased) resize: a number scales the shorter side to it (torchvision's Resize(int)); [h, w] is exact. */
  | { type: 'resize'; size: Size }
  /** Central crop (torchvision's CenterCrop: zero-pads when the image is smaller). */
  | { type: 'centerCrop'; size: Size }
  /** Convert uint8 to float in [0, 1] (torchvision's ToTensor); float input passes through. */
  | { type: 'toFloat' };

export type TransformFn = (img: ImageCHW, rng: Rng) => ImageCHW;
export type Transform = TransformSpec | TransformFn;

export const IMAGENET_MEAN: readonly number[] = Object.freeze([0.485, 0.456, 0.406]);
export const IMAGENET_STD: readonly number[] = Object.freeze([0.229, 0.224, 0.225]);

/** torchvision's ImageNet evaluation transform: Resize(256), CenterCrop(224), ToTensor, Normalize(ImageNet). */
export function imagenetEvalTransforms(resizeTo = 256, crop = 224): TransformSpec[] {
  return [
    { type: 'resize', size: resizeTo },
    { type: 'centerCrop', size: crop },
    { type: 'normalize', mean: IMAGENET_MEAN, std: IMAGENET_STD },
  ];
}

/** The usual CIFAR training augmentation: pad 4 + random crop 32, horizontal flip, normalize. */
export function cifarTrainTransforms(mean: readonly number[], std: readonly number[], size = 32, padding = 4): TransformSpec[] {
  return [
    { type: 'randomCrop', size, padding },
    { type: 'hflip', p: 0.5 },
    { type: 'normalize', mean, std },
  ];
}

function sizeHW(size: Size, what: string): [number, number] {
  const [h, w] = typeof size === 'number' ? [size, size] : size;
  if (!Number.isInteger(h) || !Number.isInteger(w) || h < 1 || w < 1) throw new Error(`${what}: size must be a positive integer or [h, w] of them, got ${JSON.stringify(size)}`);
  return [h, w];
}

function like(img: ImageCHW, n: number): Uint8Array | Float32Array {
  return img.data instanceof Uint8Array ? new Uint8Array(n) : new Float32Array(n);
}

function checkImage(img: ImageCHW, what: string): void {
  if (img.data.length !== img.channels * img.height * img.width) {
    throw new Error(`${what}: image data has ${img.data.length} values, expected ${img.channels}×${img.height}×${img.width}`);
  }
}

/**
 * Copies the window starting at (top, left) of size outH×outW; parts outside the image are zero
 * (so negative offsets / windows past the edge mean zero padding).
 */
export function crop(img: ImageCHW, top: number, left: number, outH: number, outW: number): ImageCHW {
  checkImage(img, 'crop');
  const { channels: c, height: h, width: w, data } = img;
  const out = like(img, c * outH * outW);
  const x0 = Math.max(0, -left);
  const x1 = Math.min(outW, w - left);
  for (let ch = 0; ch < c; ch++) {
    for (let y = 0; y < outH; y++) {
      const sy = y + top;
      if (sy < 0 || sy >= h || x1 <= x0) continue;
      const src = ch * h * w + sy * w + left;
      const dst = ch * outH * outW + y * outW;
      out.set(data.subarray(src + x0, src + x1), dst + x0);
    }
  }
  return { data: out, channels: c, height: outH, width: outW };
}

/** Zero-pads by `padding` on every side and crops a random outH×outW window. Draws 2 ints from rng (top, then left). */
export function randomCrop(img: ImageCHW, size: Size, padding: number, rng: Rng): ImageCHW {
  const [th, tw] = sizeHW(size, 'randomCrop');
  if (!Number.isInteger(padding) || padding < 0) throw new Error(`randomCrop: padding must be a non-negative integer, got ${padding}`);
  const ph = img.height + 2 * padding;
  const pw = img.width + 2 * padding;
  if (th > ph || tw > pw) throw new Error(`randomCrop: crop ${th}×${tw} is larger than the padded image ${ph}×${pw}`);
  const i = rng.int(ph - th + 1);
  const j = rng.int(pw - tw + 1);
  return crop(img, i - padding, j - padding, th, tw);
}

/** Python's round(): halves to even. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** torchvision's CenterCrop, including its zero padding of images smaller than the crop. */
export function centerCrop(img: ImageCHW, size: Size): ImageCHW {
  const [th, tw] = sizeHW(size, 'centerCrop');
  let { height: h, width: w } = img;
  let padTop = 0;
  let padLeft = 0;
  if (tw > w || th > h) {
    // torchvision pads [left, top, right, bottom] = [(tw-w)//2, (th-h)//2, (tw-w+1)//2, (th-h+1)//2] (when positive)
    padLeft = tw > w ? Math.floor((tw - w) / 2) : 0;
    padTop = th > h ? Math.floor((th - h) / 2) : 0;
    const padRight = tw > w ? Math.floor((tw - w + 1) / 2) : 0;
    const padBottom = th > h ? Math.floor((th - h + 1) / 2) : 0;
    h += padTop + padBottom;
    w += padLeft + padRight;
  }
  const top = roundHalfEven((h - th) / 2);
  const left = roundHalfEven((w - tw) / 2);
  return crop(img, top - padTop, left - padLeft, th, tw);
}

/** Mirror left-right. */
export function hflip(img: ImageCHW): ImageCHW {
  checkImage(img, 'hflip');
  const { channels: c, height: h, width: w, data } = img;
  const out = like(img, data.length);
  for (let r = 0; r < c * h; r++) {
    const base = r * w;
    for (let x = 0; x < w; x++) out[base + x] = data[base + w - 1 - x]!;
  }
  return { data: out, channels: c, height: h, width: w };
}

/** uint8 -> float in [0, 1] (float32 division, as torchvision's ToTensor); float passes through. */
export function toFloat(img: ImageCHW): ImageCHW {
  if (img.data instanceof Float32Array) return img;
  const out = new Float32Array(img.data.length);
  const d = img.data;
  for (let k = 0; k < d.length; k++) out[k] = d[k]! / 255;
  return { data: out, channels: img.channels, height: img.height, width: img.width };
}

/** Per-channel (x - mean[c]) / std[c], computed in float32 as torchvision's Normalize. Output float. */
export function normalize(img: ImageCHW, mean: readonly number[], std: readonly number[]): ImageCHW {
  checkImage(img, 'normalize');
  const c = img.channels;
  if (mean.length !== c || std.length !== c) {
    throw new Error(`normalize: the image has ${c} channel(s) but mean has ${mean.length} and std ${std.length} values`);
  }
  if (std.some((s) => !(s > 0))) throw new Error(`normalize: std values must be positive, got ${JSON.stringify(std)}`);
  const hw = img.height * img.width;
  const out = new Float32Array(img.data.length);
  const src = img.data;
  const isU8 = src instanceof Uint8Array;
  for (let ch = 0; ch < c; ch++) {
    const m = Math.fround(mean[ch]!);
    const s = Math.fround(std[ch]!);
    const base = ch * hw;
    for (let k = 0; k < hw; k++) {
      const v = isU8 ? Math.fround(src[base + k]! / 255) : src[base + k]!;
      out[base + k] = Math.fround(v - m) / s;
    }
  }
  return { data: out, channels: c, height: img.height, width: img.width };
}

// ---- resize (Pillow-compatible antialiased bilinear) ----

const PRECISION_BITS = 22; // Pillow: 32 - 8 - 2

interface Coeffs {
  ksize: number;
  bounds: Int32Array; // [xmin, count] per output pixel
  kk: Float64Array; // ksize weights per output pixel
}

function precomputeCoeffs(inSize: number, outSize: number): Coeffs {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = 1.0 * filterscale; // bilinear (triangle) filter support 1
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Float64Array(outSize * ksize);
  const ss = 1.0 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    const off = xx * ksize;
    for (let x = 0; x < xmax; x++) {
      const t = Math.abs((x + xmin - center + 0.5) * ss);
      const wgt = t < 1 ? 1 - t : 0;
      kk[off + x] = wgt;
      ww += wgt;
    }
    if (ww !== 0) for (let x = 0; x < xmax; x++) kk[off + x] = kk[off + x]! / ww;
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function fixedPoint(kk: Float64Array): Float64Array {
  const out = new Float64Array(kk.length);
  const one = 1 << PRECISION_BITS;
  for (let i = 0; i < kk.length; i++) {
    const k = kk[i]!;
    out[i] = k < 0 ? Math.trunc(-0.5 + k * one) : Math.trunc(0.5 + k * one);
  }
  return out;
}

function clip8(ss: number): number {
  if (ss >= 1 << (PRECISION_BITS + 8)) return 255;
  if (ss <= 0) return 0;
  return Math.floor(ss / (1 << PRECISION_BITS));
}

/** One separable pass along the width (horizontal) or height (vertical). */
function resamplePass(src: Uint8Array | Float32Array, c: number, h: number, w: number, outSize: number, horizontal: boolean): Uint8Array | Float32Array {
  const inSize = horizontal ? w : h;
  const { ksize, bounds, kk } = precomputeCoeffs(inSize, outSize);
  const isU8 = src instanceof Uint8Array;
  const k = isU8 ? fixedPoint(kk) : kk;
  const oh = horizontal ? h : outSize;
  const ow = horizontal ? outSize : w;
  const out = isU8 ? new Uint8Array(c * oh * ow) : new Float32Array(c * oh * ow);
  const half = 1 << (PRECISION_BITS - 1);
  for (let ch = 0; ch < c; ch++) {
    const ib = ch * h * w;
    const ob = ch * oh * ow;
    if (horizontal) {
      for (let y = 0; y < h; y++) {
        const row = ib + y * w;
        for (let xx = 0; xx < outSize; xx++) {
          const xmin = bounds[xx * 2]!;
          const cnt = bounds[xx * 2 + 1]!;
          const ko = xx * ksize;
          let s = isU8 ? half : 0;
          for (let x = 0; x < cnt; x++) s += src[row + xmin + x]! * k[ko + x]!;
          out[ob + y * ow + xx] = isU8 ? clip8(s) : s;
        }
      }
    } else {
      for (let yy = 0; yy < outSize; yy++) {
        const ymin = bounds[yy * 2]!;
        const cnt = bounds[yy * 2 + 1]!;
        const ko = yy * ksize;
        for (let x = 0; x < w; x++) {
          let s = isU8 ? half : 0;
          for (let y = 0; y < cnt; y++) s += src[ib + (ymin + y) * w + x]! * k[ko + y]!;
          out[ob + yy * ow + x] = isU8 ? clip8(s) : s;
        }
      }
    }
  }
  return out;
}

/**
 * Bilinear resize to outH×outW with Pillow's antialiasing (the filter widens when shrinking).
 * uint8 images give Pillow's exact 8-bit result (Image.resize(..., BILINEAR)); float images the same
 * filter in floating point.
 */
export function resize(img: ImageCHW, outH: number, outW: number): ImageCHW {
  checkImage(img, 'resize');
  sizeHW([outH, outW], 'resize');
  const { channels: c, height: h, width: w } = img;
  let data = img.data;
  let curW = w;
  if (outW !== w) {
    data = resamplePass(data, c, h, w, outW, true);
    curW = outW;
  }
  if (outH !== h) data = resamplePass(data, c, h, curW, outH, false);
  if (data === img.data) data = data.slice();
  return { data, channels: c, height: outH, width: outW };
}

/** torchvision's Resize(size: int): the shorter side becomes `size`, the longer int(size * long / short). */
export function resizeShorter(img: ImageCHW, size: number): ImageCHW {
  const { height: h, width: w } = img;
  if (!Number.isInteger(size) || size < 1) throw new Error(`resizeShorter: size must be a positive integer, got ${size}`);
  if (w <= h) {
    if (w === size) return img;
    return resize(img, Math.floor((size * h) / w), size);
  }
  if (h === size) return img;
  return resize(img, size, Math.floor((size * w) / h));
}

/** Checks a list of transform specs (throws an Error naming the bad one). */
export function validateTransforms(ts: readonly Transform[]): void {
  ts.forEach((t, k) => {
    if (typeof t === 'function') return;
    const where = `transform #${k} (${JSON.stringify(t)})`;
    switch (t?.type) {
      case 'randomCrop':
        sizeHW(t.size, where);
        if (t.padding !== undefined && (!Number.isInteger(t.padding) || t.padding < 0)) throw new Error(`${where}: padding must be a non-negative integer`);
        return;
      case 'hflip':
        if (t.p !== undefined && !(t.p >= 0 && t.p <= 1)) throw new Error(`${where}: p must be in [0, 1]`);
        return;
      case 'normalize':
        if (!Array.isArray(t.mean) || !Array.isArray(t.std) || t.mean.length !== t.std.length || t.mean.length < 1) throw new Error(`${where}: mean and std must be arrays of the same length (one value per channel)`);
        if (t.std.some((s) => !(s > 0))) throw new Error(`${where}: std values must be positive`);
        return;
      case 'resize':
      case 'centerCrop':
        sizeHW(t.size, where);
        return;
      case 'toFloat':
        return;
      default:
        throw new Error(`${where}: unknown transform type; expected randomCrop, hflip, normalize, resize, centerCrop or toFloat`);
    }
  });
}

/** Applies one transform. Random transforms draw from `rng` (randomCrop: 2 ints; hflip: 1 float). */
export function applyTransform(img: ImageCHW, t: Transform, rng: Rng): ImageCHW {
  if (typeof t === 'function') return t(img, rng);
  switch (t.type) {
    case 'randomCrop':
      return randomCrop(img, t.size, t.padding ?? 0, rng);
    case 'hflip':
      return rng.next() < (t.p ?? 0.5) ? hflip(img) : img;
    case 'normalize':
      return normalize(img, t.mean, t.std);
    case 'resize':
      if (typeof t.size === 'number') return resizeShorter(img, t.size);
      return resize(img, t.size[0], t.size[1]);
    case 'centerCrop':
      return centerCrop(img, t.size);
    case 'toFloat':
      return toFloat(img);
  }
}

/** Applies the transforms in order. The input is never modified. */
export function applyTransforms(img: ImageCHW, ts: readonly Transform[], rng: Rng): ImageCHW {
  let cur = img;
  for (const t of ts) cur = applyTransform(cur, t, rng);
  return cur;
}
