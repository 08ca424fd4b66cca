// Data-parallel training through mpirun with 2 ranks on this machine (Open MPI, as root where the
// tests run as root): the run equals one process on the whole batch, resume works across ranks,
// only rank 0 writes, and a rank that dies or hangs ends the job with an error instead of a hang.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { distributedAvailability } from '../src/distributed/index.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { initBackend } from '../src/backend/index.js';
import { createModel } from '../src/models/index.js';
import { manualSeed } from '../src/nn/index.js';
import { onGradReady } from '../src/tensor/autograd.js';
import { Tensor, crossEntropy } from '../src/tensor/index.js';
import { repoRoot } from './helpers.js';

const cli = join(repoRoot, 'dist', 'src', 'cli', 'main.js');
const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'residual-mpi-'));
  dirs.push(d);
  return d;
}

// Open MPI refuses root unless told; --oversubscribe lets 2 ranks share the 2 cores with other work.
const mpiEnv = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' };

function mpirun(args: string[], env: Record<string, string> = {}, timeoutMs = 120_000) {
  const r = spawnSync('mpirun', ['-np', '2', '--oversubscribe', 'node', cli, ...args],
    { env: { ...mpiEnv, ...env }, encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status, signal: r.signal, out: r.stdout ?? '', err: r.stderr ?? '', error: r.error };
}

function single(args: string[]) {
  const r = spawnSync('node', [cli, ...args], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, `one-process run failed: ${r.stderr}`);
  return r.stdout;
}

function lastCheckpoint(out: string): string {
  const names = readdirSync(join(out, 'checkpoints')).sort();
  return join(out, 'checkpoints', names[names.length - 1], 'model.safetensors');
}

/** Per tensor: max |a - b| over the largest |a| of the tensor. */
function relativeDiffs(a: string, b: string): Map<string, number> {
  const A = readSafetensors(a).tensors;
  const B = readSafetensors(b).tensors;
  const out = new Map<string, number>();
  for (const [k, e] of A) {
    const f = B.get(k);
    assert.ok(f, `${b} lacks ${k}`);
    let big = 0;
    let diff = 0;
    for (let i = 0; i < e.data.length; i++) {
      big = Math.max(big, Math.abs(e.data[i]));
      diff = Math.max(diff, Math.abs(e.data[i] - f.data[i]));
    }
    out.set(k, big === 0 ? diff : diff / big);
  }
  return out;
}

const available = distributedAvailability();
const mpirunThere = spawnSync('mpirun', ['--version'], { encoding: 'utf8' }).status === 0;

// 512 Fashion-MNIST samples, global batch 128: 4 steps per epoch.
const recipe = ['train', '--model', 'resnet20', '--subset', '512', '--batch', '128', '--epochs', '2', '--lr', '0.01', '--schedule', 'constant', '--json'];

describe('distributed (mpirun, 2 ranks)', () => {
  it('is built and mpirun is installed (setup.sh installs openmpi-bin and libopenmpi-dev)', () => {
    assert.ok(available.available, available.available ? '' : `${available.reason}; ${available.fix}`);
    assert.ok(mpirunThere, 'mpirun is not on PATH');
  });

  it('with --sync-bn ends within 1e-4 of one process\'s weights (per tensor, of its largest entry), through a resume; without it, does not', () => {
    // Issue #15's bound, literally: max |a - b| <= 1e-4 * max |a| for every tensor of the checkpoint,
    // BatchNorm running statistics included. The setup (BENCHMARKS.md, "Data-parallel equivalence"):
    // - A warm start: one process (1 thread) trains 8 epochs of these 512 images at lr 0.1, and both
    //   runs start from its weights. From scratch the BatchNorm biases are 0, so the bound asks their
    //   first gradients to agree to 1e-4; f32 does not compute them that well (one process at 1 and
    //   at 2 threads already differs by 3.4e-2 after one step, PyTorch's f32 gradients differ from
    //   float64's by up to 9e-3), whatever the lr.
    // - Then 5 steps at lr 0.001 (across the epoch boundary, the 2-rank run resumed after 3): the
    //   stem BatchNorm's running statistics take 0.1 of each step's f32 batch mean, whose rounding
    //   alone moves them ~5e-5 per step, so more steps run into the bound whatever the lr. Measured
    //   here at step 5: --sync-bn 6.4e-5 (1 vs 2 threads of one process: 6.8e-5), without 1.8.
    const warm = tempDir();
    single([...recipe, '--epochs', '8', '--lr', '0.1', '--threads', '1', '--out', warm]);
    const steps = [...recipe, '--lr', '0.001', '--weights', warm, '--head-lr-scale', '1', '--warmup', '0', '--wd', '5e-4'];
    const one = tempDir();
    single([...steps, '--threads', '1', '--max-steps', '5', '--out', one]);
    // The engine's own rounding, for the messages: the same process at another thread count.
    const two = tempDir();
    single([...steps, '--threads', '2', '--max-steps', '5', '--out', two]);

    // Two ranks: 3 steps, then a resumed run to 5 (across the epoch boundary, with a sharded test pass).
    const dist = tempDir();
    let r = mpirun([...steps, '--distributed', '--sync-bn', '--threads', '1', '--max-steps', '3', '--out', dist]);
    assert.equal(r.status, 0, `mpirun failed: ${r.err}`);
    r = mpirun([...steps, '--distributed', '--sync-bn', '--threads', '1', '--max-steps', '5', '--resume', '--out', dist]);
    assert.equal(r.status, 0, `mpirun --resume failed: ${r.err}`);
    // Rank 0 alone prints and writes: one start and one end event, one metrics line for epoch 1.
    const events = r.out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { event?: string; epoch?: number; comm?: unknown });
    assert.equal(events.filter((e) => e.event === 'start').length, 1, r.out);
    assert.equal(events.filter((e) => e.event === 'end').length, 1, r.out);
    const metrics = readFileSync(join(dist, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { epoch: number; comm?: { allreduce_s: number; sync_bn_s: number; grad_bytes: number; buckets: number } });
    assert.deepEqual(metrics.map((m) => m.epoch), [1]);
    // ResNet-20's 1.08 MB of gradients: a first bucket of 1 MB, then the rest; the BN statistics reduced too.
    const c = metrics[0].comm;
    assert.ok(c && c.allreduce_s > 0 && c.sync_bn_s > 0 && c.grad_bytes === 269_434 * 4 && c.buckets === 2,
      `comm stats ${JSON.stringify(metrics[0].comm)}`);

    const expected = lastCheckpoint(one);
    const noise = relativeDiffs(expected, lastCheckpoint(two));
    const got = relativeDiffs(expected, lastCheckpoint(dist));
    const counters = (k: string) => k.endsWith('num_batches_tracked');
    const bad = [...got].filter(([k, d]) => !(d <= 1e-4) || (counters(k) && d !== 0))
      .map(([k, d]) => `${k}: ${d.toExponential(2)} (one process, 1 vs 2 threads: ${noise.get(k)!.toExponential(2)})`);
    assert.deepEqual(bad, [], 'the 2-rank --sync-bn run is farther than 1e-4 of a tensor\'s largest entry from one process');
    const weights = [...got].filter(([k]) => /(conv\d?|fc)\.weight$/.test(k));
    assert.ok(weights.length === 20 && got.size === 97 + 19, `tensors compared: ${got.size}, conv and fc weights ${weights.length}`);

    // Per-rank BatchNorm statistics (DDP's semantics) train another function: far outside the bound.
    const ddp = tempDir();
    r = mpirun([...steps, '--distributed', '--threads', '1', '--max-steps', '5', '--out', ddp]);
    assert.equal(r.status, 0, `mpirun without --sync-bn failed: ${r.err}`);
    const apart = relativeDiffs(expected, lastCheckpoint(ddp));
    const worst = (m: Map<string, number>) => Math.max(...[...m].filter(([k]) => !counters(k)).map(([, d]) => d));
    const outside = [...apart].filter(([k, d]) => !counters(k) && d > 1e-4);
    assert.ok(outside.length >= 40 && worst(apart) > 100 * worst(got),
      `without --sync-bn ${outside.length} tensors differ beyond 1e-4 (worst ${worst(apart).toExponential(2)}, with --sync-bn ${worst(got).toExponential(2)})`);
  });

  it('synchronized BatchNorm on unequal slices (2 and 3 samples) matches float64 batch norm of the whole batch as closely as one process does', () => {
    // The layer alone, against an oracle: a wrong variance (E[x^2] - E[x]^2 cancelling, the unbiased
    // one in the normalization) or a wrong share weighting shows here at 1e-3, far below what the
    // end-to-end comparison above can see through f32's rounding of a network.
    const r = spawnSync('mpirun', ['-np', '2', '--oversubscribe', 'node', join(repoRoot, 'dist', 'test', 'sync_bn_worker.js')],
      { env: mpiEnv, encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, `mpirun sync_bn_worker failed: ${r.stderr}`);
    type Errors = Record<'y' | 'dx' | 'dgamma' | 'dbeta' | 'running_mean' | 'running_var', number>;
    const ranks = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { rank: number; samples: number; sync: Errors; one_process: Errors });
    assert.deepEqual(ranks.map((x) => x.samples).sort(), [2, 3], r.stdout);
    for (const { rank, sync, one_process: one } of ranks) {
      for (const k of Object.keys(sync) as (keyof Errors)[]) {
        // dgamma sums dy * xhat, which cancels: f32 gets it to ~2e-5 either way.
        const cap = k === 'dgamma' ? 1e-4 : 1e-5;
        assert.ok(sync[k] <= cap && sync[k] <= 2 * one[k] + 1e-6,
          `rank ${rank} ${k}: synchronized ${sync[k].toExponential(2)} from float64, one process ${one[k].toExponential(2)}`);
      }
    }
  });

  it('a rank that dies ends the job with an error, never a hang', () => {
    const out = tempDir();
    const t0 = Date.now();
    const r = mpirun([...recipe, '--distributed', '--threads', '1', '--max-steps', '6', '--out', out], { RESIDUAL_DIST_TEST_FAULT: '1:2:exit' }, 90_000);
    assert.equal(r.error, undefined, `mpirun did not end by itself: ${r.error?.message}`);
    assert.notEqual(r.status, 0);
    assert.ok(Date.now() - t0 < 60_000, `took ${Date.now() - t0} ms`);
    assert.match(r.err, /rank 1|process rank 1|exited on signal/i, r.err);
  });

  it('a rank that hangs makes the others stop at the timeout with a clear error', () => {
    const out = tempDir();
    const t0 = Date.now();
    const r = mpirun([...recipe, '--distributed', '--threads', '1', '--max-steps', '6', '--out', out],
      { RESIDUAL_DIST_TEST_FAULT: '1:2:hang', RESIDUAL_DIST_TIMEOUT: '5' }, 90_000);
    assert.equal(r.error, undefined, `mpirun did not end by itself: ${r.error?.message}`);
    assert.notEqual(r.status, 0);
    assert.ok(Date.now() - t0 < 60_000, `took ${Date.now() - t0} ms`);
    assert.match(r.err, /rank 0 of 2: mpi allreduce on rank 0 of 2 did not complete within 5 s: another rank has probably died or hangs/, r.err);
    assert.ok(!existsSync(join(out, 'checkpoints')) || readdirSync(join(out, 'checkpoints')).length === 0, 'no checkpoint from a failed step');
  });

  it('refuses --distributed outside an MPI launch and --sync-bn without --distributed, saying what to do', () => {
    let r = spawnSync('node', [cli, 'train', '--model', 'resnet20', '--distributed'], { encoding: 'utf8', env: { ...process.env, OMPI_COMM_WORLD_SIZE: '' } });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /--distributed runs one rank per process started by an MPI launcher: mpirun -np 2/);
    r = spawnSync('node', [cli, 'train', '--model', 'resnet20', '--sync-bn'], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /--sync-bn synchronizes BatchNorm .* add --distributed/);
    // 513 samples in batches of 128 leave a last batch of 1: one rank would have nothing to do.
    const m = mpirun(['train', '--model', 'resnet20', '--subset', '513', '--batch', '128', '--distributed', '--threads', '1', '--out', tempDir()], {}, 60_000);
    assert.notEqual(m.status, 0);
    assert.match(m.err, /end with a batch of 1, fewer than the 2 ranks; give a --batch of at least 2/);
  });

  it('the grad-ready hook sees every parameter once, during backward, and changes no gradient', async () => {
    await initBackend('native');
    const run = (hook: boolean) => {
      manualSeed(5);
      const model = createModel('resnet20', { inChannels: 1, numClasses: 10 });
      const x = Tensor.fromArray(Float32Array.from({ length: 4 * 28 * 28 }, (_, i) => Math.sin(i)), [4, 1, 28, 28]);
      const seen: Tensor[] = [];
      const off = hook ? onGradReady((p) => { assert.ok(p.grad, 'the gradient is there when the hook runs'); seen.push(p); }) : () => {};
      try {
        crossEntropy(model.forward(x), new Int32Array([1, 2, 3, 4])).backward();
      } finally {
        off();
      }
      const grads = model.parameters().map((p) => p.grad!.toArray());
      const params = model.parameters();
      model.dispose();
      return { grads, seen, params };
    };
    const plain = run(false);
    const hooked = run(true);
    assert.equal(hooked.seen.length, hooked.params.length);
    assert.equal(new Set(hooked.seen).size, hooked.params.length);
    // Backward runs from the head: the classifier (fc.weight, fc.bias, the last two) finishes first.
    assert.ok(hooked.params.slice(-2).includes(hooked.seen[0]), 'the first gradient ready is the classifier\'s');
    hooked.grads.forEach((g, i) => assert.deepEqual(g, plain.grads[i]));
  });
});
