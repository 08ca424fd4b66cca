// The native backend: a thin TypeScript face over the C++ addon (build/Release/residual_native.node),
// which drives oneDNN. Tensors are addon objects that own native memory; activations live in NHWC,
// weights in plain OIHW, and `read` always returns logical row-major values.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type {
  Backend,
  BackendInfo,
  BackendTensor,
  Conv2dParams,
  GradNeeds,
  Pool2dParams,
  SgdOptions,
  Shape,
  PlanDescription, PlanHandle,
} from './types.js';
import { readEngineConfig, type EngineConfig, type PlanConfig } from './config.js';

/** A tensor of the native backend: a handle to native memory. */
export interface NativeTensor extends BackendTensor {
  readonly shape: Shape;
  /** True once the memory has been freed. */
  readonly disposed: boolean;
  /** Bytes held, including cached weight copies in a primitive's format. */
  readonly byteSize: number;
  /** How the values are laid out in memory: 'plain' (row-major), 'nhwc', 'opaque' (pooling workspace), 'disposed'. */
  readonly layout: 'plain' | 'nhwc' | 'opaque' | 'disposed';
  /** How the values are stored: 'bfloat16' for the activations of bf16 training (read() widens them). */
  readonly storage: 'float32' | 'bfloat16' | 'opaque' | 'disposed';
  dispose(): void;
}

type T = NativeTensor;
interface Grads {
  dx?: T;
  dw?: T;
  db?: T;
}

/** What the addon exports (native/*.cc). */
interface Addon {
  NativeTensor: abstract new () => NativeTensor;
  info(): { onednnVersion: string; isa: string; threads: number };
  stats(): NativeStats;
  implementations(): { key: string; impl: string }[];
  clearImplementations(): void;
  releasePool(): void;
  setConvLayout(layout: 'nhwc' | 'any'): void;
  fromArray(data: Float32Array, shape: Shape): T;
  zeros(shape: Shape): T;
  read(t: T): Float32Array;
  reshape(t: T, shape: Shape): T;
  dispose(t: T): void;
  byteSize(t: T): number;
  add(a: T, b: T): T;
  addRelu(a: T, b: T): T;
  addInPlace(dst: T, src: T): void;
  scale(x: T, s: number): T;
  relu(x: T): T;
  reluBackward(y: T, dy: T): T;
  conv2d(x: T, w: T, b: T | null, sh: number, sw: number, ph: number, pw: number, dh: number, dw: number, g: number, bf16: boolean): T;
  conv2dBackward(
    x: T, w: T, dy: T, sh: number, sw: number, ph: number, pw: number, dh: number, dw: number, g: number,
    needInput: boolean, needWeight: boolean, needBias: boolean, bf16: boolean,
  ): Grads;
  batchNormTrain(x: T, gamma: T, beta: T, rm: T, rv: T, momentum: number, eps: number): { y: T; mean: T; invStd: T };
  batchNormEval(x: T, gamma: T, beta: T, rm: T, rv: T, eps: number): T;
  batchNormBackward(x: T, gamma: T, mean: T, invStd: T, dy: T, reluMask?: T): { dx: T; dgamma: T; dbeta: T };
  batchNormReluTrain(x: T, gamma: T, beta: T, rm: T, rv: T, momentum: number, eps: number): { y: T; mean: T; invStd: T; reluMask: T };
  maxPool2d(x: T, kh: number, kw: number, sh: number, sw: number, ph: number, pw: number, ceil: boolean): { y: T; argmax: T };
  maxPool2dBackward(
    x: T, argmax: T, dy: T, kh: number, kw: number, sh: number, sw: number, ph: number, pw: number, ceil: boolean,
  ): T;
  avgPool2d(x: T, kh: number, kw: number, sh: number, sw: number, ph: number, pw: number, ceil: boolean, includePad: boolean): T;
  avgPool2dBackward(
    dy: T, inputShape: Shape, kh: number, kw: number, sh: number, sw: number, ph: number, pw: number, ceil: boolean,
    includePad: boolean,
  ): T;
  globalAvgPool(x: T): T;
  globalAvgPoolBackward(dy: T, inputShape: Shape): T;
  linear(x: T, w: T, b: T | null): T;
  linearBackward(x: T, w: T, dy: T, needInput: boolean, needWeight: boolean, needBias: boolean): Grads;
  crossEntropy(logits: T, labels: Int32Array, labelSmoothing: number): { loss: T; probs: T };
  crossEntropyBackward(probs: T, labels: Int32Array, labelSmoothing: number, gradScale: number): T;
  concatChannels(xs: readonly T[]): T;
  splitChannels(x: T, sizes: readonly number[]): T[];
  shortcutA(x: T, outChannels: number, stride: number): T;
  shortcutABackward(dy: T, inputShape: Shape, stride: number): T;
  sgdStep(
    param: T, grad: T, buf: T | null, firstStep: boolean, lr: number, momentum: number, dampening: number,
    weightDecay: number, nesterov: boolean,
  ): void;
  planCreate(desc: PlanDescription): PlanHandle;
  planRun(plan: PlanHandle, x: Float32Array, n: number): Float32Array;
  planRunAsync(plan: PlanHandle, x: Float32Array, n: number): Promise<Float32Array>;
  planCalibrate(plan: PlanHandle, x: Float32Array, n: number): Float32Array;
  planDispose(plan: PlanHandle): void;
  planInfo(plan: PlanHandle): { bytes: number; implementations: { op: string; impl: string }[] };
  setNumThreads(n: number): void;
  configure(config: { poolBytes: number; refuseRef: boolean; groupedOnednn: boolean }): void;
}

export type { PlanDescription, PlanHandle, PlanOp } from './types.js';

/** Counters of the native engine, for leak checks and tests. */
export interface NativeStats {
  liveTensors: number;
  liveBytes: number;
  primitivesCreated: number;
  scratchpadBytes: number;
  /**
   * Freed tensor buffers kept for reuse: at most max(the configured poolBytes (default 1024 MB), the peak
   * of live tensor bytes), so a training loop stops allocating after its first step. releasePool() empties it.
   */
  pooledBytes: number;
  /**
   * Bytes the allocator holds from the system (live tensors, their cached weight copies, pooled
   * buffers, scratchpad). This is what the garbage collector is told via napi_adjust_external_memory.
   */
  footprintBytes: number;
}

/** The folder with the package's package.json, found by walking up from this file. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'binding.gyp'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('residual: cannot find the package root (a folder with package.json and binding.gyp)');
    dir = up;
  }
}

let addon: Addon | undefined;
let loadError: Error | undefined;

function loadAddon(): Addon {
  if (addon) return addon;
  if (loadError) throw loadError;
  try {
    const root = packageRoot();
    const file = join(root, 'build', 'Release', 'residual_native.node');
    if (!existsSync(file)) {
      throw new Error(`the native addon is not built (${file} is missing): run \`npm run build:native\``);
    }
    // libgomp reads its wait policy once, when the addon loads it. Its default spins ~300k times at
    // every barrier before sleeping, so a waiting thread keeps its vCPU busy and the OS cannot move
    // a delayed one there: with one busy process beside it, ResNet-50 at 2 threads went from 21 to
    // 600 ms per image. 1,000 spins measured the same idle and 43-47 ms so loaded (BENCHMARKS.md).
    // Only when the user set neither knob; not left in the environment for child processes.
    const spin = process.env.GOMP_SPINCOUNT === undefined && process.env.OMP_WAIT_POLICY === undefined;
    if (spin) process.env.GOMP_SPINCOUNT = '1000';
    try {
      addon = createRequire(import.meta.url)(file) as Addon;
    } finally {
      if (spin) delete process.env.GOMP_SPINCOUNT;
    }
    return addon;
  } catch (e) {
    loadError = new Error(`residual: cannot load the native backend: ${(e as Error).message}`);
    throw loadError;
  }
}

/** Whether the native addon can be loaded here (the reference backend is the fallback). */
export function nativeAvailable(): boolean {
  try {
    loadAddon();
    return true;
  } catch {
    return false;
  }
}

export class NativeBackend implements Backend<NativeTensor> {
  readonly name = 'native' as const;
  private readonly a: Addon;
  private plan: PlanConfig;

  constructor(config: EngineConfig = readEngineConfig()) {
    this.a = loadAddon();
    this.plan = config.plan;
    this.configure(config);
  }

  /** Applies an engine configuration (initBackend reads it once: src/backend/config.ts). */
  configure(config: EngineConfig): void {
    this.a.configure({ poolBytes: config.poolBytes, refuseRef: config.refuseRef, groupedOnednn: config.groupedOnednn });
    this.plan = config.plan;
  }

  info(): BackendInfo {
    const i = this.a.info();
    return { backend: 'native', onednnVersion: i.onednnVersion, isa: i.isa, threads: i.threads };
  }

  /** Live native tensors and bytes, primitives created, scratchpad size. */
  stats(): NativeStats {
    return this.a.stats();
  }

  /** The oneDNN implementation chosen for every primitive created so far (e.g. "brgconv:avx512_core"). */
  implementations(): { key: string; impl: string }[] {
    return this.a.implementations();
  }

  clearImplementations(): void {
    this.a.clearImplementations();
  }

  /**
   * Activation layout of convolutions: 'nhwc' (default: no reorders between ops) or 'any' (oneDNN
   * picks, e.g. nChw16c, and each conv reorders its input and output). For experiments and tests.
   */
  setConvLayout(layout: 'nhwc' | 'any'): void {
    this.a.setConvLayout(layout);
  }

  /** Returns the freed buffers the allocator keeps for reuse to the system. */
  releasePool(): void {
    this.a.releasePool();
  }

  // ---- memory ----
  fromArray(data: Float32Array, shape: Shape): T {
    return this.a.fromArray(data, shape);
  }
  read(t: T): Float32Array {
    return this.a.read(t);
  }
  zeros(shape: Shape): T {
    return this.a.zeros(shape);
  }
  dispose(t: T): void {
    // The tensor's own method: it never waits for the engine lock (an asynchronous inference run
    // may hold it), freeing later when the engine is busy, so tidy() and the GC backstop don't stall.
    if (t instanceof this.a.NativeTensor) t.dispose();
    else this.a.dispose(t);
  }
  byteSize(t: T): number {
    return this.a.byteSize(t);
  }
  reshape(x: T, shape: Shape): T {
    return this.a.reshape(x, shape);
  }

  // ---- elementwise ----
  add(a: T, b: T): T {
    return this.a.add(a, b);
  }
  addRelu(a: T, b: T): T {
    return this.a.addRelu(a, b);
  }
  addInPlace(dst: T, src: T): void {
    this.a.addInPlace(dst, src);
  }
  scale(x: T, s: number): T {
    return this.a.scale(x, s);
  }
  relu(x: T): T {
    return this.a.relu(x);
  }
  reluBackward(y: T, dy: T): T {
    return this.a.reluBackward(y, dy);
  }

  // ---- convolution ----
  conv2d(x: T, w: T, b: T | null, p: Conv2dParams): T {
    return this.a.conv2d(x, w, b, p.stride[0], p.stride[1], p.padding[0], p.padding[1], p.dilation[0], p.dilation[1], p.groups,
      p.precision === 'bf16');
  }
  conv2dBackward(x: T, w: T, dy: T, p: Conv2dParams, needs: GradNeeds): { dx?: T; dw?: T; db?: T } {
    return this.a.conv2dBackward(
      x, w, dy, p.stride[0], p.stride[1], p.padding[0], p.padding[1], p.dilation[0], p.dilation[1], p.groups,
      needs.input, needs.weight, needs.bias, p.precision === 'bf16',
    );
  }

  // ---- batch norm ----
  batchNormTrain(x: T, gamma: T, beta: T, runningMean: T, runningVar: T, momentum: number, eps: number): { y: T; mean: T; invStd: T } {
    return this.a.batchNormTrain(x, gamma, beta, runningMean, runningVar, momentum, eps);
  }
  batchNormEval(x: T, gamma: T, beta: T, runningMean: T, runningVar: T, eps: number): T {
    return this.a.batchNormEval(x, gamma, beta, runningMean, runningVar, eps);
  }
  batchNormBackward(x: T, gamma: T, mean: T, invStd: T, dy: T): { dx: T; dgamma: T; dbeta: T } {
    return this.a.batchNormBackward(x, gamma, mean, invStd, dy);
  }
  batchNormReluTrain(x: T, gamma: T, beta: T, runningMean: T, runningVar: T, momentum: number, eps: number):
    { y: T; mean: T; invStd: T; reluMask: T } {
    return this.a.batchNormReluTrain(x, gamma, beta, runningMean, runningVar, momentum, eps);
  }
  batchNormReluBackward(x: T, gamma: T, mean: T, invStd: T, reluMask: T, dy: T): { dx: T; dgamma: T; dbeta: T } {
    return this.a.batchNormBackward(x, gamma, mean, invStd, dy, reluMask);
  }

  // ---- pooling ----
  maxPool2d(x: T, p: Pool2dParams): { y: T; argmax: T } {
    return this.a.maxPool2d(x, p.kernel[0], p.kernel[1], p.stride[0], p.stride[1], p.padding[0], p.padding[1], p.ceilMode);
  }
  maxPool2dBackward(x: T, argmax: T, dy: T, p: Pool2dParams): T {
    return this.a.maxPool2dBackward(
      x, argmax, dy, p.kernel[0], p.kernel[1], p.stride[0], p.stride[1], p.padding[0], p.padding[1], p.ceilMode,
    );
  }
  avgPool2d(x: T, p: Pool2dParams): T {
    return this.a.avgPool2d(
      x, p.kernel[0], p.kernel[1], p.stride[0], p.stride[1], p.padding[0], p.padding[1], p.ceilMode, p.countIncludePad,
    );
  }
  avgPool2dBackward(dy: T, inputShape: Shape, p: Pool2dParams): T {
    return this.a.avgPool2dBackward(
      dy, inputShape, p.kernel[0], p.kernel[1], p.stride[0], p.stride[1], p.padding[0], p.padding[1], p.ceilMode,
      p.countIncludePad,
    );
  }
  globalAvgPool(x: T): T {
    return this.a.globalAvgPool(x);
  }
  globalAvgPoolBackward(dy: T, inputShape: Shape): T {
    return this.a.globalAvgPoolBackward(dy, inputShape);
  }

  // ---- linear ----
  linear(x: T, w: T, b: T | null): T {
    return this.a.linear(x, w, b);
  }
  linearBackward(x: T, w: T, dy: T, needs: GradNeeds): { dx?: T; dw?: T; db?: T } {
    return this.a.linearBackward(x, w, dy, needs.input, needs.weight, needs.bias);
  }

  // ---- loss ----
  crossEntropy(logits: T, labels: Int32Array, labelSmoothing: number): { loss: T; probs: T } {
    return this.a.crossEntropy(logits, labels, labelSmoothing);
  }
  crossEntropyBackward(probs: T, labels: Int32Array, labelSmoothing: number, gradScale: number): T {
    return this.a.crossEntropyBackward(probs, labels, labelSmoothing, gradScale);
  }

  // ---- channel plumbing ----
  concatChannels(xs: readonly T[]): T {
    return this.a.concatChannels(xs);
  }
  splitChannels(x: T, sizes: readonly number[]): T[] {
    return this.a.splitChannels(x, sizes);
  }
  shortcutA(x: T, outChannels: number, stride: number): T {
    return this.a.shortcutA(x, outChannels, stride);
  }
  shortcutABackward(dy: T, inputShape: Shape, stride: number): T {
    return this.a.shortcutABackward(dy, inputShape, stride);
  }

  // ---- compiled inference (native/plan.cc) ----
  planCreate(desc: PlanDescription): PlanHandle {
    // The plan's own winograd option beats the configured one.
    const winograd = desc.winograd && desc.winograd !== 'auto' ? desc.winograd : this.plan.winograd;
    return this.a.planCreate({ ...desc, ...this.plan, winograd });
  }
  planRun(plan: PlanHandle, x: Float32Array, n: number): Float32Array {
    return this.a.planRun(plan, x, n);
  }
  /**
   * planRun on a libuv pool thread. One run is in flight per process: runs serialize on the engine
   * lock anyway, and each waiting one would hold a pool thread that file I/O and image decoding
   * (sharp) need. A run queued behind another gets a copy of `x`, so the caller may reuse its array.
   */
  planRunAsync(plan: PlanHandle, x: Float32Array, n: number): Promise<Float32Array> {
    const queued = this.asyncRuns > 0;
    const input = queued ? x.slice() : x;
    // A native error at dispatch (a plan disposed meanwhile, no memory) becomes a rejection.
    const start = (): Promise<Float32Array> => {
      try {
        return this.a.planRunAsync(plan, input, n);
      } catch (e) {
        return Promise.reject(e);
      }
    };
    this.asyncRuns++;
    const run = (queued ? this.asyncTail.then(start) : start()).finally(() => { this.asyncRuns--; });
    this.asyncTail = run.then(() => undefined, () => undefined);
    return run;
  }
  private asyncTail: Promise<void> = Promise.resolve();
  private asyncRuns = 0;
  planCalibrate(plan: PlanHandle, x: Float32Array, n: number): Float32Array {
    return this.a.planCalibrate(plan, x, n);
  }
  planDispose(plan: PlanHandle): void {
    this.a.planDispose(plan);
  }
  planInfo(plan: PlanHandle): { bytes: number; implementations: { op: string; impl: string }[] } {
    return this.a.planInfo(plan);
  }
  /** OpenMP threads of this (the JS) thread's oneDNN calls; set it before compiling a plan. */
  setNumThreads(n: number): void {
    this.a.setNumThreads(n);
  }

  // ---- optimizer ----
  sgdStep(param: T, grad: T, momentumBuffer: T | null, firstStep: boolean, o: SgdOptions): void {
    this.a.sgdStep(param, grad, momentumBuffer, firstStep, o.lr, o.momentum, o.dampening, o.weightDecay, o.nesterov);
  }
}
