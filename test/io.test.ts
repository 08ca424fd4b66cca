// Weight files in and out (src/io): PyTorch-made fixtures (scripts/fixtures/io_make_fixtures.py),
// hostile and broken files built here in a temp dir, and a safetensors round trip through PyTorch.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as zlib from 'node:zlib';
import {
  MODEL_FILE,
  PthFile,
  STATE_FILE,
  SafetensorsFile,
  WeightFileError,
  bf16ToFloat,
  checkpointName,
  detectWeightFileFormat,
  floatToBf16,
  floatToHalf,
  halfToFloat,
  listCheckpointDirs,
  loadStateDictFile,
  openStateDictFile,
  readSafetensors,
  saveStateDictFile,
  weightsFileOf,
  writeSafetensors,
  type LoadedTensor,
  type SafetensorsEntry,
} from '../src/io/index.js';
import { RandomAccessFile } from '../src/io/file.js';
import { ZipReader } from '../src/io/zip.js';

// dist/test/io.test.js → repository root (fixtures are not copied into dist/).
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FIX = path.join(ROOT, 'test', 'fixtures', 'io');
const SYSTEM_PYTHON = '/usr/bin/python3';

interface Expected {
  tensors: Record<string, Record<string, { dtype: string; shape: number[]; values: number[] }>>;
  metadata: Record<string, Record<string, string>>;
}
const expected = JSON.parse(fs.readFileSync(path.join(FIX, 'io_expected.json'), 'utf8')) as Expected;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-io-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let tmpCounter = 0;
function tmpFile(name: string, bytes?: Uint8Array): string {
  const p = path.join(tmp, `${tmpCounter++}-${name}`);
  if (bytes) fs.writeFileSync(p, bytes);
  return p;
}

function assertTensorEquals(got: LoadedTensor | undefined, want: { dtype: string; shape: number[]; values: number[] }, label: string): void {
  assert.ok(got, `${label}: missing`);
  assert.equal(got.dtype, want.dtype, `${label}: dtype`);
  assert.deepEqual(got.shape, want.shape, `${label}: shape`);
  assert.equal(got.data.length, want.values.length, `${label}: element count`);
  for (let i = 0; i < want.values.length; i++) {
    if (got.data[i] !== Math.fround(want.values[i]!)) assert.fail(`${label}[${i}]: got ${got.data[i]}, want ${want.values[i]}`);
  }
}

/** Assert `fn` throws a WeightFileError naming `file` whose message matches every pattern. */
function assertFileError(fn: () => unknown, file: string, ...patterns: RegExp[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof WeightFileError, `expected a WeightFileError, got ${String(e)}`);
    assert.ok(e.message.includes(file), `message does not name the file: ${e.message}`);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

// ---------------------------------------------------------------------------------------------
// Tiny writers used to build hostile and broken files.

function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v);
  return b;
}
function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
}
function u64(v: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
}

interface ZipOptions {
  deflate?: boolean;
  zip64?: boolean;
}

/** A minimal zip writer (stored or deflated entries, optional ZIP64 records). */
function makeZip(entries: [string, Uint8Array][], opts: ZipOptions = {}): Buffer {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const [name, data] of entries) {
    const nameBuf = Buffer.from(name, 'utf8');
    const body = opts.deflate ? zlib.deflateRawSync(data) : Buffer.from(data);
    const method = opts.deflate ? 8 : 0;
    const crc = zlib.crc32(data);
    const local = Buffer.concat([
      u32(0x04034b50), u16(20), u16(0), u16(method), u16(0), u16(0), u32(crc), u32(body.length), u32(data.length),
      u16(nameBuf.length), u16(0), nameBuf,
    ]);
    const big = opts.zip64 === true;
    const extra = big ? Buffer.concat([u16(1), u16(24), u64(data.length), u64(body.length), u64(offset)]) : Buffer.alloc(0);
    central.push(
      Buffer.concat([
        u32(0x02014b50), u16(45), u16(45), u16(0), u16(method), u16(0), u16(0), u32(crc),
        u32(big ? 0xffffffff : body.length), u32(big ? 0xffffffff : data.length),
        u16(nameBuf.length), u16(extra.length), u16(0), u16(0), u16(0), u32(0), u32(big ? 0xffffffff : offset), nameBuf, extra,
      ]),
    );
    parts.push(local, body);
    offset += local.length + body.length;
  }
  const cd = Buffer.concat(central);
  const cdOffset = offset;
  const tail: Buffer[] = [cd];
  if (opts.zip64) {
    const z64Offset = cdOffset + cd.length;
    tail.push(
      Buffer.concat([
        u32(0x06064b50), u64(44), u16(45), u16(45), u32(0), u32(0), u64(entries.length), u64(entries.length), u64(cd.length), u64(cdOffset),
      ]),
      Buffer.concat([u32(0x07064b50), u32(0), u64(z64Offset), u32(1)]),
      Buffer.concat([u32(0x06054b50), u16(0), u16(0), u16(0xffff), u16(0xffff), u32(0xffffffff), u32(0xffffffff), u16(0)]),
    );
  } else {
    tail.push(Buffer.concat([u32(0x06054b50), u16(0), u16(0), u16(entries.length), u16(entries.length), u32(cd.length), u32(cdOffset), u16(0)]));
  }
  return Buffer.concat([...parts, ...tail]);
}

/** Pickle building blocks (protocol 2 opcodes). */
const P = {
  proto: (v = 2) => Buffer.from([0x80, v]),
  global: (module: string, name: string) => Buffer.from(`c${module}\n${name}\n`, 'latin1'),
  str: (s: string) => {
    const b = Buffer.from(s, 'utf8');
    return Buffer.concat([Buffer.from([0x58]), u32(b.length), b]);
  },
  int1: (v: number) => Buffer.from([0x4b, v]),
  int: (v: number) => Buffer.concat([Buffer.from([0x4a]), u32(v)]),
  tuple1: Buffer.from([0x85]),
  tuple2: Buffer.from([0x86]),
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

/** GLOBAL module.name, called with one string argument. */
function evilPickle(module: string, name: string, arg: string): Buffer {
  return Buffer.concat([P.proto(), P.global(module, name), P.str(arg), P.tuple1, P.reduce, P.stop]);
}

/** {'w': tensor} whose storage key is `key` (numel elements of float32), as data.pkl. */
function statePickleWithKey(key: string, numel: number, shape = [numel], stride = [1], offset = 0): Buffer {
  const ints = (v: number[]) => Buffer.concat([P.mark, ...v.map(P.int), P.tuple]);
  const pid = Buffer.concat([P.mark, P.str('storage'), P.global('torch', 'FloatStorage'), P.str(key), P.str('cpu'), P.int(numel), P.tuple]);
  const tensor = Buffer.concat([
    P.global('torch._utils', '_rebuild_tensor_v2'),
    P.mark, pid, P.binpersid, P.int(offset), ints(shape), ints(stride), P.newfalse,
    P.global('collections', 'OrderedDict'), P.emptyTuple, P.reduce, P.tuple, P.reduce,
  ]);
  return Buffer.concat([P.proto(), P.emptyDict, P.str('w'), tensor, P.setitem, P.stop]);
}

function safetensorsBytes(header: unknown, data: Uint8Array, declaredLength?: number | bigint): Buffer {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  return Buffer.concat([u64(declaredLength ?? json.length), json, data]);
}

const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

// ---------------------------------------------------------------------------------------------

describe('io: PyTorch-made fixtures', () => {
  for (const [file, tensors] of Object.entries(expected.tensors)) {
    it(`loadStateDictFile(${file}) matches PyTorch exactly`, () => {
      const sd = loadStateDictFile(path.join(FIX, file));
      assert.deepEqual([...sd.keys()].sort(), Object.keys(tensors).sort());
      for (const [k, want] of Object.entries(tensors)) assertTensorEquals(sd.get(k), want, `${file}:${k}`);
    });
  }

  it('keeps state dict order, non-contiguous views and int64 buffers', () => {
    const sd = loadStateDictFile(path.join(FIX, 'io_zip.pt'));
    assert.deepEqual([...sd.keys()].slice(0, 3), ['0.weight', '1.weight', '1.bias']);
    assert.equal(sd.get('1.num_batches_tracked')!.dtype, 'I64');
    assert.deepEqual([...sd.get('1.num_batches_tracked')!.data], [7]);
    assert.deepEqual(sd.get('transposed')!.shape, [5, 6]);
    assert.deepEqual(sd.get('scalar')!.shape, []);
    assert.deepEqual(sd.get('empty')!.shape, [0, 3]);
  });

  it('openStateDictFile indexes without reading and reads one tensor at a time', () => {
    for (const file of ['io_wrapped.pth', 'io_model_key.pth', 'io_weights.safetensors']) {
      const r = openStateDictFile(path.join(FIX, file));
      try {
        const want = expected.tensors[file]!;
        assert.deepEqual([...r.names].sort(), Object.keys(want).sort());
        const name = r.names[0]!;
        assert.deepEqual(r.info(name), { dtype: want[name]!.dtype, shape: want[name]!.shape });
        assertTensorEquals(r.read(name), want[name]!, `${file}:${name}`);
        assertFileError(() => r.read('nope'), file, /no tensor named 'nope'/);
      } finally {
        r.close();
      }
    }
  });

  it('unwraps {state_dict: ...} and strips the DataParallel module. prefix', () => {
    const sd = loadStateDictFile(path.join(FIX, 'io_wrapped.pth'));
    assert.ok([...sd.keys()].every((k) => !k.startsWith('module.')));
    assert.ok(sd.has('0.weight'));
  });

  it('detects the format from content, not the extension', () => {
    assert.equal(detectWeightFileFormat(path.join(FIX, 'io_zip.pt')), 'pth-zip');
    assert.equal(detectWeightFileFormat(path.join(FIX, 'io_legacy.pt')), 'pth-legacy');
    assert.equal(detectWeightFileFormat(path.join(FIX, 'io_weights.safetensors')), 'safetensors');
    const asBin = tmpFile('weights.bin', fs.readFileSync(path.join(FIX, 'io_weights.safetensors')));
    const asPt = tmpFile('weights.safetensors', fs.readFileSync(path.join(FIX, 'io_legacy.pt')));
    assert.equal(loadStateDictFile(asBin).size, Object.keys(expected.tensors['io_weights.safetensors']!).length);
    assert.equal(loadStateDictFile(asPt).size, Object.keys(expected.tensors['io_legacy.pt']!).length);
    const f = PthFile.open(path.join(FIX, 'io_legacy.pt'));
    assert.equal(f.format, 'legacy');
    f.close();
  });

  it('a safetensors header length starting with byte 0x80 (a pickle PROTO byte) is still safetensors', () => {
    const json = JSON.stringify({ w: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } });
    const padded = json + ' '.repeat(384 - json.length);
    const p = tmpFile('x.bin', safetensorsBytes(padded, new Uint8Array(new Float32Array([5]).buffer)));
    assert.equal(fs.readFileSync(p)[0], 0x80);
    assert.equal(detectWeightFileFormat(p), 'safetensors');
    assert.deepEqual([...loadStateDictFile(p).get('w')!.data], [5]);
  });

  it('strips module. and torch.compile _orig_mod. prefixes only when every key has them', () => {
    const data = new Float32Array([1]);
    const save = (keys: string[]) => {
      const p = tmpFile('prefixed.safetensors');
      writeSafetensors(p, Object.fromEntries(keys.map((k) => [k, { dtype: 'F32' as const, shape: [1], data }])));
      return [...loadStateDictFile(p).keys()];
    };
    assert.deepEqual(save(['module._orig_mod.fc.weight', 'module._orig_mod.fc.bias']), ['fc.weight', 'fc.bias']);
    assert.deepEqual(save(['module.fc.weight', 'fc.bias']), ['module.fc.weight', 'fc.bias']);
  });

  it('reads safetensors metadata', () => {
    const r = readSafetensors(path.join(FIX, 'io_weights.safetensors'));
    assert.deepEqual(r.metadata, expected.metadata['io_weights.safetensors']);
  });

  it('reads the same archive repacked with deflate and with ZIP64 records', () => {
    const src = RandomAccessFile.open(path.join(FIX, 'io_zip.pt'));
    const zr = ZipReader.open(src);
    const entries: [string, Uint8Array][] = [...zr.entries.values()].map((e) => [e.name, zr.read(e)]);
    src.close();
    const want = expected.tensors['io_zip.pt']!;
    for (const opts of [{ deflate: true }, { zip64: true }, { deflate: true, zip64: true }]) {
      const p = tmpFile('repacked.pt', makeZip(entries, opts));
      const sd = loadStateDictFile(p);
      for (const [k, w] of Object.entries(want)) assertTensorEquals(sd.get(k), w, `${JSON.stringify(opts)} ${k}`);
    }
  });

  it('explains checkpoints without a state dict', () => {
    const noTensors = Buffer.concat([P.proto(), P.emptyDict, P.str('epoch'), P.int1(3), P.setitem, P.stop]);
    assertFileError(() => loadStateDictFile(tmpFile('ckpt.pt', makeZip([['archive/data.pkl', noTensors]]))), 'ckpt.pt', /no state dict found: the top-level keys are \['epoch'\]/);
    const list = Buffer.concat([P.proto(), Buffer.from([0x5d]), P.stop]);
    assertFileError(() => loadStateDictFile(tmpFile('list.pt', makeZip([['archive/data.pkl', list]]))), 'list.pt', /saved object is a list, not a state dict/);
  });

  it('names the problem for unrecognized files', () => {
    assertFileError(() => loadStateDictFile(tmpFile('notes.txt', Buffer.from('hello world, not weights'))), 'notes.txt', /not a recognized weight file/);
    assertFileError(() => loadStateDictFile(path.join(tmp, 'does-not-exist.pt')), 'does-not-exist.pt', /no such file/);
  });
});

describe('io: hostile pickles are refused and nothing runs', () => {
  const payloads: [string, string][] = [
    ['posix', 'system'],
    ['os', 'system'],
    ['builtins', 'eval'],
    ['__builtin__', 'eval'],
    ['subprocess', 'call'],
  ];

  it('the payload really runs under Python pickle (sanity check of the test itself)', (t) => {
    const py = spawnSync('python3', ['-c', 'print(1)'], { encoding: 'utf8' });
    if (py.status !== 0) {
      t.skip('no python3 on PATH');
      return;
    }
    const marker = path.join(tmp, 'python-ran-it');
    const p = tmpFile('evil.pkl', evilPickle('posix', 'system', `touch ${shellQuote(marker)}`));
    spawnSync('python3', ['-c', 'import pickle,sys; pickle.load(open(sys.argv[1],"rb"))', p]);
    assert.ok(fs.existsSync(marker), 'python did not run the payload, so the checks below would prove nothing');
  });

  for (const [module, name] of payloads) {
    it(`rejects ${module}.${name} as a bare pickle, inside legacy and zip checkpoints`, () => {
      const marker = path.join(tmp, `ran-${module}-${name}`);
      const arg = name === 'eval' ? `__import__('os').system('touch ${marker}')` : `touch ${shellQuote(marker)}`;
      const evil = evilPickle(module, name, arg);
      const legacyHead = fs.readFileSync(path.join(FIX, 'io_legacy.pt')).subarray(0, 137); // magic, protocol, sys_info
      assert.equal(legacyHead[137 - 1], 0x2e);
      const files = [
        tmpFile('evil.pt', evil),
        tmpFile('evil-legacy.pt', Buffer.concat([legacyHead, evil])),
        tmpFile('evil.pth', makeZip([['archive/data.pkl', evil], ['archive/version', Buffer.from('3\n')]])),
      ];
      for (const f of files) {
        assertFileError(() => loadStateDictFile(f), path.basename(f), new RegExp(`'${module}\\.${name}'`), /refusing/);
      }
      assert.ok(!fs.existsSync(marker), 'the payload ran');
    });
  }

  it('rejects STACK_GLOBAL and INST forms too', () => {
    const marker = path.join(tmp, 'ran-stack-global');
    const sb = (s: string) => Buffer.concat([Buffer.from([0x8c, s.length]), Buffer.from(s)]);
    const stackGlobal = Buffer.concat([P.proto(4), sb('os'), sb('system'), Buffer.from([0x93]), sb(`touch ${marker}`), P.tuple1, P.reduce, P.stop]);
    assertFileError(() => loadStateDictFile(tmpFile('sg.pt', stackGlobal)), 'sg.pt', /'os\.system'/);
    const inst = Buffer.concat([P.mark, P.str(`touch ${marker}`), Buffer.from('ios\nsystem\n'), P.stop]);
    assertFileError(() => loadStateDictFile(tmpFile('inst.pt', Buffer.concat([P.proto(), inst]))), 'inst.pt', /'os\.system'/);
    assert.ok(!fs.existsSync(marker));
  });

  it('explains whole pickled models and TorchScript', () => {
    const model = Buffer.concat([P.proto(), P.global('torchvision.models.resnet', 'ResNet'), P.stop]);
    assertFileError(() => loadStateDictFile(tmpFile('model.pt', model)), 'model.pt', /torchvision\.models\.resnet\.ResNet/, /state_dict\(\)/);
    const ts = Buffer.concat([P.proto(), P.global('__torch__.torchvision.models.resnet', 'ResNet'), P.stop]);
    assertFileError(() => loadStateDictFile(tmpFile('ts.pt', makeZip([['m/data.pkl', ts]]))), 'ts.pt', /TorchScript/);
  });

  it('refuses object-creating opcodes and absurd lengths without allocating', () => {
    const newobj = Buffer.concat([P.proto(), P.global('collections', 'OrderedDict'), P.emptyTuple, Buffer.from([0x81]), P.stop]);
    assertFileError(() => loadStateDictFile(tmpFile('newobj.pt', newobj)), 'newobj.pt', /NEWOBJ/);
    const huge = Buffer.concat([P.proto(), Buffer.from([0x58]), u32(0xfffffff0), Buffer.from('abc')]);
    assertFileError(() => loadStateDictFile(tmpFile('huge.pt', huge)), 'huge.pt', /declares 4294967280 bytes/);
    const badMemo = Buffer.concat([P.proto(), Buffer.from([0x68, 9]), P.stop]);
    assertFileError(() => loadStateDictFile(tmpFile('memo.pt', badMemo)), 'memo.pt', /memo entry 9/);
  });
});

describe('io: broken torch.save files', () => {
  it('truncated zip archives', () => {
    const full = fs.readFileSync(path.join(FIX, 'io_zip.pt'));
    for (const keep of [full.length - 10, Math.floor(full.length / 2), 100, 3]) {
      const p = tmpFile('truncated.pt', full.subarray(0, keep));
      assertFileError(() => loadStateDictFile(p), 'truncated.pt', /truncated/);
    }
  });

  it('truncated legacy files', () => {
    const full = fs.readFileSync(path.join(FIX, 'io_legacy.pt'));
    for (const keep of [full.length - 1, full.length - 100, 600, 140, 20]) {
      const p = tmpFile('truncated-legacy.pt', full.subarray(0, keep));
      assertFileError(() => loadStateDictFile(p), 'truncated-legacy.pt', /truncated|ends unexpectedly/);
    }
  });

  it('a storage key pointing outside the archive', () => {
    const data = new Uint8Array(16);
    for (const key of ['7', '../../../etc/passwd', '/etc/passwd']) {
      const p = tmpFile('badkey.pt', makeZip([['archive/data.pkl', statePickleWithKey(key, 4)], ['archive/data/0', data]]));
      assertFileError(() => loadStateDictFile(p), 'badkey.pt', /not in the archive/, new RegExp(key.replace(/[./]/g, '\\$&')));
    }
    // Sanity: the same pickle with a key that exists loads.
    const ok = tmpFile('goodkey.pt', makeZip([['archive/data.pkl', statePickleWithKey('0', 4)], ['archive/data/0', new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer)]]));
    assert.deepEqual([...loadStateDictFile(ok).get('w')!.data], [1, 2, 3, 4]);
  });

  it('a storage smaller than its tensors, and zip entries past the end of the file', () => {
    const small = tmpFile('small.pt', makeZip([['archive/data.pkl', statePickleWithKey('0', 4)], ['archive/data/0', new Uint8Array(8)]]));
    assertFileError(() => loadStateDictFile(small), 'small.pt', /declares 4 F32 elements \(16 bytes\) but its archive entry holds 8/);
    const z = makeZip([['archive/data.pkl', statePickleWithKey('0', 4)], ['archive/data/0', new Uint8Array(16)]]);
    // Point the second central-directory entry's local header offset past the end of the file.
    const cdStart = z.readUInt32LE(z.length - 6);
    const second = z.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]), cdStart + 4);
    z.writeUInt32LE(z.length + 1000, second + 42);
    assertFileError(() => loadStateDictFile(tmpFile('outside.pt', z)), 'outside.pt', /lies outside the file/);
  });

  it('views reaching outside their storage, and huge expanded views, are refused before allocating', () => {
    const storage = new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer);
    const make = (shape: number[], stride: number[], offset = 0) =>
      makeZip([['archive/data.pkl', statePickleWithKey('0', 4, shape, stride, offset)], ['archive/data/0', storage]]);
    assertFileError(() => loadStateDictFile(tmpFile('view.pt', make([8], [1]))), 'view.pt', /reaches element 7 of a storage with 4 elements/);
    assertFileError(() => loadStateDictFile(tmpFile('view.pt', make([2, 2], [2, 1], 1))), 'view.pt', /reaches element 4/);
    assertFileError(() => loadStateDictFile(tmpFile('expand.pt', make([1 << 30], [0]))), 'expand.pt', /expanded view of 1073741824 elements/);
    assert.deepEqual([...loadStateDictFile(tmpFile('expand-ok.pt', make([2, 3], [1, 0], 2))).get('w')!.data], [3, 3, 3, 4, 4, 4]);
  });

  it('a corrupted storage fails its CRC', () => {
    const z = makeZip([['archive/data.pkl', statePickleWithKey('0', 4)], ['archive/data/0', new Uint8Array(16)]]);
    const pos = z.indexOf(Buffer.from('archive/data/0')) + 'archive/data/0'.length;
    z[pos + 3] = 0x55;
    assertFileError(() => loadStateDictFile(tmpFile('crc.pt', z)), 'crc.pt', /CRC-32/);
  });
});

describe('io: broken safetensors files', () => {
  const okHeader = { w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] } };
  const data16 = new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer);

  it('control: a well-formed hand-made file loads', () => {
    const sd = loadStateDictFile(tmpFile('ok.safetensors', safetensorsBytes(okHeader, data16)));
    assert.deepEqual([...sd.get('w')!.data], [1, 2, 3, 4]);
  });

  const cases: [string, () => Buffer, RegExp][] = [
    ['header longer than the file', () => safetensorsBytes(okHeader, data16, 10_000), /header length 10000 bytes exceeds the \d+ bytes/],
    ['absurd header size 2^60', () => safetensorsBytes(okHeader, data16, 1n << 60n), /header length 1152921504606846976 bytes is absurd/],
    ['bad JSON', () => safetensorsBytes('{"w": {"dtype": "F32", ', data16), /not valid JSON/],
    ['JSON that is not an object', () => safetensorsBytes('[1, 2, 3]', data16), /not an object/],
    ['unknown dtype', () => safetensorsBytes({ w: { ...okHeader.w, dtype: 'F33' } }, data16), /tensor "w": unknown dtype "F33"/],
    ['shape/byte-size mismatch', () => safetensorsBytes({ w: { ...okHeader.w, shape: [3, 2] } }, data16), /needs 24 bytes but data_offsets \[0, 16\] span 16/],
    ['offsets beyond the data', () => safetensorsBytes({ w: { dtype: 'F32', shape: [2, 2], data_offsets: [8, 24] } }, data16), /lie outside the 16-byte data section/],
    ['offsets out of order', () => safetensorsBytes({ w: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }, data16), /out of order/],
    [
      'overlapping tensors',
      () =>
        safetensorsBytes(
          { a: { dtype: 'F32', shape: [3], data_offsets: [0, 12] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } },
          data16,
        ),
      /"a" \[0, 12\] and "b" \[8, 16\] overlap/,
    ],
    ['negative dimension', () => safetensorsBytes({ w: { dtype: 'F32', shape: [-1, -16], data_offsets: [0, 16] } }, data16), /not a non-negative integer/],
    ['non-string metadata', () => safetensorsBytes({ __metadata__: { epoch: 3 }, ...okHeader }, data16), /__metadata__ value for "epoch"/],
    ['file shorter than the length field', () => Buffer.from([1, 2, 3]), /too short/],
  ];
  for (const [label, make, pattern] of cases) {
    it(label, () => {
      const p = tmpFile('broken.safetensors', make());
      assertFileError(() => loadStateDictFile(p), 'broken.safetensors', pattern);
      assertFileError(() => SafetensorsFile.open(p), 'broken.safetensors', pattern);
    });
  }
});

describe('io: writing safetensors', () => {
  const sample = (): Map<string, SafetensorsEntry> => {
    const m = new Map<string, SafetensorsEntry>();
    m.set('conv.weight', { dtype: 'F32', shape: [2, 1, 3], data: new Float32Array([0.5, -1, 2, 1e-20, 3.25, -0]) });
    m.set('half', { dtype: 'F16', shape: [3], data: new Float32Array([1, -2.5, 65504]) });
    m.set('bf', { dtype: 'BF16', shape: [2], data: new Float32Array([1.5, -256]) });
    m.set('bn.num_batches_tracked', { dtype: 'I64', shape: [], data: new Float32Array([12345]) });
    return m;
  };

  it('round trips through our reader, with metadata, and leaves no temp files', () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'w-'));
    const p = path.join(dir, 'out.safetensors');
    writeSafetensors(p, sample(), { format: 'pt', note: 'résumé' });
    writeSafetensors(p, sample(), { format: 'pt', note: 'résumé' }); // overwrite in place
    assert.deepEqual(fs.readdirSync(dir), ['out.safetensors']);
    const r = readSafetensors(p);
    assert.deepEqual(r.metadata, { format: 'pt', note: 'résumé' });
    for (const [k, t] of sample()) {
      const g = r.tensors.get(k)!;
      assert.equal(g.dtype, t.dtype);
      assert.deepEqual(g.shape, t.shape);
      assert.deepEqual([...g.data], [...t.data], k);
    }
    // Header is padded so the data starts 8-byte aligned.
    const n = Number(fs.readFileSync(p).readBigUInt64LE(0));
    assert.equal((8 + n) % 8, 0);
  });

  it('saveStateDictFile keeps int64 and half dtypes of a loaded state dict', () => {
    const sd = loadStateDictFile(path.join(FIX, 'io_zip.pt'));
    const p = tmpFile('resaved.safetensors');
    saveStateDictFile(p, sd);
    const back = loadStateDictFile(p);
    for (const [k, t] of sd) {
      const g = back.get(k)!;
      assert.equal(g.dtype, ['I64', 'F16', 'BF16'].includes(t.dtype) ? t.dtype : 'F32', k);
      assert.deepEqual(g.shape, t.shape);
      assert.deepEqual([...g.data], [...t.data], k);
    }
  });

  it('rejects bad input without creating the file', () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'bad-'));
    const p = path.join(dir, 'x.safetensors');
    const bad: [Record<string, SafetensorsEntry>, RegExp][] = [
      [{ w: { dtype: 'F32', shape: [3], data: new Float32Array(2) } }, /shape \[3\] has 3 elements but data has 2/],
      [{ n: { dtype: 'I64', shape: [1], data: new Float32Array([1.5]) } }, /not an integer/],
      [{ w: { dtype: 'F64' as 'F32', shape: [1], data: new Float32Array(1) } }, /cannot be written/],
      [{ __metadata__: { dtype: 'F32', shape: [1], data: new Float32Array(1) } }, /not a usable tensor name/],
    ];
    for (const [t, re] of bad) assertFileError(() => writeSafetensors(p, t), 'x.safetensors', re);
    assert.deepEqual(fs.readdirSync(dir), []);
    assertFileError(() => writeSafetensors(path.join(dir, 'missing-dir', 'x.safetensors'), sample()), 'x.safetensors', /directory exists/);
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  it('half and bfloat16 conversions are exact inverses on every 16-bit pattern', () => {
    for (let h = 0; h < 0x10000; h++) {
      const f = halfToFloat(h);
      if (Number.isNaN(f)) assert.ok(Number.isNaN(halfToFloat(floatToHalf(f))));
      else if (floatToHalf(f) !== h) assert.fail(`half 0x${h.toString(16)} → ${f} → 0x${floatToHalf(f).toString(16)}`);
      const b = bf16ToFloat(h);
      if (Number.isNaN(b)) assert.ok(Number.isNaN(bf16ToFloat(floatToBf16(b))));
      else if (floatToBf16(b) !== h) assert.fail(`bf16 0x${h.toString(16)} → ${b} → 0x${floatToBf16(b).toString(16)}`);
    }
  });

  it('PyTorch reads what we write, and rounds F16/BF16 exactly like .half()/.bfloat16()', (t) => {
    if (!fs.existsSync(SYSTEM_PYTHON)) {
      t.skip(`${SYSTEM_PYTHON} not found; cannot check the file in PyTorch`);
      return;
    }
    // Values that stress rounding: ties, subnormals, overflow, signed zero, plus a random spread.
    const special = [0, -0, 1, -1, 65504, 65519, 65520, 1e6, -1e6, 2 ** -24, 2 ** -25, 3 * 2 ** -25, 2 ** -26, 1e-8, 6.1e-5, 1 + 2 ** -11, 1 + 3 * 2 ** -11, Infinity, -Infinity, NaN, 3.4e38, 1e-40];
    let seed = 42;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
    const vals = new Float32Array(special.length + 2000);
    vals.set(special);
    for (let i = special.length; i < vals.length; i++) vals[i] = rnd() * 10 ** Math.floor(rnd() * 12 - 4);
    const ints = new Float32Array([0, 1, -1, 7, 2 ** 24, -(2 ** 40)]);
    const p = tmpFile('to-torch.safetensors');
    writeSafetensors(
      p,
      {
        x: { dtype: 'F32', shape: [vals.length], data: vals },
        x_h: { dtype: 'F16', shape: [vals.length], data: vals },
        x_b: { dtype: 'BF16', shape: [vals.length], data: vals },
        'bn.num_batches_tracked': { dtype: 'I64', shape: [], data: new Float32Array([7]) },
        ints: { dtype: 'I64', shape: [2, 3], data: ints },
        odd_half: { dtype: 'F16', shape: [1], data: new Float32Array([0.1]) },
      },
      { format: 'pt' },
    );
    const script = String.raw`
import json, struct, sys, torch
path = sys.argv[1]
raw = open(path, 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
header = json.loads(raw[8:8 + n])
base = 8 + n
types = {'F32': torch.float32, 'F16': torch.float16, 'BF16': torch.bfloat16, 'I64': torch.int64}
t = {}
ends = []
for k, v in header.items():
    if k == '__metadata__':
        continue
    b, e = v['data_offsets']
    ends.append((b, e))
    buf = bytearray(raw[base + b:base + e])
    t[k] = torch.frombuffer(buf, dtype=types[v['dtype']]).reshape(v['shape']) if e > b else torch.zeros(v['shape'], dtype=types[v['dtype']])
ends.sort()
pos = 0
for b, e in ends:
    assert b == pos, 'gap or overlap in data_offsets'
    pos = e
assert pos == len(raw) - base, 'data section not fully covered'
try:
    import safetensors.torch
    st = safetensors.torch.load_file(path)
    for k in t:
        assert torch.equal(st[k].nan_to_num(), t[k].nan_to_num()), k
    lib = 'safetensors'
except ImportError:
    lib = 'manual parse'
x = t['x']
same = lambda a, b: bool(((a.view(torch.int16) == b.view(torch.int16)) | (a.isnan() & b.isnan())).all())
print(json.dumps({
    'lib': lib,
    'metadata': header.get('__metadata__'),
    'dtypes': {k: str(v.dtype) for k, v in t.items()},
    'half_matches': same(x.half(), t['x_h']),
    'bf16_matches': same(x.bfloat16(), t['x_b']),
    'x_finite': [float(v) for v in x[torch.isfinite(x)].tolist()],
    'nbt': int(t['bn.num_batches_tracked'].item()),
    'nbt_shape': list(t['bn.num_batches_tracked'].shape),
    'ints': t['ints'].tolist(),
}))
`;
    const r = spawnSync(SYSTEM_PYTHON, ['-c', script, p], { encoding: 'utf8' });
    if (r.status !== 0 && /No module named 'torch'/.test(r.stderr)) {
      t.skip(`${SYSTEM_PYTHON} has no torch; cannot check the file in PyTorch`);
      return;
    }
    assert.equal(r.status, 0, `python failed:\n${r.stderr}`);
    const out = JSON.parse(r.stdout) as {
      lib: string;
      metadata: Record<string, string>;
      dtypes: Record<string, string>;
      half_matches: boolean;
      bf16_matches: boolean;
      x_finite: number[];
      nbt: number;
      nbt_shape: number[];
      ints: number[][];
    };
    t.diagnostic(`checked with ${out.lib}`);
    assert.deepEqual(out.metadata, { format: 'pt' });
    assert.equal(out.dtypes['bn.num_batches_tracked'], 'torch.int64');
    assert.equal(out.dtypes['x_h'], 'torch.float16');
    assert.equal(out.dtypes['x_b'], 'torch.bfloat16');
    assert.ok(out.half_matches, 'F16 bits differ from torch .half()');
    assert.ok(out.bf16_matches, 'BF16 bits differ from torch .bfloat16()');
    assert.deepEqual(out.x_finite, [...vals].filter(Number.isFinite));
    assert.equal(out.nbt, 7);
    assert.deepEqual(out.nbt_shape, []);
    assert.deepEqual(out.ints, [[0, 1, -1], [7, 2 ** 24, -(2 ** 40)]]);
  });
});

describe('io: the run folder layout (written by train/checkpoint.ts, read by weight loading)', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-run-folder-'));
  after(() => fs.rmSync(root, { recursive: true, force: true }));
  const touch = (...parts: string[]) => {
    fs.mkdirSync(path.join(root, ...parts.slice(0, -1)), { recursive: true });
    fs.writeFileSync(path.join(root, ...parts), '');
  };

  it('names checkpoints so they sort by epoch, then batch', () => {
    const names = [checkpointName(10, 0), checkpointName(2, 0), checkpointName(2, 120), checkpointName(2, 7)];
    assert.deepEqual([...names].sort(), ['epoch-0002', 'epoch-0002-batch-000007', 'epoch-0002-batch-000120', 'epoch-0010']);
  });

  it('finds the newest checkpoint holding the file asked for, skipping temporaries and strangers', () => {
    touch('run', 'checkpoints', checkpointName(1, 0), MODEL_FILE);
    touch('run', 'checkpoints', checkpointName(1, 0), STATE_FILE);
    touch('run', 'checkpoints', checkpointName(2, 50), MODEL_FILE); // newest weights, no state.json
    touch('run', 'checkpoints', '.tmp-123-456', MODEL_FILE); // an interrupted save
    touch('run', 'checkpoints', 'epoch-0009-old', MODEL_FILE); // not a checkpoint name
    const run = path.join(root, 'run');
    assert.deepEqual(listCheckpointDirs(run).map((d) => path.basename(d)), ['epoch-0001']);
    assert.deepEqual(listCheckpointDirs(run, MODEL_FILE).map((d) => path.basename(d)), ['epoch-0001', 'epoch-0002-batch-000050']);
    assert.equal(weightsFileOf(run), path.join(run, 'checkpoints', 'epoch-0002-batch-000050', MODEL_FILE));
  });

  it('a file names itself, a folder its own model.safetensors, an empty folder nothing', () => {
    touch('export', MODEL_FILE);
    touch('w.pth');
    fs.mkdirSync(path.join(root, 'empty'));
    assert.equal(weightsFileOf(path.join(root, 'w.pth')), path.join(root, 'w.pth'));
    assert.equal(weightsFileOf(path.join(root, 'export')), path.join(root, 'export', MODEL_FILE));
    assert.equal(weightsFileOf(path.join(root, 'empty')), null);
    assert.deepEqual(listCheckpointDirs(path.join(root, 'empty')), []);
  });
});
