// IDX files (the MNIST layout), optionally gzip-compressed, and Fashion-MNIST.
//
// Layout: a big-endian header — two zero bytes, a type byte (0x08 = unsigned byte, the only one
// supported here), the number of dimensions — then one uint32 per dimension, then the data.
// Images: magic 0x00000803, dims [count, rows, cols]. Labels: magic 0x00000801, dims [count].

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { constants, gunzipSync } from 'node:zlib';
import { maxLoadBytes } from '../io/budget.js';
import { InMemoryDataset } from './dataset.js';

export const IDX_IMAGES_MAGIC = 0x00000803;
export const IDX_LABELS_MAGIC = 0x00000801;

/**
 * Reads a file and gunzips it when it starts with the gzip magic bytes (1f 8b), inflating at most
 * `maxBytes` (default: the weight-file load budget, RESIDUAL_MAX_LOAD_BYTES): a 13 MB .gz can hold
 * gigabytes of zeros, and the output is refused as soon as it passes the cap, not after.
 */
export function readMaybeGzip(file: string, maxBytes = maxLoadBytes()): Uint8Array {
  const raw = readRaw(file);
  if (!isGzip(raw)) return raw;
  return gunzipAtMost(raw, file, maxBytes, `more than ${maxBytes} bytes (the limit; RESIDUAL_MAX_LOAD_BYTES raises it)`);
}

function readRaw(file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new Error(`Cannot read ${file}: ${(e as Error).message}`);
  }
}

const isGzip = (raw: Uint8Array): boolean => raw.length >= 2 && raw[0] === 0x1f && raw[1] === 0x8b;

function gunzipAtMost(raw: Buffer, file: string, maxBytes: number, limitText: string): Uint8Array {
  try {
    return gunzipSync(raw, { maxOutputLength: Math.max(1, maxBytes) });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' || e instanceof RangeError) {
      throw new Error(`${file}: the gzip data inflates to ${limitText}; the file is corrupt or not what it claims to be: download it again`);
    }
    throw new Error(`${file}: the file is gzip-compressed but does not decompress (${(e as Error).message}); it is probably truncated or corrupt: download it again`);
  }
}

/** The first bytes of a gzip stream, inflating only as much as `raw`'s first 4 KiB hold (at most ~4 MB). */
function gunzipPrefix(raw: Buffer): Uint8Array {
  try {
    return gunzipSync(raw.subarray(0, 4096), { finishFlush: constants.Z_SYNC_FLUSH });
  } catch {
    return new Uint8Array(0); // the full inflate below reports what is wrong
  }
}

/**
 * An IDX file's bytes. Gzipped ones are inflated in two steps: first just enough to read the header,
 * whose magic number and dimensions are checked and then bound the full inflate to exactly the size
 * they declare (and to the load budget), so a hostile .gz is refused before it is inflated.
 */
function readIdxBytes(file: string, expectMagic: number, what: string): { bytes: Uint8Array; header: IdxHeader } {
  const raw = readRaw(file);
  if (!isGzip(raw)) {
    const header = parseHeader(raw, file, expectMagic, what);
    return { bytes: raw, header };
  }
  let head = gunzipPrefix(raw);
  // Not even a header's worth: inflate what little there is (or report why it does not inflate).
  if (head.length < 4 + 4 * (expectMagic & 0xff)) head = gunzipAtMost(raw, file, 1 << 16, 'more than 64 KiB without an IDX header');
  const declared = parseHeader(head, file, expectMagic, what);
  const total = declared.dataOffset + declared.dims.reduce((a, b) => a * b, 1);
  const cap = maxLoadBytes();
  if (total > cap) {
    throw new Error(`${file}: the IDX ${what} header declares ${declared.dims.join('×')} = ${total - declared.dataOffset} bytes, over the ${cap}-byte limit ` +
      '(RESIDUAL_MAX_LOAD_BYTES raises it); the file is corrupt or not an IDX file');
  }
  // One byte more than declared, so that trailing data is still found and named by checkSize.
  const bytes = gunzipAtMost(raw, file, total + 1, `more than the ${total} bytes its IDX header declares`);
  return { bytes, header: parseHeader(bytes, file, expectMagic, what) };
}

function hex8(x: number): string {
  return '0x' + (x >>> 0).toString(16).padStart(8, '0');
}

interface IdxHeader {
  dims: number[];
  dataOffset: number;
}

function parseHeader(bytes: Uint8Array, file: string, expectMagic: number, what: string): IdxHeader {
  const nd = expectMagic & 0xff;
  const headerLen = 4 + 4 * nd;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = bytes.length >= 4 ? dv.getUint32(0, false) : -1;
  if (magic !== expectMagic && magic !== -1) {
    let hint = '';
    if (magic === IDX_IMAGES_MAGIC) hint = ' (this is an IDX images file: did you swap the images and labels files?)';
    else if (magic === IDX_LABELS_MAGIC) hint = ' (this is an IDX labels file: did you swap the images and labels files?)';
    else if ((magic >>> 16) === 0 && ((magic >>> 8) & 0xff) !== 0x08) hint = ` (IDX element type 0x${((magic >>> 8) & 0xff).toString(16)} is not supported; only unsigned bytes, 0x08)`;
    else hint = ' (not an IDX file)';
    throw new Error(`${file}: wrong magic number ${hex8(magic)}, expected ${hex8(expectMagic)} for IDX ${what}${hint}`);
  }
  if (bytes.length < headerLen) {
    throw new Error(`${file}: truncated IDX file: ${bytes.length} bytes, shorter than the ${headerLen}-byte header of an IDX ${what} file`);
  }
  const dims: number[] = [];
  for (let d = 0; d < nd; d++) dims.push(dv.getUint32(4 + 4 * d, false));
  return { dims, dataOffset: headerLen };
}

function checkSize(bytes: Uint8Array, file: string, header: IdxHeader, what: string): void {
  const expected = header.dims.reduce((a, b) => a * b, 1);
  const have = bytes.length - header.dataOffset;
  if (have < expected) {
    throw new Error(
      `${file}: truncated IDX ${what} file: the header declares ${header.dims.join('×')} = ${expected} bytes of data, but only ${have} follow the header; download the file again`,
    );
  }
  if (have > expected) {
    throw new Error(`${file}: IDX ${what} file has ${have - expected} bytes after the ${header.dims.join('×')} = ${expected} bytes its header declares; the file is corrupt or not an IDX file`);
  }
}

export interface IdxImages {
  count: number;
  rows: number;
  cols: number;
  /** count × rows × cols bytes, row-major; backed by a SharedArrayBuffer. */
  data: Uint8Array;
}

/** Parses an IDX3 unsigned-byte images file (gzip detected by magic bytes). */
export function readIdxImages(file: string): IdxImages {
  const { bytes, header: h } = readIdxBytes(file, IDX_IMAGES_MAGIC, 'images');
  checkSize(bytes, file, h, 'images');
  const [count, rows, cols] = h.dims as [number, number, number];
  if (rows === 0 || cols === 0) throw new Error(`${file}: IDX images file declares images of ${rows}×${cols} pixels`);
  const data = new Uint8Array(new SharedArrayBuffer(count * rows * cols));
  data.set(bytes.subarray(h.dataOffset, h.dataOffset + data.length));
  return { count, rows, cols, data };
}

/** Parses an IDX1 unsigned-byte labels file; with `numClasses`, checks every label is below it. */
export function readIdxLabels(file: string, numClasses?: number): Int32Array {
  const { bytes, header: h } = readIdxBytes(file, IDX_LABELS_MAGIC, 'labels');
  checkSize(bytes, file, h, 'labels');
  const count = h.dims[0]!;
  const labels = new Int32Array(new SharedArrayBuffer(count * 4));
  for (let i = 0; i < count; i++) {
    const l = bytes[h.dataOffset + i]!;
    if (numClasses !== undefined && l >= numClasses) {
      throw new Error(`${file}: label ${l} of item ${i} is out of range: this dataset has ${numClasses} classes (labels 0..${numClasses - 1}); the file is corrupt or belongs to another dataset`);
    }
    labels[i] = l;
  }
  return labels;
}

/** An in-memory dataset from an IDX images file and an IDX labels file (1 channel). */
export function idxDataset(imagesFile: string, labelsFile: string, classNames: readonly string[], name?: string): InMemoryDataset {
  const images = readIdxImages(imagesFile);
  const labels = readIdxLabels(labelsFile, classNames.length);
  if (labels.length !== images.count) {
    throw new Error(`${imagesFile} has ${images.count} images but ${labelsFile} has ${labels.length} labels: the two files must describe the same samples (mixed-up train/test files?)`);
  }
  return new InMemoryDataset({
    name: name ?? imagesFile,
    data: images.data,
    labels,
    channels: 1,
    height: images.rows,
    width: images.cols,
    classNames,
  });
}

export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';
export const FASHION_MNIST_CLASSES: readonly string[] = Object.freeze([
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
]);
/** Mean and std of all training pixels (values / 255), computed from the files (see test/data.test.ts). */
export const FASHION_MNIST_MEAN: readonly number[] = Object.freeze([0.286]);
export const FASHION_MNIST_STD: readonly number[] = Object.freeze([0.353]);

function findFile(dir: string, base: string): string | null {
  for (const name of [base + '.gz', base]) {
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  return null;
}

/**
 * Fashion-MNIST (60000 train / 10000 test, 1×28×28, 10 classes) from `dir`, by default Debian's
 * dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist). Files may be gzipped or not.
 */
export function fashionMnist(split: 'train' | 'test', dir?: string): InMemoryDataset {
  if (split !== 'train' && split !== 'test') throw new Error(`fashionMnist: split must be 'train' or 'test', got ${JSON.stringify(split)}`);
  const d = dir ?? FASHION_MNIST_DIR;
  const prefix = split === 'train' ? 'train' : 't10k';
  const images = findFile(d, `${prefix}-images-idx3-ubyte`);
  const labels = findFile(d, `${prefix}-labels-idx1-ubyte`);
  if (!images || !labels) {
    const missing = !images ? `${prefix}-images-idx3-ubyte.gz` : `${prefix}-labels-idx1-ubyte.gz`;
    const how = dir === undefined
      ? 'install it with apt-get install dataset-fashion-mnist, or pass the directory that holds the IDX files'
      : 'pass the directory that holds the Fashion-MNIST IDX files, or omit it to use Debian\'s dataset-fashion-mnist package (apt-get install dataset-fashion-mnist)';
    throw new Error(`Fashion-MNIST ${split} set not found: ${join(d, missing)} does not exist; ${how}`);
  }
  return idxDataset(images, labels, FASHION_MNIST_CLASSES, `fashion-mnist ${split} (${images})`);
}
