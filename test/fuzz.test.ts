// Seeded, bounded fuzzing of every file reader (issue #16): valid safetensors, zip and legacy .pth
// (protocols 2 and 0), IDX (plain and gzip), CIFAR and tar files are mutated (bit flips, truncation,
// random bytes, binary size fields set to 0xffffffff / 0x80000000 / 0, decimal numbers in the text
// set to NaN / -1 / 1e308 / 0.5, spliced chunks) and each must load or throw an Error with a message
// (naming the file, for weight files), with the process's RSS bounded. Each format runs in a worker
// thread with a deadline, so a hang fails the test instead of stalling it, and with a capped JS heap.
// RESIDUAL_FUZZ_SEED and RESIDUAL_FUZZ_CASES (per format) vary the run; the defaults take ~30 s.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import type { FuzzFormat, FuzzReport } from './fuzz_worker.js';

const dir = mkdtempSync(join(tmpdir(), 'residual-fuzz-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const seed = Number(process.env.RESIDUAL_FUZZ_SEED ?? 16);
const scale = Number(process.env.RESIDUAL_FUZZ_CASES ?? 0);
const CASES: Record<FuzzFormat, number> = { safetensors: 4000, 'pth-zip': 4000, 'pth-legacy': 3000, idx: 4000, cifar: 800, tar: 800 };
/** Peak RSS allowed while fuzzing: every refused file must be refused before allocating its claims. */
const RSS_LIMIT = 1e9;

function fuzz(format: FuzzFormat, cases: number, deadlineMs: number): Promise<FuzzReport> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./fuzz_worker.js', import.meta.url), {
      workerData: { format, seed, cases, dir },
      resourceLimits: { maxOldGenerationSizeMb: 512 },
    });
    const timer = setTimeout(() => {
      void worker.terminate();
      reject(new Error(`${format}: not done after ${deadlineMs} ms (seed ${seed}): a mutated file hangs a reader`));
    }, deadlineMs);
    worker.once('message', (m: FuzzReport) => { clearTimeout(timer); resolve(m); });
    worker.once('error', (e) => { clearTimeout(timer); reject(new Error(`${format}: the fuzz worker died (seed ${seed}): ${e.message}`)); });
    worker.once('exit', (code) => { clearTimeout(timer); if (code !== 0) reject(new Error(`${format}: the fuzz worker exited with ${code}`)); });
  });
}

describe('fuzz: mutated files load or fail cleanly, in bounded memory', () => {
  for (const [format, n] of Object.entries(CASES) as [FuzzFormat, number][]) {
    it(`${format}: ${scale || n} mutations (seed ${seed})`, async () => {
      const report = await fuzz(format, scale || n, 60_000);
      console.log(`# fuzz ${format}: ${report.cases} cases (${report.loaded} loaded, ${report.refused} refused) in ${report.seconds.toFixed(1)} s, ` +
        `peak RSS ${(report.peakRss / 1e6).toFixed(0)} MB; ${Object.entries(report.kinds).map(([k, v]) => `${k} ${v}`).join(', ')}`);
      assert.deepEqual(report.findings, [], `${format}: findings`);
      assert.equal(report.loaded + report.refused, report.cases);
      assert.ok(report.refused > 0, 'some mutations were refused (the mutator works)');
      assert.ok(report.peakRss < RSS_LIMIT, `peak RSS ${(report.peakRss / 1e6).toFixed(0)} MB`);
    });
  }
});
