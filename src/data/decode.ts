// Decoding one image (a file or bytes in memory) to 3-channel uint8 CHW with sharp: alpha dropped,
// grey replicated, as PIL's convert('RGB'). Failures are ImageDecodeErrors that say whether the input
// is not an image at all or is an image over the pixel limit, so a caller (the server) can answer
// each differently.
//
// The header is read first (sharp's metadata(): no pixels decoded), so the pixel limit, a caller's
// memory check (`admit`) and the choice of decode size all happen before any pixel is. With
// `shrinkFor`, a large image is shrunk by an integer factor inside libvips while it is decoded
// (JPEG's DCT shrink-on-load, box-filtered rows for the rest, on libuv's threads), never materialised
// at full size in JavaScript; smaller images decode at full size as before.
import { existsSync } from 'node:fs';
import sharp from 'sharp';

export type ImageDecodeProblem = 'not-an-image' | 'too-many-pixels';

export class ImageDecodeError extends Error {
  override readonly name = 'ImageDecodeError';
  constructor(readonly problem: ImageDecodeProblem, message: string) {
    super(message);
  }
}

/** What decoding an image will hold, from its header: `bytes` is its full decoded size. */
export interface ImageSizeInfo {
  width: number;
  height: number;
  /** width x height x channels x bytes per sample: what a decoder may hold (interlaced PNG, progressive JPEG). */
  bytes: number;
  format: string;
}

/**
 * Images with more pixels than this (4M, a 2560x1600 screen) are shrunk on load when `shrinkFor`
 * allows a factor of 2 or more. Below it the decode is at full size and the caller's resize sees
 * exactly the pixels PIL would; above it the JavaScript resize on the main thread would cost tens of
 * milliseconds to seconds per image (a 7000x7000 PNG: 147 MB, 1.5 s).
 */
export const SHRINK_ON_LOAD_PIXELS = 1 << 22;

export interface DecodeOptions {
  /** Resize to [height, width] while decoding (sharp's linear kernel). */
  size?: [number, number] | null;
  fit?: 'fill' | 'cover';
  /** Refuse images with more pixels than this (width x height) before decoding them; default sharp's 268M. */
  maxPixels?: number;
  /** What to call the input in errors (default: the path, or "the image data"). */
  name?: string;
  /**
   * Called with the image's size from its header, before any pixel is decoded; throw to refuse it
   * (a server checks its memory budget here). Whatever it reserves, the caller releases after.
   */
  admit?: (info: ImageSizeInfo) => void;
  /**
   * The size the caller will resize to (the shorter side, or [height, width]): images over
   * SHRINK_ON_LOAD_PIXELS are decoded shrunk by the largest integer factor that keeps them at least
   * twice that size, so the caller's antialiased resize still has two source pixels per output pixel.
   * Ignored with `size`.
   */
  shrinkFor?: number | [number, number];
}

const SAMPLE_BYTES: Record<string, number> = { uchar: 1, char: 1, ushort: 2, short: 2, uint: 4, int: 4, float: 4, complex: 8, double: 8, dpcomplex: 16 };

/** The integer factor to shrink a w x h image by for `target` (see DecodeOptions.shrinkFor); 1 = none. */
export function shrinkFactor(width: number, height: number, target: number | [number, number] | undefined): number {
  if (target === undefined || width * height <= SHRINK_ON_LOAD_PIXELS) return 1;
  const f = typeof target === 'number'
    ? Math.floor(Math.min(width, height) / (2 * target))
    : Math.floor(Math.min(height / (2 * target[0]), width / (2 * target[1])));
  return Math.max(1, f);
}

export interface DecodedImage {
  /** CHW uint8, 3 channels. */
  data: Uint8Array;
  height: number;
  width: number;
}

/** The formats this sharp build reads from memory, for error messages: jpeg, png, webp, tiff, gif, svg, avif. */
export function decodableFormats(): string[] {
  return Object.values(sharp.format)
    .filter((f) => f.input.buffer && f.id !== 'raw')
    .map((f) => (f.id === 'heif' ? 'avif' : f.id));
}

/**
 * Decodes an image file (path) or image bytes (Buffer / Uint8Array) to 3-channel uint8 CHW.
 * Throws an ImageDecodeError naming the input when it is not a readable image or has too many pixels.
 */
export async function decodeImage(input: string | Uint8Array, opts: DecodeOptions = {}): Promise<DecodedImage> {
  const name = opts.name ?? (typeof input === 'string' ? input : 'the image data');
  if (typeof input === 'string' && !existsSync(input)) throw new Error(`${name}: no such file; check the path`);
  if (typeof input !== 'string' && input.length === 0) throw new ImageDecodeError('not-an-image', `${name} is empty (0 bytes)`);
  const limit = opts.maxPixels ?? 0x3fff * 0x3fff;
  const notAnImage = (msg: string) =>
    new ImageDecodeError('not-an-image', `${name} is not a decodable image (${msg}). Formats read: ${decodableFormats().join(', ')}`);
  // The header first, when a caller needs the size before decoding (a budget, or the shrink factor);
  // plain decodes (image folders) skip this second call and let sharp apply the pixel limit.
  let fullW = 0, fullH = 0;
  if (opts.admit || opts.shrinkFor !== undefined) {
    let meta: sharp.Metadata;
    try {
      meta = await sharp(input, { limitInputPixels: false }).metadata();
    } catch (e) {
      throw notAnImage((e as Error).message);
    }
    if (!meta.width || !meta.height) throw notAnImage('no width and height in its header');
    fullW = meta.width;
    fullH = meta.height;
    if (fullW * fullH > limit) {
      throw new ImageDecodeError('too-many-pixels', `${name} is ${fullW}x${fullH} = ${fullW * fullH} pixels, over the limit of ${limit} pixels: send a smaller image`);
    }
    opts.admit?.({
      width: fullW, height: fullH, format: meta.format ?? 'unknown',
      bytes: fullW * fullH * (meta.channels ?? 3) * (SAMPLE_BYTES[meta.depth ?? 'uchar'] ?? 1),
    });
  }
  const f = opts.size || !fullW ? 1 : shrinkFactor(fullW, fullH, opts.shrinkFor);
  let out: { data: Buffer; info: sharp.OutputInfo };
  try {
    let s = sharp(input, { failOn: 'warning', limitInputPixels: limit }).removeAlpha().toColourspace('srgb');
    if (opts.size) s = s.resize({ height: opts.size[0], width: opts.size[1], fit: opts.fit ?? 'fill', position: 'centre', kernel: 'linear' });
    else if (f > 1) s = s.resize({ width: Math.max(1, Math.round(fullW / f)), height: Math.max(1, Math.round(fullH / f)), fit: 'fill', kernel: 'linear' });
    out = await s.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  } catch (e) {
    const msg = (e as Error).message;
    if (/pixel limit/i.test(msg)) {
      const meta = fullW ? { width: fullW, height: fullH } : await sharp(input, { limitInputPixels: false }).metadata().catch(() => null);
      const dims = meta?.width && meta.height ? `${meta.width}x${meta.height} = ${meta.width * meta.height} pixels` : 'more pixels than allowed';
      throw new ImageDecodeError('too-many-pixels', `${name} is ${dims}, over the limit of ${limit} pixels: send a smaller image`);
    }
    throw notAnImage(msg);
  }
  const { width: w, height: h, channels: c } = out.info;
  if (c !== 3 || out.data.length !== w * h * 3) {
    throw new ImageDecodeError('not-an-image',
      `${name}: expected 3 channels of 8-bit pixels after conversion to sRGB, got ${c} channels and ${out.data.length} bytes for ${w}x${h}`);
  }
  // HWC -> CHW
  const hwc = out.data;
  const data = new Uint8Array(3 * h * w);
  const plane = h * w;
  for (let p = 0, q = 0; p < plane; p++, q += 3) {
    data[p] = hwc[q]!;
    data[plane + p] = hwc[q + 1]!;
    data[2 * plane + p] = hwc[q + 2]!;
  }
  return { data, height: h, width: w };
}
