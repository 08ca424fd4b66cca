// The batching queue of the server: requests hand in one preprocessed sample each and get their
// own result back, while the model runs once per batch. A batch goes when it is full (maxBatch) or
// when its first sample has waited maxWaitMs; while a batch runs, new samples gather for the next
// one, which goes as soon as the run ends (they have waited for it already). One batch runs at a
// time: the engine runs one plan at a time anyway. The queue is bounded: past maxQueue waiting
// samples, submit() refuses with a QueueFullError instead of letting latency and memory grow.

export class QueueFullError extends Error {
  override readonly name = 'QueueFullError';
}

export interface BatcherOptions<R> {
  /** Values per sample. */
  perSample: number;
  maxBatch: number;
  maxWaitMs: number;
  /** Samples that may wait at once (not counting the batch running). */
  maxQueue: number;
  /** Runs one batch of `n` samples; resolves one result per sample. */
  run(batch: Float32Array, n: number): Promise<R[]>;
}

interface Waiting<R> {
  x: Float32Array;
  resolve(r: R): void;
  reject(e: unknown): void;
}

export interface BatcherStats {
  /** Batches run so far. */
  batches: number;
  /** Samples run so far. */
  samples: number;
  largestBatch: number;
}

export class Batcher<R> {
  private queue: Waiting<R>[] = [];
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private idle: (() => void)[] = [];
  private readonly counts: BatcherStats = { batches: 0, samples: 0, largestBatch: 0 };

  constructor(private readonly o: BatcherOptions<R>) {
    for (const k of ['perSample', 'maxBatch', 'maxQueue'] as const) {
      if (!Number.isInteger(o[k]) || o[k] < 1) throw new Error(`Batcher: ${k} must be a positive integer, got ${o[k]}`);
    }
    if (!(o.maxWaitMs >= 0)) throw new Error(`Batcher: maxWaitMs must be a number >= 0, got ${o.maxWaitMs}`);
  }

  /** Samples waiting for a batch (not counting the batch running). */
  get length(): number {
    return this.queue.length;
  }

  get stats(): BatcherStats {
    return { ...this.counts };
  }

  /** Queues one sample; resolves with its result. Rejects with QueueFullError when maxQueue samples wait already. */
  submit(x: Float32Array): Promise<R> {
    if (x.length !== this.o.perSample) return Promise.reject(new Error(`Batcher: a sample has ${x.length} values, expected ${this.o.perSample}`));
    if (this.queue.length >= this.o.maxQueue) {
      return Promise.reject(new QueueFullError(`the queue is full (${this.o.maxQueue} images waiting); try again shortly`));
    }
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ x, resolve, reject });
      if (this.running) return; // the next batch goes when this one ends
      if (this.queue.length >= this.o.maxBatch) this.flush();
      else this.timer ??= setTimeout(() => this.flush(), this.o.maxWaitMs);
    });
  }

  /** Resolves when nothing waits and nothing runs. */
  drained(): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  private flush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.running || this.queue.length === 0) return;
    const items = this.queue.splice(0, this.o.maxBatch);
    const n = items.length, per = this.o.perSample;
    const batch = new Float32Array(n * per);
    items.forEach((it, i) => batch.set(it.x, i * per));
    this.running = true;
    this.counts.batches++;
    this.counts.samples += n;
    this.counts.largestBatch = Math.max(this.counts.largestBatch, n);
    let run: Promise<R[]>;
    try {
      run = this.o.run(batch, n);
    } catch (e) {
      run = Promise.reject(e);
    }
    run.then(
      (results) => {
        if (results.length !== n) throw new Error(`Batcher: the run returned ${results.length} results for ${n} samples`);
        items.forEach((it, i) => it.resolve(results[i]!));
      },
    ).catch((e: unknown) => items.forEach((it) => it.reject(e)))
      .finally(() => {
        this.running = false;
        if (this.queue.length > 0) this.flush();
        else for (const f of this.idle.splice(0)) f();
      });
  }
}
