// The differentiable ops: each validates its arguments (so a backend only ever sees well-formed
// input, and a person gets an error naming the op and the shapes), calls the backend, and records
// a GradNode when any input requires grad and the tape is on.
import type { Backend, BackendTensor, ComputeDtype, Conv2dParams, GradNeeds, Pool2dParams, Shape } from '../backend/types.js';
import { GradNode, Tensor, isGradEnabled, numel, shapeToString as s } from './tensor.js';

type Grads = (BackendTensor | undefined)[];

function sameBackend(op: string, ts: readonly Tensor[]): Backend {
  const b = ts[0].backend;
  for (const t of ts) {
    t.handle; // throws a clear error if disposed
    if (t.backend !== b) {
      throw new Error(`${op}: tensors live on different backends (${b.name} and ${t.backend.name}); make them on one`);
    }
  }
  return b;
}

/**
 * Wraps an op's output. Records the op when grad is on and an input requires it; otherwise frees
 * the saved extras at once.
 */
function record(backend: Backend, out: BackendTensor, op: string, inputs: readonly Tensor[],
  backward: (g: BackendTensor) => Grads, saved: readonly BackendTensor[] = []): Tensor {
  const needed = isGradEnabled() && inputs.some((t) => t.requiresGrad);
  if (!needed) {
    for (const h of saved) backend.dispose(h);
    return new Tensor(backend, out);
  }
  let released = false;
  const node: GradNode = {
    op,
    inputs,
    backward,
    release() {
      if (released) return;
      released = true;
      for (const h of saved) backend.dispose(h);
    },
  };
  return new Tensor(backend, out, { gradNode: node });
}

function needs(input: Tensor | null | undefined, weight?: Tensor | null, bias?: Tensor | null): GradNeeds {
  return { input: !!input?.requiresGrad, weight: !!weight?.requiresGrad, bias: !!bias?.requiresGrad };
}

// ---- argument checks ----

function checkInt(op: string, name: string, v: number, min: number): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    throw new Error(`${op}: ${name} must be an integer >= ${min}, got ${String(v)}`);
  }
}

function pair(op: string, name: string, v: number | readonly [number, number], min: number): [number, number] {
  const p: [number, number] = typeof v === 'number' ? [v, v] : [v[0], v[1]];
  if (!Array.isArray(v) && typeof v !== 'number') throw new Error(`${op}: ${name} must be a number or [h, w], got ${String(v)}`);
  checkInt(op, `${name}[0]`, p[0], min);
  checkInt(op, `${name}[1]`, p[1], min);
  return p;
}

function checkRank(op: string, name: string, t: Tensor, rank: number, layout: string): void {
  if (t.shape.length !== rank) {
    throw new Error(`${op}: ${name} must be ${rank}-D ${layout}, got ${s(t.shape)}`);
  }
}

/** PyTorch's output size for conv and pooling windows. */
export function windowOutputSize(size: number, kernel: number, stride: number, pad: number, dilation: number, ceil: boolean): number {
  const span = size + 2 * pad - dilation * (kernel - 1) - 1;
  let out = (ceil ? Math.ceil(span / stride) : Math.floor(span / stride)) + 1;
  // With ceil_mode the last window must start inside the input or the left padding.
  if (ceil && (out - 1) * stride >= size + pad) out--;
  return out;
}

// ---- convolution ----

export interface Conv2dOptions {
  stride?: number | readonly [number, number];
  padding?: number | readonly [number, number];
  dilation?: number | readonly [number, number];
  groups?: number;
}

export function conv2dParams(o: Conv2dOptions = {}): Conv2dParams {
  const groups = o.groups ?? 1;
  checkInt('conv2d', 'groups', groups, 1);
  return {
    stride: pair('conv2d', 'stride', o.stride ?? 1, 1),
    padding: pair('conv2d', 'padding', o.padding ?? 0, 0),
    dilation: pair('conv2d', 'dilation', o.dilation ?? 1, 1),
    groups,
  };
}

export function conv2dOutputShape(x: Shape, w: Shape, p: Conv2dParams): number[] {
  const oh = windowOutputSize(x[2], w[2], p.stride[0], p.padding[0], p.dilation[0], false);
  const ow = windowOutputSize(x[3], w[3], p.stride[1], p.padding[1], p.dilation[1], false);
  return [x[0], w[0], oh, ow];
}

// ---- mixed precision ----

export type { ComputeDtype };
let convDtype: ComputeDtype = 'f32';

/**
 * Runs `fn` with convolutions in `dtype`, like PyTorch's `torch.autocast('cpu', dtype=torch.bfloat16)`
 * for a conv net: under 'bf16' each conv2d reads its input and weight rounded to bfloat16, accumulates
 * in f32 and stores its output in bf16; BatchNorm (with f32 statistics, scale and shift), ReLU, the
 * residual sums and max pooling then read and write bf16 activations, and the gradients flowing back
 * between them are bf16 too. The global average pool hands the classifier f32; the classifier, the loss,
 * the parameters (f32 master weights), their gradients and the optimizer state stay f32. `read()`
 * of a bf16 activation widens it to f32. bf16 keeps f32's exponent range, so no loss scaling is needed
 * (unlike fp16). The native backend needs AVX512-BF16 (or AMX) for 'bf16' and refuses it otherwise,
 * with the reason; the reference backend emulates it (rounds to bf16 where native stores bf16, computes
 * in f32).
 */
export function autocast<R>(dtype: ComputeDtype, fn: () => R): R {
  if (dtype !== 'f32' && dtype !== 'bf16') throw new Error(`autocast: dtype must be "f32" or "bf16", got "${String(dtype)}"`);
  const before = convDtype;
  convDtype = dtype;
  try {
    return fn();
  } finally {
    convDtype = before;
  }
}

/** The precision convolutions run in here ('f32' outside any `autocast`). */
export function autocastDtype(): ComputeDtype {
  return convDtype;
}

export function conv2d(x: Tensor, weight: Tensor, bias: Tensor | null = null, o: Conv2dOptions = {}): Tensor {
  const op = 'conv2d';
  const backend = sameBackend(op, bias ? [x, weight, bias] : [x, weight]);
  // The backward (run later, outside any autocast) reads in the same precision as this forward.
  const p: Conv2dParams = convDtype === 'bf16' ? { ...conv2dParams(o), precision: 'bf16' } : conv2dParams(o);
  checkRank(op, 'input', x, 4, 'NCHW');
  checkRank(op, 'weight', weight, 4, '[out, in/groups, kH, kW]');
  const [, c] = x.shape;
  const [oc, icg] = weight.shape;
  const desc = `input ${s(x.shape)}, weight ${s(weight.shape)}, groups ${p.groups}`;
  if (c % p.groups !== 0) throw new Error(`${op}: input channels ${c} are not divisible by groups ${p.groups} (${desc})`);
  if (oc % p.groups !== 0) throw new Error(`${op}: output channels ${oc} are not divisible by groups ${p.groups} (${desc})`);
  if (icg * p.groups !== c) {
    throw new Error(`${op}: input has ${c} channels but the weight expects ${icg * p.groups} (${desc})`);
  }
  if (bias && (bias.shape.length !== 1 || bias.shape[0] !== oc)) {
    throw new Error(`${op}: bias must be [${oc}], got ${s(bias.shape)} (${desc})`);
  }
  const outShape = conv2dOutputShape(x.shape, weight.shape, p);
  if (outShape[2] < 1 || outShape[3] < 1) {
    throw new Error(`${op}: the kernel does not fit the padded input (${desc}, stride ${s(p.stride)}, ` +
      `padding ${s(p.padding)}, dilation ${s(p.dilation)}): output would be ${s(outShape)}`);
  }
  const out = backend.conv2d(x.handle, weight.handle, bias?.handle ?? null, p);
  return record(backend, out, op, bias ? [x, weight, bias] : [x, weight], (g) => {
    const r = backend.conv2dBackward(x.handle, weight.handle, g, p, needs(x, weight, bias));
    return [r.dx, r.dw, r.db];
  });
}

// ---- batch norm ----

export interface BatchNormOptions {
  training: boolean;
  momentum?: number;
  eps?: number;
}

function checkBatchNorm(op: string, x: Tensor, weight: Tensor, bias: Tensor, runningMean: Tensor, runningVar: Tensor,
  o: BatchNormOptions): { backend: Backend; momentum: number; eps: number } {
  const backend = sameBackend(op, [x, weight, bias, runningMean, runningVar]);
  checkRank(op, 'input', x, 4, 'NCHW');
  const c = x.shape[1];
  for (const [name, t] of [['weight', weight], ['bias', bias], ['running_mean', runningMean], ['running_var', runningVar]] as const) {
    if (t.shape.length !== 1 || t.shape[0] !== c) {
      throw new Error(`${op}: ${name} must be [${c}] for input ${s(x.shape)}, got ${s(t.shape)}`);
    }
  }
  const momentum = o.momentum ?? 0.1;
  const eps = o.eps ?? 1e-5;
  if (!(eps > 0)) throw new Error(`${op}: eps must be > 0, got ${eps}`);
  if (!(momentum >= 0 && momentum <= 1)) throw new Error(`${op}: momentum must be in [0, 1], got ${momentum}`);
  if (o.training && x.shape[0] * x.shape[2] * x.shape[3] < 2) {
    throw new Error(`${op}: training needs more than one value per channel, got input ${s(x.shape)}; use a batch > 1 or eval mode`);
  }
  return { backend, momentum, eps };
}

/** The backward of a training batch norm drops the gradients nobody needs (the backend computes all three). */
function keepNeeded(backend: Backend, inputs: readonly Tensor[], grads: Grads): Grads {
  inputs.forEach((t, i) => {
    if (!t.requiresGrad && grads[i]) { backend.dispose(grads[i]!); grads[i] = undefined; }
  });
  return grads;
}

export function batchNorm(x: Tensor, weight: Tensor, bias: Tensor, runningMean: Tensor, runningVar: Tensor,
  o: BatchNormOptions): Tensor {
  const op = 'batch_norm';
  const { backend, momentum, eps } = checkBatchNorm(op, x, weight, bias, runningMean, runningVar, o);
  if (!o.training) {
    const out = backend.batchNormEval(x.handle, weight.handle, bias.handle, runningMean.handle, runningVar.handle, eps);
    return record(backend, out, op, [x, weight, bias], () => {
      throw new Error(`${op}: backward through eval-mode batch norm is not supported; call model.train() to train`);
    });
  }
  const { y, mean, invStd } = backend.batchNormTrain(x.handle, weight.handle, bias.handle, runningMean.handle,
    runningVar.handle, momentum, eps);
  return record(backend, y, op, [x, weight, bias], (g) => {
    const r = backend.batchNormBackward(x.handle, weight.handle, mean, invStd, g);
    return keepNeeded(backend, [x, weight, bias], [r.dx, r.dgamma, r.dbeta]);
  }, [mean, invStd]);
}

/**
 * relu(batchNorm(x, ...)). In training, one fused op (the native engine makes one pass over the data
 * and keeps a 1-bit mask for the backward instead of the BN output); in eval, the two ops.
 */
export function batchNormRelu(x: Tensor, weight: Tensor, bias: Tensor, runningMean: Tensor, runningVar: Tensor,
  o: BatchNormOptions): Tensor {
  const op = 'batch_norm_relu';
  if (!o.training) return relu(batchNorm(x, weight, bias, runningMean, runningVar, o));
  const { backend, momentum, eps } = checkBatchNorm(op, x, weight, bias, runningMean, runningVar, o);
  const { y, mean, invStd, reluMask } = backend.batchNormReluTrain(x.handle, weight.handle, bias.handle, runningMean.handle,
    runningVar.handle, momentum, eps);
  return record(backend, y, op, [x, weight, bias], (g) => {
    const r = backend.batchNormReluBackward(x.handle, weight.handle, mean, invStd, reluMask, g);
    return keepNeeded(backend, [x, weight, bias], [r.dx, r.dgamma, r.dbeta]);
  }, [mean, invStd, reluMask]);
}

// ---- elementwise ----

export function relu(x: Tensor): Tensor {
  const backend = sameBackend('relu', [x]);
  const out = backend.relu(x.handle);
  // The backward reads the output: `out` stays alive as long as the result tensor does.
  const result: Tensor = record(backend, out, 'relu', [x], (g) => [backend.reluBackward(result.handle, g)]);
  return result;
}

export function add(a: Tensor, b: Tensor): Tensor {
  const backend = sameBackend('add', [a, b]);
  if (s(a.shape) !== s(b.shape)) throw new Error(`add: shapes differ: ${s(a.shape)} and ${s(b.shape)}`);
  const out = backend.add(a.handle, b.handle);
  return record(backend, out, 'add', [a, b], (g) => [g, g]);
}

/** relu(a + b) in one op: the end of a residual block. The backward reads the output's sign only. */
export function addRelu(a: Tensor, b: Tensor): Tensor {
  const backend = sameBackend('add_relu', [a, b]);
  if (s(a.shape) !== s(b.shape)) throw new Error(`add_relu: shapes differ: ${s(a.shape)} and ${s(b.shape)}`);
  const out = backend.addRelu(a.handle, b.handle);
  // The backward reads the output: `out` stays alive as long as the result tensor does. Both inputs
  // get the same gradient.
  const result: Tensor = record(backend, out, 'add_relu', [a, b], (g) => {
    const d = backend.reluBackward(result.handle, g);
    return [d, d];
  });
  return result;
}

export function mulScalar(x: Tensor, k: number): Tensor {
  const backend = sameBackend('mul', [x]);
  if (!Number.isFinite(k)) throw new Error(`mul: scalar must be finite, got ${k}`);
  return record(backend, backend.scale(x.handle, k), 'mul', [x], (g) => [backend.scale(g, k)]);
}

// ---- pooling ----

export interface Pool2dOptions {
  kernel: number | readonly [number, number];
  stride?: number | readonly [number, number];
  padding?: number | readonly [number, number];
  ceilMode?: boolean;
  countIncludePad?: boolean;
}

function poolParams(op: string, x: Tensor, o: Pool2dOptions): { p: Pool2dParams; out: number[] } {
  checkRank(op, 'input', x, 4, 'NCHW');
  const kernel = pair(op, 'kernel', o.kernel, 1);
  const stride = pair(op, 'stride', o.stride ?? kernel, 1);
  const padding = pair(op, 'padding', o.padding ?? 0, 0);
  if (padding[0] * 2 > kernel[0] || padding[1] * 2 > kernel[1]) {
    throw new Error(`${op}: padding ${s(padding)} must be at most half the kernel ${s(kernel)}`);
  }
  const p: Pool2dParams = { kernel, stride, padding, ceilMode: !!o.ceilMode, countIncludePad: o.countIncludePad ?? true };
  const oh = windowOutputSize(x.shape[2], kernel[0], stride[0], padding[0], 1, p.ceilMode);
  const ow = windowOutputSize(x.shape[3], kernel[1], stride[1], padding[1], 1, p.ceilMode);
  if (oh < 1 || ow < 1) {
    throw new Error(`${op}: kernel ${s(kernel)} with padding ${s(padding)} does not fit input ${s(x.shape)}`);
  }
  return { p, out: [x.shape[0], x.shape[1], oh, ow] };
}

export function maxPool2d(x: Tensor, o: Pool2dOptions): Tensor {
  const backend = sameBackend('max_pool2d', [x]);
  const { p } = poolParams('max_pool2d', x, o);
  const { y, argmax } = backend.maxPool2d(x.handle, p);
  return record(backend, y, 'max_pool2d', [x], (g) => [backend.maxPool2dBackward(x.handle, argmax, g, p)], [argmax]);
}

export function avgPool2d(x: Tensor, o: Pool2dOptions): Tensor {
  const backend = sameBackend('avg_pool2d', [x]);
  const { p } = poolParams('avg_pool2d', x, o);
  const inShape = x.shape;
  return record(backend, backend.avgPool2d(x.handle, p), 'avg_pool2d', [x], (g) => [backend.avgPool2dBackward(g, inShape, p)]);
}

/** AdaptiveAvgPool2d((1, 1)): the mean over H and W, [N,C,H,W] -> [N,C,1,1]. */
export function globalAvgPool(x: Tensor): Tensor {
  const backend = sameBackend('adaptive_avg_pool2d', [x]);
  checkRank('adaptive_avg_pool2d', 'input', x, 4, 'NCHW');
  const inShape = x.shape;
  return record(backend, backend.globalAvgPool(x.handle), 'adaptive_avg_pool2d', [x],
    (g) => [backend.globalAvgPoolBackward(g, inShape)]);
}

// ---- shape ----

export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const backend = sameBackend('reshape', [x]);
  const total = numel(x.shape);
  const out = [...shape];
  const unknown = out.indexOf(-1);
  if (out.some((d, i) => !Number.isInteger(d) || (d < 1 && !(d === -1 && i === unknown))) || out.lastIndexOf(-1) !== unknown) {
    throw new Error(`reshape: ${s(shape)} is not a valid shape (positive sizes, at most one -1)`);
  }
  if (unknown >= 0) {
    const known = out.reduce((a, d) => (d === -1 ? a : a * d), 1);
    if (total % known !== 0) throw new Error(`reshape: cannot reshape ${s(x.shape)} to ${s(shape)}`);
    out[unknown] = total / known;
  }
  if (numel(out) !== total) throw new Error(`reshape: cannot reshape ${s(x.shape)} (${total} elements) to ${s(shape)}`);
  const inShape = x.shape;
  return record(backend, backend.reshape(x.handle, out), 'reshape', [x], (g) => [backend.reshape(g, inShape)]);
}

/** torch.flatten(x, 1): [N, ...] -> [N, rest]. */
export function flatten(x: Tensor): Tensor {
  return reshape(x, [x.shape[0], -1]);
}

// ---- linear and loss ----

export function linear(x: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor {
  const op = 'linear';
  const backend = sameBackend(op, bias ? [x, weight, bias] : [x, weight]);
  checkRank(op, 'input', x, 2, '[N, in]');
  checkRank(op, 'weight', weight, 2, '[out, in]');
  if (x.shape[1] !== weight.shape[1]) {
    throw new Error(`${op}: input ${s(x.shape)} has ${x.shape[1]} features but weight ${s(weight.shape)} expects ${weight.shape[1]}`);
  }
  if (bias && (bias.shape.length !== 1 || bias.shape[0] !== weight.shape[0])) {
    throw new Error(`${op}: bias must be [${weight.shape[0]}], got ${s(bias.shape)}`);
  }
  const out = backend.linear(x.handle, weight.handle, bias?.handle ?? null);
  return record(backend, out, op, bias ? [x, weight, bias] : [x, weight], (g) => {
    const r = backend.linearBackward(x.handle, weight.handle, g, needs(x, weight, bias));
    return [r.dx, r.dw, r.db];
  });
}

export interface CrossEntropyOptions {
  labelSmoothing?: number;
}

/** Mean cross-entropy of logits [N, K] against class indices, as torch.nn.functional.cross_entropy. */
export function crossEntropy(logits: Tensor, labels: Int32Array | readonly number[], o: CrossEntropyOptions = {}): Tensor {
  const op = 'cross_entropy';
  const backend = sameBackend(op, [logits]);
  checkRank(op, 'logits', logits, 2, '[N, classes]');
  const [n, k] = logits.shape;
  const y = labels instanceof Int32Array ? labels : Int32Array.from(labels);
  if (y.length !== n) throw new Error(`${op}: ${y.length} labels for ${n} rows of logits ${s(logits.shape)}`);
  for (let i = 0; i < n; i++) {
    if (!(y[i] >= 0 && y[i] < k) || labels[i] !== y[i]) {
      throw new Error(`${op}: label ${labels[i]} at index ${i} is outside [0, ${k}) for logits ${s(logits.shape)}`);
    }
  }
  const smoothing = o.labelSmoothing ?? 0;
  if (!(smoothing >= 0 && smoothing <= 1)) throw new Error(`${op}: labelSmoothing must be in [0, 1], got ${smoothing}`);
  const { loss, probs } = backend.crossEntropy(logits.handle, y, smoothing);
  return record(backend, loss, op, [logits], (g) => {
    const gradScale = backend.read(g)[0];
    return [backend.crossEntropyBackward(probs, y, smoothing, gradScale)];
  }, [probs]);
}

// ---- channel plumbing ----

export function concatChannels(xs: readonly Tensor[]): Tensor {
  const op = 'concat';
  if (xs.length === 0) throw new Error(`${op}: needs at least one tensor`);
  const backend = sameBackend(op, xs);
  const [n, , h, w] = xs[0].shape;
  for (const t of xs) {
    checkRank(op, 'input', t, 4, 'NCHW');
    if (t.shape[0] !== n || t.shape[2] !== h || t.shape[3] !== w) {
      throw new Error(`${op}: inputs must agree on N, H, W: ${xs.map((x) => s(x.shape)).join(' ')}`);
    }
  }
  const sizes = xs.map((t) => t.shape[1]);
  return record(backend, backend.concatChannels(xs.map((t) => t.handle)), op, xs, (g) => backend.splitChannels(g, sizes));
}

export function splitChannels(x: Tensor, sizes: readonly number[]): Tensor[] {
  const op = 'split';
  const backend = sameBackend(op, [x]);
  checkRank(op, 'input', x, 4, 'NCHW');
  sizes.forEach((c, i) => checkInt(op, `sizes[${i}]`, c, 1));
  const total = sizes.reduce((a, b) => a + b, 0);
  if (total !== x.shape[1]) throw new Error(`${op}: sizes ${s(sizes)} add up to ${total}, not the ${x.shape[1]} channels of ${s(x.shape)}`);
  const parts = backend.splitChannels(x.handle, sizes);
  if (!(isGradEnabled() && x.requiresGrad)) return parts.map((h) => new Tensor(backend, h));
  // Each part is its own op whose backward places its gradient into a zero tensor of x's shape.
  let offset = 0;
  return parts.map((h, i) => {
    const before = offset;
    offset += sizes[i];
    return record(backend, h, op, [x], (g) => {
      const pieces: BackendTensor[] = [];
      const zerosOf = (c: number) => backend.zeros([x.shape[0], c, x.shape[2], x.shape[3]]);
      if (before > 0) pieces.push(zerosOf(before));
      pieces.push(g);
      const after = x.shape[1] - before - sizes[i];
      if (after > 0) pieces.push(zerosOf(after));
      const full = backend.concatChannels(pieces);
      for (const piece of pieces) if (piece !== g) backend.dispose(piece);
      return [full];
    });
  });
}

/** The CIFAR ResNets' option-A shortcut: subsample by `stride`, zero-pad channels to outChannels. */
export function shortcutA(x: Tensor, outChannels: number, stride: number): Tensor {
  const op = 'shortcut_a';
  const backend = sameBackend(op, [x]);
  checkRank(op, 'input', x, 4, 'NCHW');
  checkInt(op, 'stride', stride, 1);
  if (stride > 2) throw new Error(`${op}: stride must be 1 or 2, got ${stride}`);
  if (!Number.isInteger(outChannels) || outChannels < x.shape[1]) {
    throw new Error(`${op}: outChannels ${outChannels} must be an integer >= the input's ${x.shape[1]} channels`);
  }
  const inShape = x.shape;
  return record(backend, backend.shortcutA(x.handle, outChannels, stride), op, [x],
    (g) => [backend.shortcutABackward(g, inShape, stride)]);
}
