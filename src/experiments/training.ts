// Training the models of an experiment on the same recipe and the same number of iterations, with
// the curves the papers plot: a smoothed training error every few iterations and the test error at
// evenly spaced points of the run.
//
// The trainer evaluates once per epoch. To get test points along a run that may be shorter than
// one epoch (or span 180 of them), the experiment's "epochs" are segments of the iteration stream:
// SegmentLoader cuts the real loader's shuffled epochs into segments of a fixed number of batches,
// so the trainer's per-epoch evaluation, checkpoint and metrics.jsonl line fall every segment.
import { appendFileSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CHECKPOINTS_DIR, checkpointsDir } from '../io/index.js';
import { DataLoader, Subset, isSyncDataset, type AnyDataset, type Batch } from '../data/index.js';
import type { NetSpec } from '../models/net.js';
import { ResNet, traceNet } from '../models/net.js';
import { manualSeed, type Module } from '../nn/index.js';
import { Tensor, autocast, noGrad, tidy } from '../tensor/index.js';
import { plotRun } from '../report/index.js';
import { openData, type DataSpec } from '../train/data_spec.js';
import { engineThreadGovernor } from '../train/threads.js';
import { train, type EpochMetrics } from '../train/trainer.js';
import { backendLine } from './markdown.js';
import type { ExperimentOptions } from './options.js';
import type { ComputeDtype } from '../backend/index.js';

export interface ExperimentData {
  spec: DataSpec;
  train: AnyDataset;
  test: AnyDataset;
  /** [C, H, W] of an input. */
  input: [number, number, number];
  numClasses: number;
}

function firstN(ds: AnyDataset, n: number, what: string): AnyDataset {
  if (n >= ds.length) return ds;
  if (!isSyncDataset(ds)) throw new Error(`--${what}: this dataset cannot be cut to its first samples`);
  return new Subset(ds, Array.from({ length: n }, (_, i) => i));
}

/** The experiment's data: Fashion-MNIST or CIFAR, cut to --subset / --test-subset samples. */
export function checkDataOption(data: string): void {
  if (!/^(fashion-mnist$|cifar10:|cifar100:)/.test(data)) {
    throw new Error(`--data must be fashion-mnist, cifar10:DIR or cifar100:DIR (the experiments use the papers' 32x32-style nets), got "${data}"`);
  }
}

export async function openExperimentData(o: ExperimentOptions, defaultTestSubset?: number): Promise<ExperimentData> {
  checkDataOption(o.data);
  const spec = await openData(o.data);
  const testN = o.testSubset ?? defaultTestSubset;
  return {
    spec,
    train: o.subset ? firstN(spec.train, o.subset, 'subset') : spec.train,
    test: testN ? firstN(spec.test, testN, 'test-subset') : spec.test,
    input: spec.input,
    numClasses: spec.classNames.length,
  };
}

/** SGD with momentum and step decay, as both papers train on CIFAR. */
export interface Recipe {
  name: string;
  batch: number;
  lr: number;
  momentum: number;
  nesterov: boolean;
  weightDecay: number;
  /** Where the learning rate is divided by 10, as fractions of the run (the papers' 32k/64k and 48k/64k). */
  milestones: number[];
}

/** He et al. 2015, section 4.2: batch 128, lr 0.1, /10 at 32k and 48k of 64k iterations, wd 1e-4, momentum 0.9. */
export const HE2015_CIFAR: Recipe = { name: 'He et al. 2015 (CIFAR)', batch: 128, lr: 0.1, momentum: 0.9, nesterov: false, weightDecay: 1e-4, milestones: [0.5, 0.75] };
export const HE2015_ITERATIONS = 64_000;
/** Xie et al. 2017, appendix A: batch 128, lr 0.1, /10 at epochs 150 and 225 of 300, wd 5e-4, momentum 0.9. */
export const XIE2017_CIFAR: Recipe = { name: 'Xie et al. 2017 (CIFAR)', batch: 128, lr: 0.1, momentum: 0.9, nesterov: false, weightDecay: 5e-4, milestones: [0.5, 0.75] };
export const XIE2017_EPOCHS = 300;

/** How long every model of an experiment trains, and where it is measured. */
export interface Plan {
  iterations: number;
  batch: number;
  /** Iterations between test evaluations (one trainer "epoch"). */
  segment: number;
  segments: number;
  /** Iterations per point of the training-error curve. */
  curveEvery: number;
  /** Passes over the training samples this amounts to. */
  epochs: number;
  /** How the iteration count was chosen, for the report. */
  basis: string;
}

export function makePlan(iterations: number, batch: number, trainSamples: number, evals: number, basis: string): Plan {
  const wanted = Math.max(1, Math.round(iterations));
  const segment = Math.max(1, Math.round(wanted / Math.max(1, evals)));
  const segments = Math.max(1, Math.round(wanted / segment));
  const total = segment * segments;
  return {
    iterations: total, batch, segment, segments, curveEvery: Math.max(1, Math.round(total / 200)),
    epochs: (total * batch) / trainSamples, basis,
  };
}

/** The batch size: the recipe's, or --batch, never more than the training samples (batches are all full). */
export function batchFor(o: ExperimentOptions, recipe: Recipe, trainSamples: number): number {
  return Math.min(o.batch ?? recipe.batch, trainSamples);
}

/** A model the experiment trains: its spec and its figures at the experiment's input. */
export interface Contender {
  name: string;
  label: string;
  spec: NetSpec;
  params: number;
  macs: number;
}

export function contender(name: string, label: string, spec: NetSpec, input: readonly number[]): Contender {
  const t = traceNet(spec, input);
  return { name, label, spec, params: t.params, macs: t.macs };
}

/**
 * Median seconds per training iteration of each model at this batch size, from a few real steps
 * (the first, which creates the kernels, is not counted).
 */
export async function calibrate(models: Contender[], data: ExperimentData, batch: number, steps = 4, dtype: ComputeDtype = 'f32'): Promise<number[]> {
  const n = Math.min(data.train.length, batch * steps);
  const sample = firstN(data.train, n, 'subset');
  const out: number[] = [];
  for (const m of models) {
    manualSeed(0);
    const model = new ResNet(m.spec);
    const loader = new DataLoader(sample, { batchSize: batch, dropLast: true, transforms: data.spec.trainTransforms });
    const times: number[] = [];
    let last = Date.now();
    await train(model, loader, null, {
      epochs: 1, lr: 0.01, schedule: { kind: 'constant' }, handleInterrupt: false, dtype,
      onBatch: () => { const now = Date.now(); times.push((now - last) / 1000); last = now; },
    });
    model.dispose();
    const timed = (times.length > 1 ? times.slice(1) : times).sort((a, b) => a - b);
    out.push(timed[Math.floor(timed.length / 2)]);
  }
  return out;
}

/**
 * The common iteration count: the paper's (--full), epochs per model, or what a time budget shared
 * by all models affords, evaluation included (a test image costs about a third of a training one).
 */
export async function planFor(o: ExperimentOptions, models: Contender[], data: ExperimentData, batch: number,
  full: { iterations: number; basis: string }, evals: number, log: (e: Record<string, unknown>, t: string) => void): Promise<Plan> {
  const n = data.train.length;
  if (o.full) return makePlan(full.iterations, batch, n, evals, full.basis);
  const b = o.budget;
  if (b.kind === 'iterations') return makePlan(b.iterations, batch, n, evals, `--budget ${b.iterations}i`);
  if (b.kind === 'epochs') return makePlan(b.epochs * Math.floor(n / batch), batch, n, evals, `${b.epochs} epoch${b.epochs === 1 ? '' : 's'} of ${n} samples per model`);
  log({ event: 'calibrate', models: models.map((m) => m.name) }, `timing a few training steps of each model to fit the ${b.minutes} min budget...`);
  const secs = await calibrate(models, data, batch, 4, o.dtype);
  const perIter = secs.reduce((a, s) => a + s, 0);
  const evalCost = secs.reduce((a, s) => a + (evals * data.test.length * s) / (3 * batch), 0);
  const iterations = Math.max(evals, Math.floor((b.minutes * 60 - evalCost) / perIter));
  log({ event: 'calibrated', seconds_per_iteration: Object.fromEntries(models.map((m, i) => [m.name, secs[i]])), iterations },
    `seconds per iteration: ${models.map((m, i) => `${m.name} ${secs[i].toFixed(3)}`).join(', ')} -> ${iterations} iterations each`);
  return makePlan(iterations, batch, n, evals,
    `a ${b.minutes} min budget shared by ${models.length} models (measured ${models.map((m, i) => `${m.name} ${secs[i].toFixed(3)} s`).join(', ')} per iteration)`);
}

/** Cuts a loader's shuffled epochs into segments of `batchesPerEpoch` batches (see the header). */
class SegmentLoader {
  readonly batchSize: number;
  constructor(readonly inner: DataLoader, readonly batchesPerEpoch: number) {
    this.batchSize = inner.batchSize;
  }

  async *epoch(e: number, opts: { startBatch?: number } = {}): AsyncGenerator<Batch, void, undefined> {
    const per = this.inner.batchesPerEpoch;
    let k = opts.startBatch ?? 0;
    let g = e * this.batchesPerEpoch + k;
    while (k < this.batchesPerEpoch) {
      for await (const b of this.inner.epoch(Math.floor(g / per), { startBatch: g % per })) {
        yield { ...b, index: k };
        k++;
        g++;
        if (k >= this.batchesPerEpoch) break;
      }
    }
  }
}

export interface CurvePoint {
  iteration: number;
  train_error: number;
  train_loss: number;
  lr: number;
}

export interface ModelRun {
  name: string;
  label: string;
  params: number;
  macs: number;
  dir: string;
  history: EpochMetrics[];
  curve: CurvePoint[];
  seconds: number;
  stopped: string;
  /** Training error over the last segment (train mode, augmented: what the papers plot). */
  finalTrainError: number;
  finalTestError: number;
  bestTestError: number;
  /** With `predictions`: the finished model's class for each test image, in order (also DIR/predictions.u8). */
  predictions?: Uint8Array;
  /** The test labels, in the same order. */
  labels?: Uint8Array;
}

/** The file a finished model's per-image test predictions are kept in: one byte (the class) per image. */
export const PREDICTIONS_FILE = 'predictions.u8';

/** The model's class (argmax) and the label of every test image, in order, in eval mode (in `dtype`, as the run's evaluations). */
export async function predictTest(model: Module, loader: DataLoader, dtype: ComputeDtype = 'f32'): Promise<{ predictions: Uint8Array; labels: Uint8Array }> {
  const wasTraining = model.training;
  model.eval();
  const preds: number[] = [];
  const labels: number[] = [];
  const p = model.parameters()[0];
  try {
    for await (const b of loader.epoch(0)) {
      autocast(dtype, () => noGrad(() => tidy(() => {
        const logits = model.forward(Tensor.fromArray(b.x, b.shape, p ? { backend: p.backend } : {}));
        const k = logits.shape[1];
        const v = logits.toArray();
        for (let i = 0; i < logits.shape[0]; i++) {
          let best = 0;
          for (let j = 1; j < k; j++) if (v[i * k + j] > v[i * k + best]) best = j;
          preds.push(best);
          labels.push(b.y[i]);
        }
      })));
    }
  } finally {
    model.train(wasTraining);
  }
  if (preds.some((c) => c > 255)) throw new Error('predictTest: more than 256 classes do not fit a byte per image');
  return { predictions: Uint8Array.from(preds), labels: Uint8Array.from(labels) };
}

/**
 * A claim compares models trained alike: a model folder whose logged epochs trained in another
 * precision (metrics.jsonl's `dtype`; logs without it are f32) is not continued or reused in this one.
 */
function checkSamePrecision(name: string, dir: string, dtype: ComputeDtype): void {
  const file = join(dir, 'metrics.jsonl');
  if (!existsSync(file)) return;
  const logged = new Set(readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l, i) => {
    try {
      return (JSON.parse(l) as EpochMetrics).dtype ?? 'f32';
    } catch {
      throw new Error(`--resume: ${file} line ${i + 1} is not JSON; the model folder is damaged (remove it to train ${name} again)`);
    }
  }));
  const other = [...logged].find((d) => d !== dtype);
  if (other) {
    throw new Error(`--resume: ${name} in ${dir} trained in ${other}, this run asks for ${dtype}; ` +
      `give --dtype ${other} to continue it, or a new --out for a ${dtype} run (the models of one experiment train alike)`);
  }
}

function readCurve(file: string, upTo: number): CurvePoint[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as CurvePoint).filter((p) => p.iteration <= upTo);
}

/**
 * Trains one model for the plan's iterations into `dir` (metrics.jsonl, curve.jsonl, checkpoints,
 * curves.png). With `resume`, a run folder left by an interrupted run continues where it stopped.
 */
export async function trainContender(m: Contender, data: ExperimentData, plan: Plan, recipe: Recipe, dir: string,
  o: { seed: number; resume?: boolean; autoThreads?: boolean; predictions?: boolean; dtype?: ComputeDtype; log: (e: Record<string, unknown>, t: string) => void; progress?: (text: string) => void }): Promise<ModelRun> {
  const started = Date.now();
  const dtype = o.dtype ?? 'f32';
  if (o.resume) checkSamePrecision(m.name, dir, dtype);
  if (o.resume && o.predictions) {
    const done = await finishedRun(m, data, plan, dir);
    if (done) return done;
  }
  manualSeed(o.seed);
  const model = new ResNet(m.spec);
  const inner = new DataLoader(data.train, { batchSize: plan.batch, shuffle: true, seed: o.seed, dropLast: true, transforms: data.spec.trainTransforms });
  const test = new DataLoader(data.test, { batchSize: 256, transforms: data.spec.testTransforms });
  const loader = new SegmentLoader(inner, plan.segment);
  const curveFile = join(dir, 'curve.jsonl');
  const resume = !!o.resume && existsSync(checkpointsDir(dir));
  if (!resume) for (const f of ['metrics.jsonl', 'curve.jsonl', CHECKPOINTS_DIR]) rmSync(join(dir, f), { recursive: true, force: true });

  const curve: CurvePoint[] = [];
  const B = plan.batch;
  let prev = { epoch: -1, batch: 0, correct: 0, loss: 0 };
  let win = { correct: 0, loss: 0, n: 0 };
  let first = true;
  let lastProgress = 0;
  const onBatch = (p: { epoch: number; batch: number; acc: number; loss: number; lr: number }) => {
    const iteration = p.epoch * plan.segment + p.batch;
    if (first) {
      first = false;
      // Resumed: keep the points logged before the checkpoint, drop any logged after it.
      if (resume) curve.push(...readCurve(curveFile, iteration - 1));
      rmSync(curveFile, { force: true });
      for (const c of curve) appendFileSync(curveFile, JSON.stringify(c) + '\n');
    }
    // The trainer reports running means over the segment; every batch is full, so the batch's own
    // correct count and loss are differences of running sums.
    if (p.epoch !== prev.epoch || p.batch <= prev.batch) prev = { epoch: p.epoch, batch: p.batch - 1, correct: NaN, loss: NaN };
    const seen = p.batch * B;
    const correct = Math.round(p.acc * seen);
    const loss = p.loss * seen;
    if (Number.isNaN(prev.correct)) {
      // A segment's first batch (or the first after a resume, whose running sums include batches before it).
      if (p.batch === 1) { win.correct += correct; win.loss += loss; win.n += B; }
    } else {
      win.correct += correct - prev.correct;
      win.loss += loss - prev.loss;
      win.n += (p.batch - prev.batch) * B;
    }
    prev = { epoch: p.epoch, batch: p.batch, correct, loss };
    const now = Date.now();
    if (o.progress && now - lastProgress > 250) {
      lastProgress = now;
      o.progress(`${m.name}: iteration ${iteration}/${plan.iterations}, running loss ${p.loss.toFixed(3)}, error ${(100 * (1 - p.acc)).toFixed(1)}%, lr ${p.lr.toPrecision(2)}`);
    }
    if ((iteration % plan.curveEvery === 0 || iteration === plan.iterations) && win.n > 0) {
      const point = { iteration, train_error: 1 - win.correct / win.n, train_loss: win.loss / win.n, lr: p.lr };
      curve.push(point);
      appendFileSync(curveFile, JSON.stringify(point) + '\n');
      win = { correct: 0, loss: 0, n: 0 };
    }
  };

  const milestones = recipe.milestones.map((f) => Math.round(f * plan.iterations));
  const result = await train(model, loader as unknown as DataLoader, test, {
    epochs: plan.segments, lr: recipe.lr, momentum: recipe.momentum, nesterov: recipe.nesterov, weightDecay: recipe.weightDecay,
    schedule: { kind: 'multistep', milestones }, outDir: dir, resume, dtype,
    runInfo: { experiment_model: m.name, plan, recipe, params: m.params, macs: m.macs, dtype },
    threads: o.autoThreads ? engineThreadGovernor() ?? undefined : undefined,
    onBatch,
    onEpoch: (e) => o.log({ event: 'eval', model: m.name, iteration: e.iteration, train_error: 1 - e.train_acc, test_error: e.test_acc === null ? null : 1 - e.test_acc, elapsed_s: e.elapsed_s },
      `  ${m.name}: iteration ${e.iteration}/${plan.iterations}  train error ${(100 * (1 - e.train_acc)).toFixed(2)}%  test error ${e.test_acc === null ? '-' : (100 * (1 - e.test_acc)).toFixed(2) + '%'}  (${e.elapsed_s.toFixed(0)} s)`),
  });
  // A finished model's predictions on every test image, so paired tests can be recomputed from the
  // run folder (a resumed finished run reloads its last checkpoint, so they come out the same).
  let predicted: { predictions: Uint8Array; labels: Uint8Array } | undefined;
  if (o.predictions && result.stopped === 'done') {
    predicted = await predictTest(model, test, dtype);
    writeFileSync(join(dir, PREDICTIONS_FILE), predicted.predictions);
  }
  model.dispose();
  if (resume && curve.length === 0) curve.push(...readCurve(curveFile, Infinity));
  if (result.history.length) await plotRun(dir, { title: `${m.label}: ${plan.iterations} iterations` });
  const h = result.history;
  const tested = h.filter((r) => r.test_acc !== null);
  const last = h[h.length - 1];
  return {
    name: m.name, label: m.label, params: m.params, macs: m.macs, dir, history: h, curve,
    seconds: last?.elapsed_s ?? (Date.now() - started) / 1000, stopped: result.stopped,
    finalTrainError: last ? 1 - last.train_acc : NaN,
    finalTestError: tested.length ? 1 - tested[tested.length - 1].test_acc! : NaN,
    bestTestError: tested.length ? Math.min(...tested.map((r) => 1 - r.test_acc!)) : NaN,
    ...predicted,
  };
}

/**
 * A model run that finished earlier, read back from its folder without its checkpoints: metrics.jsonl
 * up to the plan's last iteration, curve.jsonl, and predictions.u8 for every test image. A later
 * session can --resume an experiment from committed logs alone (the checkpoints of finished models
 * need not be kept). Null when anything is missing or from another plan.
 */
export async function finishedRun(m: Contender, data: ExperimentData, plan: Plan, dir: string): Promise<ModelRun | null> {
  const metricsFile = join(dir, 'metrics.jsonl');
  const predFile = join(dir, PREDICTIONS_FILE);
  if (!existsSync(metricsFile) || !existsSync(predFile)) return null;
  const history = readFileSync(metricsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as EpochMetrics);
  const last = history[history.length - 1];
  const predictions = new Uint8Array(readFileSync(predFile));
  if (!last || last.iteration !== plan.iterations || history.length !== plan.segments || predictions.length !== data.test.length) return null;
  const labels = new Uint8Array(data.test.length);
  let k = 0;
  for await (const b of new DataLoader(data.test, { batchSize: 1000 }).epoch(0)) for (let i = 0; i < b.n; i++) labels[k++] = b.y[i];
  const tested = history.filter((r) => r.test_acc !== null);
  return {
    name: m.name, label: m.label, params: m.params, macs: m.macs, dir, history, curve: readCurve(join(dir, 'curve.jsonl'), Infinity),
    seconds: last.elapsed_s, stopped: 'done',
    finalTrainError: 1 - last.train_acc,
    finalTestError: tested.length ? 1 - tested[tested.length - 1].test_acc! : NaN,
    bestTestError: tested.length ? Math.min(...tested.map((r) => 1 - r.test_acc!)) : NaN,
    predictions, labels,
  };
}

/** The scale of a training experiment, for the top of its report. */
export function scaleSection(data: ExperimentData, plan: Plan, recipe: Recipe, o: ExperimentOptions, wallSeconds: number, runs: ModelRun[]): string {
  const lr = `lr ${recipe.lr}, divided by 10 at ${recipe.milestones.map((f) => `${Math.round(f * plan.iterations)}`).join(' and ')}`;
  const lines = [
    `- data: ${data.spec.name}, ${data.train.length.toLocaleString('en-US')} training samples${o.subset ? ` (--subset ${o.subset})` : ''}, ` +
      `${data.test.length.toLocaleString('en-US')} test samples${data.test.length < data.spec.test.length ? ` (the first ${data.test.length} of ${data.spec.test.length})` : ''}, input ${data.input.join('x')}`,
    `- length: ${plan.iterations.toLocaleString('en-US')} iterations of batch ${plan.batch} per model (${plan.epochs.toFixed(2)} epochs), chosen from ${plan.basis}`,
    `- recipe: ${recipe.name}${o.full ? '' : ', scaled to this length'}: SGD momentum ${recipe.momentum}${recipe.nesterov ? ' (Nesterov)' : ''}, weight decay ${recipe.weightDecay}, ${lr}; ` +
      `augmentation ${data.spec.trainTransforms.map((t) => (typeof t === 'function' ? 'custom' : t.type)).join(', ')}`,
    `- precision: ${o.dtype === 'bf16' ? 'bf16 mixed precision (convolutions and the activations between them in bf16, f32 master weights, BatchNorm statistics and loss)' : 'f32'}`,
    `- measured: test error every ${plan.segment} iterations, training error (running, train mode) every ${plan.curveEvery}`,
    `- time: ${runs.map((r) => `${r.name} ${(r.seconds / 60).toFixed(1)} min`).join(', ')}; ${(wallSeconds / 60).toFixed(1)} min ${o.resume ? 'for this resumed invocation (what earlier ones ran is in the per-model times)' : 'in all'} (seed ${o.seed}, ${backendLine()})`,
  ];
  const stopped = runs.filter((r) => r.stopped !== 'done');
  if (stopped.length) lines.push(`- NOTE: ${stopped.map((r) => `${r.name} stopped early (${r.stopped})`).join(', ')}`);
  return lines.join('\n');
}
