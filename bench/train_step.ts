// Side-by-side training-step benchmark: one step (forward, cross-entropy, backward, SGD with
// momentum) of our eager engine (`residual bench --mode train`) against PyTorch 1.13
// (bench/torch_train_step.py), in ms per image.
//
//   node dist/bench/train_step.js [--threads 2] [--rounds 2] [--runs 5] [--warmup 2] [--bf16]
//        [--cases resnet50:16:3x224x224,resnext50_32x4d:16:3x224x224,resnet56:128:3x32x32] [--torch-layout nchw|nhwc]
//
// Each measurement runs in a fresh child process pinned to the same thread count (OMP_NUM_THREADS
// for us, torch.set_num_threads for PyTorch); the engines alternate (ours, PyTorch, ours, ...)
// because this machine is shared, and each keeps its fastest median across rounds. Prints one JSON
// object with the ratios ours / PyTorch (below 1.0: we are faster). --bf16 adds our bf16 mixed-precision
// step to the alternation, and its ratio to our f32 step (issue #13's goal: at most 0.6).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { hostInfo } from '../src/benchmark/host.js';
import { lastJson, runChild } from './child.js';

interface Case { model: string; batch: number; input: [number, number, number]; threads: number; warmup: number; runs: number }
interface EngineResult { engine: string; threads: number; ms_per_image: number }

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');

function ours(c: Case, env: NodeJS.ProcessEnv, dtype: 'f32' | 'bf16' = 'f32'): EngineResult {
  const cli = join(root, 'dist', 'src', 'cli', 'main.js');
  const out = runChild([process.execPath, cli, 'bench', '--model', c.model, '--batch', String(c.batch), '--mode', 'train',
    '--input', c.input.join('x'), '--threads', String(c.threads), '--warmup', String(c.warmup), '--runs', String(c.runs), '--dtype', dtype, '--json'], env, 'residual bench');
  const r = lastJson<{ ms_per_image: number; threads: number }>(out);
  return { engine: `residual eager training step (native, ${dtype})`, threads: r.threads, ms_per_image: r.ms_per_image };
}

function torch(c: Case, env: NodeJS.ProcessEnv, dir: string, layout: string): EngineResult {
  const spec = join(dir, `torch-${c.model}-${c.batch}.json`);
  writeFileSync(spec, JSON.stringify({ ...c, layout }));
  return lastJson<EngineResult>(runChild(['/usr/bin/python3', join(root, 'bench', 'torch_train_step.py'), spec], env, 'PyTorch'));
}

function parseCase(s: string, threads: number, warmup: number, runs: number): Case {
  const [model, batch, input] = s.split(':');
  const dims = (input ?? '').split('x').map(Number);
  if (!model || !Number.isInteger(Number(batch)) || dims.length !== 3 || dims.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new Error(`train_step: a case is MODEL:BATCH:CxHxW, e.g. resnet50:16:3x224x224, got "${s}"`);
  }
  return { model, batch: Number(batch), input: dims as [number, number, number], threads, warmup, runs };
}

function main(): void {
  const { values } = parseArgs({
    options: {
      threads: { type: 'string', default: '2' }, rounds: { type: 'string', default: '2' }, runs: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '2' }, bf16: { type: 'boolean', default: false }, 'torch-layout': { type: 'string', default: 'nchw' },
      cases: { type: 'string', default: 'resnet50:16:3x224x224,resnext50_32x4d:16:3x224x224,resnet56:128:3x32x32' },
    },
  });
  const threads = Number(values.threads);
  const env = { ...process.env, OMP_NUM_THREADS: String(threads) };
  const tmp = mkdtempSync(join(tmpdir(), 'residual-bench-train-'));
  const rows: Record<string, unknown>[] = [];
  const engines: Record<string, string> = {};
  try {
    for (const spec of values.cases!.split(',')) {
      const c = parseCase(spec, threads, Number(values.warmup), Number(values.runs));
      const best = { ours: Infinity, torch: Infinity, ours_bf16: Infinity };
      const loadBefore = loadavg()[0]!;
      for (let round = 0; round < Number(values.rounds); round++) {
        // Each engine runs the moment it is listed: one at a time, alternating within the round.
        const runners: [keyof typeof best, () => EngineResult][] = [['ours', () => ours(c, env)], ['torch', () => torch(c, env, tmp, values['torch-layout']!)]];
        if (values.bf16) runners.push(['ours_bf16', () => ours(c, env, 'bf16')]);
        for (const [k, run] of runners) {
          const r = run();
          engines[k] = `${r.engine}, ${r.threads} threads`;
          best[k] = Math.min(best[k], r.ms_per_image);
        }
      }
      rows.push({
        model: c.model, batch: c.batch, input: c.input, ours_ms_per_image: +best.ours.toFixed(2), torch_ms_per_image: +best.torch.toFixed(2),
        ratio_vs_torch: +(best.ours / best.torch).toFixed(3),
        ...(values.bf16 ? { ours_bf16_ms_per_image: +best.ours_bf16.toFixed(2), bf16_vs_f32: +(best.ours_bf16 / best.ours).toFixed(3) } : {}),
        load_1min: [+loadBefore.toFixed(2), +loadavg()[0]!.toFixed(2)], // before and after this case: other work on the machine
      });
      console.error(JSON.stringify(rows[rows.length - 1]));
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  console.log(JSON.stringify({
    date: new Date().toISOString(), host: hostInfo(), threads, rounds: Number(values.rounds), runs: Number(values.runs), warmup: Number(values.warmup),
    statistic: 'per engine, the fastest of the rounds\' medians', engines, results: rows,
  }, null, 1));
}

main();
