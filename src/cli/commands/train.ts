import { initBackend } from '../../backend/index.js';
import { modelNames, parseFreeze } from '../../models/index.js';
import { runTraining } from '../../train/run.js';
import { engineThreadGovernor } from '../../train/threads.js';
import type { BatchProgress, EpochMetrics } from '../../train/trainer.js';
import { TRAIN_DTYPES, dtypeOption, intOption, numberOption, parse, threadsOption } from '../args.js';
import { downloadProgress, progressLine } from '../progress.js';
import { distributedOptions } from '../../distributed/cli.js';

export const summary = 'train a model on Fashion-MNIST, CIFAR or an image folder';

const usage = `usage: residual train --model M [--data fashion-mnist|cifar10:DIR|cifar100:DIR|folder:DIR]
  [--weights FILE|RUN|torchvision:NAME[.ENTRY]] [--num-classes K] [--freeze none|trunk|stages:N] [--head-lr-scale 10]
  [--epochs E] [--batch B] [--lr LR] [--momentum 0.9] [--no-nesterov] [--wd WD] [--no-decay-bn-bias]
  [--schedule onecycle[:PCT]|cosine|multistep:E1,E2|constant] [--warmup ITERS] [--label-smoothing 0]
  [--image-size 224] [--seed 0] [--out DIR] [--resume] [--budget MINUTES] [--max-steps N] [--subset N] [--threads N|auto] [--dtype f32|bf16] [--json]
  [--distributed [--sync-bn]]   (under mpirun: data-parallel over the ranks; README, "More than one machine")

From scratch (no --weights), the defaults are the Fashion-MNIST recipe of BENCHMARKS.md: 1 epoch,
batch 128, SGD with Nesterov momentum 0.9, weight decay 5e-4, one-cycle learning rate peaking at 0.1
after 15% of the run.

Fine-tuning (--weights given): the trunk loads from the weights; when the data has other classes than
the weights' classifier (or --num-classes says so), the classifier fc starts anew. The defaults change
to a fine-tuning recipe: 5 epochs, batch 32, lr 0.005 with the classifier at 10x (--head-lr-scale),
cosine decay after a linear warm-up over the first 5% of iterations, weight decay 1e-4. Every value in
use is printed at the start; any option overrides it.
  --freeze trunk      train only the classifier: the trunk takes no gradient, skips its backward pass
                      and keeps its BatchNorm statistics (much faster; BENCHMARKS.md)
  --freeze stages:N   also train all but the stem and the first N stages; none (default) trains all

Each epoch appends to OUT/metrics.jsonl and writes OUT/checkpoints/epoch-N/ (model.safetensors with the
model card in its metadata: class names, input size, mean/std; optimizer.safetensors; state.json);
--resume continues from the newest. Ctrl-C saves and stops. A loss that turns NaN or infinite stops the
run with an error (exit 1). \`residual predict --weights OUT\` then prints the data's class names.
--subset N trains on the first N samples (and tests on the first N/5): a quick look.
--threads auto (the default unless OMP_NUM_THREADS is set) times a few steps at every core and at one,
keeps the faster and checks again every 400 steps: on a machine shared with other work one thread can
be 2-3x faster than two (BENCHMARKS.md). --threads N (or OMP_NUM_THREADS=N) fixes the count: a fixed
count repeats a run bit for bit; auto does not (the count, and so the order of sums, follows the timing).
--max-steps N stops after N optimizer steps in all, with a checkpoint that --resume continues from.

--distributed (implied when mpirun starts more than one rank): each rank trains a replica on its slice
of every --batch (the global batch, in the order one process would see it); gradients are averaged by
allreduce in buckets (1 MB, then 25 MB) while backward runs; only rank 0 prints and writes the run folder. Without
--sync-bn each rank normalizes with its own slice's BatchNorm statistics (PyTorch DDP's semantics);
with it the statistics are those of the whole batch, and the run computes what one process does.
Threads per rank default to the cores divided by the ranks on the host. RESIDUAL_DIST_TIMEOUT (seconds,
default 600) bounds every wait for the other ranks: a rank that died or hangs stops the run with an error.

--dtype bf16 trains in mixed precision, as PyTorch's autocast with bfloat16 does: the convolutions
(forward, backward-data, backward-weights) read bf16 and accumulate in f32, and the activations between
them (conv outputs, BatchNorm, ReLU, residual sums, max pooling) and their gradients are stored in bf16;
the weights stay f32 (master copy), and so do their gradients, the optimizer state, BatchNorm's
statistics, the global pool's output, the classifier and the loss. No loss
scaling is needed (bf16 has f32's exponent range; that is fp16's problem). Checkpoints are f32, so a run
resumes in either dtype. It needs a CPU with AVX512-BF16 (or AMX) and is refused otherwise, with the reason.`;

export async function run(argv: string[]): Promise<number> {
  const { values: v } = parse('train', argv, {
    model: { type: 'string' }, data: { type: 'string' }, epochs: { type: 'string' }, batch: { type: 'string' },
    lr: { type: 'string' }, momentum: { type: 'string' }, 'no-nesterov': { type: 'boolean' }, wd: { type: 'string' },
    'no-decay-bn-bias': { type: 'boolean' }, schedule: { type: 'string' }, warmup: { type: 'string' },
    'label-smoothing': { type: 'string' }, seed: { type: 'string' }, out: { type: 'string' }, resume: { type: 'boolean' },
    budget: { type: 'string' }, threads: { type: 'string' }, json: { type: 'boolean' }, 'image-size': { type: 'string' }, 'skip-bad': { type: 'boolean' }, subset: { type: 'string' },
    weights: { type: 'string' }, 'num-classes': { type: 'string' }, freeze: { type: 'string' }, 'head-lr-scale': { type: 'string' },
    'max-steps': { type: 'string' }, distributed: { type: 'boolean' }, 'sync-bn': { type: 'boolean' }, dtype: { type: 'string' },
  });
  if (v.help) {
    console.log(usage);
    return 0;
  }
  if (!v.model && !v.weights) throw new Error(`train: --model is required (one of ${modelNames().join(', ')})\n\n${usage}`);
  const num = (name: string, text: string | undefined) => (text === undefined ? undefined : numberOption('train', name, text, 0));
  const int = (name: string, text: string | undefined) => (text === undefined ? undefined : intOption('train', name, text, 1));
  const nonNegativeInt = (name: string, text: string | undefined) => {
    if (text === undefined) return undefined;
    if (!/^\d+$/.test(text)) throw new Error(`train: --${name} must be a non-negative integer, got "${text}"`);
    return Number(text);
  };

  const dtype = dtypeOption('train', v.dtype, TRAIN_DTYPES);
  // On a shared machine two engine threads can lose half their speed to one busy neighbour, while
  // one thread keeps going (BENCHMARKS.md, issue #17): unless a count is fixed (--threads N or
  // OMP_NUM_THREADS), the governor picks it from measured step times.
  const dist = distributedOptions('train', { distributed: v.distributed, syncBn: v['sync-bn'] });
  const threads = threadsOption('train', v.threads ?? (process.env.OMP_NUM_THREADS ? undefined : dist?.defaultThreads ?? 'auto'));
  const backend = await initBackend(undefined, { threads: threads.fixed });
  const governor = threads.auto ? engineThreadGovernor() ?? undefined : undefined;
  const json = v.json || !process.stdout.isTTY;
  // In a data-parallel run rank 0 speaks for all.
  const quiet = dist !== null && !dist.dp.isMain;
  let epochs = 0;

  const result = await runTraining({
    model: v.model, weights: v.weights, download: { onProgress: downloadProgress('train') }, data: v.data, imageSize: int('image-size', v['image-size']), skipBad: v['skip-bad'],
    subset: int('subset', v.subset), numClasses: int('num-classes', v['num-classes']),
    freeze: v.freeze === undefined ? undefined : parseFreeze(v.freeze),
    epochs: int('epochs', v.epochs), batch: int('batch', v.batch), lr: num('lr', v.lr), headLrScale: num('head-lr-scale', v['head-lr-scale']),
    momentum: num('momentum', v.momentum), nesterov: v['no-nesterov'] ? false : undefined, weightDecay: num('wd', v.wd),
    noDecayOnNormAndBias: !!v['no-decay-bn-bias'], schedule: v.schedule, warmupIters: nonNegativeInt('warmup', v.warmup),
    labelSmoothing: num('label-smoothing', v['label-smoothing']), seed: nonNegativeInt('seed', v.seed),
    dtype,
    out: v.out, resume: !!v.resume, budgetSeconds: v.budget === undefined ? undefined : numberOption('train', 'budget', v.budget, 0) * 60,
    threads: governor, runInfo: { argv, backend: backend.name, ...(dist ? { ranks: dist.dp.size, sync_bn: dist.dp.syncBn } : {}) },
    maxSteps: int('max-steps', v['max-steps']), distributed: dist?.dp,
    onStart: (s) => {
      if (quiet) return;
      epochs = s.settings.epochs;
      const info = { ...s, classes: s.classes.length, backend: backend.name, threads: backend.info().threads };
      if (json) {
        console.log(JSON.stringify({ event: 'start', ...info, weights: v.weights ?? null, notes: undefined, ...(dist ? { distributed: dist.summary() } : {}) }));
        for (const note of s.notes) console.log(JSON.stringify({ event: 'note', note }));
        return;
      }
      console.log(`training ${s.model} (${s.params.toLocaleString('en-US')} params, ${s.trainable_params.toLocaleString('en-US')} trainable) on ${s.data} ` +
        `(${s.train_samples} train / ${s.test_samples} test, ${s.classes.length} classes), ${backend.name} backend, ${info.threads} threads -> ${s.out}`);
      if (s.weights) console.log(`fine-tuning from ${v.weights}`);
      if (dist) console.log(dist.describe());
      for (const note of s.notes) console.log(`  note: ${note}`);
      const t = s.settings;
      const show = (k: keyof typeof t, text: string) => `${text}${s.defaults.includes(k) ? '*' : ''}`;
      console.log(`recipe (${s.recipe}; * = default): ${[
        show('epochs', `epochs ${t.epochs}`), show('batch', `batch ${t.batch}`), show('lr', `lr ${t.lr}`),
        ...(s.weights ? [show('head_lr_scale', `head lr x${t.head_lr_scale}`), show('freeze', `freeze ${t.freeze}`)] : []),
        show('schedule', `schedule ${t.schedule}`), show('warmup', `warm-up ${t.warmup} iterations`),
        show('momentum', `momentum ${t.momentum}`), show('nesterov', t.nesterov ? 'Nesterov' : 'no Nesterov'), show('wd', `weight decay ${t.wd}`),
        show('label_smoothing', `label smoothing ${t.label_smoothing}`), show('seed', `seed ${t.seed}`), show('dtype', t.dtype),
      ].join(', ')}`);
    },
    onBatch: json || quiet ? undefined : (p: BatchProgress) => process.stdout.write(`\r${progressLine(p, epochs)}`),
    onEpoch: (m: EpochMetrics) => {
      if (quiet) return;
      if (json) console.log(JSON.stringify(m));
      else {
        process.stdout.write('\r\x1b[2K');
        console.log(`epoch ${m.epoch}/${epochs}: train loss ${m.train_loss.toFixed(4)} acc ${(100 * m.train_acc).toFixed(2)}%` +
          (m.test_acc !== null ? ` | test loss ${m.test_loss!.toFixed(4)} acc ${(100 * m.test_acc).toFixed(2)}%` : '') +
          ` | ${m.epoch_s.toFixed(1)} s, ${m.images_per_s.toFixed(0)} img/s`);
      }
    },
  }).catch((e: unknown) => (dist ? dist.fail(e) : Promise.reject(e)));
  dist?.dp.finish();
  if (quiet) return 0;
  const outDir = result.out;
  const last = result.history[result.history.length - 1];
  if (governor) {
    // [step, threads] at every change: what the governor chose, for the log
    if (json) console.log(JSON.stringify({ event: 'threads', changes: governor.changes }));
    else console.log(`threads (auto): ${governor.changes.map(([step, n]) => `${n} from step ${step}`).join(', ')}`);
  }
  if (json) console.log(JSON.stringify({ event: 'end', stopped: result.stopped, out: outDir, test_acc: last?.test_acc ?? null }));
  else if (result.stopped === 'interrupted') console.log(`\ninterrupted: checkpoint saved in ${outDir}; continue with --resume --out ${outDir}`);
  else console.log(`done (${result.stopped}): test accuracy ${last?.test_acc !== null && last ? (100 * last.test_acc!).toFixed(2) + '%' : '-'}; run folder ${outDir}`);
  return result.stopped === 'interrupted' ? 130 : 0;
}
