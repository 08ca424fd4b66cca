// ONNX export, a reader of the model's lowered graph (models/graph.ts, the one description of the
// network that the trace and the compiled plan read too): every node maps to a few ONNX operators,
// so the file is exactly the network's eval-mode computation and names follow the PyTorch keys.
//
//   conv -> Conv (group, strides, pads, dilations)   relu -> Relu      residual sum -> Add
//   its BatchNorm -> folded into the conv (default) or BatchNormalization (foldBatchNorm: false)
//   maxpool -> MaxPool   avgpool -> AveragePool (ceil_mode, count_include_pad)   gap -> GlobalAveragePool
//   flatten -> Flatten   linear -> Gemm (transB)   option-A shortcut -> Slice (step = stride) + Pad
//   ResNeXt form (b) concatenation -> Concat; form (a)'s BN after the sum of its paths is folded into
//   each path's last conv (the scale into all, the shift into the first)
//
// BatchNorm folding, what most exporters do: conv then eval BN is y = s * (W*x + b - mean) + beta
// with s = gamma / sqrt(var + eps), i.e. one conv with weights s*W and bias beta + s*(b - mean).
// It is computed in float64 and rounded once, so the folded net differs from the unfolded one only
// by float32 rounding (well within 1e-4 of the largest logit). Either way the graph is inference
// only: BN uses its running statistics whatever mode the model is in.
//
// The file: IR version matching the opset (8 for the default opset 17), initializers as raw
// little-endian float32 (int64 for Slice/Pad arguments), input "input" [batch, C, H, W] with a
// symbolic "batch" (or 1 with dynamicBatch: false), output "logits" [batch, classes] ("output" when
// a single block is exported). A feature extractor (output: 'pool', or a net whose fc is an
// Identity) ends at the flattened pooled features instead, output "features" [batch, D]. It is
// written atomically: a temp file renamed into place.
//
// dtype 'int8' writes a QDQ model instead (qdq.ts has the scheme): QuantizeLinear/DequantizeLinear
// pairs on the activations with scales from a calibration of every graph value, the conv weights
// and biases stored as int8/int32 behind a DequantizeLinear, stem and head in float32. A runtime
// (onnxruntime: QLinearConv, QLinearAdd) fuses the pairs into its own int8 kernels; any other runs
// it as the float32 model it describes, rounded where the pairs are.
import { endianness } from 'node:os';
import { BatchNorm2d, Conv2d, Identity, Linear, type Module } from '../nn/index.js';
import { ResNet } from '../models/net.js';
import { bnAffine, foldConv } from '../models/fold.js';
import { inputsOf, isLowerable, moduleAt, readerCounts, shapeOf, type ConvSpec, type Graph, type GraphNode, type ValueId } from '../models/graph.js';
import { checkOutputPath, writeAtomic } from '../io/index.js';
import { conv2dParams } from '../tensor/index.js';
import { PROTO_MAX_BYTES, ProtoWriter } from './proto.js';
import { checkCalibration, type Calibration } from '../infer/quantize.js';
import { planQdq, quantizeBias, quantizeWeights, type QParams } from './qdq.js';

export interface OnnxExportOptions {
  /** Per-sample input shape [C, H, W]. */
  input: readonly number[];
  /** Operator set version, 13..22 (default 17). */
  opset?: number;
  /** Symbolic batch dimension "batch" (default); false fixes the batch at 1. */
  dynamicBatch?: boolean;
  /** Fold each BatchNorm into the conv before it (default true); false keeps BatchNormalization nodes. */
  foldBatchNorm?: boolean;
  /** Stored in the model's metadata_props (string values). */
  metadata?: Readonly<Record<string, string>>;
  /**
   * For a ResNet: 'logits' (default) ends at the classifier; 'pool' writes a feature extractor that
   * ends at the flattened pooled features, graph output "features" [batch, D] (no head in the file).
   */
  output?: 'logits' | 'pool';
  /**
   * 'f32' (default), or 'int8': a QDQ model (ResNet/ResNeXt networks; opset 13 or later) quantized with
   * `calibration`, which must hold the range of every graph value (calibrate(..., { values: true })).
   */
  dtype?: 'f32' | 'int8';
  calibration?: Calibration;
}

export interface OnnxFileOptions extends OnnxExportOptions {
  file: string;
}

export interface OnnxExportInfo {
  opset: number;
  irVersion: number;
  /** Encoded size in bytes. */
  bytes: number;
  nodes: number;
  initializers: number;
  /** Nodes per operator type. */
  ops: Record<string, number>;
  inputName: string;
  outputName: string;
  /** Declared shapes; the batch is "batch" when dynamic. */
  inputShape: (number | string)[];
  outputShape: (number | string)[];
}

/** Opset -> the IR version of the ONNX release that introduced it (the lowest that may declare it). */
const IR_FOR_OPSET: Record<number, number> = { 13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10, 22: 10 };

// ONNX enums (onnx.proto).
const DT_FLOAT = 1;
const DT_UINT8 = 2;
const DT_INT8 = 3;
const DT_INT32 = 6;
const DT_INT64 = 7;
const ATTR_FLOAT = 1;
const ATTR_INT = 2;
const ATTR_STRING = 3;
const ATTR_INTS = 7;

const INT64_MAX = (1n << 63n) - 1n;
const littleEndian = endianness() === 'LE';

type Attr = { name: string } & ({ i: number } | { f: number } | { s: string } | { ints: readonly number[] });

function floatBytes(data: Float32Array): Uint8Array {
  if (littleEndian) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint8Array(data.length * 4);
  const view = new DataView(out.buffer);
  data.forEach((v, i) => view.setFloat32(i * 4, v, true));
  return out;
}

function int32Bytes(data: Int32Array): Uint8Array {
  if (littleEndian) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint8Array(data.length * 4);
  const view = new DataView(out.buffer);
  data.forEach((v, i) => view.setInt32(i * 4, v, true));
  return out;
}

function int64Bytes(values: readonly bigint[]): Uint8Array {
  const out = new Uint8Array(values.length * 8);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setBigInt64(i * 8, v, true));
  return out;
}

function shapeText(s: readonly number[]): string {
  return s.join('x');
}

/** The ONNX graph being written: nodes, initializers and unique names. */
class OnnxGraph {
  readonly nodes: ProtoWriter[] = [];
  readonly initializers: ProtoWriter[] = [];
  readonly ops: Record<string, number> = {};
  private readonly names = new Set<string>();
  private readonly int64Cache = new Map<string, string>();
  private readonly qparamCache = new Map<string, [string, string]>();

  constructor(readonly fold: boolean) {}

  /** `base`, or `base_1`, `base_2`, ... when taken (a block's one ReLU runs several times). */
  unique(base: string): string {
    let name = base;
    for (let i = 1; this.names.has(name); i++) name = `${base}_${i}`;
    this.names.add(name);
    return name;
  }

  private tensor(name: string, dims: readonly number[], dataType: number, raw: Uint8Array): void {
    const t = new ProtoWriter();
    for (const d of dims) t.int(1, d);
    t.int(2, dataType).string(8, name).bytes(9, raw);
    this.initializers.push(t);
  }

  floatInit(base: string, dims: readonly number[], data: Float32Array): string {
    const name = this.unique(base);
    this.tensor(name, dims, DT_FLOAT, floatBytes(data));
    return name;
  }

  int8Init(base: string, dims: readonly number[], data: Int8Array): string {
    const name = this.unique(base);
    this.tensor(name, dims, DT_INT8, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    return name;
  }

  int32Init(base: string, dims: readonly number[], data: Int32Array): string {
    const name = this.unique(base);
    this.tensor(name, dims, DT_INT32, int32Bytes(data));
    return name;
  }

  /** A scalar float32 scale and uint8 zero point (a per-tensor QuantizeLinear's), stored once per value pair. */
  qparams(base: string, p: QParams): [string, string] {
    const key = `${p.scale}/${p.zeroPoint}`;
    const hit = this.qparamCache.get(key);
    if (hit) return hit;
    const scale = this.unique(`${base}.scale`);
    this.tensor(scale, [], DT_FLOAT, floatBytes(Float32Array.of(p.scale)));
    const zero = this.unique(`${base}.zero_point`);
    this.tensor(zero, [], DT_UINT8, Uint8Array.of(p.zeroPoint));
    const names: [string, string] = [scale, zero];
    this.qparamCache.set(key, names);
    return names;
  }

  /** An int64 vector; identical ones (Slice arguments) are stored once. */
  int64Init(base: string, values: readonly bigint[]): string {
    const key = values.join(',');
    const hit = this.int64Cache.get(key);
    if (hit) return hit;
    const name = this.unique(base);
    this.tensor(name, [values.length], DT_INT64, int64Bytes(values));
    this.int64Cache.set(key, name);
    return name;
  }

  /** Adds a node with one output, named `output` if given (graph outputs) or after the node. */
  node(op: string, base: string, inputs: string[], attrs: Attr[] = [], doc?: string, output?: string): string {
    const name = this.unique(base);
    const out = output ?? name;
    if (output !== undefined && output !== name) this.names.add(output);
    const n = new ProtoWriter();
    for (const i of inputs) n.string(1, i);
    n.string(2, out).string(3, name).string(4, op);
    for (const a of attrs) {
      const w = new ProtoWriter().string(1, a.name);
      if ('i' in a) w.int(20, ATTR_INT).int(3, a.i);
      else if ('f' in a) w.int(20, ATTR_FLOAT).float(2, a.f);
      else if ('s' in a) w.int(20, ATTR_STRING).bytes(4, Buffer.from(a.s, 'utf8'));
      else {
        w.int(20, ATTR_INTS);
        for (const v of a.ints) w.int(8, v);
      }
      n.message(5, w);
    }
    if (doc) n.string(6, doc);
    this.nodes.push(n);
    this.ops[op] = (this.ops[op] ?? 0) + 1;
    return out;
  }
}

/** Reads a lowered graph into ONNX nodes, up to one value. */
class OnnxReader {
  private readonly names = new Map<ValueId, string>();
  private readonly modules: Map<string, Module>;
  /** Form (a): a conv that takes a share of the BN after the sum it feeds (the shift in one only). */
  private readonly sharedBn = new Map<GraphNode, { bn: string; shift: boolean }>();
  private readonly foldedAway = new Set<GraphNode>();

  /** int8: the values followed by a QuantizeLinear/DequantizeLinear pair, and its parameters (qdq.ts). */
  private readonly qdq: Map<ValueId, QParams> | null;

  constructor(readonly out: OnnxGraph, readonly g: Graph, model: Module, ranges: Record<string, { min: number; max: number }> | null = null) {
    this.modules = new Map(model.namedModules());
    this.qdq = ranges ? planQdq(g, ranges, (path, problem) => this.fail(path, problem)) : null;
    if (out.fold) this.foldBnAfterSums();
  }

  fail(path: string, problem: string): never {
    throw new Error(`exportOnnx: ${path || 'model'}: ${problem}`);
  }

  private module<M extends Module>(path: string, type: new (...a: never[]) => M, conv?: ConvSpec): M {
    try {
      return moduleAt(this.modules, path, type, conv);
    } catch (e) {
      throw new Error(`exportOnnx: ${(e as Error).message}`, { cause: e });
    }
  }

  /**
   * BN(sum of convs) = sum of (s * conv) + shift: a BatchNorm whose input is a sum of bias-free convs
   * (each read only there) is folded into them. ResNeXt form (a) is that shape.
   */
  private foldBnAfterSums(): void {
    const readers = readerCounts(this.g);
    const leaves = (v: ValueId): GraphNode[] | null => {
      const n = v > 0 ? this.g.nodes[v - 1]! : null;
      if (!n || readers[v] !== 1) return null;
      if (n.op === 'conv' && n.bn === null) return [n];
      if (n.op !== 'add') return null;
      const a = leaves(n.src), b = leaves(n.other);
      return a && b ? [...a, ...b] : null;
    };
    for (const n of this.g.nodes) {
      if (n.op !== 'batchnorm') continue;
      const convs = leaves(n.src);
      if (!convs) continue;
      convs.forEach((c, i) => this.sharedBn.set(c, { bn: n.path, shift: i === 0 }));
      this.foldedAway.add(n);
    }
  }

  private name(v: ValueId): string {
    return this.names.get(v)!;
  }

  /** Emits every node `end` depends on, in graph order; `end`'s value is named `outputName`. */
  read(inputName: string, end: ValueId, outputName: string): void {
    const needed = new Set<ValueId>([end]);
    for (let v = end; v > 0; v--) if (needed.has(v)) inputsOf(this.g.nodes[v - 1]!).forEach((u) => needed.add(u));
    this.names.set(0, inputName);
    this.g.nodes.forEach((n, i) => {
      const v = i + 1;
      if (!needed.has(v)) return;
      const y = this.node(n, v === end ? outputName : undefined);
      const q = v === end ? undefined : this.qdq?.get(v); // the graph's output leaves in float32 as it is
      this.names.set(v, q ? this.quantized(n.path, y, q) : y);
    });
    if (this.name(end) !== outputName) this.out.node('Identity', 'output', [this.name(end)], [], undefined, outputName);
  }

  private node(n: GraphNode, output: string | undefined): string {
    const g = this.out;
    const path = n.path;
    switch (n.op) {
      case 'conv': return this.conv(n, output);
      case 'batchnorm':
        if (this.foldedAway.has(n)) return this.name(n.src);
        return this.batchNorm(path, this.name(n.src), output);
      case 'relu': return g.node('Relu', path, [this.name(n.src)], [], undefined, output);
      case 'add': return g.node('Add', path, [this.name(n.src), this.name(n.other)], [], undefined, output);
      case 'shortcutA': return this.shortcutA(n, output);
      case 'maxpool':
      case 'avgpool': {
        const { kernel: k, stride: st, padding: p, ceilMode = false, countIncludePad = true } = n.pool;
        const attrs: Attr[] = [
          { name: 'ceil_mode', i: ceilMode ? 1 : 0 },
          ...(n.op === 'avgpool' ? [{ name: 'count_include_pad', i: countIncludePad ? 1 : 0 }] : []),
          { name: 'kernel_shape', ints: [k, k] },
          { name: 'pads', ints: [p, p, p, p] },
          { name: 'strides', ints: [st, st] },
        ];
        return g.node(n.op === 'maxpool' ? 'MaxPool' : 'AveragePool', path, [this.name(n.src)], attrs, undefined, output);
      }
      case 'gap': return g.node('GlobalAveragePool', path, [this.name(n.src)], [], undefined, output);
      case 'flatten': return g.node('Flatten', path, [this.name(n.src)], [{ name: 'axis', i: 1 }], undefined, output);
      case 'linear': {
        const m = this.module(path, Linear);
        const inputs = [this.name(n.src), g.floatInit(`${path}.weight`, m.weight.shape, m.weight.toArray())];
        if (m.bias) inputs.push(g.floatInit(`${path}.bias`, [m.outFeatures], m.bias.toArray()));
        return g.node('Gemm', path, inputs, [{ name: 'transB', i: 1 }], undefined, output);
      }
      case 'concat': return g.node('Concat', path, n.srcs.map((v) => this.name(v)), [{ name: 'axis', i: 1 }], undefined, output);
    }
  }

  /** `x` rounded to uint8 and back: the pair a runtime fuses into the int8 kernels on either side. */
  private quantized(path: string, x: string, p: QParams): string {
    const [scale, zero] = this.out.qparams(path, p);
    const q = this.out.node('QuantizeLinear', `${path}.quantize`, [x, scale, zero]);
    return this.out.node('DequantizeLinear', `${path}.dequantize`, [q, scale, zero]);
  }

  /** An int8 conv's weight and bias: integers behind a per-output-channel DequantizeLinear (axis 0). */
  private int8ConvInputs(path: string, c: ConvSpec, dims: readonly number[], weight: Float32Array, bias: Float32Array | null, inputScale: number): string[] {
    const g = this.out;
    const axis: Attr[] = [{ name: 'axis', i: 0 }];
    const w = quantizeWeights(weight, c.outChannels);
    const wq = g.int8Init(`${path}.weight_quantized`, dims, w.q);
    const ws = g.floatInit(`${path}.weight_scale`, [c.outChannels], w.scales);
    const wz = g.int8Init(`${path}.weight_zero_point`, [c.outChannels], new Int8Array(c.outChannels));
    const inputs = [g.node('DequantizeLinear', `${path}.weight`, [wq, ws, wz], axis)];
    if (bias) {
      const b = quantizeBias(bias, inputScale, w.scales);
      const bq = g.int32Init(`${path}.bias_quantized`, [c.outChannels], b.q);
      const bs = g.floatInit(`${path}.bias_scale`, [c.outChannels], b.scales);
      const bz = g.int32Init(`${path}.bias_zero_point`, [c.outChannels], new Int32Array(c.outChannels));
      inputs.push(g.node('DequantizeLinear', `${path}.bias`, [bq, bs, bz], axis));
    }
    return inputs;
  }

  /** A conv with its BN folded in (or shared, form (a)), or a conv then a BatchNormalization node. */
  private conv(n: Extract<GraphNode, { op: 'conv' }>, output: string | undefined): string {
    const g = this.out;
    const c = n.conv;
    const conv = this.module(n.path, Conv2d, c);
    const share = this.sharedBn.get(n) ?? (n.bn && g.fold ? { bn: n.bn, shift: true } : null);
    const { weight, bias } = foldConv(conv, share ? bnAffine(this.module(share.bn, BatchNorm2d)) : null, share?.shift ?? true);
    // int8 where its input is quantized (every conv but those that read the network's input)
    const inQ = this.qdq?.get(n.src);
    const inputs = [this.name(n.src)];
    if (inQ) inputs.push(...this.int8ConvInputs(n.path, c, conv.weight.shape, weight, bias, inQ.scale));
    else {
      inputs.push(g.floatInit(`${n.path}.weight`, conv.weight.shape, weight));
      if (bias) inputs.push(g.floatInit(`${n.path}.bias`, [c.outChannels], bias));
    }
    const keepBn = n.bn !== null && !g.fold;
    const y = g.node('Conv', n.path, inputs, [
      { name: 'dilations', ints: [c.dilation, c.dilation] },
      { name: 'group', i: c.groups },
      { name: 'kernel_shape', ints: [c.kernel, c.kernel] },
      { name: 'pads', ints: [c.padding, c.padding, c.padding, c.padding] },
      { name: 'strides', ints: [c.stride, c.stride] },
    ], share ? `BatchNorm ${share.bn} folded in` : undefined, keepBn ? undefined : output);
    return keepBn ? this.batchNorm(n.bn!, y, output) : y;
  }

  private batchNorm(path: string, x: string, output: string | undefined): string {
    const bn = this.module(path, BatchNorm2d);
    const f = (key: string, t: { toArray(): Float32Array }) => this.out.floatInit(`${path}.${key}`, [bn.numFeatures], t.toArray());
    const inputs = [x, f('weight', bn.weight), f('bias', bn.bias), f('running_mean', bn.runningMean), f('running_var', bn.runningVar)];
    return this.out.node('BatchNormalization', path, inputs, [{ name: 'epsilon', f: bn.eps }], undefined, output);
  }

  /** The paper's option A: every stride-th pixel, then zero channels split before and after (as shortcutA). */
  private shortcutA(n: Extract<GraphNode, { op: 'shortcutA' }>, output: string | undefined): string {
    const g = this.out;
    const c = shapeOf(this.g, n.src)[0]!, outChannels = n.out[0]!;
    let y = this.name(n.src);
    const padded = outChannels !== c;
    if (n.stride !== 1) {
      const st = BigInt(n.stride);
      const starts = g.int64Init('shortcutA.starts', [0n, 0n]);
      const ends = g.int64Init('shortcutA.ends', [INT64_MAX, INT64_MAX]);
      const axes = g.int64Init('shortcutA.axes', [2n, 3n]);
      const steps = g.int64Init(`shortcutA.steps${n.stride}`, [st, st]);
      y = g.node('Slice', `${n.path}.subsample`, [y, starts, ends, axes, steps], [], undefined, padded ? undefined : output);
    }
    if (!padded) return y;
    const before = Math.floor((outChannels - c) / 2), after = outChannels - c - before;
    const pads = g.int64Init(`shortcutA.pads${before}_${after}`, [0n, BigInt(before), 0n, 0n, 0n, BigInt(after), 0n, 0n]);
    return g.node('Pad', `${n.path}.pad`, [y, pads], [{ name: 'mode', s: 'constant' }], undefined, output);
  }
}

function checkOptions(opts: OnnxExportOptions): { input: [number, number, number]; opset: number; irVersion: number } {
  const input = opts.input;
  if (!Array.isArray(input) || input.length !== 3 || input.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new Error(`exportOnnx: input must be [C, H, W] of positive integers, got ${JSON.stringify(input)}`);
  }
  const opset = opts.opset ?? 17;
  const irVersion = IR_FOR_OPSET[opset];
  if (irVersion === undefined) {
    throw new Error(`exportOnnx: opset ${opset} is not supported; use one of ${Object.keys(IR_FOR_OPSET).join(', ')} (default 17)`);
  }
  return { input: [input[0]!, input[1]!, input[2]!], opset, irVersion };
}

function valueInfo(name: string, dims: readonly (number | string)[]): ProtoWriter {
  const shape = new ProtoWriter();
  for (const d of dims) shape.message(1, typeof d === 'string' ? new ProtoWriter().string(2, d) : new ProtoWriter().int(1, d));
  const tensorType = new ProtoWriter().int(1, DT_FLOAT).message(2, shape);
  return new ProtoWriter().string(1, name).message(2, new ProtoWriter().message(1, tensorType));
}

/** Builds the ONNX ModelProto of `model` at `opts.input`; the encoding stays in chunks (see onnx_proto.ts). */
export function buildOnnx(model: Module, opts: OnnxExportOptions): { proto: ProtoWriter; info: OnnxExportInfo } {
  const { input, opset, irVersion } = checkOptions(opts);
  const dtype = opts.dtype ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'int8') throw new Error(`exportOnnx: dtype must be 'f32' or 'int8', got ${JSON.stringify(dtype)}`);
  const fold = opts.foldBatchNorm ?? true;
  const batch: number | string = (opts.dynamicBatch ?? true) ? 'batch' : 1;
  const out = new OnnxGraph(fold);
  const inputName = out.unique('input');
  const isNet = model instanceof ResNet;
  const output = opts.output ?? 'logits';
  if (output !== 'logits' && output !== 'pool') throw new Error(`exportOnnx: output must be 'logits' or 'pool', got ${JSON.stringify(output)}`);
  if (output === 'pool' && !isNet) throw new Error(`exportOnnx: output 'pool' needs a ResNet/ResNeXt model, got a ${model.constructor.name}`);
  if (!isLowerable(model)) {
    throw new Error(`exportOnnx: cannot export a ${model.constructor.name}; supported: a ResNet/ResNeXt network, a residual block ` +
      '(BasicBlock, Bottleneck) and the ResNeXt block forms (a), (b), (c)');
  }
  let lowered: Graph;
  try {
    lowered = model.lower(input);
  } catch (e) {
    throw new Error(`exportOnnx: ${(e as Error).message}`, { cause: e });
  }
  let ranges: Calibration['values'] | null = null;
  if (dtype === 'int8') {
    if (!isNet) throw new Error(`exportOnnx: int8 export needs a ResNet/ResNeXt network, got a ${model.constructor.name}`);
    if (!fold) throw new Error('exportOnnx: int8 export folds every BatchNorm into its conv (the int8 weights are the folded ones); leave foldBatchNorm on');
    if (!opts.calibration) {
      throw new Error('exportOnnx: int8 needs a calibration with the range of every graph value: calibrate(model, images, n, { input, values: true })');
    }
    const cal = checkCalibration(opts.calibration, model.spec.name, input, 'exportOnnx: calibration');
    if (!cal.values) {
      throw new Error('exportOnnx: the calibration has the int8 plan\'s ranges only; a QDQ export needs every graph value\'s: ' +
        'calibrate(model, images, n, { input, values: true }) (the CLI recalibrates from --calibration DATA)');
    }
    ranges = cal.values;
  }
  const features = isNet && (output === 'pool' || model.head instanceof Identity);
  const outputName = !isNet ? 'output' : features ? 'features' : 'logits';
  const end = isNet ? lowered.features[features ? 'pool' : 'logits']! : lowered.output;
  if (end === 0) throw new Error('exportOnnx: model: the model computes nothing (its output is its input)');
  new OnnxReader(out, lowered, model, ranges).read(inputName, end, outputName);
  const y = { shape: shapeOf(lowered, end) };
  const inputShape = [batch, ...input];
  const outputShape = [batch, ...y.shape];

  const graph = new ProtoWriter();
  for (const n of out.nodes) graph.message(1, n);
  graph.string(2, isNet ? model.spec.name : model.constructor.name);
  for (const t of out.initializers) graph.message(5, t);
  graph.message(11, valueInfo(inputName, inputShape));
  graph.message(12, valueInfo(outputName, outputShape));

  const proto = new ProtoWriter()
    .int(1, irVersion)
    .string(2, 'residual')
    .int(5, 1)
    .string(6, `${isNet ? model.spec.name : model.constructor.name}, eval mode, BatchNorm ${fold ? 'folded into the convolutions' : 'as nodes'}` +
      (ranges ? `; int8 QDQ (uint8 activations, int8 per-channel weights), calibrated on ${opts.calibration!.images} images` : ''))
    .message(7, graph)
    .message(8, new ProtoWriter().string(1, '').int(2, opset));
  const meta = {
    ...(isNet ? { model: model.spec.name, output: features ? 'pool' : 'logits' } : {}), input: shapeText(input), batchnorm: fold ? 'folded' : 'nodes',
    ...(ranges ? { dtype: 'int8', quantization: 'QDQ: uint8 asymmetric per-tensor activations, int8 symmetric per-channel weights, int32 biases; stem and head float32', calibration_images: String(opts.calibration!.images) } : {}),
    ...opts.metadata,
  };
  for (const [k, v] of Object.entries(meta)) {
    if (typeof v !== 'string') throw new Error(`exportOnnx: metadata "${k}" must be a string`);
    proto.message(14, new ProtoWriter().string(1, k).string(2, v));
  }
  if (proto.length > PROTO_MAX_BYTES) {
    throw new Error(`exportOnnx: the model is ${(proto.length / 2 ** 30).toFixed(2)} GiB, over protobuf's 2 GiB limit for one file ` +
      '(ONNX external data is not supported)');
  }
  const info: OnnxExportInfo = {
    opset, irVersion, bytes: proto.length, nodes: out.nodes.length, initializers: out.initializers.length, ops: { ...out.ops },
    inputName, outputName, inputShape, outputShape,
  };
  return { proto, info };
}

/** The ONNX model as bytes, in memory (for onnxruntime's InferenceSession.create(bytes)). */
export function onnxBytes(model: Module, opts: OnnxExportOptions): { bytes: Uint8Array; info: OnnxExportInfo } {
  const { proto, info } = buildOnnx(model, opts);
  return { bytes: proto.finish(), info };
}

/**
 * Writes `model` as ONNX to `opts.file`, atomically (a temp file next to it, renamed into place):
 * readers see the old file or the whole new one. The folder must exist.
 */
export function exportOnnx(model: Module, opts: OnnxFileOptions): OnnxExportInfo {
  const file = opts.file;
  if (typeof file !== 'string' || file === '') throw new Error('exportOnnx: file must be a path');
  checkOutputPath(file);
  const { proto, info } = buildOnnx(model, opts);
  try {
    writeAtomic(file, proto.parts());
  } catch (e) {
    throw new Error(`exportOnnx: ${(e as Error).message}`, { cause: e });
  }
  return info;
}

