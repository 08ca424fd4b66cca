// Image folders: root/<class>/<...>/<image>, like torchvision's ImageFolder.
//
// Classes are the sub-folders of root, sorted by code point (Python's sorted()), labelled 0..n-1;
// samples are the files with an image extension below each class folder (recursively, symlinks
// followed), class by class, folders sorted, file names sorted — torchvision's order, so class
// indices and sample indices match a PyTorch ImageFolder on the same tree.
//
// Decoding is asynchronous (sharp), so this is an AsyncDataset. Two ways to use it:
//  - lazily: `getAsync(i)` decodes one file on demand. The DataLoader does this in its worker thread,
//    so a folder larger than memory works; images keep their own size unless `size` is given, so the
//    loader's transforms must bring them to one size (e.g. imagenetEvalTransforms()).
//  - eagerly: `await folder.load()` decodes every image once (resized to `size`, or by deterministic
//    transforms) into an InMemoryDataset of uint8 pixels, like the IDX and CIFAR datasets.
// Images are converted to 3-channel sRGB (alpha dropped, grey replicated), as PIL's convert('RGB');
// EXIF orientation is ignored, as in torchvision.

import { readdirSync, realpathSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { decodeImage } from './decode.js';
import { InMemoryDataset, checkIndex, toUnitFloat, type AsyncDataset, type RawSample, type Sample, type WorkerSource } from './dataset.js';
import { Rng } from './rng.js';
import { applyTransforms, validateTransforms, type TransformSpec } from './transforms.js';

export const IMAGE_EXTENSIONS: readonly string[] = Object.freeze(['.jpg', '.jpeg', '.png', '.webp']);

export interface ImageFolderOptions {
  /**
   * Resize every image with sharp while decoding: [height, width], or one number for a square.
   * Default: none (images keep their size). Note sharp's resampling is not Pillow's; for
   * torchvision-exact preprocessing leave this unset and use the resize/centerCrop transforms.
   */
  size?: number | readonly [number, number] | null;
  /** With `size`: 'fill' stretches (default), 'cover' scales the shorter side and crops the centre. */
  fit?: 'fill' | 'cover';
  /**
   * false (default): an unreadable image throws an Error naming the file.
   * true: it is skipped with a warning (once per file). In load() it is left out of the dataset;
   * in getAsync(i) the next readable image is returned instead.
   */
  skipBad?: boolean;
  /** Where skip warnings go (default console.warn). */
  onWarning?: (message: string) => void;
}

export interface SkippedImage {
  file: string;
  error: string;
}

/** Python's sorted() order on str: by code point. */
export function compareCodePoints(a: string, b: string): number {
  const A = Array.from(a);
  const B = Array.from(b);
  const n = Math.min(A.length, B.length);
  for (let i = 0; i < n; i++) {
    const x = A[i]!.codePointAt(0)!;
    const y = B[i]!.codePointAt(0)!;
    if (x !== y) return x - y;
  }
  return A.length - B.length;
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function hasImageExtension(name: string): boolean {
  const lower = name.toLowerCase();
  return IMAGE_EXTENSIONS.some((e) => lower.endsWith(e));
}

/** All image files below `dir`, in torchvision's order (sorted os.walk with followlinks). */
export function listImages(dir: string): string[] {
  const dirs: string[] = [];
  const seen = new Set<string>();
  const walk = (d: string) => {
    let real: string;
    try {
      real = realpathSync(d);
    } catch {
      return;
    }
    if (seen.has(real)) return; // symlink loop
    seen.add(real);
    dirs.push(d);
    for (const e of readdirSync(d)) {
      const p = join(d, e);
      if (isDir(p)) walk(p);
    }
  };
  walk(dir);
  dirs.sort(compareCodePoints);
  const files: string[] = [];
  for (const d of dirs) {
    const names = readdirSync(d)
      .filter((n) => hasImageExtension(n) && !isDir(join(d, n)))
      .sort(compareCodePoints);
    for (const n of names) files.push(join(d, n));
  }
  return files;
}

function normSize(size: ImageFolderOptions['size']): [number, number] | null {
  if (size === undefined || size === null) return null;
  const [h, w] = typeof size === 'number' ? [size, size] : size;
  if (!Number.isInteger(h) || !Number.isInteger(w) || h < 1 || w < 1) throw new Error(`ImageFolder: size must be a positive integer or [height, width], got ${JSON.stringify(size)}`);
  return [h, w];
}

/** Decodes one image file to 3-channel uint8 CHW (optionally resized). Throws an Error naming the file. */
export async function decodeImageFile(file: string, size: [number, number] | null = null, fit: 'fill' | 'cover' = 'fill'): Promise<{ data: Uint8Array; height: number; width: number }> {
  try {
    return await decodeImage(file, { size, fit });
  } catch (e) {
    throw new Error(`Cannot decode image: ${(e as Error).message}. Replace or delete the file (or pass skipBad: true to skip unreadable images)`);
  }
}

export class ImageFolder implements AsyncDataset {
  readonly root: string;
  readonly files: readonly string[];
  readonly labels: readonly number[];
  readonly classNames: readonly string[];
  readonly numClasses: number;
  readonly length: number;
  readonly channels = 3;
  readonly height: number | null;
  readonly width: number | null;
  /** Files skipped as unreadable so far (skipBad mode). */
  readonly skipped: SkippedImage[] = [];
  private readonly size: [number, number] | null;
  private readonly fit: 'fill' | 'cover';
  private readonly skipBad: boolean;
  private readonly onWarning: (m: string) => void;
  private readonly warned = new Set<string>();

  /** Scans `root` (synchronously). Throws when it has no class folders or a class has no images. */
  constructor(root: string, opts: ImageFolderOptions = {}, scanned?: { files: string[]; labels: number[]; classNames: string[] }) {
    this.root = root;
    this.size = normSize(opts.size);
    this.fit = opts.fit ?? 'fill';
    if (this.fit !== 'fill' && this.fit !== 'cover') throw new Error(`ImageFolder: fit must be 'fill' or 'cover', got ${JSON.stringify(opts.fit)}`);
    this.skipBad = opts.skipBad ?? false;
    this.onWarning = opts.onWarning ?? ((m) => console.warn(m));
    this.height = this.size ? this.size[0] : null;
    this.width = this.size ? this.size[1] : null;
    if (scanned) {
      this.files = scanned.files;
      this.labels = scanned.labels;
      this.classNames = scanned.classNames;
    } else {
      if (!isDir(root)) throw new Error(`ImageFolder: ${root} is not a directory; expected root/<class name>/<images>`);
      const classes = readdirSync(root)
        .filter((n) => isDir(join(root, n)))
        .sort(compareCodePoints);
      if (classes.length === 0) throw new Error(`ImageFolder: ${root} has no sub-folders; expected one folder per class, root/<class name>/<images>`);
      const files: string[] = [];
      const labels: number[] = [];
      const empty: string[] = [];
      classes.forEach((c, k) => {
        const fs = listImages(join(root, c));
        if (fs.length === 0) empty.push(c);
        for (const f of fs) {
          files.push(f);
          labels.push(k);
        }
      });
      if (empty.length > 0) {
        throw new Error(`ImageFolder: no image files (${IMAGE_EXTENSIONS.join(', ')}) in the class folder(s) ${empty.map((c) => join(root, c)).join(', ')}; add images or remove the folder(s)`);
      }
      this.files = files;
      this.labels = labels;
      this.classNames = classes;
    }
    this.length = this.files.length;
    this.numClasses = this.classNames.length;
  }

  /** Records an unreadable file (skipBad mode) and warns, once per file. The loader calls this for files its worker skipped. */
  reportSkipped(file: string, error: string): void {
    if (this.warned.has(file)) return;
    this.warned.add(file);
    this.skipped.push({ file, error });
    this.onWarning(`warning: skipping unreadable image ${file}: ${error}`);
  }

  private warnSkip(file: string, err: Error): void {
    this.reportSkipped(file, err.message);
  }

  describeSample(i: number): string {
    return this.files[i] ?? `sample ${i}`;
  }

  /** Decodes sample i as stored (uint8 CHW). In skipBad mode an unreadable file yields the next readable one. */
  async getRawAsync(i: number): Promise<RawSample> {
    checkIndex(i, this.length, `ImageFolder ${this.root}`);
    for (let k = 0; k < this.length; k++) {
      const j = (i + k) % this.length;
      const file = this.files[j]!;
      try {
        const img = await decodeImageFile(file, this.size, this.fit);
        return { data: img.data, label: this.labels[j]!, height: img.height, width: img.width };
      } catch (e) {
        if (!this.skipBad) throw e;
        this.warnSkip(file, e as Error);
      }
    }
    throw new Error(`ImageFolder ${this.root}: no image could be decoded (all ${this.length} files are unreadable)`);
  }

  async getAsync(i: number): Promise<Sample> {
    const r = await this.getRawAsync(i);
    return { image: toUnitFloat(r.data), label: r.label, height: r.height, width: r.width };
  }

  /**
   * Decodes every image once into an InMemoryDataset (uint8 CHW). Images must end up one size: give
   * `size` to the ImageFolder, or deterministic uint8 `transforms` here (e.g. resize 256 + centerCrop
   * 224, without normalize: normalization belongs in the loader). In skipBad mode unreadable files
   * are left out (see `skipped`).
   */
  async load(opts: { transforms?: TransformSpec[]; concurrency?: number } = {}): Promise<InMemoryDataset> {
    const transforms = opts.transforms ?? [];
    validateTransforms(transforms);
    for (const t of transforms) {
      if (t.type === 'randomCrop' || t.type === 'hflip') throw new Error(`ImageFolder.load: transform ${t.type} is random; apply it in the DataLoader, not once at load time`);
      if (t.type === 'normalize' || t.type === 'toFloat') throw new Error(`ImageFolder.load: transform ${t.type} makes float pixels but load() stores uint8; apply it in the DataLoader`);
    }
    const conc = Math.max(1, Math.floor(opts.concurrency ?? 4));
    const results: (RawSample | null)[] = new Array(this.length).fill(null);
    let next = 0;
    const rng = new Rng(0); // unused by deterministic transforms
    const worker = async () => {
      while (next < this.length) {
        const i = next++;
        const file = this.files[i]!;
        let img: { data: Uint8Array; height: number; width: number };
        try {
          img = await decodeImageFile(file, this.size, this.fit);
        } catch (e) {
          if (!this.skipBad) throw e;
          this.warnSkip(file, e as Error);
          continue;
        }
        const t = applyTransforms({ data: img.data, channels: 3, height: img.height, width: img.width }, transforms, rng);
        results[i] = { data: t.data as Uint8Array, label: this.labels[i]!, height: t.height, width: t.width };
      }
    };
    await Promise.all(Array.from({ length: Math.min(conc, this.length) }, worker));
    const kept = results.map((r, i) => [r, i] as const).filter((x): x is readonly [RawSample, number] => x[0] !== null);
    if (kept.length === 0) throw new Error(`ImageFolder ${this.root}: no image could be decoded`);
    const [h, w] = [kept[0]![0].height, kept[0]![0].width];
    for (const [r, i] of kept) {
      if (r.height !== h || r.width !== w) {
        throw new Error(
          `ImageFolder.load: ${this.files[i]} is ${r.width}×${r.height} after decoding but ${this.files[kept[0]![1]]} is ${w}×${h}; ` +
            `all images must end up one size: pass size to the ImageFolder or resize/centerCrop transforms to load()`,
        );
      }
    }
    const size = 3 * h * w;
    const data = new Uint8Array(new SharedArrayBuffer(kept.length * size));
    const labels = new Int32Array(new SharedArrayBuffer(kept.length * 4));
    kept.forEach(([r], k) => {
      data.set(r.data, k * size);
      labels[k] = r.label;
    });
    return new InMemoryDataset({ name: `image folder ${this.root}`, data, labels, channels: 3, height: h, width: w, classNames: this.classNames });
  }

  /** The path of sample i relative to root (for messages). */
  relativePath(i: number): string {
    checkIndex(i, this.length, `ImageFolder ${this.root}`);
    return relative(this.root, this.files[i]!);
  }

  workerSource(): WorkerSource {
    return {
      kind: 'image-folder',
      root: this.root,
      files: [...this.files],
      labels: [...this.labels],
      classNames: [...this.classNames],
      options: { size: this.size, fit: this.fit, skipBad: this.skipBad },
    };
  }

  /** Rebuilds the folder from workerSource() without rescanning; `onSkip` replaces the warning (the worker forwards skips to the main thread). */
  static fromWorkerSource(src: Extract<WorkerSource, { kind: 'image-folder' }>, onSkip?: (file: string, error: string) => void): ImageFolder {
    const f = new ImageFolder(src.root, src.options, { files: src.files, labels: src.labels, classNames: src.classNames });
    if (onSkip) f.reportSkipped = onSkip;
    return f;
  }
}
