// Fine-tuning speed by what is frozen: `residual train --weights W --freeze none|stages:N|trunk` on
// the same image folder, interleaved (none, stages, trunk, none, ...), each in its own process.
// The figure is the training images per second of the last epoch (the first builds kernels), as
// the run's metrics.jsonl records it, data loading included: what a user waits for.
//   node dist/bench/finetune.js [--model resnet50] [--images 96] [--size 224] [--batch 16] [--epochs 2]
//                               [--rounds 2] [--threads 2] [--freeze none,stages:2,trunk]
// Prints one JSON object.
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { saveStateDictFile } from '../src/io/index.js';
import { createModel } from '../src/models/index.js';
import { runChild } from './child.js';

const { values: v } = parseArgs({
  options: {
    model: { type: 'string', default: 'resnet50' }, images: { type: 'string', default: '96' }, size: { type: 'string', default: '224' },
    batch: { type: 'string', default: '16' }, epochs: { type: 'string', default: '2' }, rounds: { type: 'string', default: '2' },
    threads: { type: 'string', default: '2' }, freeze: { type: 'string', default: 'none,stages:2,trunk' },
  },
});
const cli = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');
const dir = mkdtempSync(join(tmpdir(), 'residual-bench-finetune-'));

async function main(): Promise<void> {
  // Three classes of noisy 256x320 images: decoding and resizing cost what real photos of that size would.
  const perClass = Math.ceil(Number(v.images) / 3);
  for (const [split, n] of [['train', perClass], ['val', Math.max(2, Math.round(perClass / 4))]] as const) {
    for (const c of ['a', 'b', 'c']) {
      mkdirSync(join(dir, 'data', split, c), { recursive: true });
      for (let i = 0; i < n; i++) {
        const raw = Buffer.alloc(256 * 320 * 3);
        for (let k = 0; k < raw.length; k++) raw[k] = (k * 2654435761 + i * 97 + c.charCodeAt(0) * 13) & 255;
        await sharp(raw, { raw: { width: 320, height: 256, channels: 3 } }).jpeg().toFile(join(dir, 'data', split, c, `${i}.jpg`));
      }
    }
  }
  // The weights' values do not change the speed: the model's own init, saved as a torchvision-format file.
  const weights = join(dir, 'weights.safetensors');
  const model = createModel(v.model!);
  saveStateDictFile(weights, model.stateDict());
  model.dispose();

  const freezes = v.freeze!.split(',');
  const runs: { freeze: string; round: number; images_per_s: number; epoch_s: number; trainable_params: number }[] = [];
  for (let round = 0; round < Number(v.rounds); round++) {
    for (const freeze of freezes) {
      const out = join(dir, `run-${round}-${freeze.replace(':', '')}`);
      const stdout = runChild([process.execPath, cli, 'train', '--model', v.model!, '--weights', weights, '--data', `folder:${join(dir, 'data')}`,
        '--freeze', freeze, '--epochs', v.epochs!, '--batch', v.batch!, '--image-size', v.size!, '--threads', v.threads!, '--json', '--out', out],
      { ...process.env, OMP_NUM_THREADS: v.threads }, `train --freeze ${freeze}`);
      const start = JSON.parse(stdout.split('\n')[0]!) as { trainable_params: number };
      const epochs = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { images_per_s: number; epoch_s: number });
      const last = epochs[epochs.length - 1]!;
      runs.push({ freeze, round, images_per_s: last.images_per_s, epoch_s: last.epoch_s, trainable_params: start.trainable_params });
      rmSync(out, { recursive: true, force: true });
    }
  }
  const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2; };
  const byFreeze = Object.fromEntries(freezes.map((f) => [f, median(runs.filter((r) => r.freeze === f).map((r) => r.images_per_s))]));
  const base = byFreeze.none;
  console.log(JSON.stringify({
    benchmark: 'finetune', model: v.model, images: Number(v.images), size: Number(v.size), batch: Number(v.batch), threads: Number(v.threads),
    date: new Date().toISOString(), runs, median_images_per_s: byFreeze,
    speedup_vs_none: base ? Object.fromEntries(freezes.map((f) => [f, byFreeze[f]! / base])) : null,
  }));
}

main().finally(() => rmSync(dir, { recursive: true, force: true })).catch((e: unknown) => {
  console.error(`bench/finetune: ${(e as Error).message}`);
  process.exitCode = 1;
});
