// The DataLoader's worker thread: builds the batches of one epoch and posts them to the main
// thread (buffers transferred, not copied), at most `prefetch` ahead of what the main thread has
// consumed (it sends one 'credit' message per batch it takes).

import { parentPort, workerData } from 'node:worker_threads';
import { buildBatch, epochOrder, type BatchPlan } from './batch.js';
import type { WorkerSource } from './dataset.js';
import { datasetFromSource } from './source.js';
import type { TransformSpec } from './transforms.js';

export interface WorkerJob {
  source: WorkerSource;
  plan: BatchPlan;
  transforms: TransformSpec[];
  epoch: number;
  startBatch: number;
  endBatch: number;
  prefetch: number;
}

export type WorkerMessage =
  | { type: 'batch'; x: Float32Array; y: Int32Array; n: number; shape: [number, number, number, number]; index: number; indices: Int32Array }
  | { type: 'done' }
  | { type: 'skipped'; file: string; error: string }
  | { type: 'error'; message: string; stack?: string; name?: string };

async function run(port: NonNullable<typeof parentPort>, job: WorkerJob): Promise<void> {
  let credits = job.prefetch;
  let wake: (() => void) | null = null;
  port.on('message', (m: { type: string }) => {
    if (m.type === 'credit') {
      credits++;
      const w = wake;
      wake = null;
      w?.();
    }
  });
  const post = (m: WorkerMessage, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);
  try {
    const ds = await datasetFromSource(job.source, (file, error) => post({ type: 'skipped', file, error }));
    const order = epochOrder(ds.length, job.plan, job.epoch);
    for (let b = job.startBatch; b < job.endBatch; b++) {
      while (credits <= 0) await new Promise<void>((r) => (wake = r));
      credits--;
      const batch = await buildBatch(ds, order, b, job.epoch, job.plan, job.transforms);
      post(
        { type: 'batch', x: batch.x, y: batch.y, n: batch.n, shape: batch.shape, index: batch.index, indices: batch.indices },
        [batch.x.buffer as ArrayBuffer, batch.y.buffer as ArrayBuffer, batch.indices.buffer as ArrayBuffer],
      );
    }
    post({ type: 'done' });
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    post({ type: 'error', message: err.message, stack: err.stack, name: err.name });
  }
}

if (parentPort && workerData && (workerData as { residualDataLoader?: boolean }).residualDataLoader) {
  void run(parentPort, (workerData as { job: WorkerJob }).job);
}
