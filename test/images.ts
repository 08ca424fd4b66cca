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

export const SHAPE_CLASSES = ['circle', 'square', 'stripes'] as const;

/**
 * An image folder a small classifier can learn: DIR/{train,val}/{circle,square,stripes}/*.png, a
 * shape in a colour of its class (red, green, blue, jittered) on a random grey, sizes varied.
 * `names` renames the three class folders.
 */
export async function writeShapesFolder(dir: string, perClass: { train: number; val: number }, seed = 1,
  names: readonly string[] = SHAPE_CLASSES): Promise<void> {
  const { mkdirSync } = await import('node:fs');
  const { join } = await import('node:path');
  const r = rng(seed);
  for (const split of ['train', 'val'] as const) {
    for (const [k, name] of SHAPE_CLASSES.entries()) {
      const folder = join(dir, split, names[k]!);
      mkdirSync(folder, { recursive: true });
      for (let i = 0; i < perClass[split]; i++) {
        const w = 72 + Math.floor(r() * 40), h = 72 + Math.floor(r() * 40);
        const grey = Math.floor(r() * 255);
        const fg = [[220, 40, 40], [40, 200, 40], [40, 40, 220]][k]!.map((c) => Math.min(255, Math.max(0, Math.round(c + (r() - 0.5) * 60))));
        const cx = w / 2 + (r() - 0.5) * 20, cy = h / 2 + (r() - 0.5) * 20, s = 15 + r() * 15;
        const fill = `rgb(${fg.join(',')})`;
        const shape = name === 'circle' ? `<circle cx="${cx}" cy="${cy}" r="${s}" fill="${fill}"/>`
          : name === 'square' ? `<rect x="${cx - s}" y="${cy - s}" width="${2 * s}" height="${2 * s}" fill="${fill}"/>`
          : Array.from({ length: 6 }, (_, j) => `<rect x="0" y="${(j * h) / 6}" width="${w}" height="${h / 12}" fill="${fill}"/>`).join('');
        const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}"><rect width="${w}" height="${h}" fill="rgb(${grey},${grey},${grey})"/>${shape}</svg>`;
        await sharp(Buffer.from(svg)).png().toFile(join(folder, `${i}.png`));
      }
    }
  }
}
