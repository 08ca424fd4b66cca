// compileForInference: a whole ResNet/ResNeXt turned into one native inference plan (see
// native/inference.cc). Lives in src/infer/ rather than in models/ because it is an execution path,
// not a model structure: the later inference work (bf16, an async predict, the server) builds on it.
//
// The plan is a reader of the model's lowered graph (models/graph.ts, the one description of the
// network that trace and ONNX export read too). PlanReader fuses nodes into plan ops: a conv takes
// its BN (folded in float64, models/fold.ts), the ReLU after it, and the residual sum whose branch it
// ends, as a `sum` post-op onto the buffer that already holds the shortcut (for an identity shortcut,
// the block input's own buffer). Ops are ordered so every shortcut is computed before the conv that
// sums onto it, and only the ops the asked output needs are emitted: a plan may stop at the pooled
// features (no head work at all) or at the end of the stem or a stage; the addon hands back whatever
// the last op wrote, as f32 NCHW. A model whose fc is an Identity ends at the pool, as its forward does.
// The plan computes the eval-mode network whatever mode the model is in (running statistics).
// Buffers are taken back once no read of their value is due: a ResNet needs at most five.
import { defaultBackend } from '../backend/index.js';
import { supportsPlans, type PlanBackend, type PlanDtype, type PlanHandle, type PlanOp } from '../backend/types.js';
import { BatchNorm2d, Conv2d, Identity, Linear, type Module } from '../nn/index.js';
import { foldConv, foldConvBn } from '../models/fold.js';
import { inputsOf, moduleAt, shapeOf, type ConvSpec, type Graph, type GraphNode, type ValueId } from '../models/graph.js';
import { ResNet, featureNames, inputChannels } from '../models/net.js';
import { conv2dParams } from '../tensor/index.js';
import { checkCalibration, mergeRanges, quantizeOps, type Calibration } from './quantize.js';
import { recordValueRanges } from './value_ranges.js';

export interface CompileOptions {
  /** Per-sample input shape [C, H, W]. */
  input: readonly number[];
  /** Largest batch run() accepts (default 1). Primitives for it are built now; smaller batches on first use. */
  maxBatch?: number;
  /**
   * 'f32' (default) or 'bf16': activations and weights in bfloat16 (bias, accumulation and logits stay
   * f32), about twice as fast where the CPU has AVX512-BF16 or AMX, refused elsewhere. Outputs then
   * differ from f32 by bf16 rounding (about 3 significant digits), not within 1e-4.
   * 'int8': post-training static quantization (needs `calibration`, from calibrate()): the convs in
   * u8/s8 x s8 on AVX512-VNNI (refused without it), the stem conv, global pool and head in f32.
   */
  dtype?: PlanDtype;
  /** int8: the ranges calibrate() recorded for this model at this input shape. */
  calibration?: Calibration;
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
  readonly dtype: PlanDtype;
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

/** Hands out buffer indices and takes them back once no read of the value they hold is due. */
class Buffers {
  count = 0;
  private free: number[] = [];
  private pending: number[] = [];
  take(): number {
    const b = this.free.pop() ?? this.count++;
    this.pending[b] = 0;
    return b;
  }
  /** `reads` more reads of the value now held in `b` are due (negative: done). */
  hold(b: number, reads: number): void {
    this.pending[b]! += reads;
  }
  idle(b: number): boolean {
    return this.pending[b] === 0;
  }
  /** Takes `b` back if no read is due. */
  recycle(b: number): void {
    if (this.pending[b] === 0 && !this.free.includes(b)) this.free.push(b);
  }
}

/**
 * One plan op made of graph nodes: a conv with its BN folded, the ReLU after it and the residual sum
 * (its shortcut, `sumInto`, is the buffer the conv accumulates into); or a pool, shortcut, GAP or
 * linear node alone; or a flatten, which only renames its input (no op).
 */
interface Step {
  node: Extract<GraphNode, { op: 'conv' | 'maxpool' | 'avgpool' | 'shortcutA' | 'gap' | 'flatten' | 'linear' }>;
  reads: ValueId[];
  sumInto: ValueId | null;
  relu: boolean;
  /** The value the step leaves (the ReLU's or the sum's when they are fused in). */
  result: ValueId;
}

/** Reads a lowered network (models/graph.ts) into plan ops: fusion, an order, buffers. */
class PlanReader {
  readonly ops: PlanOp[] = [];
  readonly bufs = new Buffers();
  private readonly modules: Map<string, Module>;
  private readonly steps = new Map<ValueId, Step>(); // by result value
  private readonly bufOf = new Map<ValueId, number>();

  constructor(private readonly g: Graph, model: Module) {
    this.modules = new Map(model.namedModules());
  }

  fail(path: string, problem: string): never {
    throw new Error(`compileForInference: ${path}: ${problem}`);
  }

  private shape3(v: ValueId): Shape3 {
    const s = shapeOf(this.g, v);
    return s.length === 3 ? [s[0]!, s[1]!, s[2]!] : [s[0]!, 1, 1];
  }

  private module<M extends Module>(path: string, type: new (...a: never[]) => M, conv?: ConvSpec): M {
    try {
      return moduleAt(this.modules, path, type, conv);
    } catch (e) {
      throw new Error(`compileForInference: ${(e as Error).message}`, { cause: e });
    }
  }

  /** Groups the nodes into steps: a conv takes the ReLU and the sum that are its only readers. */
  private fuse(): void {
    const readers: number[][] = Array.from({ length: this.g.nodes.length + 1 }, () => []);
    this.g.nodes.forEach((n, i) => inputsOf(n).forEach((v) => readers[v]!.push(i)));
    const only = (v: ValueId): GraphNode | null => (readers[v]!.length === 1 ? this.g.nodes[readers[v]![0]!]! : null);
    const absorbed = new Set<GraphNode>();
    this.g.nodes.forEach((n, i) => {
      const v = i + 1;
      if (absorbed.has(n)) return;
      if (n.op === 'relu' || n.op === 'add') {
        this.fail(n.path, `a ${n.op === 'relu' ? 'ReLU' : 'sum'} that does not follow a convolution cannot be compiled`);
      }
      if (n.op === 'batchnorm' || n.op === 'concat') {
        this.fail(n.path, `${n.op === 'concat' ? 'a concatenation' : 'a BatchNorm that does not follow a convolution'} cannot be compiled ` +
          '(ResNeXt forms (a)/(b): convert their weights to form (c), the grouped bottleneck, with convertResNeXtBlockState)');
      }
      const step: Step = { node: n, reads: inputsOf(n), sumInto: null, relu: false, result: v };
      if (n.op === 'conv') {
        let next = only(v);
        if (next?.op === 'add' && next.src === v) {
          step.sumInto = next.other;
          step.reads = [n.src, next.other];
          absorbed.add(next);
          step.result = this.g.nodes.indexOf(next) + 1;
          next = only(step.result);
        }
        if (next?.op === 'relu') {
          step.relu = true;
          absorbed.add(next);
          step.result = this.g.nodes.indexOf(next) + 1;
        }
      }
      this.steps.set(step.result, step);
    });
  }

  /** The ops that compute `output`, each after what it reads (a sum's shortcut before its conv). */
  read(output: ValueId): { ops: PlanOp[]; shape: Shape3 } {
    this.fuse();
    const order: Step[] = [];
    const seen = new Set<Step>();
    const visit = (v: ValueId): void => {
      if (v === 0) return;
      const s = this.steps.get(v);
      if (!s) this.fail(this.g.nodes[v - 1]!.path, 'its value is read past a fused ReLU or sum');
      if (seen.has(s)) return;
      seen.add(s);
      s.reads.forEach(visit);
      order.push(s);
    };
    visit(output);
    const pending = new Map<ValueId, number>();
    for (const s of order) for (const v of s.reads) pending.set(v, (pending.get(v) ?? 0) + 1);
    const inBuf = this.bufs.take();
    this.bufOf.set(0, inBuf);
    this.bufs.hold(inBuf, pending.get(0) ?? 0);
    for (const s of order) {
      const read = s.reads.map((v) => this.bufOf.get(v)!);
      for (const b of read) this.bufs.hold(b, -1);
      let dst: number;
      if (s.node.op === 'flatten') {
        dst = read[0]!; // the same bytes: [C, 1, 1] is [C]
      } else if (s.sumInto !== null) {
        dst = this.bufOf.get(s.sumInto)!;
        if (!this.bufs.idle(dst)) this.fail(s.node.path, 'the shortcut it sums onto is read again later, so the sum cannot overwrite it');
      } else {
        dst = this.bufs.take();
      }
      this.bufOf.set(s.result, dst);
      this.emit(s, dst);
      this.bufs.hold(dst, (pending.get(s.result) ?? 0) + (s.result === output ? 1 : 0)); // the plan's output stays
      for (const b of [...read, dst]) this.bufs.recycle(b);
    }
    return { ops: this.ops, shape: this.shape3(output) };
  }

  private emit(s: Step, dst: number): void {
    const n = s.node;
    if (n.op === 'flatten') return;
    const src = this.bufOf.get(n.src)!;
    const base = { name: n.path, src, dst, in: this.shape3(n.src), out: this.shape3(s.result) };
    switch (n.op) {
      case 'conv': {
        const c = n.conv;
        const conv = this.module(n.path, Conv2d, c);
        const folded = n.bn ? foldConvBn(conv, this.module(n.bn, BatchNorm2d)) : foldConv(conv, null);
        const p = conv2dParams(conv.options);
        this.ops.push({
          type: 'conv', ...base, kh: c.kernel, kw: c.kernel, sh: p.stride[0], sw: p.stride[1], ph: p.padding[0], pw: p.padding[1],
          dh: p.dilation[0], dw: p.dilation[1], groups: p.groups, relu: s.relu, sum: s.sumInto !== null,
          weight: folded.weight, bias: folded.bias ?? new Float32Array(c.outChannels),
        });
        return;
      }
      case 'maxpool':
      case 'avgpool': {
        const { kernel: k, stride: st, padding: pad, countIncludePad = true } = n.pool;
        if (n.op === 'avgpool' && countIncludePad && (pad > 0 || n.pool.ceilMode)) {
          this.fail(n.path, 'an average pool that counts padding cannot be compiled (the plan averages over the pixels inside the input)');
        }
        this.ops.push({ type: n.op, ...base, kh: k, kw: k, sh: st, sw: st, ph: pad, pw: pad });
        return;
      }
      case 'shortcutA': this.ops.push({ type: 'shortcutA', ...base, stride: n.stride }); return;
      case 'gap': this.ops.push({ type: 'gap', ...base }); return;
      case 'linear': {
        const fc = this.module(n.path, Linear);
        const bias = fc.bias ? fc.bias.toArray() : new Float32Array(fc.outFeatures);
        this.ops.push({ type: 'linear', ...base, weight: fc.weight.toArray(), bias });
        return;
      }
    }
  }
}

/** The model's graph at the compiled input shape, its errors named as compileForInference's. */
function lowerForPlan(model: ResNet, input: Shape3): Graph {
  try {
    return model.lower(input);
  } catch (e) {
    throw new Error(`compileForInference: ${(e as Error).message}`, { cause: e });
  }
}

function checkOptions(
  model: ResNet, opts: CompileOptions,
): { input: Shape3; maxBatch: number; dtype: PlanDtype; winograd: 'auto' | 'on' | 'off'; output: CompileOutput } {
  const input = opts.input;
  if (!Array.isArray(input) || input.length !== 3 || input.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new Error(`compileForInference: input must be [C, H, W] of positive integers, got ${JSON.stringify(input)}`);
  }
  const inC = inputChannels(model.spec);
  if (input[0] !== inC) throw new Error(`compileForInference: ${model.spec.name} takes ${inC}-channel input, got [${input.join(', ')}]`);
  const maxBatch = opts.maxBatch ?? 1;
  if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new Error(`compileForInference: maxBatch must be a positive integer, got ${maxBatch}`);
  const dtype = opts.dtype ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'bf16' && dtype !== 'int8') {
    throw new Error(`compileForInference: dtype must be 'f32', 'bf16' or 'int8', got ${JSON.stringify(dtype)}`);
  }
  if (dtype === 'int8' && !opts.calibration) {
    throw new Error('compileForInference: int8 needs a calibration (calibrate(model, images, n, { input }) on a few hundred ' +
      'representative images), so every value gets its scale');
  }
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
function planBackend(what: string): PlanBackend {
  const backend = defaultBackend();
  if (!supportsPlans(backend)) {
    throw new Error(`${what} needs the native backend, and the current one is the reference backend ` +
      '(call `await initBackend()` first; if the addon does not load, build it with `npm run build:native`). ' +
      'Without it, run the model directly: model.eval() and a forward inside noGrad().');
  }
  return backend;
}

/** The plan ops that compute `output` of `model` at `input`, and their buffer count. */
function readPlan(model: ResNet, input: Shape3, output: CompileOutput): { ops: PlanOp[]; shape: Shape3; buffers: number } {
  const graph = lowerForPlan(model, input);
  const b = new PlanReader(graph, model);
  const { ops, shape } = b.read(graph.features[output]!);
  return { ops, shape, buffers: b.bufs.count };
}

/**
 * Calibration for an int8 plan: runs `n` images (NCHW float32, preprocessed as for inference) through
 * an f32 plan of the whole network, in batches, and records the range of every op's output. A few
 * hundred images of the data the model will see are enough; the result is small JSON
 * (writeCalibration) to keep with the weights. `values: true` also records the range of every value
 * of the lowered graph (run eagerly, so slower), which a QDQ ONNX export needs.
 */
export function calibrate(
  model: ResNet, images: Float32Array, n: number, opts: { input: readonly number[]; batch?: number; values?: boolean },
): Calibration {
  if (!(model instanceof ResNet)) throw new Error('calibrate: expected a ResNet/ResNeXt model (from createModel or loadModel)');
  const nb = planBackend('calibrate');
  const batch = opts.batch ?? 32;
  if (!Number.isInteger(batch) || batch < 1) throw new Error(`calibrate: batch must be a positive integer, got ${batch}`);
  const { input } = checkOptions(model, { input: opts.input });
  const per = input[0] * input[1] * input[2];
  if (!Number.isInteger(n) || n < 1) throw new Error(`calibrate: needs at least one image, got ${n}`);
  if (!(images instanceof Float32Array) || images.length !== n * per) {
    throw new Error(`calibrate: images must be a Float32Array of ${n} x [${input.join(', ')}] = ${n * per} values, got ${images?.length}`);
  }
  // A NaN would pass a fused ReLU as 0 and leave the ranges quietly wrong: refuse it here, by image.
  for (let i = 0; i < images.length; i++) {
    if (!Number.isFinite(images[i])) throw new Error(`calibrate: image ${Math.floor(i / per)} has a non-finite value (NaN or infinity) at offset ${i % per}`);
  }
  const { ops, buffers } = readPlan(model, input, model.head instanceof Identity ? 'pool' : 'logits');
  const handle = nb.planCreate({ input, dtype: 'f32', winograd: 'off', maxBatch: Math.min(batch, n), buffers, inputBuffer: 0, ops });
  const table: Calibration['ops'] = {};
  try {
    for (let i = 0; i < n; i += batch) {
      const m = Math.min(batch, n - i);
      mergeRanges(table, ops, nb.planCalibrate(handle, images.subarray(i * per, (i + m) * per), m));
    }
  } finally {
    nb.planDispose(handle);
  }
  const cal: Calibration = { format: 'residual-calibration', version: 1, model: model.spec.name, input, images: n, ops: table };
  if (opts.values) cal.values = recordValueRanges(lowerForPlan(model, input), model, images, n, batch);
  return cal;
}

export function compileForInference(model: ResNet, opts: CompileOptions): CompiledModel {
  if (!(model instanceof ResNet)) {
    throw new Error('compileForInference: expected a ResNet/ResNeXt model (from createModel or loadModel)');
  }
  const nb = planBackend('compileForInference');
  const { input, maxBatch, dtype, winograd, output: asked } = checkOptions(model, opts);
  const output: CompileOutput = asked === 'logits' && model.head instanceof Identity ? 'pool' : asked;
  const { ops: f32ops, shape, buffers } = readPlan(model, input, output);
  const ops = dtype === 'int8'
    ? quantizeOps(f32ops, checkCalibration(opts.calibration, model.spec.name, input, 'compileForInference: calibration'), 0)
    : f32ops;
  const outputShape = shape[1] === 1 && shape[2] === 1 && (output === 'pool' || output === 'logits') ? [shape[0]] : [...shape];
  const handle: PlanHandle = nb.planCreate({ input, dtype, winograd, maxBatch, buffers, inputBuffer: 0, ops });
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
