// ONNX export, written from the model's structure (not traced through the engine): every module
// kind a Residual model is made of maps to a few ONNX operators, so the graph is exactly the
// network's eval-mode computation and names follow the PyTorch keys.
//
//   Conv2d -> Conv (group, strides, pads, dilations)   ReLU -> Relu      residual sum -> Add
//   BatchNorm2d -> folded into the conv before it (default) or BatchNormalization (foldBatchNorm: false)
//   MaxPool2d -> MaxPool          AdaptiveAvgPool2d(1) -> GlobalAveragePool    flatten -> Flatten
//   Linear -> Gemm (transB)       option-A shortcut -> Slice (step = stride on H, W) + Pad (channels)
//   ResNeXt form (b) concatenation -> Concat
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
import { endianness } from 'node:os';
import {
  AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Flatten, Identity, Linear, MaxPool2d, Module, ReLU, Sequential,
} from '../nn/index.js';
import { ResidualBlock } from '../models/blocks.js';
import { ResNet } from '../models/net.js';
import { bnAffine, foldConv, type Affine } from '../models/fold.js';
import { checkOutputPath, writeAtomic } from '../io/index.js';
import { conv2dParams } from '../tensor/index.js';
import { PROTO_MAX_BYTES, ProtoWriter } from './proto.js';

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
const DT_INT64 = 7;
const ATTR_FLOAT = 1;
const ATTR_INT = 2;
const ATTR_STRING = 3;
const ATTR_INTS = 7;

const INT64_MAX = (1n << 63n) - 1n;
const littleEndian = endianness() === 'LE';

type Attr = { name: string } & ({ i: number } | { f: number } | { s: string } | { ints: readonly number[] });

/** A value in the graph: its name and per-sample shape (without the batch dimension). */
interface Value {
  name: string;
  shape: number[];
}

function floatBytes(data: Float32Array): Uint8Array {
  if (littleEndian) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint8Array(data.length * 4);
  const view = new DataView(out.buffer);
  data.forEach((v, i) => view.setFloat32(i * 4, v, true));
  return out;
}

function int64Bytes(values: readonly bigint[]): Uint8Array {
  const out = new Uint8Array(values.length * 8);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setBigInt64(i * 8, v, true));
  return out;
}

/** The prefix of a child's name: "layer1.0." under "layer1.0", nothing at the top. */
function at(path: string): string {
  return path ? `${path}.` : '';
}

function shapeText(s: readonly number[]): string {
  return s.join('x');
}

/** The ResNeXt forms (a) and (b) (models/resnext_forms.ts), recognized by their public fields. */
interface PathLike extends Module {
  conv1: Conv2d; bn1: BatchNorm2d; conv2: Conv2d; bn2: BatchNorm2d; conv3: Conv2d | null;
}
interface PathsBlockLike extends Module {
  form: 'a' | 'b'; paths: PathLike[]; conv3: Conv2d | null; bn3: BatchNorm2d; downsample: Sequential | null;
}

function isPathsBlock(m: Module): m is PathsBlockLike {
  const b = m as unknown as Partial<PathsBlockLike>;
  return (b.form === 'a' || b.form === 'b') && Array.isArray(b.paths) && b.bn3 instanceof BatchNorm2d &&
    b.paths.every((p) => p.conv1 instanceof Conv2d && p.bn1 instanceof BatchNorm2d && p.conv2 instanceof Conv2d && p.bn2 instanceof BatchNorm2d);
}

class GraphBuilder {
  readonly nodes: ProtoWriter[] = [];
  readonly initializers: ProtoWriter[] = [];
  readonly ops: Record<string, number> = {};
  private readonly names = new Set<string>();
  private readonly int64Cache = new Map<string, string>();

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

/** Walks a model's modules and emits the nodes that compute its eval-mode forward. */
class Emitter {
  constructor(readonly g: GraphBuilder) {}

  fail(path: string, problem: string): never {
    throw new Error(`exportOnnx: ${path || 'model'}: ${problem}`);
  }

  /**
   * Conv2d, optionally followed by an affine per output channel (a BN folded in). `withShift: false`
   * leaves out the shift (ResNeXt form (a) adds it once after the sum, see paths()).
   */
  conv(path: string, conv: Conv2d, x: Value, affine: Affine | null = null, foldedFrom = '', withShift = true): Value {
    const [c, h, w] = x.shape;
    if (x.shape.length !== 3) this.fail(path, `a convolution needs a [C, H, W] input, got [${x.shape.join(', ')}]`);
    if (c !== conv.inChannels) this.fail(path, `expects ${conv.inChannels} input channels, gets ${c} (input ${shapeText(x.shape)})`);
    const p = conv2dParams(conv.options);
    const [kh, kw] = conv.kernelSize;
    const oh = Math.floor((h! + 2 * p.padding[0] - p.dilation[0] * (kh - 1) - 1) / p.stride[0]) + 1;
    const ow = Math.floor((w! + 2 * p.padding[1] - p.dilation[1] * (kw - 1) - 1) / p.stride[1]) + 1;
    if (oh < 1 || ow < 1) this.fail(path, `input ${shapeText(x.shape)} is too small for this ${kh}x${kw} stride ${p.stride[0]} convolution`);

    const { weight, bias } = foldConv(conv, affine, withShift);
    const inputs = [x.name, this.g.floatInit(`${at(path)}weight`, conv.weight.shape, weight)];
    if (bias) inputs.push(this.g.floatInit(`${at(path)}bias`, [conv.outChannels], bias));
    const name = this.g.node('Conv', path, inputs, [
      { name: 'dilations', ints: p.dilation },
      { name: 'group', i: p.groups },
      { name: 'kernel_shape', ints: [kh, kw] },
      { name: 'pads', ints: [p.padding[0], p.padding[1], p.padding[0], p.padding[1]] },
      { name: 'strides', ints: p.stride },
    ], foldedFrom ? `BatchNorm ${foldedFrom} folded in` : undefined);
    return { name, shape: [conv.outChannels, oh, ow] };
  }

  batchNorm(path: string, bn: BatchNorm2d, x: Value): Value {
    if (x.shape[0] !== bn.numFeatures) this.fail(path, `has ${bn.numFeatures} channels, its input ${x.shape[0]}`);
    const f = (key: string, t: { toArray(): Float32Array }) => this.g.floatInit(`${at(path)}${key}`, [bn.numFeatures], t.toArray());
    const inputs = [x.name, f('weight', bn.weight), f('bias', bn.bias), f('running_mean', bn.runningMean), f('running_var', bn.runningVar)];
    return { name: this.g.node('BatchNormalization', path, inputs, [{ name: 'epsilon', f: bn.eps }]), shape: x.shape };
  }

  convBn(convPath: string, conv: Conv2d, bnPath: string, bn: BatchNorm2d, x: Value): Value {
    if (bn.numFeatures !== conv.outChannels) this.fail(bnPath, `has ${bn.numFeatures} channels after a conv with ${conv.outChannels}`);
    if (!this.g.fold) return this.batchNorm(bnPath, bn, this.conv(convPath, conv, x));
    return this.conv(convPath, conv, x, bnAffine(bn), bnPath);
  }

  relu(path: string, x: Value): Value {
    return { name: this.g.node('Relu', path, [x.name]), shape: x.shape };
  }

  add(path: string, a: Value, b: Value): Value {
    if (a.shape.join() !== b.shape.join()) this.fail(path, `cannot add ${shapeText(a.shape)} and ${shapeText(b.shape)}`);
    return { name: this.g.node('Add', path, [a.name, b.name]), shape: a.shape };
  }

  maxPool(path: string, m: MaxPool2d, x: Value): Value {
    const { kernelSize: k, stride: s, padding: p, ceilMode } = m;
    const out = (n: number) => {
      let o = (ceilMode ? Math.ceil : Math.floor)((n + 2 * p - k) / s) + 1;
      // PyTorch's ceil mode: the last window must start inside the input or its left padding.
      if (ceilMode && (o - 1) * s >= n + p) o--;
      return o;
    };
    const shape = [x.shape[0]!, out(x.shape[1]!), out(x.shape[2]!)];
    if (shape[1]! < 1 || shape[2]! < 1) this.fail(path, `input ${shapeText(x.shape)} is too small for a ${k}x${k} stride ${s} max pool`);
    const name = this.g.node('MaxPool', path, [x.name], [
      { name: 'ceil_mode', i: ceilMode ? 1 : 0 },
      { name: 'kernel_shape', ints: [k, k] },
      { name: 'pads', ints: [p, p, p, p] },
      { name: 'strides', ints: [s, s] },
    ]);
    return { name, shape };
  }

  globalAvgPool(path: string, x: Value): Value {
    return { name: this.g.node('GlobalAveragePool', path, [x.name]), shape: [x.shape[0]!, 1, 1] };
  }

  flatten(path: string, x: Value, output?: string): Value {
    return { name: this.g.node('Flatten', path, [x.name], [{ name: 'axis', i: 1 }], undefined, output), shape: [x.shape.reduce((a, b) => a * b, 1)] };
  }

  linear(path: string, m: Linear, x: Value, output?: string): Value {
    if (x.shape.length !== 1 || x.shape[0] !== m.inFeatures) {
      this.fail(path, `a linear layer of ${m.inFeatures} inputs cannot take [${x.shape.join(', ')}] per sample (flatten first)`);
    }
    const inputs = [x.name, this.g.floatInit(`${at(path)}weight`, m.weight.shape, m.weight.toArray())];
    if (m.bias) inputs.push(this.g.floatInit(`${at(path)}bias`, [m.outFeatures], m.bias.toArray()));
    const name = this.g.node('Gemm', path, inputs, [{ name: 'transB', i: 1 }], undefined, output);
    return { name, shape: [m.outFeatures] };
  }

  /** The paper's option A: every stride-th pixel, then zero channels split before and after (as shortcutA). */
  shortcutA(path: string, x: Value, outChannels: number, stride: number): Value {
    const [c, h, w] = x.shape as [number, number, number];
    if (outChannels < c) this.fail(path, `option A cannot shrink ${c} channels to ${outChannels}`);
    let y = x;
    if (stride !== 1) {
      const st = BigInt(stride);
      const starts = this.g.int64Init('shortcutA.starts', [0n, 0n]);
      const ends = this.g.int64Init('shortcutA.ends', [INT64_MAX, INT64_MAX]);
      const axes = this.g.int64Init('shortcutA.axes', [2n, 3n]);
      const steps = this.g.int64Init(`shortcutA.steps${stride}`, [st, st]);
      y = { name: this.g.node('Slice', `${at(path)}subsample`, [x.name, starts, ends, axes, steps]), shape: [c, Math.ceil(h / stride), Math.ceil(w / stride)] };
    }
    if (outChannels === c) return y;
    const before = Math.floor((outChannels - c) / 2), after = outChannels - c - before;
    const pads = this.g.int64Init(`shortcutA.pads${before}_${after}`, [0n, BigInt(before), 0n, 0n, 0n, BigInt(after), 0n, 0n]);
    const name = this.g.node('Pad', `${at(path)}pad`, [y.name, pads], [{ name: 'mode', s: 'constant' }]);
    return { name, shape: [outChannels, y.shape[1]!, y.shape[2]!] };
  }

  residualBlock(path: string, b: ResidualBlock, x: Value): Value {
    let y = x;
    const last = b.convs.length - 1;
    b.convs.forEach((conv, i) => {
      y = this.convBn(`${at(path)}conv${i + 1}`, conv, `${at(path)}bn${i + 1}`, b.norms[i]!, y);
      if (i < last) y = this.relu(`${at(path)}relu`, y);
    });
    const { shortcut, outChannels, stride } = b.spec;
    if (shortcut === 'identity') y = this.add(`${at(path)}add`, y, x);
    else if (shortcut === 'projection') y = this.add(`${at(path)}add`, y, this.downsample(`${at(path)}downsample`, b.downsample, x));
    else if (shortcut === 'optionA') y = this.add(`${at(path)}add`, y, this.shortcutA(`${at(path)}shortcut`, x, outChannels, stride));
    return this.relu(`${at(path)}relu`, y);
  }

  downsample(path: string, ds: Sequential | null, x: Value): Value {
    const conv = ds?.at(0), bn = ds?.at(1);
    if (!(conv instanceof Conv2d) || !(bn instanceof BatchNorm2d) || ds!.length !== 2) this.fail(path, 'expected a projection shortcut (conv, BN)');
    return this.convBn(`${at(path)}0`, conv, `${at(path)}1`, bn, x);
  }

  /** ResNeXt forms (a) and (b): C paths, summed through their own 1x1s (a) or concatenated into one (b). */
  paths(path: string, b: PathsBlockLike, x: Value): Value {
    const outs = b.paths.map((p, i) => {
      const pp = `${at(path)}paths.${i}`;
      let y = this.relu(`${pp}.relu`, this.convBn(`${pp}.conv1`, p.conv1, `${pp}.bn1`, p.bn1, x));
      y = this.relu(`${pp}.relu`, this.convBn(`${pp}.conv2`, p.conv2, `${pp}.bn2`, p.bn2, y));
      return y;
    });
    let z: Value;
    if (b.form === 'a') {
      // bn3 follows the sum: BN(sum conv3_i) = sum (s*conv3_i) + shift, so each conv3 takes the scale
      // and the first one also the shift.
      const affine = this.g.fold ? bnAffine(b.bn3) : null;
      const convs = b.paths.map((p, i) => {
        if (!p.conv3) this.fail(`${at(path)}paths.${i}`, 'a form (a) path needs its conv3');
        return this.conv(`${at(path)}paths.${i}.conv3`, p.conv3, outs[i]!, affine, affine ? `${at(path)}bn3` : '', i === 0);
      });
      z = convs.reduce((acc, v, i) => this.add(`${at(path)}sum${i}`, acc, v));
      if (!affine) z = this.batchNorm(`${at(path)}bn3`, b.bn3, z);
    } else {
      if (!b.conv3) this.fail(path, 'a form (b) block needs its conv3');
      const shape = [outs.reduce((a, o) => a + o.shape[0]!, 0), outs[0]!.shape[1]!, outs[0]!.shape[2]!];
      const cat = { name: this.g.node('Concat', `${at(path)}concat`, outs.map((o) => o.name), [{ name: 'axis', i: 1 }]), shape };
      z = this.convBn(`${at(path)}conv3`, b.conv3, `${at(path)}bn3`, b.bn3, cat);
    }
    const s = b.downsample ? this.downsample(`${at(path)}downsample`, b.downsample, x) : x;
    return this.relu(`${at(path)}relu`, this.add(`${at(path)}add`, z, s));
  }

  /** The net; `output` names the last node's value. With `features`, or an Identity fc, it ends at the flattened pool. */
  resnet(m: ResNet, x: Value, output: string, path = '', features = false): Value {
    const p = at(path);
    let y = this.relu(`${p}relu`, this.convBn(`${p}conv1`, m.conv1, `${p}bn1`, m.bn1, x));
    if (m.maxpool) y = this.maxPool(`${p}maxpool`, m.maxpool, y);
    m.stages.forEach((stage, i) => { y = this.module(`${p}layer${i + 1}`, stage, y); });
    const pooled = this.globalAvgPool(`${p}avgpool`, y);
    const head = m.head;
    if (features || head instanceof Identity) return this.flatten(`${p}flatten`, pooled, output);
    return this.linear(`${p}fc`, head, this.flatten(`${p}flatten`, pooled), output);
  }

  /** Any supported module; a Sequential's conv followed by a BN is fused like a block's. */
  module(path: string, m: Module, x: Value): Value {
    const child = (name: string) => `${at(path)}${name}`;
    if (m instanceof ResidualBlock) return this.residualBlock(path, m, x);
    if (isPathsBlock(m)) return this.paths(path, m, x);
    if (m instanceof Sequential) {
      let y = x;
      for (let i = 0; i < m.length; i++) {
        const cur = m.at(i), next = i + 1 < m.length ? m.at(i + 1) : null;
        if (cur instanceof Conv2d && next instanceof BatchNorm2d) {
          y = this.convBn(child(String(i)), cur, child(String(i + 1)), next, y);
          i++;
        } else {
          y = this.module(child(String(i)), cur, y);
        }
      }
      return y;
    }
    if (m instanceof Conv2d) return this.conv(path, m, x);
    if (m instanceof BatchNorm2d) return this.batchNorm(path, m, x);
    if (m instanceof ReLU) return this.relu(path, x);
    if (m instanceof Identity) return x;
    if (m instanceof MaxPool2d) return this.maxPool(path, m, x);
    if (m instanceof AdaptiveAvgPool2d) return this.globalAvgPool(path, x);
    if (m instanceof Flatten) return this.flatten(path, x);
    if (m instanceof Linear) return this.linear(path, m, x);
    if (m instanceof ResNet) return this.resnet(m, x, this.g.unique(`${at(path)}logits`), path);
    return this.fail(path, `cannot export a ${m.constructor.name}; supported: ResNet, residual blocks, ResNeXt blocks of ` +
      'forms (a)/(b)/(c), Sequential, Conv2d, BatchNorm2d, ReLU, MaxPool2d, AdaptiveAvgPool2d, Flatten, Linear');
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
  const fold = opts.foldBatchNorm ?? true;
  const batch: number | string = (opts.dynamicBatch ?? true) ? 'batch' : 1;
  const g = new GraphBuilder(fold);
  const e = new Emitter(g);
  const inputName = g.unique('input');
  const x: Value = { name: inputName, shape: [...input] };
  const isNet = model instanceof ResNet;
  const output = opts.output ?? 'logits';
  if (output !== 'logits' && output !== 'pool') throw new Error(`exportOnnx: output must be 'logits' or 'pool', got ${JSON.stringify(output)}`);
  if (output === 'pool' && !isNet) throw new Error(`exportOnnx: output 'pool' needs a ResNet/ResNeXt model, got a ${model.constructor.name}`);
  const features = isNet && (output === 'pool' || model.head instanceof Identity);
  const outputName = !isNet ? 'output' : features ? 'features' : 'logits';
  let y: Value;
  if (isNet) {
    y = e.resnet(model, x, outputName, '', features);
  } else {
    y = e.module('', model, x);
    if (y.name === inputName) e.fail('', 'the model computes nothing (its output is its input)');
    // A graph output needs a node that produces it: rename through Identity.
    y = { name: g.node('Identity', 'output', [y.name], [], undefined, outputName), shape: y.shape };
  }
  const inputShape = [batch, ...input];
  const outputShape = [batch, ...y.shape];

  const graph = new ProtoWriter();
  for (const n of g.nodes) graph.message(1, n);
  graph.string(2, isNet ? model.spec.name : model.constructor.name);
  for (const t of g.initializers) graph.message(5, t);
  graph.message(11, valueInfo(inputName, inputShape));
  graph.message(12, valueInfo(outputName, outputShape));

  const proto = new ProtoWriter()
    .int(1, irVersion)
    .string(2, 'residual')
    .int(5, 1)
    .string(6, `${isNet ? model.spec.name : model.constructor.name}, eval mode, BatchNorm ${fold ? 'folded into the convolutions' : 'as nodes'}`)
    .message(7, graph)
    .message(8, new ProtoWriter().string(1, '').int(2, opset));
  const meta = {
    ...(isNet ? { model: model.spec.name, output: features ? 'pool' : 'logits' } : {}), input: shapeText(input), batchnorm: fold ? 'folded' : 'nodes', ...opts.metadata,
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
    opset, irVersion, bytes: proto.length, nodes: g.nodes.length, initializers: g.initializers.length, ops: { ...g.ops },
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

