// Timing of a model on this machine: inference through the compiled plan, or a full training step
// (forward, backward, SGD) through the tensor API. Warm-up runs first (primitive creation, weight
// reorders, allocator growth), then the median of the timed runs, which shrugs off the odd slow run
// on a shared machine. It sits above infer and train (it times both), so neither reaches into the
// other for it.
import { checkComputeDtype, defaultBackend, type PlanDtype } from '../backend/index.js';
import { checkBatchMemory, getModel } from '../models/index.js';
import { manualSeed } from '../nn/index.js';
import { Tensor, autocast, crossEntropy, tidy } from '../tensor/index.js';
import { SGD } from '../train/sgd.js';
import { calibrate, compileForInference } from '../infer/compile.js';

export type BenchMode = 'infer' | 'train';
export type BenchDtype = PlanDtype;

export interface BenchOptions {
  model: string;
  batch: number;
  mode?: BenchMode;
  dtype?: BenchDtype;
  /** [C, H, W]; default the model's own input (3x224x224 ImageNet, 3x32x32 CIFAR). */
  input?: readonly number[];
  /** Untimed runs first (default 3 infer, 2 train). */
  warmup?: number;
  /** Timed runs; the median is reported (default 10 infer, 5 train). */
  runs?: number;
}

export interface BenchResult {
  model: string;
  batch: number;
  mode: BenchMode;
  dtype: BenchDtype;
  input: number[];
  backend: string;
  threads: number;
  runs: number;
  warmup: number;
  /** Median of the timed runs, for the whole batch. */
  ms_per_batch: number;
  ms_per_image: number;
  images_per_s: number;
  /** Fastest and slowest timed run, for the whole batch. */
  ms_min: number;
  ms_max: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function random(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

/** Runs the benchmark; call initBackend() first (inference needs the native backend). */
export function benchmark(o: BenchOptions): BenchResult {
  const mode = o.mode ?? 'infer';
  const dtype = o.dtype ?? 'f32';
  if (mode !== 'infer' && mode !== 'train') throw new Error(`bench: mode must be "infer" or "train", got "${String(mode)}"`);
  if (dtype !== 'f32' && dtype !== 'bf16' && dtype !== 'int8') throw new Error(`bench: dtype must be "f32", "bf16" or "int8", got "${String(dtype)}"`);
  if (mode === 'train' && dtype === 'int8') throw new Error('bench: int8 is for inference (post-training quantization); train in f32 or bf16');
  const trainDtype = dtype === 'int8' ? 'f32' : dtype; // (int8 is refused for training above)
  if (mode === 'train') checkComputeDtype('bench', defaultBackend(), trainDtype);
  if (!Number.isInteger(o.batch) || o.batch < 1) throw new Error(`bench: batch must be a positive integer, got ${o.batch}`);
  const entry = getModel(o.model);
  const input = o.input ? [...o.input] : [...entry.defaultInput];
  if (input.length !== 3 || input.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new Error(`bench: input must be [C, H, W] of positive integers, got [${input.join(', ')}]`);
  }
  const warmup = o.warmup ?? (mode === 'infer' ? 3 : 2);
  const runs = o.runs ?? (mode === 'infer' ? 10 : 5);
  if (!Number.isInteger(warmup) || warmup < 0) throw new Error(`bench: warmup must be a non-negative integer, got ${warmup}`);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`bench: runs must be a positive integer, got ${runs}`);
  const n = o.batch;
  const [c, h, w] = input as [number, number, number];
  checkBatchMemory('bench', entry.spec({ inChannels: c }), input, n, mode === 'train' ? 3 : 1);
  manualSeed(0);
  const model = entry.build({ inChannels: c });
  const x = random(n * c * h * w, 1);
  const times: number[] = [];
  try {
    let step: () => void;
    let cleanup = () => {};
    if (mode === 'infer') {
      model.eval();
      // int8: calibrated on the benchmark's own input (random weights and images: the timing does not depend on them)
      const calibration = dtype === 'int8' ? calibrate(model, x, n, { input }) : undefined;
      const plan = compileForInference(model, { input, maxBatch: n, dtype, calibration });
      step = () => { plan.run(x, n); };
      cleanup = () => plan.dispose();
    } else {
      model.train();
      const xt = Tensor.fromArray(x, [n, c, h, w]);
      const labels = Int32Array.from({ length: n }, (_, i) => (i * 7919) % model.numClasses);
      const opt = new SGD(model.parameters(), { lr: 1e-3, momentum: 0.9 });
      step = () => {
        // bf16: mixed precision as `residual train --dtype bf16` runs it (convolutions in bf16, the rest f32)
        autocast(trainDtype, () => tidy(() => {
          const loss = crossEntropy(model.forward(xt), labels);
          loss.backward();
          loss.item(); // waits for the result, as a training loop reading its loss does
        }));
        opt.step();
        opt.zeroGrad();
      };
      cleanup = () => xt.dispose();
    }
    try {
      for (let i = 0; i < warmup; i++) step();
      for (let i = 0; i < runs; i++) {
        const t0 = performance.now();
        step();
        times.push(performance.now() - t0);
      }
    } finally {
      cleanup();
    }
  } finally {
    model.dispose();
  }
  const ms = median(times);
  const info = defaultBackend().info();
  return {
    model: o.model, batch: n, mode, dtype, input, backend: info.backend, threads: info.threads, runs, warmup,
    ms_per_batch: round(ms), ms_per_image: round(ms / n), images_per_s: round((1000 * n) / ms),
    ms_min: round(Math.min(...times)), ms_max: round(Math.max(...times)),
  };
}

function round(v: number): number {
  return Number(v.toPrecision(6));
}
