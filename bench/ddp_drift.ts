// How far apart the weights of runs that compute the same function end, step by step (issue #15's
// equivalence): per tensor, max |a - b| / max |a| after 1..N optimizer steps, for
//   threads: one process at 1 thread against one process at 2 threads (the engine's own rounding),
//   sync:    mpirun -np 2 --sync-bn at 1 thread per rank against one process at 1 thread,
//   ddp:     mpirun -np 2 without --sync-bn (per-rank BatchNorm statistics: another function).
//
//   node dist/bench/ddp_drift.js [--steps 6] [--lr 0.01] [--subset 512] [--batch 128] [--pairs threads,sync,ddp] [--extra="--wd 0"]
//     [--warm-epochs 8] [--check 1e-4]
//
// Prints one JSON line per step and pair: the worst tensor over all (parameters and BatchNorm running
// statistics), the worst parameter, the worst conv/fc weight. --warm-epochs E first trains one process
// (1 thread) E epochs at lr 0.1 on the same subset and starts every run from its weights (--weights):
// from scratch the BatchNorm biases are 0, so "within 1e-4 of the tensor's largest entry" asks their
// first gradients to agree to 1e-4, finer than f32 computes them (BENCHMARKS.md). --check B exits 1
// unless after the last step every tensor of the --sync-bn run is within B of its largest entry and
// the run without --sync-bn is not.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { readSafetensors } from '../src/io/safetensors.js';

const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '6' }, lr: { type: 'string', default: '0.01' }, subset: { type: 'string', default: '512' },
    batch: { type: 'string', default: '128' }, pairs: { type: 'string', default: 'threads,sync,ddp' }, extra: { type: 'string', default: '' },
    model: { type: 'string', default: 'resnet20' }, epochs: { type: 'string', default: '2' },
    'warm-epochs': { type: 'string', default: '0' }, check: { type: 'string' },
  },
});
const cli = join(import.meta.dirname, '..', 'src', 'cli', 'main.js');
const recipe = ['train', '--model', values.model!, '--subset', values.subset!, '--batch', values.batch!, '--epochs', values.epochs!,
  '--lr', values.lr!, '--schedule', 'constant', '--json', ...values.extra!.split(' ').filter(Boolean)];
const mpiEnv = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' };
const root = mkdtempSync(join(tmpdir(), 'residual-drift-'));
const warmEpochs = Number(values['warm-epochs']);
if (warmEpochs > 0) {
  const warm = join(root, 'warm');
  const r = spawnSync('node', [cli, 'train', '--model', values.model!, '--subset', values.subset!, '--batch', values.batch!, '--epochs', String(warmEpochs),
    '--lr', '0.1', '--schedule', 'constant', '--threads', '1', '--json', '--out', warm], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`the warm start failed: ${r.stderr}`);
  // A fine-tuning start: its defaults differ, so the recipe's values are given again.
  recipe.push('--weights', warm, '--head-lr-scale', '1', '--warmup', '0', '--wd', '5e-4');
}

function run(kind: 'one1' | 'one2' | 'sync' | 'ddp', steps: number): string {
  const out = join(root, `${kind}-${steps}`);
  const args = [...recipe, '--max-steps', String(steps), '--out', out];
  const r = kind === 'one1' || kind === 'one2'
    ? spawnSync('node', [cli, ...args, '--threads', kind === 'one1' ? '1' : '2'], { encoding: 'utf8' })
    : spawnSync('mpirun', ['-np', '2', '--oversubscribe', 'node', cli, ...args, '--distributed', '--threads', '1', ...(kind === 'sync' ? ['--sync-bn'] : [])],
      { encoding: 'utf8', env: mpiEnv });
  if (r.status !== 0) throw new Error(`${kind} ${steps} steps failed: ${r.stderr}`);
  const names = readdirSync(join(out, 'checkpoints')).sort();
  return join(out, 'checkpoints', names[names.length - 1], 'model.safetensors');
}

function diffs(a: string, b: string): [string, number][] {
  const A = readSafetensors(a).tensors;
  const B = readSafetensors(b).tensors;
  const out: [string, number][] = [];
  for (const [k, e] of A) {
    if (k.endsWith('num_batches_tracked')) continue;
    const f = B.get(k)!;
    let big = 0;
    let d = 0;
    for (let i = 0; i < e.data.length; i++) { big = Math.max(big, Math.abs(e.data[i])); d = Math.max(d, Math.abs(e.data[i] - f.data[i])); }
    out.push([k, big === 0 ? d : d / big]);
  }
  return out;
}

const worst = (d: [string, number][], f: (k: string) => boolean) =>
  d.filter(([k]) => f(k)).reduce((a, b) => (b[1] > a[1] ? b : a), ['', -1] as [string, number]);
const pairs = values.pairs!.split(',');
const last = new Map<string, number>();
try {
  for (let s = 1; s <= Number(values.steps); s++) {
    const base = run('one1', s);
    const other = { threads: () => run('one2', s), sync: () => run('sync', s), ddp: () => run('ddp', s) } as Record<string, () => string>;
    for (const p of pairs) {
      const d = diffs(base, other[p]());
      const all = worst(d, () => true);
      const w = worst(d, (k) => /(conv\d?|fc|downsample\.\d)\.weight$/.test(k));
      const params = worst(d, (k) => !/running_(mean|var)$/.test(k));
      console.log(JSON.stringify({ step: s, pair: p, worst: all[0], rel: +all[1].toExponential(2), worst_param: params[0], param_rel: +params[1].toExponential(2), worst_weight: w[0], weight_rel: +w[1].toExponential(2),
        over_1e4: d.filter(([, x]) => x > 1e-4).length, tensors: d.length }));
      last.set(p, all[1]);
    }
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
if (values.check !== undefined) {
  const bound = Number(values.check);
  const sync = last.get('sync');
  const ddp = last.get('ddp');
  if (sync === undefined || ddp === undefined) throw new Error('--check needs the sync and ddp pairs (--pairs sync,ddp)');
  const ok = sync <= bound && ddp > bound;
  console.log(JSON.stringify({ check: bound, sync_bn: sync, per_rank_bn: ddp, ok }));
  if (!ok) process.exitCode = 1;
}
