// Shared test helpers: the backends to run against, and tolerant comparisons.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { referenceBackend, tryNativeBackend } from '../src/backend/index.js';
import type { Backend } from '../src/backend/types.js';

/** The repository root (tests run from dist/test). */
export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Runs the CLI (dist) at one OpenMP thread unless `env` says otherwise. */
export function residual(args: string[], env: Record<string, string> = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(repoRoot, 'dist', 'src', 'cli', 'main.js'), ...args], {
    encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1', ...env },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The last line of a command's output, as the JSON object `--json` prints there. */
export function lastJson(stdout: string): Record<string, unknown> {
  const lines = stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]!) as Record<string, unknown>;
}

export function fixture(name: string): string {
  return join(repoRoot, 'test', 'fixtures', name);
}

export function readJsonFixture<T>(name: string): T {
  return JSON.parse(readFileSync(fixture(name), 'utf8')) as T;
}

/**
 * The backends every engine-level test runs on. The native one must load here: CI builds it, and a
 * silent skip would hide a broken build (set RESIDUAL_TEST_REFERENCE_ONLY=1 to test without it).
 */
export async function testBackends(): Promise<Backend[]> {
  const out: Backend[] = [referenceBackend()];
  if (process.env.RESIDUAL_TEST_REFERENCE_ONLY) return out;
  const native = await tryNativeBackend();
  if (!native) throw new Error('the native addon did not load; build it with `npm run build:native`');
  out.push(native);
  return out;
}

/** Asserts |a - b| <= tol * max(1, max|b|) elementwise, naming the first offending index. */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length ${actual.length} vs ${expected.length}`);
  let scale = 1;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]));
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (!(d <= tol * scale)) {
      assert.fail(`${what}: index ${i}: ${actual[i]} vs ${expected[i]} (|diff| ${d} > ${tol} x scale ${scale})`);
    }
  }
}

/** A deterministic uniform [0, 1) generator (mulberry32), so a failing random case reproduces. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
