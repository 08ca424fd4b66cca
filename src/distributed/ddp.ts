// Data-parallel training over MPI, in the shape of PyTorch's DistributedDataParallel: every rank
// holds a replica, rank 0's weights are broadcast at the start, each rank trains on its slice of
// every global batch, and the gradients are averaged by allreduce in buckets that start while
// backward is still running. Optional synchronized BatchNorm makes the run compute what one process
// with the whole batch computes.
import type { Batch, DataLoader } from '../data/loader.js';
import type { Module } from '../nn/index.js';
import { BatchNorm2d } from '../nn/layers.js';
import type { BackendTensor } from '../backend/types.js';
import { Tensor, autocast, crossEntropy, isGradEnabled, noGrad, tidy, type ComputeDtype, type GradNode } from '../tensor/index.js';
import { onGradReady } from '../tensor/autograd.js';
import { addBatch, emptyTally, summarize, type Tally } from '../train/metrics.js';
import type { SGD } from '../train/sgd.js';
import { Mpi, type PendingReduce } from './mpi.js';

export interface DataParallelOptions {
  /** Reduce BatchNorm's batch statistics over all ranks (PyTorch's SyncBatchNorm). Default false: per-rank statistics, as DDP. */
  syncBn?: boolean;
  /** Gradient bucket size in MB (DDP's bucket_cap_mb, default 25); the first bucket is 1 MB at most. */
  bucketMb?: number;
}

/** Communication of one epoch, for the metrics: what allreduce cost and how much of it backward hid. */
export interface CommStats {
  /** Seconds inside MPI allreduce for the gradient buckets and the stop flag (waiting for the slower rank included). */
  allreduce_s: number;
  /** Seconds the training loop waited for allreduces after backward: the part not overlapped. */
  wait_s: number;
  /** Seconds the BatchNorm layers waited for their statistics' allreduce (--sync-bn; inside the forward and backward phases). */
  sync_bn_s: number;
  /** Bytes of gradients reduced per step. */
  grad_bytes: number;
  buckets: number;
}

interface Bucket {
  params: Tensor[];
  offsets: number[];
  buf: Float32Array;
  ready: number;
  pending: PendingReduce | null;
}

/** One rank of a data-parallel run. Create it once per process (MPI starts on the first). */
export class DataParallel {
  readonly mpi: Mpi;
  readonly syncBn: boolean;
  private readonly bucketBytes: number;
  private buckets: Bucket[] = [];
  private bucketOf = new Map<Tensor, number>();
  private nextLaunch = 0;
  private unhook: (() => void) | null = null;
  /** This rank's share of the global batch in the current step: its gradients are weighted by it. */
  private weight = 1;
  private commSeconds = 0;
  private syncBnSeconds = 0;
  private steps = 0;
  private readonly fault = parseFault(process.env.RESIDUAL_DIST_TEST_FAULT);
  private waitSeconds = 0;

  constructor(opts: DataParallelOptions = {}) {
    this.mpi = Mpi.init();
    this.syncBn = opts.syncBn ?? false;
    const mb = opts.bucketMb ?? 25;
    if (!(mb > 0)) throw new Error(`DataParallel: bucketMb must be > 0, got ${mb}`);
    this.bucketBytes = mb * 1024 * 1024;
  }

  get rank(): number { return this.mpi.rank; }
  get size(): number { return this.mpi.size; }
  get isMain(): boolean { return this.mpi.rank === 0; }

  /**
   * Prepares a model: buckets its trainable parameters (in reverse order, roughly the order backward
   * finishes them), and with syncBn makes its BatchNorm layers reduce their statistics.
   */
  wrap(model: Module): void {
    const params = model.parameters().filter((p) => p.requiresGrad).reverse();
    this.buckets = [];
    this.bucketOf.clear();
    let current: Tensor[] = [];
    let bytes = 0;
    const close = () => {
      if (current.length === 0) return;
      const offsets: number[] = [];
      let n = 0;
      for (const p of current) { offsets.push(n); n += p.size; }
      for (const p of current) this.bucketOf.set(p, this.buckets.length);
      this.buckets.push({ params: current, offsets, buf: new Float32Array(n), ready: 0, pending: null });
      current = [];
      bytes = 0;
    };
    // As DDP: the first bucket (the last layers, whose gradients backward finishes first) is small,
    // 1 MB, so that communication starts early and overlaps most of backward even for small nets.
    const firstCap = Math.min(1024 * 1024, this.bucketBytes);
    for (const p of params) {
      current.push(p);
      bytes += p.size * 4;
      if (bytes >= (this.buckets.length === 0 ? firstCap : this.bucketBytes)) close();
    }
    close();
    if (this.syncBn) {
      for (const [, m] of model.namedModules()) if (m instanceof BatchNorm2d) this.makeSync(m);
    }
  }

  /** Bytes of gradient reduced per step and the number of buckets. */
  get gradientBytes(): number { return this.buckets.reduce((a, b) => a + b.buf.byteLength, 0); }

  // ---- the start: the same weights, optimizer state and position everywhere ----

  /** Rank 0's value, everywhere (JSON). */
  broadcastJson<T>(value: T): T {
    const bytes = this.isMain ? new TextEncoder().encode(JSON.stringify(value ?? null)) : new Uint8Array(0);
    const len = new Int32Array([bytes.length]);
    this.mpi.broadcast(len);
    const buf = this.isMain ? bytes : new Uint8Array(len[0]);
    this.mpi.broadcast(buf);
    return this.isMain ? value : (JSON.parse(new TextDecoder().decode(buf)) as T);
  }

  /** Every parameter, buffer and counter of rank 0's model, loaded into every rank's. */
  broadcastModel(model: Module): void {
    const sd = model.stateDict();
    const entries = [...sd.entries()];
    // The layouts must agree before the values are sent: a rank with another model would hang.
    const layout = entries.map(([k, e]) => `${k}:${e.shape.join('x')}`).join(',');
    const main = this.broadcastJson(layout);
    if (main !== layout) throw new Error(`distributed: rank ${this.rank} has another model than rank 0 (its parameters differ); start every rank with the same arguments`);
    const total = entries.reduce((a, [, e]) => a + e.data.length, 0);
    const flat = new Float32Array(total);
    let o = 0;
    for (const [, e] of entries) { flat.set(e.data, o); o += e.data.length; }
    this.mpi.broadcast(flat);
    if (this.isMain) return;
    o = 0;
    const loaded = new Map<string, { shape: readonly number[]; data: Float32Array }>();
    for (const [k, e] of entries) { loaded.set(k, { shape: e.shape, data: flat.slice(o, o + e.data.length) }); o += e.data.length; }
    model.loadStateDict(loaded);
  }

  /** BatchNorm running statistics from rank 0 (without syncBn they drift apart per rank, as in DDP). */
  broadcastBuffers(model: Module): void {
    const bufs = model.namedBuffers();
    const total = bufs.reduce((a, [, t]) => a + t.size, 0);
    const flat = new Float32Array(total);
    let o = 0;
    for (const [, t] of bufs) { flat.set(t.toArray(), o); o += t.size; }
    this.mpi.broadcast(flat);
    if (this.isMain) return;
    o = 0;
    for (const [, t] of bufs) { t.assign(flat.slice(o, o + t.size)); o += t.size; }
  }

  /** Optimizer momentum buffers from rank 0 (after a resume only rank 0 has read them). */
  broadcastMomentum(state: { buffers: (Float32Array | null)[] }, sizes: number[]): (Float32Array | null)[] {
    const present = this.broadcastJson(state.buffers.map((b) => b !== null));
    return present.map((has, i) => {
      if (!has) return null;
      const b = this.isMain ? state.buffers[i]! : new Float32Array(sizes[i]);
      this.mpi.broadcast(b);
      return b;
    });
  }

  // ---- each step ----

  /** This rank's rows of a global batch: an even split, so the samples are those of one process. */
  shard(b: Batch, allowEmpty = false): Batch {
    const start = Math.floor((this.rank * b.n) / this.size);
    const end = Math.floor(((this.rank + 1) * b.n) / this.size);
    if (end <= start && !allowEmpty) {
      throw new Error(`distributed: batch ${b.index + 1} of epoch ${b.epoch + 1} has ${b.n} samples, fewer than the ${this.size} ranks; ` +
        `give a --batch (and a data size) that leaves every rank at least one sample`);
    }
    const per = b.shape[1] * b.shape[2] * b.shape[3];
    return {
      ...b, x: b.x.subarray(start * per, end * per), y: b.y.subarray(start, end), n: end - start,
      shape: [end - start, b.shape[1], b.shape[2], b.shape[3]], indices: b.indices.subarray(start, end),
    };
  }

  /**
   * Refuses, before any work, a training loader whose global batches (the last one included) would
   * leave a rank without samples: that rank could not join the collectives of the step.
   */
  checkLoader(loader: DataLoader): void {
    const n = loader.dataset.length;
    const b = loader.batchSize;
    const last = loader.dropLast || n % b === 0 ? b : n % b;
    if (Math.min(b, last) < this.size) {
      throw new Error(`distributed: the ${n} training samples in batches of ${b} end with a batch of ${last}, fewer than the ${this.size} ranks; ` +
        `give a --batch of at least ${this.size} that leaves a last batch of at least ${this.size} (or another --subset)`);
    }
  }

  /**
   * Call before the forward pass of a step with this rank's and the global sample count: from then
   * on its gradients start reducing as their buckets fill during backward.
   */
  beginStep(localN: number, globalN: number): void {
    this.steps++;
    if (this.fault && this.fault.rank === this.rank && this.fault.step === this.steps) injectFault(this.fault.kind);
    this.weight = localN / globalN;
    for (const b of this.buckets) { b.ready = 0; b.pending = null; }
    this.nextLaunch = 0;
    this.unhook?.();
    this.unhook = onGradReady((p) => {
      const i = this.bucketOf.get(p);
      if (i === undefined) return;
      this.buckets[i].ready++;
      // In bucket order on every rank, so all ranks issue the same collectives in the same order.
      while (this.nextLaunch < this.buckets.length && this.buckets[this.nextLaunch].ready === this.buckets[this.nextLaunch].params.length) {
        this.launch(this.buckets[this.nextLaunch++]);
      }
    });
  }

  private launch(b: Bucket): void {
    const w = this.weight;
    b.params.forEach((p, j) => {
      const o = b.offsets[j];
      if (!p.grad) { b.buf.fill(0, o, o + p.size); return; }
      const g = p.grad.toArray();
      for (let k = 0; k < g.length; k++) b.buf[o + k] = g[k] * w;
    });
    b.pending = this.mpi.allreduceStart(b.buf);
  }

  /**
   * Call after backward: launches what is left, waits for every bucket and writes the averaged
   * gradients back. `stop` is this rank's wish to stop (Ctrl-C); the result is whether any rank has it.
   */
  finishGradients(stop: boolean): boolean {
    this.unhook?.();
    this.unhook = null;
    while (this.nextLaunch < this.buckets.length) this.launch(this.buckets[this.nextLaunch++]);
    const flag = new Float32Array([stop ? 1 : 0]);
    const flagReduce = this.mpi.allreduceStart(flag);
    const t0 = performance.now();
    for (const b of this.buckets) this.commSeconds += b.pending!.wait().seconds;
    this.commSeconds += flagReduce.wait().seconds;
    this.waitSeconds += (performance.now() - t0) / 1000;
    for (const b of this.buckets) {
      b.params.forEach((p, j) => { if (p.grad) p.grad.assign(b.buf.subarray(b.offsets[j], b.offsets[j] + p.size)); });
      b.pending = null;
    }
    return flag[0] > 0;
  }

  /** Communication since the last call (per epoch, for the metrics). */
  takeCommStats(): CommStats {
    const s: CommStats = {
      allreduce_s: +this.commSeconds.toFixed(3), wait_s: +this.waitSeconds.toFixed(3), sync_bn_s: +this.syncBnSeconds.toFixed(3),
      grad_bytes: this.gradientBytes, buckets: this.buckets.length,
    };
    this.commSeconds = 0;
    this.waitSeconds = 0;
    this.syncBnSeconds = 0;
    return s;
  }

  /** Metrics tallies summed over the ranks. */
  reduceTally(t: Tally): Tally {
    const a = new Float64Array([t.samples, t.lossSum, t.top1, t.top5]);
    this.mpi.allreduce(a);
    return { samples: a[0], lossSum: a[1], top1: a[2], top5: a[3] };
  }

  /** `evaluate` with each rank on its slice of every batch, the tallies summed. */
  async evaluate(model: Module, loader: DataLoader, o: { dtype?: ComputeDtype } = {}): Promise<{ loss: number; acc: number; top5: number; samples: number }> {
    const wasTraining = model.training;
    model.eval();
    const tally = emptyTally();
    try {
      for await (const whole of loader.epoch(0)) {
        const b = this.shard(whole, true);
        if (b.n === 0) continue;
        autocast(o.dtype ?? 'f32', () => noGrad(() => tidy(() => {
          const p = model.parameters()[0];
          const logits = model.forward(Tensor.fromArray(b.x, b.shape, p ? { backend: p.backend } : {}));
          const loss = crossEntropy(logits, b.y);
          addBatch(tally, logits.toArray(), b.y, logits.shape[1], loss.item());
        })));
      }
    } finally {
      model.train(wasTraining);
    }
    const all = this.reduceTally(tally);
    return { ...summarize(all), samples: all.samples };
  }

  // ---- synchronized BatchNorm ----

  private makeSync(bn: BatchNorm2d): void {
    const plain = bn.forward.bind(bn);
    bn.forward = (x: Tensor) => {
      if (!bn.training) return plain(x);
      bn.numBatchesTracked.value++;
      return this.syncBatchNorm(bn, x);
    };
  }

  /**
   * Batch norm over the samples of every rank. Forward: local mean and variance, combined by one
   * allreduce, then the affine normalization (batchNormEval with the global statistics). Backward:
   * the backend's batch-norm backward uses this rank's means of dy and dy*xhat; one allreduce of
   * their sums gives the global ones, and a per-channel affine term (again batchNormEval) corrects dx.
   */
  private syncBatchNorm(bn: BatchNorm2d, x: Tensor): Tensor {
    const backend = x.backend;
    const [n, c, h, w] = x.shape;
    if (x.shape.length !== 4) throw new Error(`SyncBatchNorm: expected NCHW input, got [${x.shape.join(', ')}]`);
    const count = n * h * w;
    const scratchMean = backend.zeros([c]);
    const scratchVar = backend.zeros([c]);
    const local = backend.batchNormTrain(x.handle, bn.weight.handle, bn.bias.handle, scratchMean, scratchVar, 0, bn.eps);
    const m = backend.read(local.mean);
    const is = backend.read(local.invStd);
    for (const t of [local.y, local.mean, local.invStd, scratchMean, scratchVar]) backend.dispose(t);
    const sums = new Float64Array(1 + 2 * c);
    sums[0] = count;
    for (let i = 0; i < c; i++) {
      const v = 1 / (is[i] * is[i]) - bn.eps;
      sums[1 + i] = count * m[i];
      sums[1 + c + i] = count * (Math.max(v, 0) + m[i] * m[i]);
    }
    this.reduceBn(sums);
    const total = sums[0];
    const meanG = new Float32Array(c);
    const varG = new Float32Array(c);
    const invStdG = new Float64Array(c);
    for (let i = 0; i < c; i++) {
      const mean = sums[1 + i] / total;
      const v = Math.max(sums[1 + c + i] / total - mean * mean, 0);
      meanG[i] = mean;
      varG[i] = v;
      invStdG[i] = 1 / Math.sqrt(v + bn.eps);
    }
    // Running statistics as PyTorch's SyncBatchNorm: the unbiased variance of all ranks' samples.
    const mom = bn.momentum;
    const rm = bn.runningMean.toArray();
    const rv = bn.runningVar.toArray();
    const unbiased = total > 1 ? total / (total - 1) : 1;
    for (let i = 0; i < c; i++) {
      rm[i] = (1 - mom) * rm[i] + mom * meanG[i];
      rv[i] = (1 - mom) * rv[i] + mom * varG[i] * unbiased;
    }
    bn.runningMean.assign(rm);
    bn.runningVar.assign(rv);

    const meanH = backend.fromArray(meanG, [c]);
    const varH = backend.fromArray(varG, [c]);
    const invStdH = backend.fromArray(Float32Array.from(invStdG), [c]);
    const y = backend.batchNormEval(x.handle, bn.weight.handle, bn.bias.handle, meanH, varH, bn.eps);
    const inputs = [x, bn.weight, bn.bias];
    const saved = [meanH, varH, invStdH];
    if (!isGradEnabled() || !inputs.some((t) => t.requiresGrad)) {
      for (const s of saved) backend.dispose(s);
      return new Tensor(backend, y);
    }
    const weight = bn.weight;
    const eps = bn.eps;
    const share = this.weight;
    let released = false;
    const node: GradNode = {
      op: 'sync_batch_norm',
      inputs,
      backward: (g: BackendTensor) => {
        const r = backend.batchNormBackward(x.handle, weight.handle, meanH, invStdH, g);
        const dbeta = backend.read(r.dbeta);
        const dgamma = backend.read(r.dgamma);
        // Global sums of dL/dy and dL/dy*xhat, each rank's weighted by its share of the batch.
        const s = new Float64Array(2 * c);
        for (let i = 0; i < c; i++) { s[i] = share * dbeta[i]; s[c + i] = share * dgamma[i]; }
        this.reduceBn(s);
        const gamma = weight.toArray();
        const a = new Float32Array(c);
        const b = new Float32Array(c);
        for (let i = 0; i < c; i++) {
          // dx = gamma*invstd*(dy - sum(dy)/N - xhat*sum(dy*xhat)/N) with this rank's dy scaled
          // back by 1/share (its gradients are weighted by share when they are reduced).
          const u = dbeta[i] / count - s[i] / (share * total);
          const v = dgamma[i] / count - s[c + i] / (share * total);
          const k = gamma[i] * invStdG[i];
          a[i] = k * v;
          b[i] = k * u;
        }
        const aH = backend.fromArray(a, [c]);
        const bH = backend.fromArray(b, [c]);
        const corr = backend.batchNormEval(x.handle, aH, bH, meanH, varH, eps);
        const dx = backend.add(r.dx, corr);
        for (const t of [aH, bH, corr, r.dx]) backend.dispose(t);
        const grads: (BackendTensor | undefined)[] = [dx, r.dgamma, r.dbeta];
        inputs.forEach((t, i) => { if (!t.requiresGrad && grads[i]) { backend.dispose(grads[i]!); grads[i] = undefined; } });
        return grads;
      },
      release: () => {
        if (released) return;
        released = true;
        for (const s of saved) backend.dispose(s);
      },
    };
    return new Tensor(backend, y, { gradNode: node });
  }

  private reduceBn(a: Float64Array): void {
    const t0 = performance.now();
    this.mpi.allreduce(a);
    this.syncBnSeconds += (performance.now() - t0) / 1000;
  }

  /** Waits for the other ranks, then shuts MPI down. */
  finish(): void {
    this.unhook?.();
    this.mpi.barrier();
    this.mpi.finalize();
  }
}

/** Where a run starts: what rank 0 read from its checkpoint (or a fresh start). */
export interface StartPosition {
  startEpoch: number;
  startBatch: number;
  iteration: number;
  elapsedBefore: number;
  history: unknown[];
}

/**
 * The start of a data-parallel run, on every rank at once: buckets the model, then rank 0's
 * weights, position and momentum everywhere (after a resume only rank 0 has read the checkpoint,
 * which only it writes).
 */
export function startDataParallel(dp: DataParallel, model: Module, opt: SGD, pos: StartPosition, loader: DataLoader): StartPosition {
  dp.checkLoader(loader);
  dp.wrap(model);
  dp.broadcastModel(model);
  const main = dp.broadcastJson(pos);
  const sizes = opt.groups.flatMap((g) => g.params.map((p) => p.size));
  const state = opt.stateDict();
  const buffers = dp.broadcastMomentum(state, sizes);
  if (!dp.isMain) opt.loadStateDict({ lr: state.lr, buffers });
  return main;
}

// Fault injection for the tests of a dead rank: RESIDUAL_DIST_TEST_FAULT=RANK:STEP:exit|hang makes
// that rank, at that step of this process, exit without a word or stop answering.
function parseFault(text: string | undefined): { rank: number; step: number; kind: 'exit' | 'hang' } | null {
  if (!text) return null;
  const m = /^(\d+):(\d+):(exit|hang)$/.exec(text);
  if (!m) throw new Error(`RESIDUAL_DIST_TEST_FAULT must be RANK:STEP:exit|hang, got "${text}"`);
  return { rank: Number(m[1]), step: Number(m[2]), kind: m[3] as 'exit' | 'hang' };
}

function injectFault(kind: 'exit' | 'hang'): void {
  if (kind === 'exit') process.kill(process.pid, 'SIGKILL');
  const cell = new Int32Array(new SharedArrayBuffer(4));
  for (;;) Atomics.wait(cell, 0, 0);
}
