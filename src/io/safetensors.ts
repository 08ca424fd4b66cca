// The safetensors format (https://github.com/huggingface/safetensors): 8-byte little-endian header
// length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {..}},
// then the raw little-endian tensor bytes; offsets are relative to the end of the header.
//
// Reading validates the whole header before touching any data and reads each tensor with one
// positioned read, so memory is bounded by the tensors asked for. Writing is atomic: a temp file in
// the target's directory, fsync, rename, fsync of the directory.

import * as os from 'node:os';
import {
  DTYPE_SIZES,
  decodeInto,
  floatToBf16,
  floatToHalf,
  isStoredDType,
  shapeNumel,
  type LoadedTensor,
  type StoredDType,
} from './dtypes.js';
import { RandomAccessFile, WeightFileError, writeAtomic } from './file.js';

/** Largest header we accept; real headers are kilobytes (the reference implementation uses the same limit). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface SafetensorsTensorInfo {
  readonly name: string;
  readonly dtype: StoredDType;
  readonly shape: number[];
  /** Byte range relative to the start of the data section. */
  readonly begin: number;
  readonly end: number;
}

/** True if `head` (the file's first bytes) looks like a safetensors header for a file of `fileSize` bytes. */
export function looksLikeSafetensors(head: Uint8Array, fileSize: number): boolean {
  if (head.length < 9 || fileSize < 10) return false;
  const n = new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true);
  return n >= 2n && n <= BigInt(fileSize - 8) && head[8] === 0x7b; // '{'
}

/** An open safetensors file: header parsed and validated, tensors read on demand. */
export class SafetensorsFile {
  readonly tensors = new Map<string, SafetensorsTensorInfo>();
  readonly metadata: Record<string, string> | null;
  private readonly dataStart: number;

  private constructor(
    private readonly file: RandomAccessFile,
    metadata: Record<string, string> | null,
    dataStart: number,
  ) {
    this.metadata = metadata;
    this.dataStart = dataStart;
  }

  get path(): string {
    return this.file.path;
  }

  static open(path: string): SafetensorsFile {
    const file = RandomAccessFile.open(path);
    try {
      return SafetensorsFile.parse(file);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  private static parse(file: RandomAccessFile): SafetensorsFile {
    const fail: (m: string) => never = (m) => file.fail(`safetensors: ${m}`);
    if (file.size < 8) fail(`file is ${file.size} bytes, too short to hold the 8-byte header length; it is truncated or not safetensors`);
    const lenBytes = file.read(0, 8, 'safetensors header length');
    const n = new DataView(lenBytes.buffer).getBigUint64(0, true);
    if (n > BigInt(MAX_HEADER_BYTES)) {
      fail(`header length ${n} bytes is absurd (limit ${MAX_HEADER_BYTES}); the file is corrupt or not safetensors`);
    }
    const headerLen = Number(n);
    if (headerLen > file.size - 8) {
      fail(`header length ${headerLen} bytes exceeds the ${file.size - 8} bytes after the length field; the file is truncated or corrupt`);
    }
    const headerBytes = file.read(8, headerLen, 'safetensors header');
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
    } catch {
      return fail('header is not valid UTF-8; the file is corrupt or not safetensors');
    }
    let header: unknown;
    try {
      header = JSON.parse(text);
    } catch (e) {
      return fail(`header is not valid JSON (${(e as Error).message}); the file is corrupt or not safetensors`);
    }
    if (header === null || typeof header !== 'object' || Array.isArray(header)) fail('header JSON is not an object');
    const dataStart = 8 + headerLen;
    const dataLen = file.size - dataStart;
    let metadata: Record<string, string> | null = null;
    const infos: SafetensorsTensorInfo[] = [];
    for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
      if (name === '__metadata__') {
        if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) fail('__metadata__ is not an object of strings');
        metadata = {};
        for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
          if (typeof v !== 'string') fail(`__metadata__ value for "${k}" is a ${typeof v}, expected a string`);
          metadata[k] = v;
        }
        continue;
      }
      const tfail: (m: string) => never = (m) => fail(`tensor "${name}": ${m}`);
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) tfail('entry is not an object');
      const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
      if (!isStoredDType(dtype)) {
        tfail(`unknown dtype ${JSON.stringify(dtype)} (supported: ${Object.keys(DTYPE_SIZES).join(', ')})`);
      }
      if (!Array.isArray(shape)) tfail('shape is not an array');
      const numel = shapeNumel(shape as number[], tfail);
      if (!Array.isArray(offsets) || offsets.length !== 2) tfail('data_offsets is not a [begin, end] pair');
      const [begin, end] = offsets as unknown[];
      if (!Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || (begin as number) < 0 || (end as number) < 0) {
        tfail(`data_offsets [${String(begin)}, ${String(end)}] are not non-negative integers`);
      }
      const b = begin as number;
      const e = end as number;
      if (e < b) tfail(`data_offsets [${b}, ${e}] are out of order (end before begin)`);
      if (e > dataLen) {
        tfail(`data_offsets [${b}, ${e}] lie outside the ${dataLen}-byte data section; the file is truncated or corrupt`);
      }
      const want = numel * DTYPE_SIZES[dtype];
      if (e - b !== want) {
        tfail(`shape [${(shape as number[]).join(', ')}] of ${dtype} needs ${want} bytes but data_offsets [${b}, ${e}] span ${e - b}`);
      }
      infos.push({ name, dtype, shape: (shape as number[]).slice(), begin: b, end: e });
    }
    const byOffset = [...infos].sort((x, y) => x.begin - y.begin || x.end - y.end);
    for (let i = 1; i < byOffset.length; i++) {
      const p = byOffset[i - 1]!;
      const c = byOffset[i]!;
      if (c.begin < p.end) {
        fail(`tensors "${p.name}" [${p.begin}, ${p.end}] and "${c.name}" [${c.begin}, ${c.end}] overlap; the file is corrupt`);
      }
    }
    const f = new SafetensorsFile(file, metadata, dataStart);
    for (const info of infos) f.tensors.set(info.name, info);
    return f;
  }

  /** Read one tensor as float32 (integers and other floats converted; `dtype` keeps the stored type). */
  read(name: string): LoadedTensor {
    const info = this.tensors.get(name);
    if (!info) this.file.fail(`safetensors: no tensor named "${name}"`);
    const count = (info.end - info.begin) / DTYPE_SIZES[info.dtype];
    const data = new Float32Array(count);
    if (info.dtype === 'F32' && littleEndianHost) {
      // Read straight into the result: one pass over memory instead of two.
      this.file.readInto(this.dataStart + info.begin, new Uint8Array(data.buffer), `tensor "${name}"`);
    } else {
      const bytes = this.file.read(this.dataStart + info.begin, info.end - info.begin, `tensor "${name}"`);
      decodeInto(info.dtype, bytes, count, data);
    }
    return { dtype: info.dtype, shape: info.shape.slice(), data };
  }

  close(): void {
    this.file.close();
  }
}

/** Read every tensor (in header order) and the metadata of a safetensors file. */
export function readSafetensors(path: string): { tensors: Map<string, LoadedTensor>; metadata: Record<string, string> | null } {
  const f = SafetensorsFile.open(path);
  try {
    const tensors = new Map<string, LoadedTensor>();
    for (const name of f.tensors.keys()) tensors.set(name, f.read(name));
    return { tensors, metadata: f.metadata };
  } finally {
    f.close();
  }
}

export type WritableDType = 'F32' | 'F16' | 'BF16' | 'I64';

export interface SafetensorsEntry {
  dtype: WritableDType;
  shape: readonly number[];
  /** Row-major values; converted to `dtype` on write (F16/BF16 round to nearest even, I64 must be integers). */
  data: Float32Array;
}

const WRITE_SIZES: Record<WritableDType, number> = { F32: 4, F16: 2, BF16: 2, I64: 8 };
const CHUNK_ELEMS = 1 << 18;
const littleEndianHost = os.endianness() === 'LE';

function encodeChunk(dtype: WritableDType, src: Float32Array): Uint8Array {
  const n = src.length;
  if (dtype === 'F32' && littleEndianHost) return new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
  const out = new Uint8Array(n * WRITE_SIZES[dtype]);
  const dv = new DataView(out.buffer);
  switch (dtype) {
    case 'F32':
      for (let i = 0; i < n; i++) dv.setFloat32(4 * i, src[i]!, true);
      break;
    case 'F16':
      for (let i = 0; i < n; i++) dv.setUint16(2 * i, floatToHalf(src[i]!), true);
      break;
    case 'BF16':
      for (let i = 0; i < n; i++) dv.setUint16(2 * i, floatToBf16(src[i]!), true);
      break;
    case 'I64':
      for (let i = 0; i < n; i++) dv.setBigInt64(8 * i, BigInt(src[i]!), true);
      break;
  }
  return out;
}

/**
 * Write tensors to `path` as safetensors, atomically: readers see either the old file or the complete
 * new one. Tensors are laid out by decreasing element size so every tensor is aligned to its dtype.
 */
export function writeSafetensors(
  path: string,
  tensors: ReadonlyMap<string, SafetensorsEntry> | Readonly<Record<string, SafetensorsEntry>>,
  metadata?: Readonly<Record<string, string>>,
): void {
  const fail: (m: string) => never = (m) => {
    throw new WeightFileError(path, `cannot write safetensors: ${m}`);
  };
  const entries: [string, SafetensorsEntry][] =
    tensors instanceof Map ? [...(tensors as ReadonlyMap<string, SafetensorsEntry>)] : Object.entries(tensors as Record<string, SafetensorsEntry>);
  const seen = new Set<string>();
  for (const [name, t] of entries) {
    if (name.length === 0 || name === '__metadata__') fail(`"${name}" is not a usable tensor name`);
    if (seen.has(name)) fail(`tensor "${name}" appears twice`);
    seen.add(name);
    if (!Object.prototype.hasOwnProperty.call(WRITE_SIZES, t.dtype)) {
      fail(`tensor "${name}": dtype ${JSON.stringify(t.dtype)} cannot be written (use F32, F16, BF16 or I64)`);
    }
    if (!(t.data instanceof Float32Array)) fail(`tensor "${name}": data must be a Float32Array`);
    const numel = shapeNumel(t.shape, (m) => fail(`tensor "${name}": ${m}`));
    if (numel !== t.data.length) fail(`tensor "${name}": shape [${t.shape.join(', ')}] has ${numel} elements but data has ${t.data.length}`);
    if (t.dtype === 'I64') {
      for (let i = 0; i < t.data.length; i++) {
        if (!Number.isInteger(t.data[i]!)) fail(`tensor "${name}" is I64 but element ${i} is ${t.data[i]}, not an integer`);
      }
    }
  }
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) if (typeof v !== 'string') fail(`metadata "${k}" is not a string`);
  }
  // Stable sort: larger elements first keeps every tensor aligned to its element size.
  const layout = entries
    .map((e, i) => ({ name: e[0], t: e[1], i }))
    .sort((a, b) => WRITE_SIZES[b.t.dtype] - WRITE_SIZES[a.t.dtype] || a.i - b.i);
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) header['__metadata__'] = { ...metadata };
  let offset = 0;
  for (const { name, t } of layout) {
    const bytes = t.data.length * WRITE_SIZES[t.dtype];
    header[name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  const jsonBytes0 = Buffer.byteLength(json, 'utf8');
  json += ' '.repeat((8 - ((8 + jsonBytes0) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.length));

  function* chunks(): Generator<Uint8Array> {
    yield prefix;
    yield headerBytes;
    for (const { t } of layout) {
      for (let s = 0; s < t.data.length; s += CHUNK_ELEMS) yield encodeChunk(t.dtype, t.data.subarray(s, Math.min(t.data.length, s + CHUNK_ELEMS)));
    }
  }
  try {
    writeAtomic(path, chunks());
  } catch (e) {
    throw new WeightFileError(path, `cannot write safetensors: ${(e as Error).message} (check that the directory exists, is writable and has space)`, { cause: e });
  }
}
