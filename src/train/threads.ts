// Choosing the engine's thread count while training runs, for machines shared with other work.
//
// Measured on the 2-vCPU machine (BENCHMARKS.md, OpenMP wait policy): idle, a ResNet-20 step at
// batch 128 takes ~122 ms on 2 threads and ~234 ms on 1; beside one busy process it takes ~750 ms on
// 2 threads and still ~234 ms on 1, because each of a step's ~300 parallel regions waits for the
// thread that shares its vCPU. Which count is faster depends on what else runs, and that changes,
// so the governor measures: a few steps at each candidate, the faster median wins, and after
// `runSteps` steps it measures again.
import { defaultBackend } from '../backend/index.js';

export interface ThreadGovernorOptions {
  /** Steps timed per candidate in a probe, after one untimed step (new primitives; default 3). */
  probeSteps?: number;
  /** Steps run at the chosen count before the next probe (default 400: ~1% of the time probing). */
  runSteps?: number;
}

export class ThreadGovernor {
  private readonly candidates: number[];
  private readonly probeSteps: number;
  private readonly runSteps: number;
  private probing = true;
  private index = 0; // the candidate being probed
  private samples: number[][];
  private sinceProbe = 0;
  private current: number;
  /** Every change of count, for the log: [step, threads]. */
  readonly changes: [number, number][] = [];
  private steps = 0;

  /** `max`: the most threads to use; `apply(n)` sets the engine's count (NativeBackend.setNumThreads). */
  constructor(max: number, private readonly apply: (threads: number) => void, o: ThreadGovernorOptions = {}) {
    if (!Number.isInteger(max) || max < 1) throw new Error(`ThreadGovernor: max threads must be a positive integer, got ${max}`);
    this.probeSteps = o.probeSteps ?? 3;
    this.runSteps = o.runSteps ?? 400;
    if (!Number.isInteger(this.probeSteps) || this.probeSteps < 1) throw new Error(`ThreadGovernor: probeSteps must be a positive integer, got ${o.probeSteps}`);
    if (!Number.isInteger(this.runSteps) || this.runSteps < 1) throw new Error(`ThreadGovernor: runSteps must be a positive integer, got ${o.runSteps}`);
    this.candidates = max > 1 ? [max, 1] : [1];
    this.samples = this.candidates.map(() => []);
    this.current = this.candidates[0]!;
    this.set(this.current);
  }

  /** The thread count the next step runs with. */
  get threads(): number {
    return this.current;
  }

  /** Records the wall time of the step just run (ms) and picks the count for the next one. */
  record(ms: number): void {
    this.steps++;
    if (this.candidates.length === 1) return;
    if (!this.probing) {
      if (++this.sinceProbe >= this.runSteps) this.startProbe();
      return;
    }
    const s = this.samples[this.index]!;
    s.push(ms);
    if (s.length <= this.probeSteps) return; // the first of each is untimed: it may build primitives
    this.index++;
    if (this.index < this.candidates.length) {
      this.set(this.candidates[this.index]!);
      return;
    }
    const medians = this.samples.map((xs) => median(xs.slice(1)));
    let best = 0;
    for (let i = 1; i < medians.length; i++) if (medians[i]! < medians[best]!) best = i;
    this.probing = false;
    this.sinceProbe = 0;
    this.set(this.candidates[best]!);
  }

  private startProbe(): void {
    this.probing = true;
    this.index = 0;
    this.samples = this.candidates.map(() => []);
    this.set(this.candidates[0]!);
  }

  private set(n: number): void {
    if (n !== this.current || this.changes.length === 0) this.changes.push([this.steps, n]);
    this.current = n;
    this.apply(n);
  }
}

let engineMax: number | undefined;

/**
 * A governor over the native engine's threads, from all it had when first asked (OMP_NUM_THREADS,
 * else every core) down to one; null on the reference backend. One per training run: a probe that
 * straddled two models would compare unlike steps.
 */
export function engineThreadGovernor(o: ThreadGovernorOptions = {}): ThreadGovernor | null {
  const backend = defaultBackend();
  const setThreads = backend.setNumThreads?.bind(backend);
  if (!setThreads) return null;
  engineMax ??= backend.info().threads;
  return new ThreadGovernor(engineMax, setThreads, o);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
