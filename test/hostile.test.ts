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
import { after, describe, it } from 'node:test';
import { repoRoot } from './helpers.js';
import { MAX_LOAD_BYTES_ENV, WeightFileError, loadStateDictFile, maxLoadBytes } from '../src/io/index.js';
import { HOSTILE_PTH, makeZip, stateDictPickle } from './hostile_files.js';

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
      /1 expanded \(stride-0\) views and 3 tensors sharing another's storage/.test(e.message) && /RESIDUAL_MAX_LOAD_BYTES/.test(e.message));
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
