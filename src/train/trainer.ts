// The training and evaluation loops: SGD over a DataLoader, a schedule per iteration, metrics per
// epoch, a checkpoint per epoch, exact resume, and a clean stop on Ctrl-C.
import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { writeAtomic } from '../io/index.js';
import { lockRunFolder } from './lock.js';
import { join } from 'node:path';
import type { Batch, DataLoader } from '../data/loader.js';
import type { Module, StateDict } from '../nn/index.js';
import { Tensor, autocast, crossEntropy, noGrad, tidy, type ComputeDtype } from '../tensor/index.js';
import { checkComputeDtype } from '../backend/index.js';
import { loadCheckpoint, saveCheckpoint, type CheckpointState } from './checkpoint.js';
import { addBatch, emptyTally, summarize, type Tally } from './metrics.js';
import { learningRate, type ScheduleSpec } from './schedule.js';
import { SGD, decayGroups, scaleGroups } from './sgd.js';
import { cardMetadata, type ModelCard } from '../models/card.js';
import type { ThreadGovernor } from './threads.js';
import { startDataParallel, type CommStats, type DataParallel } from '../distributed/ddp.js';

export interface TrainOptions {
  epochs: number;
  lr: number;
  momentum?: number;
  nesterov?: boolean;
  weightDecay?: number;
  /** No weight decay on BatchNorm and bias parameters. */
  noDecayOnNormAndBias?: boolean;
  schedule: ScheduleSpec;
  warmupIters?: number;
  labelSmoothing?: number;
  /** Run folder for metrics.jsonl and checkpoints; none: nothing is written. */
  outDir?: string;
  /** Continue from the newest checkpoint in outDir (or this checkpoint folder). */
  resume?: boolean | string;
  /** Stop after this many epochs of this call (the schedule still spans `epochs`): for tests and budgets. */
  stopAfterEpochs?: number;
  /** Wall-clock budget in seconds: stop at the end of the first epoch past it. */
  budgetSeconds?: number;
  /** Called after every batch (progress bars), and after every epoch (logs). */
  onBatch?: (p: BatchProgress) => void;
  onEpoch?: (m: EpochMetrics) => void;
  /** Extra fields saved into each checkpoint's state.json (the CLI stores its arguments here). */
  runInfo?: Record<string, unknown>;
  /** Install a SIGINT handler that saves a checkpoint after the current batch and stops (default true with outDir). */
  handleInterrupt?: boolean;
  /** Picks the thread count from the measured step times (`residual train --threads auto`); default: fixed. */
  threads?: ThreadGovernor;
  /** Learning rate multiplied by `scale` for the parameters under these module paths (fine-tuning: a new head, e.g. { modules: ['fc'], scale: 10 }). */
  lrScale?: { modules: string[]; scale: number };
  /** Saved with every checkpoint (state.json and the weights' metadata): what the model is and how to feed it. */
  card?: ModelCard;
  /** Stop after this many optimizer steps in all (counting those before a resume), with a checkpoint as at an interrupt. */
  maxSteps?: number;
  /** Data-parallel over MPI: this rank trains on its slice of each batch; only rank 0 writes (src/distributed). */
  distributed?: DataParallel;
  /**
   * 'bf16': mixed precision, PyTorch AMP with bf16: the convolutions (forward, backward-data,
   * backward-weights) read bf16 and accumulate in f32, and the activations between them (conv outputs,
   * BatchNorm, ReLU, residual sums, max pooling) and their gradients are stored in bf16; the parameters
   * (f32 master weights), their gradients, the optimizer state, BatchNorm's statistics, the classifier
   * and the loss stay f32.
   * No loss scaling: bf16 has f32's exponent range, so gradients do not underflow as in fp16.
   * Checkpoints are f32 either way, so a run resumes in either dtype. Needs AVX512-BF16 on the native
   * backend (refused otherwise, with the reason). The per-epoch test evaluation runs in the same dtype.
   * Default 'f32'.
   */
  dtype?: ComputeDtype;
}

export interface BatchProgress {
  epoch: number;
  batch: number;
  batches: number;
  loss: number;
  acc: number;
  lr: number;
  imagesPerSecond: number;
  etaSeconds: number;
}

export interface EpochMetrics {
  epoch: number;
  iteration: number;
  train_loss: number;
  train_acc: number;
  train_top5: number;
  test_loss: number | null;
  test_acc: number | null;
  test_top5: number | null;
  lr: number;
  elapsed_s: number;
  epoch_s: number;
  images_per_s: number;
  /**
   * Where the epoch's training time went, in seconds: waiting for the loader's next batch, the
   * forward pass with the loss, the backward pass, and the optimizer step. What is left of epoch_s
   * is bookkeeping (metrics, progress, checkpoints of an interrupted epoch).
   */
  phase_s: { data: number; forward: number; backward: number; optimizer: number };
  /** The precision this epoch trained in (a run may resume in the other one); absent in logs before 2026-12-06: f32. */
  dtype?: ComputeDtype;
  /** Data-parallel runs: the epoch's allreduce time, and the part backward did not hide (in phase_s.backward). */
  comm?: CommStats;
}

export interface TrainResult {
  history: EpochMetrics[];
  /** Why the loop ended. */
  stopped: 'done' | 'interrupted' | 'budget' | 'stopAfterEpochs' | 'maxSteps';
}

export interface EvalResult {
  loss: number;
  acc: number;
  top5: number;
  samples: number;
}

function toInput(b: Batch, model: Module): Tensor {
  const p = model.parameters()[0];
  return Tensor.fromArray(b.x, b.shape, p ? { backend: p.backend } : {});
}

/** Loss, top-1 and top-5 of a model over a loader, in eval mode without the tape. */
export async function evaluate(model: Module, loader: DataLoader, o: { dtype?: ComputeDtype } = {}): Promise<EvalResult> {
  const wasTraining = model.training;
  model.eval();
  const tally = emptyTally();
  try {
    for await (const b of loader.epoch(0)) {
      autocast(o.dtype ?? 'f32', () => noGrad(() => tidy(() => {
        const logits = model.forward(toInput(b, model));
        const loss = crossEntropy(logits, b.y);
        addBatch(tally, logits.toArray(), b.y, logits.shape[1], loss.item());
      })));
    }
  } finally {
    model.train(wasTraining);
  }
  return { ...summarize(tally), samples: tally.samples };
}

// Momentum buffers are saved under their parameter's name, so a run resumed with its parameters
// grouped differently (another --freeze, a head learning rate) still gets each buffer back on the
// right parameter. Checkpoints of older versions keyed them by position: those still load.
function optimizerParamNames(opt: SGD, model: Module): string[] {
  const names = new Map(model.namedParameters().map(([k, t]) => [t, k]));
  return opt.groups.flatMap((g) => g.params.map((p) => names.get(p) ?? '?'));
}

function optimizerState(opt: SGD, model: Module): StateDict {
  const sd: StateDict = new Map();
  const names = optimizerParamNames(opt, model);
  opt.stateDict().buffers.forEach((b, i) => {
    if (b) sd.set(`momentum_buffer.${names[i]}`, { shape: [b.length], dtype: 'F32', data: b });
  });
  return sd;
}

function restoreOptimizer(opt: SGD, model: Module, sd: ReadonlyMap<string, { data: Float32Array }>, lr: number): void {
  const names = optimizerParamNames(opt, model);
  const byPosition = [...sd.keys()].some((k) => /^momentum_buffer\.\d+$/.test(k)) && !names.some((n) => sd.has(`momentum_buffer.${n}`));
  const buffers = names.map((n, i) => sd.get(`momentum_buffer.${byPosition ? i : n}`)?.data ?? null);
  opt.loadStateDict({ lr, buffers });
}

/**
 * On resume, metrics.jsonl is made to hold exactly the epochs the checkpoint has (its history): an
 * older version appended the line before the checkpoint, so a kill in between logged an epoch twice.
 */
function keepMetricsUpTo(path: string, history: readonly EpochMetrics[]): void {
  if (!existsSync(path)) return;
  const text = history.map((m) => JSON.stringify(m) + '\n').join('');
  if (readFileSync(path, 'utf8') !== text) writeAtomic(path, text);
}

export async function train(model: Module, trainLoader: DataLoader, testLoader: DataLoader | null, o: TrainOptions): Promise<TrainResult> {
  if (!Number.isInteger(o.epochs) || o.epochs < 1) throw new Error(`train: epochs must be a positive integer, got ${o.epochs}`);
  const dtype = o.dtype ?? 'f32';
  const firstParam = model.parameters()[0];
  if (firstParam) checkComputeDtype('train', firstParam.backend, dtype);
  const batches = trainLoader.batchesPerEpoch;
  const totalIters = o.epochs * batches;
  const schedule = { spec: o.schedule, lr: o.lr, totalIters, warmupIters: o.warmupIters };
  const weightDecay = o.weightDecay ?? 0;
  const decayed = o.noDecayOnNormAndBias ? decayGroups(model, weightDecay) : [{ params: model.parameters(), weightDecay }];
  const groups = o.lrScale ? scaleGroups(model, decayed, o.lrScale.modules, o.lrScale.scale) : decayed;
  const opt = new SGD(groups, { lr: o.lr, momentum: o.momentum ?? 0.9, nesterov: o.nesterov ?? false, weightDecay });
  const history: EpochMetrics[] = [];
  if (o.maxSteps !== undefined && !(Number.isInteger(o.maxSteps) && o.maxSteps >= 1)) throw new Error(`train: maxSteps must be a positive integer, got ${o.maxSteps}`);
  const dist = o.distributed;
  // In a data-parallel run only rank 0 reads and writes the run folder.
  const outDir = dist && !dist.isMain ? undefined : o.outDir;

  let startEpoch = 0;
  let startBatch = 0;
  let iteration = 0;
  let tally: Tally = emptyTally();
  let elapsedBefore = 0;
  if (o.resume && (!dist || dist.isMain)) {
    const from = typeof o.resume === 'string' ? o.resume : outDir;
    if (!from) throw new Error('train: resume needs outDir or a checkpoint path');
    const ck = loadCheckpoint(from);
    model.loadStateDict(ck.model);
    restoreOptimizer(opt, model, ck.optimizer, learningRate(schedule, ck.state.iteration));
    ({ epoch: startEpoch, batch: startBatch, iteration } = ck.state);
    history.push(...((ck.state.history as EpochMetrics[] | undefined) ?? []));
    if (ck.state.partialTally) tally = ck.state.partialTally as Tally;
    elapsedBefore = (ck.state.elapsed_s as number | undefined) ?? 0;
  }
  if (dist) {
    const pos = startDataParallel(dist, model, opt, { startEpoch, startBatch, iteration, elapsedBefore, history }, trainLoader);
    ({ startEpoch, startBatch, iteration, elapsedBefore } = pos);
    // Rank 0 alone carries a resumed epoch's partial tally: the tallies are summed over ranks.
    if (!dist.isMain) { history.push(...(pos.history as EpochMetrics[])); tally = emptyTally(); }
  }
  if (outDir) mkdirSync(outDir, { recursive: true });
  const unlock = outDir ? lockRunFolder(outDir) : () => {};
  if (o.resume && outDir) keepMetricsUpTo(join(outDir, 'metrics.jsonl'), history);

  let interrupted = false;
  const onSigint = () => {
    if (interrupted) process.exit(130); // a second Ctrl-C: give up at once
    interrupted = true;
  };
  const handleInterrupt = o.handleInterrupt ?? !!o.outDir;
  if (handleInterrupt) process.on('SIGINT', onSigint);

  const started = Date.now();
  const elapsed = () => elapsedBefore + (Date.now() - started) / 1000;
  const checkpoint = (state: CheckpointState) => {
    if (outDir) {
      saveCheckpoint(outDir, { ...state, history, elapsed_s: elapsed(), run: o.runInfo ?? {}, ...(o.card ? { card: o.card } : {}) },
        model.stateDict(), optimizerState(opt, model), 2, o.card ? cardMetadata(o.card) : {});
    }
  };

  let stopped: TrainResult['stopped'] = 'done';
  try {
    model.train();
    let epochsRun = 0;
    for (let epoch = startEpoch; epoch < o.epochs; epoch++) {
      const epochStart = Date.now();
      let seen = 0;
      const phases = { data: 0, forward: 0, backward: 0, optimizer: 0 };
      let waitStart = performance.now();
      for await (const whole of trainLoader.epoch(epoch, { startBatch })) {
        const b = dist ? dist.shard(whole) : whole;
        phases.data += performance.now() - waitStart;
        const lr = learningRate(schedule, iteration);
        if (!Number.isFinite(lr) || lr < 0) {
          throw new Error(`train: the learning rate at iteration ${iteration + 1} comes out as ${lr} (lr ${o.lr} with this schedule); give a smaller --lr`);
        }
        opt.lr = lr;
        const stepStart = performance.now();
        let stop = interrupted;
        dist?.beginStep(b.n, whole.n);
        autocast(dtype, () => tidy(() => {
          const logits = model.forward(toInput(b, model));
          const loss = crossEntropy(logits, b.y, { labelSmoothing: o.labelSmoothing ?? 0 });
          const value = loss.item();
          const backwardStart = performance.now();
          phases.forward += backwardStart - stepStart;
          if (!Number.isFinite(value)) {
            throw new Error(`train: the loss is ${value} at epoch ${epoch + 1}, step ${b.index + 1} (iteration ${iteration + 1}, lr ${lr.toPrecision(3)}): ` +
              'training diverged. Lower the learning rate (--lr) or lengthen the warm-up; the last checkpoint before this is intact');
          }
          loss.backward();
          // Waits for the gradient allreduces still running; every rank stops if any was interrupted.
          if (dist) stop = dist.finishGradients(interrupted);
          phases.backward += performance.now() - backwardStart;
          addBatch(tally, logits.toArray(), b.y, logits.shape[1], value);
        }));
        const optimizerStart = performance.now();
        opt.step();
        opt.zeroGrad();
        const stepEnd = performance.now();
        phases.optimizer += stepEnd - optimizerStart;
        o.threads?.record(stepEnd - stepStart);
        iteration++;
        seen += whole.n;
        if (o.onBatch) {
          const secs = (Date.now() - epochStart) / 1000;
          const rate = seen / Math.max(secs, 1e-9);
          const s = summarize(tally);
          o.onBatch({ epoch, batch: b.index + 1, batches, loss: s.loss, acc: s.acc, lr, imagesPerSecond: rate,
            etaSeconds: ((batches - b.index - 1) * trainLoader.batchSize) / Math.max(rate, 1e-9) });
        }
        const reachedMax = o.maxSteps !== undefined && iteration >= o.maxSteps;
        if (stop || reachedMax) {
          checkpoint({ epoch, batch: b.index + 1, iteration, partialTally: dist ? dist.reduceTally(tally) : tally });
          stopped = stop ? 'interrupted' : 'maxSteps';
          break;
        }
        waitStart = performance.now();
      }
      if (stopped === 'interrupted' || stopped === 'maxSteps') break;
      startBatch = 0;
      const epochSeconds = (Date.now() - epochStart) / 1000;
      const t = summarize(dist ? dist.reduceTally(tally) : tally);
      tally = emptyTally();
      // Without SyncBatchNorm each rank's running statistics are its own: rank 0's count (as DDP's broadcast_buffers).
      if (dist && !dist.syncBn) dist.broadcastBuffers(model);
      const test = testLoader ? await (dist ? dist.evaluate(model, testLoader, { dtype }) : evaluate(model, testLoader, { dtype })) : null;
      const m: EpochMetrics = {
        epoch: epoch + 1, iteration, train_loss: t.loss, train_acc: t.acc, train_top5: t.top5,
        test_loss: test?.loss ?? null, test_acc: test?.acc ?? null, test_top5: test?.top5 ?? null,
        lr: opt.lr, elapsed_s: elapsed(), epoch_s: epochSeconds, images_per_s: seen / Math.max(epochSeconds, 1e-9),
        phase_s: {
          data: +(phases.data / 1000).toFixed(3), forward: +(phases.forward / 1000).toFixed(3),
          backward: +(phases.backward / 1000).toFixed(3), optimizer: +(phases.optimizer / 1000).toFixed(3),
        },
        dtype,
        ...(dist ? { comm: dist.takeCommStats() } : {}),
      };
      history.push(m);
      // The checkpoint first: a kill between the two leaves a checkpoint whose line is missing, which
      // resume writes again, rather than a line whose epoch resume would run and log a second time.
      checkpoint({ epoch: epoch + 1, batch: 0, iteration });
      if (outDir) appendFileSync(join(outDir, 'metrics.jsonl'), JSON.stringify(m) + '\n');
      o.onEpoch?.(m);
      epochsRun++;
      if (epoch + 1 < o.epochs) {
        if (o.stopAfterEpochs !== undefined && epochsRun >= o.stopAfterEpochs) { stopped = 'stopAfterEpochs'; break; }
        // Rank 0's clock decides for every rank: ranks that disagreed would wait for each other forever.
        const overBudget = o.budgetSeconds !== undefined && elapsed() >= o.budgetSeconds;
        if (o.budgetSeconds !== undefined && (dist ? dist.broadcastJson(overBudget) : overBudget)) { stopped = 'budget'; break; }
      }
    }
  } finally {
    if (handleInterrupt) process.off('SIGINT', onSigint);
    opt.dispose();
    unlock();
  }
  return { history, stopped };
}
