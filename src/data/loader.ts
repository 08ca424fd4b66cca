// The DataLoader: seeded, epoch-deterministic batches, built ahead of time in a worker thread.
//
//   const loader = new DataLoader(cifar10('train', dir), {
//     batchSize: 128, shuffle: true, seed: 1, transforms: cifarTrainTransforms(CIFAR10_MEAN, CIFAR10_STD),
//   });
//   for (let e = 0; e < epochs; e++)
//     for await (const { x, y, n, shape } of loader.epoch(e)) train(x, y, shape);
//
// With `worker: true` (the default) one worker thread per epoch builds batches while the main thread
// trains (synchronous native code does not stop it), keeping at most `prefetch` batches ready; the
// batch buffers are transferred, not copied. In-memory datasets are shared with the worker through
// their SharedArrayBuffer; an ImageFolder is decoded inside the worker. Leaving the loop early
// (break, return, throw) stops the worker. `worker: false` builds each batch on the main thread when
// it is asked for (custom transform functions and datasets without workerSource() need this).
//
// Batch b of epoch e depends only on (seed, e, b) — see batch.ts — so a run resumed at epoch e (or at
// batch b of it, with `startBatch`) sees exactly the batches of an uninterrupted run, with or without
// the worker.

import { Worker } from 'node:worker_threads';
import { batchesPerEpoch, buildBatch, epochOrder, type Batch, type BatchPlan } from './batch.js';
import type { AnyDataset, WorkerSource } from './dataset.js';
import { validateTransforms, type Transform, type TransformSpec } from './transforms.js';
import type { WorkerJob, WorkerMessage } from './worker.js';

export type { Batch } from './batch.js';

export interface DataLoaderOptions {
  batchSize: number;
  /** Shuffle each epoch (from `seed` and the epoch number). Default false. */
  shuffle?: boolean;
  /** Drop the last batch when it would be smaller than batchSize. Default false. */
  dropLast?: boolean;
  /** Any non-negative safe integer. Default 0. */
  seed?: number;
  /** Applied to each sample in order; see transforms.ts. Default none (pixels / 255). */
  transforms?: readonly Transform[];
  /** Build batches in a worker thread (default true). */
  worker?: boolean;
  /** With a worker: how many batches it may prepare ahead (1..8, default 2). */
  prefetch?: number;
}

export interface EpochOptions {
  /** Start at this batch of the epoch (to resume mid-epoch). Default 0. */
  startBatch?: number;
}

function checkNonNegInt(x: number, what: string): void {
  if (!Number.isSafeInteger(x) || x < 0) throw new Error(`DataLoader: ${what} must be a non-negative integer, got ${x}`);
}

export class DataLoader {
  readonly dataset: AnyDataset;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly dropLast: boolean;
  readonly seed: number;
  readonly transforms: readonly Transform[];
  readonly useWorker: boolean;
  readonly prefetch: number;
  private readonly source: WorkerSource | null;

  constructor(dataset: AnyDataset, opts: DataLoaderOptions) {
    if (!opts || !Number.isInteger(opts.batchSize) || opts.batchSize < 1) throw new Error(`DataLoader: batchSize must be a positive integer, got ${opts?.batchSize}`);
    this.dataset = dataset;
    this.batchSize = opts.batchSize;
    this.shuffle = opts.shuffle ?? false;
    this.dropLast = opts.dropLast ?? false;
    this.seed = opts.seed ?? 0;
    checkNonNegInt(this.seed, 'seed');
    this.transforms = [...(opts.transforms ?? [])];
    validateTransforms(this.transforms);
    this.useWorker = opts.worker ?? true;
    this.prefetch = opts.prefetch ?? 2;
    if (!Number.isInteger(this.prefetch) || this.prefetch < 1 || this.prefetch > 8) throw new Error(`DataLoader: prefetch must be an integer in 1..8, got ${opts.prefetch}`);
    if (dataset.length === 0) throw new Error('DataLoader: the dataset is empty');
    this.source = null;
    if (this.useWorker) {
      if (this.transforms.some((t) => typeof t === 'function')) {
        throw new Error('DataLoader: custom transform functions cannot run in the worker thread; use transform specs ({type: ...}) or pass worker: false');
      }
      if (!dataset.workerSource) {
        throw new Error('DataLoader: this dataset cannot be sent to a worker thread (it has no workerSource()); pass worker: false, or wrap its data in an InMemoryDataset');
      }
      this.source = dataset.workerSource();
    }
  }

  private get plan(): BatchPlan {
    return { batchSize: this.batchSize, dropLast: this.dropLast, shuffle: this.shuffle, seed: this.seed };
  }

  /** Batches per epoch. */
  get batchesPerEpoch(): number {
    return batchesPerEpoch(this.dataset.length, this.batchSize, this.dropLast);
  }

  /** The batches of epoch `e` (from 0), in order. Nothing starts until the first batch is requested. */
  epoch(e: number, opts: EpochOptions = {}): AsyncGenerator<Batch, void, undefined> {
    checkNonNegInt(e, 'epoch');
    const start = opts.startBatch ?? 0;
    checkNonNegInt(start, 'startBatch');
    const end = this.batchesPerEpoch;
    if (start > end) throw new Error(`DataLoader: startBatch ${start} is past the end of the epoch (${end} batches)`);
    return this.useWorker ? this.runWorker(e, start, end) : this.runInThread(e, start, end);
  }

  private async *runInThread(e: number, start: number, end: number): AsyncGenerator<Batch, void, undefined> {
    const order = epochOrder(this.dataset.length, this.plan, e);
    for (let b = start; b < end; b++) yield await buildBatch(this.dataset, order, b, e, this.plan, this.transforms);
  }

  private async *runWorker(e: number, start: number, end: number): AsyncGenerator<Batch, void, undefined> {
    if (start === end) return;
    const job: WorkerJob = {
      source: this.source!,
      plan: this.plan,
      transforms: this.transforms as TransformSpec[],
      epoch: e,
      startBatch: start,
      endBatch: end,
      prefetch: this.prefetch,
    };
    const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: { residualDataLoader: true, job } });
    const inbox: WorkerMessage[] = [];
    let failure: Error | null = null;
    let notify: (() => void) | null = null;
    const wake = () => {
      const n = notify;
      notify = null;
      n?.();
    };
    const ds = this.dataset as { reportSkipped?: (file: string, error: string) => void };
    worker.on('message', (m: WorkerMessage) => {
      if (m.type === 'skipped') {
        ds.reportSkipped?.(m.file, m.error);
        return;
      }
      inbox.push(m);
      wake();
    });
    worker.on('error', (err: Error) => {
      failure ??= new Error(`data loader worker failed: ${err?.message ?? err}`, { cause: err });
      wake();
    });
    worker.on('exit', (code) => {
      failure ??= new Error(`data loader worker stopped unexpectedly (exit code ${code}) during epoch ${e}`);
      wake();
    });
    try {
      for (;;) {
        // Keep the process alive while waiting for the worker; let it go while the consumer holds a batch.
        worker.ref();
        while (inbox.length === 0 && !failure) await new Promise<void>((r) => (notify = r));
        const m = inbox.shift();
        if (!m) throw failure!;
        if (m.type === 'done') return;
        if (m.type === 'error') {
          const err = new Error(m.message);
          if (m.name) err.name = m.name;
          if (m.stack) err.stack = `${m.stack}\n    (in the data loader worker thread)`;
          throw err;
        }
        if (m.type !== 'batch') continue;
        worker.postMessage({ type: 'credit' });
        worker.unref();
        yield { x: m.x, y: m.y, n: m.n, shape: m.shape, epoch: e, index: m.index, indices: m.indices };
      }
    } finally {
      worker.removeAllListeners('message');
      worker.removeAllListeners('exit');
      worker.on('error', () => {}); // after terminate, nothing more to report
      await worker.terminate();
    }
  }
}
