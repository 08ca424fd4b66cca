// compileForInference: a whole ResNet/ResNeXt turned into one native inference plan (see
// native/inference.cc). Lives in src/infer/ rather than in models/ because it is an execution path,
// not a model structure: the later inference work (bf16, an async predict, the server) builds on it.
//
// The walk below reads the model's modules once and emits a list of plan steps:
//   conv1+bn1 -> conv with ReLU post-op; max pool;
//   each block: the shortcut first (projection conv+BN into a new buffer, option A copy, or nothing:
//   an identity shortcut is the block input's own buffer), then the branch convs with ReLU post-ops,
//   and the last branch conv writes into the shortcut's buffer with a sum post-op followed by ReLU;
//   global average pool; the linear head.
// With `output` the walk stops early: at the pooled features (no head work at all), or at the end
// of the stem or a stage; the addon hands back whatever the last step wrote, as f32 NCHW. A model
// whose fc is an Identity ends at the pool too, as its forward does.
// BatchNorm is folded into each conv in float64 (models/fold.ts, shared with the ONNX exporter), so
// the plan computes the eval-mode network whatever mode the model is in (running statistics).
// Buffers are reused once their value is dead: a ResNet needs at most five.
import { defaultBackend } from '../backend/index.js';
import { supportsPlans, type PlanHandle, type PlanOp } from '../backend/types.js';
import { Identity, type BatchNorm2d, type Conv2d, type MaxPool2d } from '../nn/index.js';
import { ResidualBlock } from '../models/blocks.js';
import { foldConvBn } from '../models/fold.js';
import { ResNet, featureNames } from '../models/net.js';
import { conv2dParams } from '../tensor/index.js';

export interface CompileOptions {
  /** Per-sample input shape [C, H, W]. */
  input: readonly number[];
  /** Largest batch run() accepts (default 1). Primitives for it are built now; smaller batches on first use. */
  maxBatch?: number;
  /**
   * 'f32' (default) or 'bf16': activations and weights in bfloat16 (bias, accumulation and logits stay
   * f32), about twice as fast where the CPU has AVX512-BF16 or AMX, refused elsewhere. Outputs then
   * differ from f32 by bf16 rounding (about 3 significant digits), not within 1e-4.
   */
  dtype?: 'f32' | 'bf16';
  /**
   * Winograd for the wide 3x3 stride-1 f32 convs (the ResNets; ResNeXt's grouped convs cannot use
   * it). Unset: the plan decides (on where they carry enough of the work: 10-20% faster ResNet-50).
   * false: never, for memory: its weights and scratchpad cost more (ResNet-50 at maxBatch 8 with every
   * batch size run: 390 MB against 170). true: wherever eligible (3x3 stride 1, >= 64 channels) in
   * a blocked-layout plan (the ImageNet-width nets; the narrow CIFAR nets run NHWC, without it).
   */
  winograd?: boolean;
  /**
   * Where the plan stops: 'logits' (default, the head's output), 'pool' (the globally pooled
   * features [N, D], D the last stage's channels, e.g. 2048 for ResNet-50; the head is not run), or
   * 'stem' / 'layer1'..'layerN' (that stage's output map [N, C, H, W]).
   */
  output?: CompileOutput;
}

/** What a compiled plan outputs: the model's feature names (forwardFeatures) it can stop at. */
export type CompileOutput = 'logits' | 'pool' | 'stem' | `layer${number}`;

export interface CompiledModel {
  readonly input: readonly [number, number, number];
  readonly maxBatch: number;
  readonly dtype: 'f32' | 'bf16';
  /** The model's outputs (its classes; the pooled width when its fc is an Identity), whatever the plan stops at. */
  readonly numClasses: number;
  /** What run() returns per sample ('pool' when the model's fc is an Identity, though 'logits' was asked). */
  readonly output: CompileOutput;
  /** Per-sample shape of run()'s output: [classes] or [D] for 'logits' and 'pool', [C, H, W] for a stage. */
  readonly outputShape: readonly number[];
  /** Native bytes held: activation buffers and reordered weights. */
  readonly bytes: number;
  readonly disposed: boolean;
  /** The output ([n, ...outputShape] row-major: logits, or features) for `n` samples of NCHW float32 input, on this thread. */
  run(x: Float32Array, n: number): Float32Array;
  /**
   * run() off the JS thread (a libuv pool thread), so the event loop keeps serving while the kernels
   * work. Concurrent calls are safe: they run one after another. The input is copied at the call,
   * so the array may be reused at once. Rejects when the model is disposed before its turn.
   */
  runAsync(x: Float32Array, n: number): Promise<Float32Array>;
  /** The oneDNN implementation of every step at maxBatch (e.g. "brgconv:avx512_core"). */
  implementations(): { op: string; impl: string }[];
  /** Frees the plan's native memory now (a forgotten plan is freed by the garbage collector). */
  dispose(): void;
}

type Shape3 = [number, number, number];

/** Hands out buffer indices and takes them back when their value is dead. */
class Buffers {
  count = 0;
  private free: number[] = [];
  take(): number {
    return this.free.pop() ?? this.count++;
  }
  give(b: number): void {
    this.free.push(b);
  }
}

class PlanBuilder {
  readonly ops: PlanOp[] = [];
  readonly bufs = new Buffers();

  fail(path: string, problem: string): never {
    throw new Error(`compileForInference: ${path}: ${problem}`);
  }

  conv(path: string, conv: Conv2d, bn: BatchNorm2d, src: number, x: Shape3, dst: number, post: { relu: boolean; sum: boolean }): Shape3 {
    const [c, h, w] = x;
    if (c !== conv.inChannels) this.fail(path, `expects ${conv.inChannels} input channels, gets ${c}`);
    const p = conv2dParams(conv.options);
    const [kh, kw] = conv.kernelSize;
    const oh = Math.floor((h + 2 * p.padding[0] - p.dilation[0] * (kh - 1) - 1) / p.stride[0]) + 1;
    const ow = Math.floor((w + 2 * p.padding[1] - p.dilation[1] * (kw - 1) - 1) / p.stride[1]) + 1;
    if (oh < 1 || ow < 1) this.fail(path, `input ${x.join('x')} is too small for this ${kh}x${kw} stride ${p.stride[0]} convolution`);
    const { weight, bias } = foldConvBn(conv, bn);
    const out: Shape3 = [conv.outChannels, oh, ow];
    this.ops.push({
      type: 'conv', name: path, src, dst, in: x, out, kh, kw, sh: p.stride[0], sw: p.stride[1], ph: p.padding[0], pw: p.padding[1],
      dh: p.dilation[0], dw: p.dilation[1], groups: p.groups, relu: post.relu, sum: post.sum, weight, bias,
    });
    return out;
  }

  maxPool(path: string, m: MaxPool2d, src: number, x: Shape3, dst: number): Shape3 {
    const { kernelSize: k, stride: s, padding: p, ceilMode } = m;
    const size = (n: number) => {
      let o = (ceilMode ? Math.ceil : Math.floor)((n + 2 * p - k) / s) + 1;
      if (ceilMode && (o - 1) * s >= n + p) o--; // PyTorch: the last window starts inside the input or left padding
      return o;
    };
    const out: Shape3 = [x[0], size(x[1]), size(x[2])];
    if (out[1] < 1 || out[2] < 1) this.fail(path, `input ${x.join('x')} is too small for a ${k}x${k} stride ${s} max pool`);
    this.ops.push({ type: 'maxpool', name: path, src, dst, in: x, out, kh: k, kw: k, sh: s, sw: s, ph: p, pw: p });
    return out;
  }

  block(path: string, b: ResidualBlock, src: number, x: Shape3): { buf: number; shape: Shape3 } {
    const { shortcut, outChannels, stride } = b.spec;
    // The buffer the last branch conv writes: it holds the shortcut when there is one.
    let dst: number;
    if (shortcut === 'identity') {
      dst = src; // the block input is read by conv1 before the last conv overwrites it with the sum
    } else if (shortcut === 'projection') {
      const ds = b.downsample;
      const conv = ds?.at(0) as Conv2d | undefined, bn = ds?.at(1) as BatchNorm2d | undefined;
      if (!ds || ds.length !== 2 || !conv || !bn) this.fail(`${path}.downsample`, 'expected a projection shortcut (conv, BN)');
      dst = this.bufs.take();
      this.conv(`${path}.downsample`, conv, bn, src, x, dst, { relu: false, sum: false });
    } else if (shortcut === 'optionA') {
      dst = this.bufs.take();
      const out: Shape3 = [outChannels, Math.ceil(x[1] / stride), Math.ceil(x[2] / stride)];
      this.ops.push({ type: 'shortcutA', name: `${path}.shortcut`, src, dst, in: x, out, stride });
    } else {
      dst = this.bufs.take();
    }
    let cur = src, shape = x;
    const last = b.convs.length - 1;
    b.convs.forEach((conv, i) => {
      const isLast = i === last;
      const out = isLast ? dst : this.bufs.take();
      shape = this.conv(`${path}.conv${i + 1}`, conv, b.norms[i]!, cur, shape, out, { relu: true, sum: isLast && shortcut !== 'none' });
      if (cur !== src) this.bufs.give(cur);
      cur = out;
    });
    if (dst !== src) this.bufs.give(src);
    return { buf: dst, shape };
  }

  /** The ops up to `output`, and the per-sample shape the last one writes. */
  net(m: ResNet, input: Shape3, output: CompileOutput): { ops: PlanOp[]; shape: Shape3 } {
    const inBuf = this.bufs.take();
    let buf = this.bufs.take();
    let shape = this.conv('conv1', m.conv1, m.bn1, inBuf, input, buf, { relu: true, sum: false });
    this.bufs.give(inBuf);
    if (m.maxpool) {
      const next = this.bufs.take();
      shape = this.maxPool('maxpool', m.maxpool, buf, shape, next);
      this.bufs.give(buf);
      buf = next;
    }
    if (output === 'stem') return { ops: this.ops, shape };
    for (const [i, stage] of m.stages.entries()) {
      for (let j = 0; j < stage.length; j++) {
        const b = stage.at(j);
        const path = `layer${i + 1}.${j}`;
        if (!(b instanceof ResidualBlock)) {
          this.fail(path, `a ${b.constructor.name} cannot be compiled (ResNeXt forms (a)/(b) are not supported; ` +
            'convert their weights to form (c), the grouped bottleneck, with convertResNeXtBlockState)');
        }
        ({ buf, shape } = this.block(path, b, buf, shape));
      }
      if (output === `layer${i + 1}`) return { ops: this.ops, shape };
    }
    const pooled = this.bufs.take();
    this.ops.push({ type: 'gap', name: 'avgpool', src: buf, dst: pooled, in: shape, out: [shape[0], 1, 1] });
    this.bufs.give(buf);
    const fc = m.head;
    if (output === 'pool' || fc instanceof Identity) return { ops: this.ops, shape: [shape[0], 1, 1] };
    if (fc.inFeatures !== shape[0]) this.fail('fc', `takes ${fc.inFeatures} features, the trunk gives ${shape[0]}`);
    const logits = this.bufs.take();
    const bias = fc.bias ? fc.bias.toArray() : new Float32Array(fc.outFeatures);
    this.ops.push({ type: 'linear', name: 'fc', src: pooled, dst: logits, in: [shape[0], 1, 1], out: [fc.outFeatures, 1, 1], weight: fc.weight.toArray(), bias });
    return { ops: this.ops, shape: [fc.outFeatures, 1, 1] };
  }
}

function checkOptions(
  model: ResNet, opts: CompileOptions,
): { input: Shape3; maxBatch: number; dtype: 'f32' | 'bf16'; winograd: 'auto' | 'on' | 'off'; output: CompileOutput } {
  const input = opts.input;
  if (!Array.isArray(input) || input.length !== 3 || input.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new Error(`compileForInference: input must be [C, H, W] of positive integers, got ${JSON.stringify(input)}`);
  }
  const inC = model.spec.stem.conv.inChannels;
  if (input[0] !== inC) throw new Error(`compileForInference: ${model.spec.name} takes ${inC}-channel input, got [${input.join(', ')}]`);
  const maxBatch = opts.maxBatch ?? 1;
  if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new Error(`compileForInference: maxBatch must be a positive integer, got ${maxBatch}`);
  const dtype = opts.dtype ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'bf16') throw new Error(`compileForInference: dtype must be 'f32' or 'bf16', got ${JSON.stringify(dtype)}`);
  const w = opts.winograd;
  if (w !== undefined && typeof w !== 'boolean') throw new Error(`compileForInference: winograd must be true, false or unset, got ${JSON.stringify(w)}`);
  const output = opts.output ?? 'logits';
  const known = featureNames(model.spec);
  if (typeof output !== 'string' || !known.includes(output)) {
    throw new Error(`compileForInference: output must be one of ${known.map((k) => `'${k}'`).join(', ')} for ${model.spec.name}, got ${JSON.stringify(output)}`);
  }
  return {
    input: [input[0]!, input[1]!, input[2]!], maxBatch, dtype, winograd: w === undefined ? 'auto' : w ? 'on' : 'off', output: output as CompileOutput,
  };
}

/**
 * Compiles `model` for inference at one input shape: BN folded into the convs, ReLU and the
 * residual sum fused as conv post-ops, weights reordered once, every primitive and buffer made now.
 * Needs the native backend (call initBackend() first). The plan copies the weights: later changes
 * to the model are not seen by it.
 */
export function compileForInference(model: ResNet, opts: CompileOptions): CompiledModel {
  if (!(model instanceof ResNet)) {
    throw new Error('compileForInference: expected a ResNet/ResNeXt model (from createModel or loadModel)');
  }
  const backend = defaultBackend();
  if (!supportsPlans(backend)) {
    throw new Error('compileForInference needs the native backend, and the current one is the reference backend ' +
      '(call `await initBackend()` first; if the addon does not load, build it with `npm run build:native`). ' +
      'Without it, run the model directly: model.eval() and a forward inside noGrad().');
  }
  const nb = backend;
  const { input, maxBatch, dtype, winograd, output: asked } = checkOptions(model, opts);
  const b = new PlanBuilder();
  const { ops, shape } = b.net(model, input, asked);
  const output: CompileOutput = asked === 'logits' && model.head instanceof Identity ? 'pool' : asked;
  const outputShape = shape[1] === 1 && shape[2] === 1 && (output === 'pool' || output === 'logits') ? [shape[0]] : [...shape];
  const handle: PlanHandle = nb.planCreate({ input, dtype, winograd, maxBatch, buffers: b.bufs.count, inputBuffer: 0, ops });
  const info = nb.planInfo(handle);
  const numClasses = model.numClasses;
  const perSample = input[0] * input[1] * input[2];
  let disposed = false;
  const check = (method: string, x: Float32Array, n: number): void => {
    if (disposed) throw new Error(`compiled model: ${method}() after dispose()`);
    if (!(x instanceof Float32Array)) throw new Error('compiled model: input must be a Float32Array (NCHW)');
    if (!Number.isInteger(n) || n < 1 || n > maxBatch) {
      throw new Error(`compiled model: batch ${n} is outside 1..${maxBatch}; compile with a larger maxBatch`);
    }
    if (x.length !== n * perSample) {
      throw new Error(`compiled model: input has ${x.length} values, but ${n} x [${input.join(', ')}] needs ${n * perSample}`);
    }
  };
  return {
    input, maxBatch, dtype, numClasses, output, outputShape, bytes: info.bytes,
    get disposed() { return disposed; },
    run(x: Float32Array, n: number): Float32Array {
      check('run', x, n);
      return nb.planRun(handle, x, n);
    },
    runAsync(x: Float32Array, n: number): Promise<Float32Array> {
      try {
        check('runAsync', x, n);
      } catch (e) {
        return Promise.reject(e);
      }
      return nb.planRunAsync(handle, x, n).catch((e: unknown) => {
        throw disposed ? new Error('compiled model: dispose() was called before this runAsync() ran') : e;
      });
    },
    implementations: () => info.implementations.map((e) => ({ ...e })),
    dispose(): void {
      if (disposed) return;
      disposed = true;
      nb.planDispose(handle);
    },
  };
}
