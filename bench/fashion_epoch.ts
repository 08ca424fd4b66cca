// Epoch time of ResNet-20 on Fashion-MNIST with the same recipe, our engine against PyTorch, in one run.
//
//   node dist/bench/fashion_epoch.js [--threads 2] [--rounds 2] [--epochs 1] [--auto] [--spin]
//
// `ours` runs at the fixed --threads count. --auto adds a third arm, ours with `--threads auto` (the
// train command's default since 2026-12-04: the governor that times every core against one thread),
// so a round on a busy host shows whether it keeps what fixed threads lose. --spin runs a synthetic
// busy neighbour throughout (one process spinning on one core), the same for every arm.
// Alternates `residual train` and bench/torch_fashion_epoch.py (A B A B: this machine is shared),
// both pinned to the same thread count, and prints one JSON object with every run's training time
// per epoch (the test pass excluded), test accuracy, and the ratio ours / PyTorch of the fastest runs.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { hostInfo } from '../src/benchmark/host.js';
import { runChild } from './child.js';

interface EpochRun { epoch_s: number; test_acc: number; train_loss: number }

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');

function jsonLines(out: string): Record<string, unknown>[] {
  return out.trim().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
}

function run(cmd: string[], env: NodeJS.ProcessEnv, what: string): EpochRun[] {
  return jsonLines(runChild(cmd, env, what)).filter((l) => typeof l.epoch_s === 'number') as unknown as EpochRun[];
}

const { values } = parseArgs({ options: { threads: { type: 'string', default: '2' }, rounds: { type: 'string', default: '2' }, epochs: { type: 'string', default: '1' }, auto: { type: 'boolean' }, spin: { type: 'boolean' } } });
const threads = Number(values.threads);
const epochs = String(Number(values.epochs));
const env = { ...process.env, OMP_NUM_THREADS: String(threads) };
const tmp = mkdtempSync(join(tmpdir(), 'residual-bench-fashion-'));
const ours: EpochRun[][] = [];
const torch: EpochRun[][] = [];
const auto: EpochRun[][] = [];
const spinner = values.spin ? spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }) : null;
try {
  for (let i = 0; i < Number(values.rounds); i++) {
    ours.push(run([process.execPath, join(root, 'dist', 'src', 'cli', 'main.js'), 'train', '--model', 'resnet20', '--data', 'fashion-mnist',
      '--epochs', epochs, '--json', '--threads', String(threads), '--out', join(tmp, `run${i}`)], env, 'residual train'));
    torch.push(run(['/usr/bin/python3', join(root, 'bench', 'torch_fashion_epoch.py'), '--threads', String(threads), '--epochs', epochs], env, 'PyTorch'));
    if (values.auto) {
      auto.push(run([process.execPath, join(root, 'dist', 'src', 'cli', 'main.js'), 'train', '--model', 'resnet20', '--data', 'fashion-mnist',
        '--epochs', epochs, '--json', '--threads', 'auto', '--out', join(tmp, `auto${i}`)], env, 'residual train --threads auto'));
    }
  }
} finally {
  spinner?.kill('SIGKILL');
  rmSync(tmp, { recursive: true, force: true });
}
const best = (runs: EpochRun[][]) => Math.min(...runs.flat().map((r) => r.epoch_s));
console.log(JSON.stringify({
  date: new Date().toISOString(), host: hostInfo(), threads, epochs: Number(epochs), neighbour: values.spin ? 'one process spinning on one core' : 'none of ours', recipe: 'resnet20, batch 128, SGD nesterov 0.9, wd 5e-4, one-cycle 0.1 (15%), pad-2 crop + flip',
  ours: ours.map((r) => r.map((e) => ({ epoch_s: +e.epoch_s.toFixed(1), test_acc: e.test_acc }))),
  pytorch: torch.map((r) => r.map((e) => ({ epoch_s: +e.epoch_s.toFixed(1), test_acc: e.test_acc }))),
  ...(values.auto ? { ours_auto: auto.map((r) => r.map((e) => ({ epoch_s: +e.epoch_s.toFixed(1), test_acc: e.test_acc }))) } : {}),
  best_epoch_s: { ours: +best(ours).toFixed(1), pytorch: +best(torch).toFixed(1), ...(values.auto ? { ours_auto: +best(auto).toFixed(1) } : {}) },
  ratio: +(best(ours) / best(torch)).toFixed(3),
  ...(values.auto ? { ratio_auto: +(best(auto) / best(torch)).toFixed(3) } : {}),
}, null, 1));
