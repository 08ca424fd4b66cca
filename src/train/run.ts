// A whole training run from a few names: the data, the model (fresh, or pretrained weights with a
// new head), what to freeze, and a recipe whose every default depends on which of the two it is.
// `residual train` is this function with a command line around it; a program calls it directly:
//
//   await runTraining({ model: 'resnet18', weights: 'resnet18.pth', data: 'folder:photos', freeze: 'trunk' });
import { join } from 'node:path';
import { checkBatchMemory, createModel, loadModel, modelNames, parseFreeze, resolveWeights, type FreezeSpec, type ResNet } from '../models/index.js';
import type { FetchPretrainedOptions } from '../pretrained/index.js';
import { manualSeed } from '../nn/index.js';
import { cardFor, loadersFor, openData, subsetData, type DataSpec } from './data_spec.js';
import { parseSchedule } from './schedule.js';
import type { ThreadGovernor } from './threads.js';
import type { DataParallel } from '../distributed/ddp.js';
import { checkComputeDtype, defaultBackend } from '../backend/index.js';
import { train, type BatchProgress, type EpochMetrics, type TrainResult } from './trainer.js';
import type { ComputeDtype } from '../backend/index.js';

/** The two default recipes: training from scratch, and fine-tuning pretrained weights. */
export const RECIPES = {
  /** The Fashion-MNIST recipe of BENCHMARKS.md. */
  scratch: { epochs: 1, batch: 128, lr: 0.1, weightDecay: 5e-4, schedule: 'onecycle:0.15', headLrScale: 1, warmupFraction: 0 },
  /** Lower rate, cosine after a short warm-up, the new head learning 10x faster than the pretrained trunk. */
  finetune: { epochs: 5, batch: 32, lr: 0.005, weightDecay: 1e-4, schedule: 'cosine', headLrScale: 10, warmupFraction: 0.05 },
} as const;

export interface TrainRunOptions {
  /** A registered model name; may be left out when `weights` carry a model card that names it. */
  model?: string;
  /**
   * Pretrained weights: a .pth, a .safetensors, a run folder, or torchvision:MODEL[.ENTRY]
   * (downloaded once into the cache). Given, the run fine-tunes them with the fine-tuning recipe.
   */
  weights?: string;
  /** How pretrained weights are downloaded (cache folder, mirror, progress). */
  download?: FetchPretrainedOptions;
  /** As `--data` spells it (default fashion-mnist). */
  data?: string;
  /** Image folders: the side of the square crop the model sees (default 224). */
  imageSize?: number;
  skipBad?: boolean;
  /** Train on the first N samples (test on the first N/5). */
  subset?: number;
  /** Must equal the data's class count; a pretrained head of another size is replaced. */
  numClasses?: number;
  freeze?: FreezeSpec;
  epochs?: number;
  batch?: number;
  lr?: number;
  /** The classifier's learning rate as a multiple of `lr` (fine-tuning default 10). */
  headLrScale?: number;
  momentum?: number;
  nesterov?: boolean;
  weightDecay?: number;
  noDecayOnNormAndBias?: boolean;
  /** onecycle[:PCT] | cosine | multistep:E1,E2 | constant */
  schedule?: string;
  warmupIters?: number;
  labelSmoothing?: number;
  seed?: number;
  /**
   * 'bf16': mixed-precision training (convolutions in bf16 with f32 accumulation, f32 master weights,
   * optimizer state, BatchNorm and loss; no loss scaling needed for bf16). Checkpoints stay f32, so a
   * run may resume in the other dtype. Needs AVX512-BF16 on the native backend. Default 'f32'.
   */
  dtype?: ComputeDtype;
  /** Run folder (default runs/<model>-<data>-<time>). */
  out?: string;
  resume?: boolean;
  budgetSeconds?: number;
  threads?: ThreadGovernor;
  /** Stop after this many optimizer steps (with a checkpoint, resumable). */
  maxSteps?: number;
  /** Data-parallel over MPI (src/distributed): `batch` is the global batch, split over the ranks. */
  distributed?: DataParallel;
  /** The run as it starts: every setting in use, and notes such as a replaced head. */
  onStart?: (start: TrainRunStart) => void;
  onBatch?: (p: BatchProgress) => void;
  onEpoch?: (m: EpochMetrics) => void;
  /** Extra fields for every checkpoint's state.json (the CLI's arguments). */
  runInfo?: Record<string, unknown>;
}

/** Every setting of a run, defaults filled in: what the CLI prints and state.json keeps. */
export interface TrainSettings {
  epochs: number;
  batch: number;
  lr: number;
  head_lr_scale: number;
  freeze: FreezeSpec;
  schedule: string;
  warmup: number;
  momentum: number;
  nesterov: boolean;
  wd: number;
  label_smoothing: number;
  seed: number;
  dtype: ComputeDtype;
}

export interface TrainRunStart {
  model: string;
  data: string;
  classes: readonly string[];
  params: number;
  trainable_params: number;
  train_samples: number;
  test_samples: number;
  out: string;
  weights: string | null;
  recipe: 'fine-tuning' | 'from scratch';
  settings: TrainSettings;
  /** Which settings were left to the recipe's defaults. */
  defaults: (keyof TrainSettings)[];
  notes: string[];
}

export interface TrainRunResult extends TrainResult {
  out: string;
  start: TrainRunStart;
}

function check(what: string, v: number | undefined, ok: (n: number) => boolean, want: string): void {
  if (v !== undefined && !ok(v)) throw new Error(`train: ${what} must be ${want}, got ${v}`);
}

/** Trains (or fine-tunes) a model as `residual train` does; resolves when the run ends. */
export async function runTraining(o: TrainRunOptions): Promise<TrainRunResult> {
  // Every number is checked before anything slow (a download, the data, the model).
  const positiveInt = (n: number) => Number.isInteger(n) && n >= 1;
  check('epochs', o.epochs, positiveInt, 'a positive integer');
  check('batch', o.batch, positiveInt, 'a positive integer');
  check('lr', o.lr, (n) => Number.isFinite(n) && n > 0, 'a positive number');
  check('headLrScale', o.headLrScale, (n) => Number.isFinite(n) && n > 0, 'a positive number');
  check('momentum', o.momentum, (n) => n >= 0 && n < 1, 'in [0, 1)');
  check('weightDecay', o.weightDecay, (n) => Number.isFinite(n) && n >= 0, 'a number >= 0');
  check('seed', o.seed, (n) => Number.isSafeInteger(n) && n >= 0, 'a non-negative integer');
  if (o.dtype !== undefined) checkComputeDtype('train', defaultBackend(), o.dtype);
  const resolved = o.weights ? await resolveWeights(o.weights, o.model, o.download) : null;
  const weightsFile = resolved?.path ?? null;
  const card = resolved?.card ?? null;
  const modelName = o.model ?? resolved?.model;
  if (!modelName) throw new Error(`train: a model is required (one of ${modelNames().join(', ')})`);
  const finetune = weightsFile !== null;
  const recipe = finetune ? RECIPES.finetune : RECIPES.scratch;
  const freeze = parseFreeze(o.freeze ?? 'none');
  if (!finetune && freeze !== 'none') throw new Error('train: freezing keeps pretrained layers fixed, so it needs pretrained weights (--weights)');

  const opened = await openData(o.data ?? card?.dataset ?? 'fashion-mnist', { imageSize: o.imageSize, skipBad: o.skipBad });
  const data: DataSpec = o.subset ? subsetData(opened, o.subset) : opened;
  const numClasses = o.numClasses ?? data.classNames.length;
  if (numClasses !== data.classNames.length) {
    throw new Error(`train: ${numClasses} classes asked for, but ${data.name} has ${data.classNames.length} ` +
      `(${data.classNames.slice(0, 5).join(', ')}${data.classNames.length > 5 ? ', ...' : ''})`);
  }
  if (o.batch !== undefined && o.batch > data.train.length) {
    throw new Error(`train: batch ${o.batch} is larger than the ${data.train.length} training samples of ${data.name}; give a batch of at most ${data.train.length}`);
  }
  // The recipe's default batch shrinks to fit a small folder; one asked for is refused above.
  const batch = Math.min(o.batch ?? recipe.batch, data.train.length);
  const seed = o.seed ?? 0;
  const loaders = loadersFor(data, { batchSize: batch, seed });
  manualSeed(seed);
  const notes: string[] = [];
  if (batch < (o.batch ?? recipe.batch)) notes.push(`batch ${batch}: the data has only ${data.train.length} training samples`);
  let model: ResNet;
  if (weightsFile) {
    if (card && card.input[0] !== data.input[0]) {
      throw new Error(`train: the weights ${o.weights} take ${card.input[0]}-channel input, but ${data.name} has ${data.input[0]} channels`);
    }
    model = loadModel(modelName, weightsFile, { inChannels: data.input[0], numClasses, resetHead: true }, (m) => notes.push(m));
  } else {
    model = createModel(modelName, { inChannels: data.input[0], numClasses });
  }
  try {
    checkBatchMemory('train', model.spec, data.input, batch, 3);
    model.freeze(freeze);
    const out = o.out ?? join('runs', `${modelName}-${data.name.replace(/[^\w.-]+/g, '_')}-${new Date().toISOString().replace(/[:.]/g, '-')}`);
    const epochs = o.epochs ?? recipe.epochs;
    const given: Partial<Record<keyof TrainSettings, unknown>> = {
      epochs: o.epochs, batch: o.batch, lr: o.lr, head_lr_scale: o.headLrScale, freeze: o.freeze, schedule: o.schedule, warmup: o.warmupIters,
      momentum: o.momentum, nesterov: o.nesterov, wd: o.weightDecay, label_smoothing: o.labelSmoothing, seed: o.seed, dtype: o.dtype,
    };
    const settings: TrainSettings = {
      epochs, batch, lr: o.lr ?? recipe.lr, head_lr_scale: o.headLrScale ?? recipe.headLrScale, freeze,
      schedule: o.schedule ?? recipe.schedule,
      warmup: o.warmupIters ?? Math.round(recipe.warmupFraction * epochs * loaders.train.batchesPerEpoch),
      momentum: o.momentum ?? 0.9, nesterov: o.nesterov ?? true, wd: o.weightDecay ?? recipe.weightDecay,
      label_smoothing: o.labelSmoothing ?? 0, seed, dtype: o.dtype ?? 'f32',
    };
    const schedule = parseSchedule(settings.schedule, loaders.train.batchesPerEpoch);
    const start: TrainRunStart = {
      model: modelName, data: data.name, classes: data.classNames, params: model.parameterCount(),
      trainable_params: model.parameters().filter((p) => p.requiresGrad).reduce((a, p) => a + p.size, 0),
      train_samples: data.train.length, test_samples: data.test.length, out, weights: o.weights ?? null,
      recipe: finetune ? 'fine-tuning' : 'from scratch', settings,
      defaults: (Object.keys(settings) as (keyof TrainSettings)[]).filter((k) => given[k] === undefined), notes,
    };
    o.onStart?.(start);
    const result = await train(model, loaders.train, loaders.test, {
      epochs, lr: settings.lr, momentum: settings.momentum, nesterov: settings.nesterov, weightDecay: settings.wd,
      noDecayOnNormAndBias: o.noDecayOnNormAndBias, schedule, warmupIters: settings.warmup || undefined,
      labelSmoothing: settings.label_smoothing,
      lrScale: settings.head_lr_scale !== 1 ? { modules: ['fc'], scale: settings.head_lr_scale } : undefined,
      card: cardFor(modelName, data, { finetunedFrom: o.weights }),
      outDir: out, resume: o.resume, budgetSeconds: o.budgetSeconds, threads: o.threads, maxSteps: o.maxSteps, distributed: o.distributed, dtype: settings.dtype,
      runInfo: { ...o.runInfo, model: modelName, data: data.name, weights: o.weights ?? null, recipe: start.recipe, settings },
      onBatch: o.onBatch, onEpoch: o.onEpoch,
    });
    return { ...result, out, start };
  } finally {
    model.dispose();
  }
}
