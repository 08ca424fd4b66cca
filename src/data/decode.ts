// Decoding one image (a file or bytes in memory) to 3-channel uint8 CHW with sharp: alpha dropped,
// grey replicated, as PIL's convert('RGB'). Failures are ImageDecodeErrors that say whether the input
// is not an image at all or is an image over the pixel limit, so a caller (the server) can answer
// each differently.
import { existsSync } from 'node:fs';
import sharp from 'sharp';

export type ImageDecodeProblem = 'not-an-image' | 'too-many-pixels';

export class ImageDecodeError extends Error {
  override readonly name = 'ImageDecodeError';
  constructor(readonly problem: ImageDecodeProblem, message: string) {
    super(message);
  }
}

export interface DecodeOptions {
  /** Resize to [height, width] while decoding (sharp's linear kernel). */
  size?: [number, number] | null;
  fit?: 'fill' | 'cover';
  /** Refuse images with more pixels than this (width x height) before decoding them; default sharp's 268M. */
  maxPixels?: number;
  /** What to call the input in errors (default: the path, or "the image data"). */
  name?: string;
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
  let out: { data: Buffer; info: sharp.OutputInfo };
  try {
    let s = sharp(input, { failOn: 'warning', limitInputPixels: limit }).removeAlpha().toColourspace('srgb');
    if (opts.size) s = s.resize({ height: opts.size[0], width: opts.size[1], fit: opts.fit ?? 'fill', position: 'centre', kernel: 'linear' });
    out = await s.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  } catch (e) {
    const msg = (e as Error).message;
    if (/pixel limit/i.test(msg)) {
      const meta = await sharp(input, { limitInputPixels: false }).metadata().catch(() => null);
      const dims = meta?.width && meta.height ? `${meta.width}x${meta.height} = ${meta.width * meta.height} pixels` : 'more pixels than allowed';
      throw new ImageDecodeError('too-many-pixels', `${name} is ${dims}, over the limit of ${limit} pixels: send a smaller image`);
    }
    throw new ImageDecodeError('not-an-image', `${name} is not a decodable image (${msg}). Formats read: ${decodableFormats().join(', ')}`);
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
