// Hostile weight files from issue #16, built in TypeScript so that none of them needs to live in git:
// the small ones are made in milliseconds, the "gigabyte" ones are tiny on disk by construction.
//
//   node dist/test/hostile_files.js DIR     writes every file into DIR (for probing the CLI by hand)
//
// Also the tiny zip and pickle writers the io tests use to build broken files.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as zlib from 'node:zlib';

export function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v);
  return b;
}
export function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
}
export function u64(v: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
}

/** A zip entry: plain bytes (stored or deflated by makeZip), or an already deflated body with its true size and CRC. */
export type ZipInput = Uint8Array | { deflated: Buffer; size: number; crc: number };

/** A minimal zip writer (stored or deflated entries). */
export function makeZip(entries: [string, ZipInput][], opts: { deflate?: boolean } = {}): Buffer {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const [name, input] of entries) {
    const nameBuf = Buffer.from(name, 'utf8');
    let body: Buffer, size: number, crc: number, method: number;
    if (input instanceof Uint8Array) {
      body = opts.deflate ? zlib.deflateRawSync(input) : Buffer.from(input);
      size = input.length;
      crc = zlib.crc32(input);
      method = opts.deflate ? 8 : 0;
    } else {
      ({ deflated: body, size, crc } = input);
      method = 8;
    }
    const local = Buffer.concat([
      u32(0x04034b50), u16(20), u16(0), u16(method), u16(0), u16(0), u32(crc), u32(body.length), u32(size),
      u16(nameBuf.length), u16(0), nameBuf,
    ]);
    central.push(Buffer.concat([
      u32(0x02014b50), u16(20), u16(20), u16(0), u16(method), u16(0), u16(0), u32(crc), u32(body.length), u32(size),
      u16(nameBuf.length), u16(0), u16(0), u16(0), u16(0), u32(0), u32(offset), nameBuf,
    ]));
    parts.push(local, body);
    offset += local.length + body.length;
  }
  const cd = Buffer.concat(central);
  const eocd = Buffer.concat([u32(0x06054b50), u16(0), u16(0), u16(entries.length), u16(entries.length), u32(cd.length), u32(offset), u16(0)]);
  return Buffer.concat([...parts, cd, eocd]);
}

/** Pickle building blocks. */
export const P = {
  proto: (v = 2) => Buffer.from([0x80, v]),
  global: (module: string, name: string) => Buffer.from(`c${module}\n${name}\n`, 'latin1'),
  str: (s: string) => {
    const b = Buffer.from(s, 'utf8');
    return Buffer.concat([Buffer.from([0x58]), u32(b.length), b]);
  },
  int: (v: number) => Buffer.concat([Buffer.from([0x4a]), u32(v)]),
  emptyTuple: Buffer.from([0x29]),
  emptyDict: Buffer.from([0x7d]),
  mark: Buffer.from([0x28]),
  tuple: Buffer.from([0x74]),
  setitems: Buffer.from([0x75]),
  setitem: Buffer.from([0x73]),
  reduce: Buffer.from([0x52]),
  binpersid: Buffer.from([0x51]),
  newfalse: Buffer.from([0x89]),
  none: Buffer.from([0x4e]),
  stop: Buffer.from([0x2e]),
};

/** A tensor: _rebuild_tensor_v2(storage(key, numel float32), offset, shape, stride). */
export function tensorPickle(key: string, numel: number, shape: number[], stride: number[], offset = 0): Buffer {
  const ints = (v: number[]) => Buffer.concat([P.mark, ...v.map(P.int), P.tuple]);
  const pid = Buffer.concat([P.mark, P.str('storage'), P.global('torch', 'FloatStorage'), P.str(key), P.str('cpu'), P.int(numel), P.tuple]);
  return Buffer.concat([
    P.global('torch._utils', '_rebuild_tensor_v2'),
    P.mark, pid, P.binpersid, P.int(offset), ints(shape), ints(stride), P.newfalse,
    P.global('collections', 'OrderedDict'), P.emptyTuple, P.reduce, P.tuple, P.reduce,
  ]);
}

/** data.pkl of {name: tensor, ...} for the given tensors. */
export function stateDictPickle(tensors: { name: string; key: string; numel: number; shape: number[]; stride: number[]; offset?: number }[]): Buffer {
  const items = tensors.map((t) => Buffer.concat([P.str(t.name), tensorPickle(t.key, t.numel, t.shape, t.stride, t.offset ?? 0)]));
  return Buffer.concat([P.proto(), P.emptyDict, P.mark, ...items, P.setitems, P.stop]);
}

/** A zip .pth whose data.pkl is `prefix`, `count` copies of the byte `fill`, then `suffix`: deflated as a stream, never built whole. */
function repeatedPickleZip(prefix: Buffer, fill: number, count: number, suffix: Buffer): Buffer {
  const chunk = Buffer.alloc(Math.min(count, 16 << 20), fill);
  // Z_FULL_FLUSH makes each compressed piece byte-aligned and independent, so a piece can be repeated.
  const piece = (b: Buffer) => zlib.deflateRawSync(b, { level: 9, finishFlush: zlib.constants.Z_FULL_FLUSH });
  const body: Buffer[] = [piece(prefix)];
  let crc = zlib.crc32(prefix);
  const whole = piece(chunk);
  let left = count;
  while (left >= chunk.length) {
    body.push(whole);
    crc = zlib.crc32(chunk, crc);
    left -= chunk.length;
  }
  if (left > 0) {
    body.push(piece(chunk.subarray(0, left)));
    crc = zlib.crc32(chunk.subarray(0, left), crc);
  }
  body.push(piece(suffix), Buffer.from([0x03, 0x00])); // a final, empty fixed-Huffman block
  crc = zlib.crc32(suffix, crc);
  const size = prefix.length + count + suffix.length;
  return makeZip([['archive/data.pkl', { deflated: Buffer.concat(body), size, crc: crc >>> 0 }], ['archive/version', Buffer.from('3\n')]]);
}

/** `count` zero bytes as a raw deflate stream (about count/1030 bytes) with their CRC-32. */
export function deflatedZeros(count: number): { deflated: Buffer; size: number; crc: number } {
  const chunk = Buffer.alloc(Math.min(count, 64 << 20));
  const whole = zlib.deflateRawSync(chunk, { level: 9, memLevel: 9, finishFlush: zlib.constants.Z_FULL_FLUSH });
  const body: Buffer[] = [];
  let crc = 0;
  let left = count;
  while (left >= chunk.length) {
    body.push(whole);
    crc = zlib.crc32(chunk, crc);
    left -= chunk.length;
  }
  if (left > 0) {
    body.push(zlib.deflateRawSync(chunk.subarray(0, left), { level: 9, finishFlush: zlib.constants.Z_FULL_FLUSH }));
    crc = zlib.crc32(chunk.subarray(0, left), crc);
  }
  body.push(Buffer.from([0x03, 0x00]));
  return { deflated: Buffer.concat(body), size: count, crc: crc >>> 0 };
}

export interface HostileFile {
  name: string;
  /** What it does to a loader without bounds (issue #16). */
  what: string;
  make(): Buffer;
}

/** The files of issue #16 item 1 and 2. */
export const HOSTILE_PTH: HostileFile[] = [
  {
    name: 'none-bomb.pth',
    what: '175 KB zip: data.pkl = protocol 2 + 180,000,000 NONE + STOP (stack past V8\'s array limit)',
    make: () => repeatedPickleZip(P.proto(2), 0x4e, 180_000_000, P.stop),
  },
  {
    name: 'mark-bomb.pth',
    what: '175 KB zip: data.pkl = protocol 2 + 180,000,000 MARK + STOP (mark stack past V8\'s array limit)',
    make: () => repeatedPickleZip(P.proto(2), 0x28, 180_000_000, P.stop),
  },
  {
    name: 'frozenset-wide.pth',
    what: 'MARK + 300,000 NONE + FROZENSET (call stack overflow from spreading the items)',
    make: () => makeZip([['archive/data.pkl', Buffer.concat([P.proto(4), P.mark, Buffer.alloc(300_000, 0x4e), Buffer.from([0x91]), P.stop])]]),
  },
  {
    name: 'frozenset-deep.pth',
    what: '300,000 nested MARK ... FROZENSET',
    make: () => makeZip([['archive/data.pkl', Buffer.concat([P.proto(4), Buffer.alloc(300_000, 0x28), P.none, Buffer.alloc(300_000, 0x91), P.stop])]]),
  },
  {
    name: 'expand60.pth',
    what: '60 stride-0 views torch.zeros(1).expand(4096, 4096): 17 KB on disk, 4 GB materialised',
    make: () => {
      const tensors = Array.from({ length: 60 }, (_, i) => ({ name: `w${i}`, key: String(i), numel: 1, shape: [4096, 4096], stride: [0, 0] }));
      const storages: [string, Uint8Array][] = tensors.map((t) => [`archive/data/${t.key}`, new Uint8Array(4)]);
      return makeZip([['archive/data.pkl', stateDictPickle(tensors)], ...storages]);
    },
  },
  {
    name: 'alias1000.pth',
    what: 'one 4 MB storage aliased by 1,000 tensors: 4 MB on disk, 4.2 GB materialised',
    make: () => {
      const numel = 1 << 20;
      const tensors = Array.from({ length: 1000 }, (_, i) => ({ name: `w${i}`, key: '0', numel, shape: [numel], stride: [1] }));
      return makeZip([['archive/data.pkl', stateDictPickle(tensors)], ['archive/data/0', new Uint8Array(4 * numel)]]);
    },
  },
  {
    name: 'inflate2g.pth',
    what: 'a 2.0 MB deflated entry that inflates to 2 GiB (under the 1032:1 ratio check)',
    make: () => {
      const numel = 2 ** 29 - 1; // just under 2 GiB of float32, under the old 2^31 - 1 entry limit
      return makeZip([
        ['archive/data.pkl', stateDictPickle([{ name: 'w', key: '0', numel, shape: [numel], stride: [1] }])],
        ['archive/data/0', deflatedZeros(4 * numel)],
      ]);
    },
  },
];

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const dir = process.argv[2];
  if (!dir) {
    console.error('usage: node dist/test/hostile_files.js DIR');
    process.exit(2);
  }
  mkdirSync(dir, { recursive: true });
  for (const f of HOSTILE_PTH) {
    const bytes = f.make();
    writeFileSync(join(dir, f.name), bytes);
    console.log(`${f.name}\t${bytes.length} bytes\t${f.what}`);
  }
}

export interface TarItem {
  name: string;
  /** '0' file (default), '5' directory, '2' symlink, 'x' pax header, ... */
  type?: string;
  data?: Buffer;
  /** The 12-byte size field as written, to forge it (default: the data's length in octal). */
  sizeField?: Buffer;
}

/** A minimal ustar writer (independent of the reader under test). */
export function makeTar(items: TarItem[], end = true): Buffer {
  const blocks: Buffer[] = [];
  for (const it of items) {
    const h = Buffer.alloc(512);
    const data = it.data ?? Buffer.alloc(0);
    h.write(it.name, 0, 100, 'utf8');
    h.write('0000644\0', 100);
    h.write('0000000\0', 108);
    h.write('0000000\0', 116);
    if (it.sizeField) it.sizeField.copy(h, 124, 0, 12);
    else h.write(data.length.toString(8).padStart(11, '0') + '\0', 124);
    h.write('00000000000\0', 136);
    h.write('        ', 148);
    h.write(it.type ?? '0', 156);
    if (it.type === '2') h.write('/etc/passwd', 157);
    h.write('ustar\0', 257);
    h.write('00', 263);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
    blocks.push(h, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  if (end) blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

/** One pax extended-header record, "LEN key=value\n", LEN counting itself. */
export function paxRecord(key: string, value: string): Buffer {
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body) + 1;
  while (String(len).length + Buffer.byteLength(body) !== len) len++;
  return Buffer.from(`${len}${body}`);
}

/** An IDX file: big-endian magic, dims, data. */
export function idxBytes(magic: number, dims: number[], data: Uint8Array): Buffer {
  const h = Buffer.alloc(4 + 4 * dims.length);
  h.writeUInt32BE(magic, 0);
  dims.forEach((d, k) => h.writeUInt32BE(d, 4 + 4 * k));
  return Buffer.concat([h, Buffer.from(data)]);
}
