// Parity with PyTorch through the CLI: `residual infer` on torchvision weights (.pth and
// .safetensors) must reproduce PyTorch's logits within 1e-4 of the largest logit.
//
// The fixtures (hundreds of MB of random weights with non-trivial BatchNorm statistics, inputs and
// PyTorch's outputs) are made by scripts/fixtures/models_parity.py with Debian's python3-torch into
// a cache directory ($RESIDUAL_FIXTURE_CACHE or the OS temp dir), keyed by the script's hash, and
// reused by later runs. Without torch the test fails and says what to install.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { readSafetensors } from '../src/io/index.js';
import { repoRoot } from './helpers.js';

const PYTHON = '/usr/bin/python3';
const script = join(repoRoot, 'scripts', 'fixtures', 'models_parity.py');
const cli = join(repoRoot, 'dist', 'src', 'cli', 'main.js');

interface Manifest {
  version: number;
  models: Record<string, { input: number[]; logits: number[]; max_abs_logit: number }>;
}

function fixtureDir(): string {
  const hash = createHash('sha256').update(readFileSync(script)).digest('hex').slice(0, 12);
  return join(process.env.RESIDUAL_FIXTURE_CACHE ?? join(tmpdir(), 'residual-fixtures'), `models-parity-${hash}`);
}

/** Makes the fixtures unless a complete set (manifest.json written last) is cached. */
function ensureFixtures(dir: string): Manifest {
  const manifestPath = join(dir, 'manifest.json');
  if (!existsSync(manifestPath)) {
    const probe = spawnSync(PYTHON, ['-c', 'import torch, torchvision'], { encoding: 'utf8' });
    if (probe.error || probe.status !== 0) {
      throw new Error(`the PyTorch parity fixtures need Debian's ${PYTHON} with torch and torchvision ` +
        `(apt-get install -y python3-torch python3-torchvision): ${probe.error?.message ?? probe.stderr.trim().split('\n').pop()}`);
    }
    mkdirSync(dir, { recursive: true });
    const run = spawnSync(PYTHON, [script, '--out', dir], { encoding: 'utf8', timeout: 15 * 60_000 });
    if (run.status !== 0 || !existsSync(manifestPath)) {
      throw new Error(`${script} failed (exit ${run.status}): ${run.error?.message ?? run.stderr.slice(-2000)}`);
    }
  }
  return JSON.parse(readFileSync(manifestPath, 'utf8')) as Manifest;
}

function read(path: string, key: string): { shape: number[]; data: Float32Array } {
  const t = readSafetensors(path).tensors.get(key);
  assert.ok(t, `${path} has no "${key}"`);
  return t;
}

// Which weight files to run: both formats for the small models, one each for the big ones (time).
const RUNS: [string, ('pth' | 'safetensors')[]][] = [
  ['resnet18', ['pth', 'safetensors']],
  ['resnet20', ['pth', 'safetensors']],
  ['resnet50', ['safetensors']],
  ['resnext50_32x4d', ['pth']],
  ['wide_resnet50_2', ['pth']],
];

describe('PyTorch parity through `residual infer`', () => {
  const dir = fixtureDir();
  let manifest: Manifest;

  before(() => {
    assert.ok(existsSync(cli), `${cli} is missing; build with \`npx tsc -p .\` first`);
    manifest = ensureFixtures(dir);
  });

  for (const [model, formats] of RUNS) {
    for (const format of formats) {
      it(`${model} from .${format}: logits within 1e-4 of PyTorch's, relative to the largest`, () => {
        assert.ok(manifest.models[model], `the fixture set in ${dir} has no ${model}; delete the directory to regenerate it`);
        const out = join(dir, `${model}.${format}.ours.safetensors`);
        execFileSync(process.execPath, [cli, 'infer', '--model', model, '--weights', join(dir, `${model}.${format}`),
          '--input', join(dir, `${model}_input.safetensors`), '--output', out], { stdio: ['ignore', 'pipe', 'pipe'] });
        const ours = read(out, 'output');
        const theirs = read(join(dir, `${model}_logits.safetensors`), 'logits');
        assert.deepEqual(ours.shape, theirs.shape);
        const scale = theirs.data.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        assert.ok(scale > 0, 'PyTorch logits are all zero; the fixture is degenerate');
        let worst = 0, at = 0;
        for (let i = 0; i < theirs.data.length; i++) {
          const d = Math.abs(ours.data[i] - theirs.data[i]);
          if (d > worst) { worst = d; at = i; }
        }
        assert.ok(worst <= 1e-4 * scale,
          `${model}: logit ${at} is ${ours.data[at]}, PyTorch ${theirs.data[at]} (|diff| ${worst} > 1e-4 x ${scale})`);
      });
    }
  }
});
