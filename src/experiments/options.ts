// What every experiment takes: the data, how much training it may spend, where it writes, and
// the scale knobs that let CI run it tiny. The CLI fills this in; code can call experiments directly.

import type { ComputeDtype } from '../backend/index.js';

/**
 * `30m`: minutes of training shared by all the models of an experiment; `3e`: epochs per model;
 * `500i`: iterations per model (a fixed length, for runs to be repeated exactly).
 */
export type Budget = { kind: 'minutes'; minutes: number } | { kind: 'epochs'; epochs: number } | { kind: 'iterations'; iterations: number };

export interface ExperimentOptions {
  /** `fashion-mnist` (default), `cifar10:DIR` or `cifar100:DIR`. */
  data: string;
  budget: Budget;
  /** The paper's recipe (64k iterations, batch 128, ...) instead of a budget. */
  full: boolean;
  /** The run folder: report.md, PNGs, and one folder per model. */
  out: string;
  seed: number;
  /** Train on the first N training samples only. */
  subset?: number;
  /** Evaluate on the first N test samples only. */
  testSubset?: number;
  /** Mini-batch size (default 128, the papers'). */
  batch?: number;
  /** How many times each model is evaluated on the test set along its run. */
  evals?: number;
  /** degradation: the depths of the plain/residual pairs (6n+2). */
  depths?: number[];
  /**
   * degradation: train only these of its models (e.g. resnet56,plain56), so processes can share one
   * run folder, each training its own; the report covers what this process trained, so a last
   * `--resume` run without it writes the whole one.
   */
  models?: string[];
  /** cardinality: the cardinalities to compare; forms: the (C, d) pairs come from these. */
  cardinalities?: number[];
  /** cardinality and forms: bottleneck width d of the C=1 baseline (the others' d is solved to match its cost). */
  width?: number;
  /** forms: the block's input and output channels (default 256, the paper's conv2 template). */
  channels?: number;
  /** cardinality: stem width (stage outputs 4x, 8x, 16x it). */
  base?: number;
  /** cardinality: network depth 9n+2. */
  depth?: number;
  /** forms: spatial size of the input maps. */
  size?: number;
  /** forms: timed repetitions per measurement. */
  repeats?: number;
  /** cardinality: seeds per configuration (--seed, --seed+1, ...; default 3). */
  seeds?: number;
  /** cardinality: include Table 4 (twice the cost: deeper vs wider vs cardinality); default true. */
  tableFour?: boolean;
  /** Continue the model runs an interrupted experiment left in `out` (their checkpoints). */
  resume?: boolean;
  /**
   * The precision every model trains in: f32 (default) or bf16 mixed precision (`residual train --dtype
   * bf16`: convolutions in bf16, f32 master weights, BatchNorm statistics and loss). All the models of a
   * run folder train alike; resuming one in the other precision is refused.
   */
  dtype?: ComputeDtype;
  /** Each model's training picks its thread count from measured steps (ThreadGovernor; `--threads auto`). */
  autoThreads?: boolean;
  /** A transient progress line during training (a terminal's status line), at most a few per second. */
  progress?: (text: string) => void;
  /** Progress: an event for --json, and its text for a person. */
  log?: (event: Record<string, unknown>, text: string) => void;
}

export const DEFAULT_BUDGET: Budget = { kind: 'minutes', minutes: 30 };
/** cardinality: 2 epochs per model; 7 configurations x 3 seeds is about 4.5 h at one thread on a 2-core machine (measured 0.39-1.15 s per iteration). */
export const CARDINALITY_BUDGET: Budget = { kind: 'epochs', epochs: 2 };

export function parseBudget(text: string): Budget {
  const m = /^(\d+(?:\.\d+)?)\s*(m|min|e|ep|epochs?|i|it|iterations?)?$/i.exec(text.trim());
  if (!m) throw new Error(`--budget must look like 30m (minutes shared by the experiment's models), 3e (epochs per model) or 500i (iterations per model), got "${text}"`);
  const n = Number(m[1]);
  if (!(n > 0)) throw new Error(`--budget must be positive, got "${text}"`);
  const unit = (m[2] ?? 'm').toLowerCase();
  if (unit.startsWith('e') || unit.startsWith('i')) {
    if (!Number.isInteger(n)) throw new Error(`--budget in ${unit.startsWith('e') ? 'epochs' : 'iterations'} must be a whole number, got "${text}"`);
    return unit.startsWith('e') ? { kind: 'epochs', epochs: n } : { kind: 'iterations', iterations: n };
  }
  return { kind: 'minutes', minutes: n };
}

export function describeBudget(b: Budget): string {
  if (b.kind === 'minutes') return `${b.minutes} min of training shared by the models`;
  return b.kind === 'epochs' ? `${b.epochs} epoch${b.epochs === 1 ? '' : 's'} per model` : `${b.iterations} iterations per model`;
}

/** A list option "20,56" as positive integers. */
export function parseIntList(name: string, text: string): number[] {
  const v = text.split(',').filter((s) => s.trim() !== '').map(Number);
  if (v.length === 0 || v.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`--${name} must be a comma-separated list of positive integers, got "${text}"`);
  return v;
}

export function logger(o: ExperimentOptions): (event: Record<string, unknown>, text: string) => void {
  return o.log ?? (() => {});
}
