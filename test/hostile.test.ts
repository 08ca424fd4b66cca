// Issue #16: hostile files must give a one-line error naming the file and exit 1, in bounded memory.
// The files come from test/hostile_files.ts (built here; none is in git). The CLI runs as a child
// process under a tiny wrapper that reports its peak RSS, so a V8 fatal error, a stack overflow
// without the file's name or a multi-gigabyte allocation each fail the test.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import { after, describe, it } from 'node:test';
import { repoRoot } from './helpers.js';
import { MAX_LOAD_BYTES_ENV, WeightFileError, loadStateDictFile, maxLoadBytes } from '../src/io/index.js';
import { extractTar, readIdxImages, readIdxLabels, readMaybeGzip } from '../src/data/index.js';
import { HOSTILE_PTH, idxBytes, makeTar, makeZip, paxRecord, stateDictPickle } from './hostile_files.js';

const dir = mkdtempSync(join(tmpdir(), 'residual-hostile-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const cli = join(repoRoot, 'dist', 'src', 'cli', 'main.js');
const wrapper = join(dir, 'rss.mjs');
writeFileSync(wrapper, [
  "process.on('exit', () => process.stderr.write(`\\n@maxrss ${process.resourceUsage().maxRSS}\\n`));",
  `await import(${JSON.stringify(pathToFileURL(cli).href)});`,
].join('\n'));

/** Runs `residual ARGS` and returns its exit status, stderr without the RSS line, and peak RSS in bytes. */
function runCli(args: string[], env: Record<string, string> = {}): { status: number | null; signal: string | null; stderr: string; maxRss: number } {
  // The reference backend: these tests are about reading files, and it starts without the addon's warning.
  const r = spawnSync(process.execPath, [wrapper, ...args], { encoding: 'utf8', env: { ...process.env, RESIDUAL_BACKEND: 'reference', ...env }, timeout: 120_000 });
  const m = /\n@maxrss (\d+)\n/.exec(r.stderr);
  return { status: r.status, signal: r.signal, stderr: r.stderr.replace(/\n@maxrss \d+\n/, '').trim(), maxRss: m ? Number(m[1]) * 1024 : NaN };
}

const GB = 1e9;

describe('hostile .pth files: a one-line error naming the file, exit 1, peak RSS under 1 GB', () => {
  for (const f of HOSTILE_PTH) {
    it(`${f.name}: ${f.what}`, () => {
      const file = join(dir, f.name);
      writeFileSync(file, f.make());
      const r = runCli(['infer', '--model', 'resnet18', '--weights', file, '--input', join(dir, 'absent.safetensors'), '--output', join(dir, 'out.safetensors')]);
      assert.equal(r.signal, null, `killed by ${r.signal}: ${r.stderr.slice(0, 300)}`);
      assert.equal(r.status, 1, r.stderr.slice(0, 300));
      assert.equal(r.stderr.split('\n').length, 1, `one line: ${r.stderr.slice(0, 300)}`);
      assert.match(r.stderr, new RegExp(`^residual: ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
      assert.ok(r.maxRss < GB, `peak RSS ${(r.maxRss / GB).toFixed(2)} GB`);
    });
  }
});

describe('the load budget', () => {
  it('counts every alias and expanded view, refuses past maxBytes before reading, and can be raised', () => {
    const numel = 1024;
    const tensors = [
      ...Array.from({ length: 4 }, (_, i) => ({ name: `alias${i}`, key: '0', numel, shape: [numel], stride: [1] })),
      { name: 'expanded', key: '1', numel: 1, shape: [64, 64], stride: [0, 0] },
    ];
    const file = join(dir, 'budget.pth');
    const values = new Float32Array(numel).map((_, i) => i);
    writeFileSync(file, makeZip([['archive/data.pkl', stateDictPickle(tensors)], ['archive/data/0', new Uint8Array(values.buffer)], ['archive/data/1', new Uint8Array(new Float32Array([7]).buffer)]]));
    // 4 x 4 KiB + 16 KiB of results, plus the expanded view's 4-byte storage and 4-byte gather scratch.
    const sd = loadStateDictFile(file);
    assert.deepEqual([...sd.get('alias3')!.data.subarray(0, 3)], [0, 1, 2]);
    assert.equal(sd.get('expanded')!.data[4095], 7);
    assert.equal(loadStateDictFile(file, { maxBytes: 32 * 1024 + 8 }).size, 5);
    assert.throws(() => loadStateDictFile(file, { maxBytes: 32 * 1024 + 7 }), (e: Error) =>
      e instanceof WeightFileError && e.message.startsWith(`${file}: its 5 tensors would take 32776 bytes`) &&
      /1 expanded \(stride-0\) view and 3 tensors sharing another's storage/.test(e.message) && /RESIDUAL_MAX_LOAD_BYTES/.test(e.message));
    const saved = process.env[MAX_LOAD_BYTES_ENV];
    try {
      process.env[MAX_LOAD_BYTES_ENV] = '31KiB';
      assert.throws(() => loadStateDictFile(file), /over the 31744 bytes limit/);
      process.env[MAX_LOAD_BYTES_ENV] = '1GiB';
      assert.equal(maxLoadBytes(), 1024 ** 3);
      assert.equal(loadStateDictFile(file).size, 5);
      process.env[MAX_LOAD_BYTES_ENV] = 'lots';
      assert.throws(() => loadStateDictFile(file), /RESIDUAL_MAX_LOAD_BYTES="lots" is not a size/);
    } finally {
      if (saved === undefined) delete process.env[MAX_LOAD_BYTES_ENV];
      else process.env[MAX_LOAD_BYTES_ENV] = saved;
    }
    delete process.env[MAX_LOAD_BYTES_ENV];
    assert.ok(maxLoadBytes() <= 2 * 1024 ** 3 && maxLoadBytes() <= totalmem() / 4);
  });
});

describe('pickle protocols 0 and 1 (torch.save(..., pickle_protocol=0/1), scripts/fixtures/legacy_protocols.py)', () => {
  const fixtures = join(repoRoot, 'test', 'fixtures', 'io');
  const expected = JSON.parse(readFileSync(join(fixtures, 'io_proto01_expected.json'), 'utf8')) as
    Record<string, Record<string, { dtype: string; shape: number[]; values: number[] }>>;
  for (const [file, tensors] of Object.entries(expected)) {
    it(`${file} loads exactly as PyTorch saved it`, () => {
      const sd = loadStateDictFile(join(fixtures, file));
      assert.deepEqual([...sd.keys()].sort(), Object.keys(tensors).sort()); // the JSON's keys are sorted
      for (const [name, want] of Object.entries(tensors)) {
        const got = sd.get(name)!;
        assert.equal(got.dtype, want.dtype, name);
        assert.deepEqual(got.shape, want.shape, name);
        assert.deepEqual([...got.data], want.values.map((v) => Math.fround(v)), name);
      }
    });
  }

  it('a protocol-0 persistent id naming a class outside the whitelist is refused', () => {
    const legacy = readFileSync(join(fixtures, 'io_legacy_proto0.pt'), 'latin1');
    const evil = legacy.replace("<class 'torch.FloatStorage'>", "<class 'os.system'>");
    assert.notEqual(evil, legacy);
    const file = join(dir, 'evil_proto0.pt');
    writeFileSync(file, Buffer.from(evil, 'latin1'));
    assert.throws(() => loadStateDictFile(file), (e: Error) => e instanceof WeightFileError && /refusing to load Python global 'os\.system'/.test(e.message));
    const junk = join(dir, 'junk_proto0.pt');
    writeFileSync(junk, Buffer.from(legacy.replace(/P\('storage'/, "P('storage' + __import__"), 'latin1'));
    assert.throws(() => loadStateDictFile(junk), /is not a storage tuple/);
  });
});

describe('tar headers: every number validated, names escaped', () => {
  async function* once(buf: Buffer) {
    yield buf;
  }
  /** extractTar, failing the test if it takes more than 5 s (a 0.5-byte size used to spin forever). */
  async function extract(tar: Buffer): Promise<unknown> {
    const dest = mkdtempSync(join(dir, 'tar-'));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error('extractTar hung')), 5000); });
    try {
      return await Promise.race([extractTar(once(tar), dest, { archiveName: 'evil.tar', maxBytes: 1 << 20 }), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  for (const size of ['abc', '-1', '0.5', '1e3', '', ' 12', '99999999999999999999']) {
    it(`pax size=${JSON.stringify(size)} is refused`, async () => {
      const tar = makeTar([{ name: 'PaxHeader', type: 'x', data: paxRecord('size', size) }, { name: 'a.bin', data: Buffer.alloc(3000, 1) }]);
      await assert.rejects(extract(tar), new RegExp(`evil\\.tar: entry "a\\.bin": pax size .* is not a non-negative integer`));
    });
  }

  it('a negative GNU base-256 size is refused; a positive one is read', async () => {
    const neg = Buffer.alloc(12, 0xff);
    await assert.rejects(extract(makeTar([{ name: 'a.bin', data: Buffer.alloc(10), sizeField: neg }])), /negative number/);
    const pos = Buffer.alloc(12);
    pos[0] = 0x80;
    pos[11] = 10;
    const entries = await extract(makeTar([{ name: 'a.bin', data: Buffer.alloc(10, 2), sizeField: pos }])) as { size: number }[];
    assert.equal(entries[0]!.size, 10);
  });

  it('names with terminal escapes are printed escaped', async () => {
    const name = 'x/\u001b]0;pwned\u0007\u001b[2J\u009b31m/../../../etc';
    const err = await extract(makeTar([{ name, data: Buffer.alloc(1) }])).then(() => null, (e: Error) => e);
    assert.ok(err instanceof Error, 'refused');
    assert.match(err.message, /path traversal/);
    assert.doesNotMatch(err.message, /[\u0000-\u001f\u007f-\u009f]/, 'no raw control characters');
    assert.match(err.message, /\\u001b\]0;pwned\\u0007/);
    const link = await extract(makeTar([{ name: 'ok/\u009b6n', type: '2' }])).then(() => null, (e: Error) => e);
    assert.match(link!.message, /ok\/\\u009b6n" is a symbolic link/);
  });

  it('zip entry and tensor names are escaped in weight-file errors', () => {
    const file = join(dir, 'escape.pth');
    writeFileSync(file, makeZip([['archive/data.pkl', stateDictPickle([{ name: 'w', key: '\u001b[31mred', numel: 1, shape: [1], stride: [1] }])]]));
    assert.throws(() => loadStateDictFile(file), (e: Error) => /\\u001b\[31mred/.test(e.message) && !/\u001b/.test(e.message));
  });
});

describe('IDX headers bound the inflate', () => {
  it('a .gz whose data is far more than its header declares is cut at the declared size', () => {
    const file = join(dir, 'bomb-images-idx3-ubyte.gz');
    // Declares 10 images of 28x28 (7840 bytes) but holds 64 MiB of zeros.
    writeFileSync(file, gzipSync(idxBytes(0x803, [10, 28, 28], Buffer.alloc(64 << 20))));
    assert.throws(() => readIdxImages(file), new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: the gzip data inflates to more than the 7856 bytes its IDX header declares`));
  });

  it('a header declaring more than the load budget is refused before inflating', () => {
    const file = join(dir, 'huge-images-idx3-ubyte.gz');
    writeFileSync(file, gzipSync(idxBytes(0x803, [0xffffffff, 0xffff, 0xffff], Buffer.alloc(100))));
    assert.throws(() => readIdxImages(file), /declares 4294967295×65535×65535 = .* bytes, over the .*-byte limit \(RESIDUAL_MAX_LOAD_BYTES raises it\)/);
  });

  it('a wrong magic number is found from the first bytes, not after inflating everything', () => {
    const file = join(dir, 'wrong-magic.gz');
    writeFileSync(file, gzipSync(Buffer.concat([Buffer.from([0, 0, 8, 9]), Buffer.alloc(64 << 20)])));
    const before = process.memoryUsage().arrayBuffers;
    assert.throws(() => readIdxImages(file), /wrong magic number 0x00000809/);
    assert.ok(process.memoryUsage().arrayBuffers - before < 32 << 20, 'did not inflate the 64 MiB');
    // readMaybeGzip takes a cap too.
    assert.throws(() => readMaybeGzip(file, 1 << 20), /inflates to more than 1048576 bytes/);
    assert.equal(readMaybeGzip(file).length, 4 + (64 << 20));
  });

  it('a well-formed .gz still loads', () => {
    const file = join(dir, 'ok-labels-idx1-ubyte.gz');
    writeFileSync(file, gzipSync(idxBytes(0x801, [4], Buffer.from([1, 0, 3, 2]))));
    assert.deepEqual([...readIdxLabels(file, 4)], [1, 0, 3, 2]);
  });
});
