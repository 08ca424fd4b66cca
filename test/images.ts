// Real images for the classifier and server tests: PNGs of colored blocks made with sharp, seeded.
import sharp from 'sharp';
import { rng } from './helpers.js';

/** A width x height PNG of noisy colored blocks (so resizing has something to do), determined by `seed`. */
export async function blockPng(width: number, height: number, seed: number): Promise<Buffer> {
  const r = rng(seed);
  const raw = Buffer.alloc(width * height * 3);
  const base = [r() * 255, r() * 255, r() * 255];
  const size = 4 + Math.floor(r() * 12);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const block = (Math.floor(x / size) + Math.floor(y / size)) % 3;
      for (let c = 0; c < 3; c++) raw[(y * width + x) * 3 + c] = (base[c]! + block * 60 + r() * 40) % 256;
    }
  }
  return sharp(raw, { raw: { width, height, channels: 3 } }).png().toBuffer();
}
