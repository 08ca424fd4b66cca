// One format's fuzz loop, run by test/fuzz.test.ts in a worker thread (so that a hang can be cut
// and a runaway allocation is contained). workerData: { format, seed, cases, dir }. Posts back a
// FuzzReport. Every mutated file must load cleanly or throw an Error with a message; anything else
// (a non-Error throw, an empty message, a weight-file error that does not name the file) is a finding.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { gzipSync } from 'node:zlib';
import { cifar10, extractTar, readIdxImages, readIdxLabels } from '../src/data/index.js';
import { WeightFileError, loadStateDictFile } from '../src/io/index.js';
import { repoRoot, rng } from './helpers.js';
import { idxBytes, makeTar, makeZip, paxRecord, stateDictPickle, type TarItem } from './hostile_files.js';

export type FuzzFormat = 'safetensors' | 'pth-zip' | 'pth-legacy' | 'idx' | 'cifar' | 'tar';

export interface FuzzReport {
  format: FuzzFormat;
  cases: number;
  loaded: number;
  refused: number;
  /** Mutation kinds tried, with counts. */
  kinds: Record<string, number>;
  findings: string[];
  peakRss: number;
  seconds: number;
}

const { format, seed, cases, dir } = workerData as { format: FuzzFormat; seed: number; cases: number; dir: string };
const r = rng(seed);
const int = (n: number) => Math.floor(r() * n);

/** Numbers a size field can be set to: huge, negative, NaN-like, fractional, off by one. */
const NUMBER_TEXTS = ['NaN', '-1', '1e308', '0.5', '99999999999999999999', '9007199254740993', '-0', '4294967296', '2147483648', ''];
const U32S = [0xffffffff, 0x7fffffff, 0x80000000, 0, 1, 0xfffffff0];

function mutate(valid: Buffer): { bytes: Buffer; kind: string } {
  const b = Buffer.from(valid);
  switch (int(6)) {
    case 0: {
      const flips = 1 + int(8);
      for (let i = 0; i < flips; i++) {
        const k = int(b.length);
        b[k] = b[k]! ^ (1 << int(8));
      }
      return { bytes: b, kind: 'bit flips' };
    }
    case 1:
      return { bytes: b.subarray(0, int(b.length)), kind: 'truncation' };
    case 2: {
      const at = int(b.length), len = 1 + int(16);
      for (let i = at; i < Math.min(b.length, at + len); i++) b[i] = int(256);
      return { bytes: b, kind: 'random bytes' };
    }
    case 3: {
      // A binary size field set absurd: a 4-byte-aligned little- or big-endian u32 anywhere.
      const at = int(Math.max(1, b.length - 4)) & ~3;
      const v = U32S[int(U32S.length)]!;
      if (r() < 0.5) b.writeUInt32LE(v >>> 0, at);
      else b.writeUInt32BE(v >>> 0, at);
      return { bytes: b, kind: 'u32 size field' };
    }
    case 4: {
      // A decimal number in the text (JSON header, pax record, pickle text opcode) set absurd.
      const text = b.toString('latin1');
      const matches = [...text.matchAll(/\d+/g)];
      if (matches.length === 0) return { bytes: b, kind: 'text number (none)' };
      const m = matches[int(matches.length)]!;
      const repl = NUMBER_TEXTS[int(NUMBER_TEXTS.length)]!;
      return { bytes: Buffer.from(text.slice(0, m.index) + repl + text.slice(m.index! + m[0].length), 'latin1'), kind: 'text number' };
    }
    default: {
      // Splice: a chunk of the file repeated or dropped.
      const at = int(b.length), len = int(Math.min(512, b.length - at) + 1);
      return r() < 0.5
        ? { bytes: Buffer.concat([b.subarray(0, at), b.subarray(at, at + len), b.subarray(at)]), kind: 'splice (repeat)' }
        : { bytes: Buffer.concat([b.subarray(0, at), b.subarray(at + len)]), kind: 'splice (drop)' };
    }
  }
}

/** A weird value for a number in a structure: huge, negative, fractional, NaN, past 2^53. */
function weirdNumber(): unknown {
  return [-1, 1e308, 0.5, 2 ** 53 + 2, 2 ** 32, 2 ** 31, 0, 'NaN', null, -0.5][int(10)];
}

/** safetensors: one shape or offset in the JSON header set weird, the header re-serialised with a correct length. */
function mutateSafetensors(valid: Buffer): Buffer {
  const n = Number(valid.readBigUInt64LE(0));
  const header = JSON.parse(valid.subarray(8, 8 + n).toString('utf8')) as Record<string, { shape?: unknown[]; data_offsets?: unknown[] }>;
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  const t = header[names[int(names.length)]!]!;
  const field = r() < 0.5 ? t.shape : t.data_offsets;
  if (field && field.length > 0) field[int(field.length)] = weirdNumber();
  else if (field) field.push(weirdNumber());
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, valid.subarray(8 + n)]);
}

/** A zip .pth built here, so that its pickle can be mutated and the archive rebuilt with correct CRCs. */
function pthZip(mutatePickle: (pkl: Buffer) => Buffer): Buffer {
  const tensors = [
    { name: 'w', key: '0', numel: 12, shape: [3, 4], stride: [4, 1] },
    { name: 't', key: '0', numel: 12, shape: [4, 3], stride: [1, 4] },
    { name: 'row', key: '0', numel: 12, shape: [4], stride: [1], offset: 4 },
    { name: 'e', key: '1', numel: 2, shape: [2, 5], stride: [1, 0] },
  ];
  const f32 = (n: number) => new Uint8Array(new Float32Array(n).map((_, i) => i / 2).buffer);
  return makeZip([['archive/data.pkl', mutatePickle(stateDictPickle(tensors))], ['archive/data/0', f32(12)], ['archive/data/1', f32(2)], ['archive/version', Buffer.from('3\n')]]);
}

/** A pickle with one BININT (shape, stride, offset, numel) set weird, or a few bytes flipped. */
function mutatePickleInts(pkl: Buffer): Buffer {
  const b = Buffer.from(pkl);
  const ints: number[] = [];
  for (let i = 0; i + 4 < b.length; i++) if (b[i] === 0x4a) ints.push(i + 1);
  if (ints.length === 0 || r() < 0.2) {
    b[int(b.length)] = int(256);
    return b;
  }
  const at = ints[int(ints.length)]!;
  b.writeInt32LE([-1, 0x7fffffff, -0x80000000, 0, 1 << 24, 1 << 30][int(6)]!, at);
  return b;
}

/** tar: a size set weird where the reader trusts it: the octal header field (checksum fixed) or the pax record. */
function mutateTar(): Buffer {
  const items: TarItem[] = [
    { name: 'd/', type: '5' },
    { name: 'PaxHeader', type: 'x', data: Buffer.concat([paxRecord('path', 'd/long-name.bin'), paxRecord('size', '700')]) },
    { name: 'ignored', data: Buffer.alloc(700, 3) },
    { name: 'd/b.txt', data: Buffer.from('hello\n') },
  ];
  if (r() < 0.5) {
    const weird = NUMBER_TEXTS[int(NUMBER_TEXTS.length)]!;
    items[1]!.data = Buffer.concat([paxRecord('path', 'd/long-name.bin'), paxRecord('size', weird)]);
    return makeTar(items);
  }
  const field = Buffer.alloc(12);
  switch (int(4)) {
    case 0: field.write('77777777777\0'); break;
    case 1: field.fill(0xff); break; // base-256 -1
    case 2: field[0] = 0x80; field.writeUInt32BE(0xffffffff, 8); field.writeUInt32BE(0xffffff, 4); break;
    default: field.write('0.5'); break;
  }
  items[3]!.sizeField = field;
  return makeTar(items);
}

const fixtures = join(repoRoot, 'test', 'fixtures', 'io');
const WEIGHT_CAP = 64 << 20;

function validFile(): Buffer {
  switch (format) {
    case 'safetensors': return readFileSync(join(fixtures, 'io_weights.safetensors'));
    case 'pth-zip': return readFileSync(join(fixtures, 'io_zip.pt'));
    case 'pth-legacy': return readFileSync(join(fixtures, r() < 0.7 ? 'io_legacy.pt' : 'io_legacy_proto0.pt'));
    case 'idx': return idxBytes(0x803, [3, 4, 5], Buffer.from(Array.from({ length: 60 }, (_, i) => i * 4)));
    case 'cifar': return Buffer.concat([0, 1].map((label) => Buffer.concat([Buffer.from([label]), Buffer.alloc(3072, 17 + label)])));
    case 'tar': return makeTar([
      { name: 'd/', type: '5' },
      { name: 'PaxHeader', type: 'x', data: Buffer.concat([paxRecord('path', 'd/long-name.bin'), paxRecord('size', '700')]) },
      { name: 'ignored', data: Buffer.alloc(700, 3) },
      { name: 'd/b.txt', data: Buffer.from('hello\n') },
    ]);
  }
}

let loaded = 0, refused = 0, peakRss = 0;
const findings: string[] = [];
const kinds: Record<string, number> = {};
const t0 = performance.now();
const work = mkdtempSync(join(dir, `${format}-`));

function judge(e: unknown, file: string, kind: string, i: number): void {
  refused++;
  const where = `case ${i} (${kind}, seed ${seed})`;
  if (!(e instanceof Error)) findings.push(`${where}: threw a non-Error ${String(e)}`);
  else if (!e.message) findings.push(`${where}: ${e.name} with an empty message`);
  else if ((format === 'safetensors' || format.startsWith('pth')) && !(e instanceof WeightFileError && e.message.includes(file))) {
    findings.push(`${where}: ${e.name} that does not name the file: ${e.message.slice(0, 200)}`);
  }
}

/** A mutation that knows the format (reaching past checksums and length prefixes), or a blind one. */
function mutated(): { bytes: Buffer; kind: string } {
  if (r() < 0.35) {
    if (format === 'safetensors') return { bytes: mutateSafetensors(validFile()), kind: 'header number' };
    if (format === 'pth-zip') return { bytes: pthZip(mutatePickleInts), kind: 'pickle int (CRC kept valid)' };
    if (format === 'tar') return { bytes: mutateTar(), kind: 'size field (checksum kept valid)' };
  }
  return mutate(validFile());
}

async function one(i: number): Promise<void> {
  const { bytes, kind } = mutated();
  kinds[kind] = (kinds[kind] ?? 0) + 1;
  try {
    switch (format) {
      case 'safetensors':
      case 'pth-zip':
      case 'pth-legacy': {
        const file = join(work, `w${i}.${format === 'safetensors' ? 'safetensors' : 'pt'}`);
        writeFileSync(file, bytes);
        try {
          loadStateDictFile(file, { maxBytes: WEIGHT_CAP });
          loaded++;
        } catch (e) {
          judge(e, file, kind, i);
        }
        rmSync(file);
        break;
      }
      case 'idx': {
        const file = join(work, `i${i}${i % 2 ? '.gz' : ''}`);
        writeFileSync(file, i % 2 ? gzipSync(bytes) : bytes);
        try {
          if (i % 3 === 0) readIdxLabels(file, 10);
          else readIdxImages(file);
          loaded++;
        } catch (e) {
          judge(e, file, kind, i);
        }
        rmSync(file);
        break;
      }
      case 'cifar': {
        const folder = join(work, `c${i}`);
        mkdirSync(folder);
        writeFileSync(join(folder, 'test_batch.bin'), bytes);
        try {
          cifar10('test', folder);
          loaded++;
        } catch (e) {
          judge(e, folder, kind, i);
        }
        rmSync(folder, { recursive: true });
        break;
      }
      case 'tar': {
        const sandbox = join(work, `t${i}`);
        const dest = join(sandbox, 'dest');
        mkdirSync(sandbox);
        try {
          await extractTar((async function* () { yield bytes; })(), dest, { archiveName: `fuzz${i}.tar`, maxBytes: 1 << 20, maxEntries: 100 });
          loaded++;
        } catch (e) {
          judge(e, `fuzz${i}.tar`, kind, i);
        }
        const outside = readdirSync(sandbox).filter((n) => n !== 'dest');
        if (outside.length) findings.push(`case ${i} (${kind}): wrote outside its folder: ${outside.join(', ')}`);
        rmSync(sandbox, { recursive: true });
        break;
      }
    }
  } catch (e) {
    findings.push(`case ${i} (${kind}): the harness failed: ${(e as Error).message}`);
  }
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
}

for (let i = 0; i < cases; i++) await one(i);
rmSync(work, { recursive: true, force: true });
const report: FuzzReport = { format, cases, loaded, refused, kinds, findings: findings.slice(0, 20), peakRss, seconds: (performance.now() - t0) / 1000 };
parentPort!.postMessage(report);
