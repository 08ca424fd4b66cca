import { join } from 'node:path';
import { initBackend } from '../../backend/index.js';
import { createModel, modelNames } from '../../models/index.js';
import { manualSeed } from '../../nn/index.js';
import { loadersFor, openData, subsetData } from '../../train/data_spec.js';
import { parseSchedule } from '../../train/schedule.js';
import { engineThreadGovernor } from '../../train/threads.js';
import { train, type BatchProgress, type EpochMetrics } from '../../train/trainer.js';
import { fixThreads, intOption, numberOption, parse, threadsOption } from '../args.js';
import { progressLine } from '../progress.js';

export const summary = 'train a model on Fashion-MNIST, CIFAR or an image folder';

const usage = `usage: residual train --model M [--data fashion-mnist|cifar10:DIR|cifar100:DIR|folder:DIR]
  [--epochs 1] [--batch 128] [--lr 0.1] [--momentum 0.9] [--no-nesterov] [--wd 5e-4] [--no-decay-bn-bias]
  [--schedule onecycle[:PCT]|cosine|multistep:E1,E2|constant] [--warmup ITERS] [--label-smoothing 0]
  [--seed 0] [--out DIR] [--resume] [--budget MINUTES] [--subset N] [--threads N|auto] [--json]

Defaults are the Fashion-MNIST recipe of BENCHMARKS.md: batch 128, SGD with Nesterov momentum 0.9,
weight decay 5e-4, one-cycle learning rate peaking at 0.1 after 15% of the run.
Each epoch appends to OUT/metrics.jsonl and writes OUT/checkpoints/epoch-N/ (model.safetensors,
optimizer.safetensors, state.json); --resume continues from the newest. Ctrl-C saves and stops.
--subset N trains on the first N samples (and tests on the first N/5): a quick look.
--threads N fixes the engine's threads (default: OMP_NUM_THREADS, else every core); --threads auto
times a few steps at every core and at one, keeps the faster and checks again every 400 steps: on a
machine shared with other work one thread can be 3x faster than two (BENCHMARKS.md). A fixed count
repeats a run bit for bit; auto does not (the count, and so the order of sums, follows the timing).`;

export async function run(argv: string[]): Promise<number> {
  const { values: v } = parse('train', argv, {
    model: { type: 'string' }, data: { type: 'string' }, epochs: { type: 'string' }, batch: { type: 'string' },
    lr: { type: 'string' }, momentum: { type: 'string' }, 'no-nesterov': { type: 'boolean' }, wd: { type: 'string' },
    'no-decay-bn-bias': { type: 'boolean' }, schedule: { type: 'string' }, warmup: { type: 'string' },
    'label-smoothing': { type: 'string' }, seed: { type: 'string' }, out: { type: 'string' }, resume: { type: 'boolean' },
    budget: { type: 'string' }, threads: { type: 'string' }, json: { type: 'boolean' }, 'image-size': { type: 'string' }, 'skip-bad': { type: 'boolean' }, subset: { type: 'string' },
  });
  if (v.help) {
    console.log(usage);
    return 0;
  }
  if (!v.model) throw new Error(`train: --model is required (one of ${modelNames().join(', ')})`);
  const epochs = intOption('train', 'epochs', v.epochs, 1);
  const batch = intOption('train', 'batch', v.batch, 128);
  const seed = v.seed === undefined ? 0 : Number(v.seed);
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`train: --seed must be a non-negative integer, got "${v.seed}"`);
  const budget = v.budget === undefined ? undefined : numberOption('train', 'budget', v.budget, 0) * 60;

  const threads = threadsOption('train', v.threads);
  const backend = await initBackend();
  fixThreads(backend, threads.fixed);
  const governor = threads.auto ? engineThreadGovernor() ?? undefined : undefined;
  const opened = await openData(v.data ?? 'fashion-mnist', { imageSize: v['image-size'] ? intOption('train', 'image-size', v['image-size'], 224) : undefined, skipBad: v['skip-bad'] });
  const data = v.subset ? subsetData(opened, intOption('train', 'subset', v.subset, 1)) : opened;
  const loaders = loadersFor(data, { batchSize: batch, seed });
  manualSeed(seed);
  const model = createModel(v.model, { inChannels: data.input[0], numClasses: data.classNames.length });
  const outDir = v.out ?? join('runs', `${v.model}-${data.name.replace(/[^\w.-]+/g, '_')}-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  const json = v.json || !process.stdout.isTTY;

  const info = { model: v.model, data: data.name, params: model.parameterCount(), backend: backend.name, threads: backend.info().threads, out: outDir, train_samples: data.train.length, test_samples: data.test.length };
  if (json) console.log(JSON.stringify({ event: 'start', ...info }));
  else console.log(`training ${v.model} (${info.params.toLocaleString('en-US')} params) on ${data.name} (${info.train_samples} train / ${info.test_samples} test), ${backend.name} backend, ${info.threads} threads -> ${outDir}`);

  const result = await train(model, loaders.train, loaders.test, {
    epochs,
    lr: numberOption('train', 'lr', v.lr, 0.1),
    momentum: numberOption('train', 'momentum', v.momentum, 0.9),
    nesterov: !v['no-nesterov'],
    weightDecay: numberOption('train', 'wd', v.wd, 5e-4),
    noDecayOnNormAndBias: !!v['no-decay-bn-bias'],
    schedule: parseSchedule(v.schedule ?? 'onecycle:0.15', loaders.train.batchesPerEpoch),
    warmupIters: v.warmup ? intOption('train', 'warmup', v.warmup, 0) : undefined,
    labelSmoothing: numberOption('train', 'label-smoothing', v['label-smoothing'], 0),
    outDir,
    resume: !!v.resume,
    budgetSeconds: budget,
    runInfo: { argv, ...info },
    threads: governor,
    onBatch: json ? undefined : (p: BatchProgress) => process.stdout.write(`\r${progressLine(p, epochs)}`),
    onEpoch: (m: EpochMetrics) => {
      if (json) console.log(JSON.stringify(m));
      else {
        process.stdout.write('\r\x1b[2K');
        console.log(`epoch ${m.epoch}/${epochs}: train loss ${m.train_loss.toFixed(4)} acc ${(100 * m.train_acc).toFixed(2)}%` +
          (m.test_acc !== null ? ` | test loss ${m.test_loss!.toFixed(4)} acc ${(100 * m.test_acc).toFixed(2)}%` : '') +
          ` | ${m.epoch_s.toFixed(1)} s, ${m.images_per_s.toFixed(0)} img/s`);
      }
    },
  });
  const last = result.history[result.history.length - 1];
  if (governor) {
    // [step, threads] at every change: what the governor chose, for the log
    if (json) console.log(JSON.stringify({ event: 'threads', changes: governor.changes }));
    else console.log(`threads (auto): ${governor.changes.map(([step, n]) => `${n} from step ${step}`).join(', ')}`);
  }
  if (json) console.log(JSON.stringify({ event: 'end', stopped: result.stopped, out: outDir, test_acc: last?.test_acc ?? null }));
  else if (result.stopped === 'interrupted') console.log(`\ninterrupted: checkpoint saved in ${outDir}; continue with --resume --out ${outDir}`);
  else console.log(`done (${result.stopped}): test accuracy ${last?.test_acc !== null && last ? (100 * last.test_acc!).toFixed(2) + '%' : '-'}; run folder ${outDir}`);
  model.dispose();
  return result.stopped === 'interrupted' ? 130 : 0;
}
