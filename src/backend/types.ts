// The contract between the tensor layer and a compute backend.
//
// A backend owns the memory of its tensors and computes ops on them. It never sees autograd:
// the tensor layer (src/tensor) records the tape and calls the `...Backward` functions here.
// Shapes are logical and row-major: activations are NCHW, conv weights OIHW (grouped: [O, I/G, KH, KW]),
// linear weights [out, in], per-channel vectors [C]. How a backend lays the data out in memory is its
// own business (the native one keeps activations in oneDNN's layouts); `read` always returns logical
// row-major values.
//
// The tensor layer validates every argument (shapes, sizes, groups) before it calls a backend, so a
// backend may assume well-formed input. A backend must still never crash the process: a failure inside
// it is thrown as an Error.

export type Shape = readonly number[];
export type DType = 'float32';

/** An opaque tensor owned by a backend. Only the backend that made it may use it. */
export interface BackendTensor {
  readonly shape: Shape;
}

export interface Conv2dParams {
  stride: readonly [number, number];
  padding: readonly [number, number];
  dilation: readonly [number, number];
  groups: number;
  /**
   * What the convolution reads: 'f32' (default), or 'bf16' for mixed-precision training: x, w and (in
   * backward) dy are rounded to bfloat16, products are accumulated in f32, y comes back stored as bf16
   * (PyTorch autocast's semantics for a conv), dx has x's storage (bf16 for an activation, f32 for the
   * image), and dw, db are f32: the weights stay f32 master weights.
   */
  precision?: ComputeDtype;
}

export interface Pool2dParams {
  kernel: readonly [number, number];
  stride: readonly [number, number];
  padding: readonly [number, number];
  /** PyTorch's ceil_mode: output size rounds up (a window must still start inside the input or left padding). */
  ceilMode: boolean;
  /** avg pool only: PyTorch's count_include_pad (default true). */
  countIncludePad: boolean;
}

export interface SgdOptions {
  lr: number;
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
}

/** Which gradients a backward call must produce; the others come back undefined. */
export interface GradNeeds {
  input: boolean;
  weight: boolean;
  bias: boolean;
}

export interface BackendInfo {
  backend: 'native' | 'reference';
  /** oneDNN version, e.g. "2.6.3"; null for the reference backend. */
  onednnVersion: string | null;
  /** The CPU ISA oneDNN dispatches to, e.g. "avx512_core_amx"; null for the reference backend. */
  isa: string | null;
  threads: number;
}

export interface Backend<T extends BackendTensor = BackendTensor> {
  readonly name: 'native' | 'reference';
  info(): BackendInfo;

  // ---- memory ----
  /** A tensor holding a copy of `data` (logical row-major, length = product of shape). */
  fromArray(data: Float32Array, shape: Shape): T;
  /** A fresh logical row-major copy of the values. */
  read(t: T): Float32Array;
  zeros(shape: Shape): T;
  /** Frees the memory now. Using `t` afterwards is a bug the tensor layer prevents. */
  dispose(t: T): void;
  /** Bytes of memory `t` holds, for the garbage collector's accounting. */
  byteSize(t: T): number;
  /** Same values, new logical shape (same element count); disposable independently of `x` (a copy is fine). */
  reshape(x: T, shape: Shape): T;

  // ---- elementwise ----
  /**
   * a + b, same shapes: the residual sum. Ops on activations keep a bf16 input's storage (the native
   * engine stores the activations of bf16 training in bf16; `read` widens them to f32).
   */
  add(a: T, b: T): T;
  /** relu(a + b) in one pass: the end of a residual block. Its backward is reluBackward of the output. */
  addRelu(a: T, b: T): T;
  /** dst += src, same shapes (gradient accumulation). */
  addInPlace(dst: T, src: T): void;
  /** x * s. */
  scale(x: T, s: number): T;
  relu(x: T): T;
  /** Gradient of relu given its output y: dy where y > 0, else 0. */
  reluBackward(y: T, dy: T): T;

  // ---- convolution: x [N,C,H,W], w [O, C/groups, KH, KW], b [O] or null ----
  conv2d(x: T, w: T, b: T | null, p: Conv2dParams): T;
  conv2dBackward(x: T, w: T, dy: T, p: Conv2dParams, needs: GradNeeds): { dx?: T; dw?: T; db?: T };

  // ---- batch norm over [N,C,H,W] per channel; gamma, beta, running stats are [C] ----
  /**
   * Training mode: normalizes with the batch mean and biased variance, and updates the running
   * statistics in place as PyTorch does: running = (1 - momentum) * running + momentum * batch, the
   * variance term being the unbiased one. Returns what backward needs: the batch mean and 1/sqrt(var+eps).
   */
  batchNormTrain(x: T, gamma: T, beta: T, runningMean: T, runningVar: T, momentum: number, eps: number):
    { y: T; mean: T; invStd: T };
  /** Eval mode: normalizes with the running statistics. */
  batchNormEval(x: T, gamma: T, beta: T, runningMean: T, runningVar: T, eps: number): T;
  /** Backward of batchNormTrain. */
  batchNormBackward(x: T, gamma: T, mean: T, invStd: T, dy: T): { dx: T; dgamma: T; dbeta: T };
  /**
   * batchNormTrain followed by ReLU, in one pass on the native engine. `reluMask` is an opaque record of
   * where the output is positive, which the backward reads.
   */
  batchNormReluTrain(x: T, gamma: T, beta: T, runningMean: T, runningVar: T, momentum: number, eps: number):
    { y: T; mean: T; invStd: T; reluMask: T };
  /** Backward of batchNormReluTrain: dy is the gradient of its output. */
  batchNormReluBackward(x: T, gamma: T, mean: T, invStd: T, reluMask: T, dy: T): { dx: T; dgamma: T; dbeta: T };

  // ---- pooling ----
  /** Returns the output and an opaque record of the argmax positions for backward. */
  maxPool2d(x: T, p: Pool2dParams): { y: T; argmax: T };
  maxPool2dBackward(x: T, argmax: T, dy: T, p: Pool2dParams): T;
  avgPool2d(x: T, p: Pool2dParams): T;
  avgPool2dBackward(dy: T, inputShape: Shape, p: Pool2dParams): T;
  /** Mean over H and W: [N,C,H,W] -> [N,C,1,1] (AdaptiveAvgPool2d(1)). */
  globalAvgPool(x: T): T;
  globalAvgPoolBackward(dy: T, inputShape: Shape): T;

  // ---- linear: x [N,K], w [M,K], b [M] or null -> [N,M] ----
  linear(x: T, w: T, b: T | null): T;
  linearBackward(x: T, w: T, dy: T, needs: GradNeeds): { dx?: T; dw?: T; db?: T };

  // ---- loss: logits [N,K], labels in [0,K) ----
  /**
   * Cross-entropy with PyTorch's semantics (mean over the batch, label smoothing as in
   * torch.nn.functional.cross_entropy). Returns the loss as a tensor of shape [] and the softmax
   * probabilities, which the backward uses.
   */
  crossEntropy(logits: T, labels: Int32Array, labelSmoothing: number): { loss: T; probs: T };
  /** d(loss)/d(logits), times `gradScale` (the incoming gradient of the scalar loss). */
  crossEntropyBackward(probs: T, labels: Int32Array, labelSmoothing: number, gradScale: number): T;

  // ---- channel plumbing (ResNeXt forms a and b, CIFAR option-A shortcut) ----
  concatChannels(xs: readonly T[]): T;
  splitChannels(x: T, sizes: readonly number[]): T[];
  /**
   * Option-A shortcut of the CIFAR ResNets: keep every second row and column (stride 2, or 1 to keep
   * all), then pad channels with zeros, floor((outC - C) / 2) before and the rest after.
   */
  shortcutA(x: T, outChannels: number, stride: number): T;
  shortcutABackward(dy: T, inputShape: Shape, stride: number): T;

  // ---- optimizer ----
  /**
   * One SGD step in place with PyTorch's semantics (torch.optim.SGD): weight decay added to the
   * gradient, momentum buffer initialized to the first gradient, dampening, Nesterov.
   * `momentumBuffer` is null when momentum is 0; `firstStep` says the buffer is not yet initialized.
   */
  sgdStep(param: T, grad: T, momentumBuffer: T | null, firstStep: boolean, o: SgdOptions): void;

  // ---- optional capabilities: the native engine has them, the reference backend does not ----
  /** Sets the engine's thread count (OpenMP), e.g. for `--threads N` and the training governor. */
  setNumThreads?(n: number): void;
  /** Compiled inference plans (src/infer/compile.ts): BN folded, fusions, weights reordered once. */
  planCreate?(desc: PlanDescription): PlanHandle;
  planRun?(plan: PlanHandle, x: Float32Array, n: number): Float32Array;
  /** Runs an f32 plan and returns each op's output range over the batch: [min0, max0, min1, max1, ...]. */
  planCalibrate?(plan: PlanHandle, x: Float32Array, n: number): Float32Array;
  planRunAsync?(plan: PlanHandle, x: Float32Array, n: number): Promise<Float32Array>;
  planDispose?(plan: PlanHandle): void;
  planInfo?(plan: PlanHandle): { bytes: number; implementations: { op: string; impl: string }[] };
}

/** An inference plan owned by the addon (native/inference.cc); opaque to TypeScript. */
export type PlanHandle = { readonly __plan: unique symbol };

/**
 * One step of an inference plan. Shapes are per sample [C, H, W]; src/dst are buffer indices. In an
 * int8 plan, `qscale` is the calibrated scale of the op's output (x = qscale * q, q in u8, or s8 when
 * `qsigned`), and a conv with `keep` stays f32.
 */
export type PlanOp = { name: string; src: number; dst: number; in: number[]; out: number[]; qscale?: number; qsigned?: boolean } & (
  | {
    type: 'conv'; kh: number; kw: number; sh: number; sw: number; ph: number; pw: number; dh: number; dw: number;
    groups: number; relu: boolean; sum: boolean; weight: Float32Array; bias: Float32Array; keep?: boolean;
  }
  /** Max pool, or average over the pixels inside the input (PyTorch's count_include_pad=False); ceil mode shows in `out`. */
  | { type: 'maxpool' | 'avgpool'; kh: number; kw: number; sh: number; sw: number; ph: number; pw: number }
  | { type: 'shortcutA'; stride: number }
  | { type: 'gap' }
  | { type: 'linear'; weight: Float32Array; bias: Float32Array });

/** What convolutions compute in while training: 'f32', or 'bf16' mixed precision (f32 master weights). */
export type ComputeDtype = 'f32' | 'bf16';

/** What a compiled inference plan runs in: f32, bf16, or int8 convolutions with calibrated scales. */
export type PlanDtype = ComputeDtype | 'int8';

/** What planCreate compiles: buffers are allocated for `maxBatch` samples of their largest shape. */
export interface PlanDescription {
  input: number[];
  /**
   * Activations and weights in f32 (default) or bf16 (bias, accumulation and logits stay f32), or
   * int8: the convs in u8/s8 x s8 with the ops' calibrated scales (the head and global pool in f32).
   */
  dtype?: PlanDtype;
  /** Winograd for eligible 3x3 convs: 'auto' (default: the engine configuration's, see config.ts), 'on', 'off'. */
  winograd?: 'auto' | 'on' | 'off';
  maxBatch: number;
  buffers: number;
  inputBuffer: number;
  ops: PlanOp[];
}

/** A backend that compiles inference plans. */
export type PlanBackend = Backend & Required<Pick<Backend, 'planCreate' | 'planRun' | 'planRunAsync' | 'planDispose' | 'planInfo' | 'planCalibrate'>>;

export function supportsPlans(b: Backend): b is PlanBackend {
  return typeof b.planCreate === 'function' && typeof b.planRun === 'function' && typeof b.planRunAsync === 'function' &&
    typeof b.planDispose === 'function' && typeof b.planInfo === 'function' && typeof b.planCalibrate === 'function';
}
