// The ResNeXt block in the three forms of Xie et al. 2017, Fig. 3, and exact weight conversions
// between them. With C paths of width d, input and output `out` channels:
//   (a) split-transform-merge: C paths, each 1x1 in->d, 3x3 d->d, 1x1 d->out; the path outputs summed;
//   (b) early concatenation: C paths of 1x1 in->d, 3x3 d->d; concatenated to C*d; one 1x1 C*d->out;
//   (c) grouped convolution: 1x1 in->C*d, 3x3 C*d->C*d with C groups, 1x1 C*d->out (a Bottleneck).
//
// BN and ReLU placement, so that the forms are strictly equal (the paper's "when BN and ReLU are
// appropriately addressed"): BN is per channel, so BN over the C*d channels of (c) is the same as a
// BN of d channels on each path of (a) and (b), in training (batch statistics are per channel) and
// in eval mode alike; the same holds for the ReLUs. The last BN must follow the aggregation: in (a)
// it sits after the sum of the paths (`bn3`, shared), in (b) and (c) after the last 1x1. Then the
// three forms compute the same function in both modes, and the conversions below are exact
// rearrangements of the same numbers (outputs differ only by float summation order). Had (a) a BN on
// each path before the sum, it would match (c) only in eval mode, after folding the C per-path
// affines into one; we do not build that variant.
//
// Keys: (c) is torchvision's bottleneck (conv1, bn1, conv2, bn2, conv3, bn3, downsample.0/1);
// (a) has paths.{i}.{conv1,bn1,conv2,bn2,conv3} and bn3; (b) has paths.{i}.{conv1,bn1,conv2,bn2},
// conv3 and bn3. A projection shortcut (downsample.0/1), where the shape changes, is shared by all.
import { BatchNorm2d, Conv2d, Module, ReLU, Sequential, type StateDict, type StateEntry } from '../nn/index.js';
import { Tensor, add, concatChannels } from '../tensor/index.js';
import { BasicBlock, Bottleneck, conv1x1, conv3x3, makeConv, shortcutFor, type BlockSpec } from './blocks.js';
import { GraphBuilder, type Graph, type ValueId } from './graph.js';

export type ResNeXtForm = 'a' | 'b' | 'c';

export interface ResNeXtBlockConfig {
  inChannels: number;
  outChannels: number;
  /** C, the number of paths. */
  cardinality: number;
  /** d, the width of each path. */
  pathWidth: number;
  stride?: number;
}

function checkConfig(c: ResNeXtBlockConfig): Required<ResNeXtBlockConfig> {
  const stride = c.stride ?? 1;
  for (const [k, v] of Object.entries({ ...c, stride })) {
    if (!Number.isInteger(v) || (v as number) < 1) throw new Error(`ResNeXt block: ${k} must be a positive integer, got ${String(v)}`);
  }
  return { ...c, stride };
}

/** Form (c) as a BlockSpec: the grouped bottleneck. */
export function groupedBlockSpec(config: ResNeXtBlockConfig): BlockSpec {
  const c = checkConfig(config);
  return {
    kind: 'bottleneck', inChannels: c.inChannels, width: c.cardinality * c.pathWidth, outChannels: c.outChannels,
    stride: c.stride, groups: c.cardinality, dilation: 1, shortcut: shortcutFor(c.inChannels, c.outChannels, c.stride, 'projection'),
  };
}

/** A list of child modules keyed 0..n-1 (PyTorch's ModuleList); run by its owner, never by itself. */
class ModuleList extends Module {
  readonly items: Module[] = [];
  constructor(items: Module[]) {
    super();
    items.forEach((m, i) => this.items.push(this.registerModule(String(i), m)));
  }
  override forward(): Tensor {
    throw new Error('a ModuleList holds modules for its owner to run; it has no forward of its own');
  }
}

/** One path of forms (a) and (b): 1x1 reduce, BN, ReLU, 3x3, BN, ReLU, and in (a) the 1x1 expand. */
class Path extends Module {
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm2d;
  readonly relu: ReLU;
  readonly conv3: Conv2d | null;

  constructor(inChannels: number, width: number, stride: number, expandTo: number | null) {
    super();
    this.conv1 = this.registerModule('conv1', makeConv(conv1x1(inChannels, width)));
    this.bn1 = this.registerModule('bn1', new BatchNorm2d(width));
    this.conv2 = this.registerModule('conv2', makeConv(conv3x3(width, width, stride)));
    this.bn2 = this.registerModule('bn2', new BatchNorm2d(width));
    this.relu = this.registerModule('relu', new ReLU());
    this.conv3 = expandTo === null ? null : this.registerModule('conv3', makeConv(conv1x1(width, expandTo)));
  }

  override forward(x: Tensor): Tensor {
    let y = this.relu.forward(this.bn1.forward(this.conv1.forward(x)));
    y = this.relu.forward(this.bn2.forward(this.conv2.forward(y)));
    return this.conv3 ? this.conv3.forward(y) : y;
  }
}

/** Forms (a) and (b); form (c) is a Bottleneck. */
class PathsBlock extends Module {
  readonly paths: Path[];
  readonly conv3: Conv2d | null;
  readonly bn3: BatchNorm2d;
  readonly relu: ReLU;
  readonly downsample: Sequential | null = null;

  constructor(readonly form: 'a' | 'b', readonly config: Required<ResNeXtBlockConfig>) {
    super();
    const { inChannels, outChannels, cardinality, pathWidth, stride } = config;
    const paths: Path[] = [];
    for (let i = 0; i < cardinality; i++) paths.push(new Path(inChannels, pathWidth, stride, form === 'a' ? outChannels : null));
    this.paths = paths;
    this.registerModule('paths', new ModuleList(paths));
    this.conv3 = form === 'b' ? this.registerModule('conv3', makeConv(conv1x1(cardinality * pathWidth, outChannels))) : null;
    this.bn3 = this.registerModule('bn3', new BatchNorm2d(outChannels));
    this.relu = this.registerModule('relu', new ReLU());
    if (shortcutFor(inChannels, outChannels, stride, 'projection') === 'projection') {
      this.downsample = this.registerModule('downsample',
        new Sequential(makeConv(conv1x1(inChannels, outChannels, stride)), new BatchNorm2d(outChannels)));
    }
  }

  /** The block as a graph: the paths side by side, their sum (a) or concatenation (b), bn3, the shortcut. */
  lower(input: readonly number[]): Graph {
    const { inChannels, outChannels, cardinality, pathWidth, stride } = this.config;
    const g = new GraphBuilder(`ResNeXt block form (${this.form})`, input);
    const outs = this.paths.map((_, i): ValueId => {
      const p = `paths.${i}`;
      let y = g.relu(`${p}.relu`, g.conv(`${p}.conv1`, conv1x1(inChannels, pathWidth), 0, `${p}.bn1`));
      y = g.relu(`${p}.relu`, g.conv(`${p}.conv2`, conv3x3(pathWidth, pathWidth, stride), y, `${p}.bn2`));
      return this.form === 'a' ? g.conv(`${p}.conv3`, conv1x1(pathWidth, outChannels), y, null) : y;
    });
    const z = this.form === 'a'
      ? g.batchNorm('bn3', outs.reduce((acc, v, i) => g.add(`sum${i}`, acc, v)))
      : g.conv('conv3', conv1x1(cardinality * pathWidth, outChannels), g.concat('concat', outs), 'bn3');
    const shortcut = this.downsample ? g.conv('downsample.0', conv1x1(inChannels, outChannels, stride), 0, 'downsample.1') : 0;
    return g.finish(g.relu('relu', g.add('add', z, shortcut)));
  }

  override forward(x: Tensor): Tensor {
    const outs = this.paths.map((p) => p.forward(x));
    let y = this.form === 'a' ? outs.reduce((acc, o) => add(acc, o)) : this.conv3!.forward(concatChannels(outs));
    y = this.bn3.forward(y);
    y = add(y, this.downsample ? this.downsample.forward(x) : x);
    return this.relu.forward(y);
  }
}

/** A ResNeXt block in form (a), (b) or (c). Initial weights are PyTorch's layer defaults. */
export function resnextBlock(form: ResNeXtForm, config: ResNeXtBlockConfig): Module {
  if (form === 'c') return new Bottleneck(groupedBlockSpec(config));
  if (form !== 'a' && form !== 'b') throw new Error(`ResNeXt block: form must be 'a', 'b' or 'c', got ${String(form)}`);
  return new PathsBlock(form, checkConfig(config));
}

// ---- weight conversion ----

/** Concatenates row-major tensors along `axis`; the other dimensions must agree. */
function concatAxis(parts: StateEntry[], axis: number): StateEntry {
  const shape = [...parts[0].shape];
  shape[axis] = parts.reduce((a, p) => a + p.shape[axis], 0);
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  let offset = 0;
  for (const p of parts) {
    const chunk = p.shape[axis] * inner;
    for (let o = 0; o < outer; o++) data.set(p.data.subarray(o * chunk, (o + 1) * chunk), o * shape[axis] * inner + offset);
    offset += chunk;
  }
  return { shape, dtype: parts[0].dtype, data };
}

/** The slice [start, start+length) of a row-major tensor along `axis`. */
function sliceAxis(t: StateEntry, axis: number, start: number, length: number): StateEntry {
  const shape = [...t.shape];
  const full = shape[axis];
  shape[axis] = length;
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const data = new Float32Array(outer * length * inner);
  for (let o = 0; o < outer; o++) {
    data.set(t.data.subarray((o * full + start) * inner, (o * full + start + length) * inner), o * length * inner);
  }
  return { shape, dtype: t.dtype, data };
}

const BN_KEYS = ['weight', 'bias', 'running_mean', 'running_var'];

function entry(sd: StateDict, key: string): StateEntry {
  const e = sd.get(key);
  if (!e) throw new Error(`ResNeXt weight conversion: the state dict has no "${key}"; is it a block of the form and config given?`);
  return e;
}

/** Form (a) or (b) weights to form (c): per-path tensors concatenated into the grouped ones. */
function pathsToGrouped(sd: StateDict, from: 'a' | 'b', C: number): StateDict {
  const out: StateDict = new Map();
  const paths = (k: string) => Array.from({ length: C }, (_, i) => entry(sd, `paths.${i}.${k}`));
  out.set('conv1.weight', concatAxis(paths('conv1.weight'), 0));
  for (const bn of ['bn1', 'bn2']) {
    for (const k of BN_KEYS) out.set(`${bn}.${k}`, concatAxis(paths(`${bn}.${k}`), 0));
    out.set(`${bn}.num_batches_tracked`, entry(sd, `paths.0.${bn}.num_batches_tracked`));
  }
  // Path i's 3x3 is group i of the grouped conv: its output channels i*d..(i+1)*d.
  out.set('conv2.weight', concatAxis(paths('conv2.weight'), 0));
  // The sum over paths of conv3_i(y_i) is one 1x1 over the concatenated y: its input channels are the paths'.
  out.set('conv3.weight', from === 'a' ? concatAxis(paths('conv3.weight'), 1) : entry(sd, 'conv3.weight'));
  for (const [k, v] of sd) if (!k.startsWith('paths.') && k !== 'conv3.weight') out.set(k, v);
  return sortLike(out, ['conv1.', 'bn1.', 'conv2.', 'bn2.', 'conv3.', 'bn3.', 'downsample.']);
}

/** Form (c) weights to form (a) or (b): the grouped tensors cut into the paths'. */
function groupedToPaths(sd: StateDict, to: 'a' | 'b', C: number): StateDict {
  const out: StateDict = new Map();
  const conv1 = entry(sd, 'conv1.weight');
  if (conv1.shape[0] % C !== 0) throw new Error(`ResNeXt weight conversion: conv1 has ${conv1.shape[0]} channels, not a multiple of cardinality ${C}`);
  const d = conv1.shape[0] / C;
  for (let i = 0; i < C; i++) {
    const p = `paths.${i}.`;
    out.set(`${p}conv1.weight`, sliceAxis(conv1, 0, i * d, d));
    for (const bn of ['bn1', 'bn2']) {
      for (const k of BN_KEYS) out.set(`${p}${bn}.${k}`, sliceAxis(entry(sd, `${bn}.${k}`), 0, i * d, d));
      const counter = entry(sd, `${bn}.num_batches_tracked`);
      out.set(`${p}${bn}.num_batches_tracked`, { ...counter, data: counter.data.slice() });
      if (bn === 'bn1') out.set(`${p}conv2.weight`, sliceAxis(entry(sd, 'conv2.weight'), 0, i * d, d));
    }
    if (to === 'a') out.set(`${p}conv3.weight`, sliceAxis(entry(sd, 'conv3.weight'), 1, i * d, d));
  }
  if (to === 'b') out.set('conv3.weight', entry(sd, 'conv3.weight'));
  for (const [k, v] of sd) if (/^(bn3|downsample)\./.test(k)) out.set(k, v);
  return out;
}

function sortLike(sd: StateDict, prefixes: string[]): StateDict {
  const rank = (k: string) => prefixes.findIndex((p) => k.startsWith(p));
  return new Map([...sd].sort((x, y) => rank(x[0]) - rank(y[0])));
}

/**
 * Converts a ResNeXt block's state dict from one form to another. The numbers are only rearranged,
 * so the converted block computes the same function (train and eval mode).
 */
export function convertResNeXtBlockState(sd: StateDict, from: ResNeXtForm, to: ResNeXtForm, cardinality: number): StateDict {
  if (!Number.isInteger(cardinality) || cardinality < 1) throw new Error(`ResNeXt weight conversion: cardinality must be a positive integer, got ${cardinality}`);
  for (const f of [from, to]) if (f !== 'a' && f !== 'b' && f !== 'c') throw new Error(`ResNeXt weight conversion: form must be 'a', 'b' or 'c', got ${String(f)}`);
  if (from === to) return new Map(sd);
  const grouped = from === 'c' ? sd : pathsToGrouped(sd, from, cardinality);
  return to === 'c' ? grouped : groupedToPaths(grouped, to, cardinality);
}

// ---- depth 2 (Fig. 4 of the paper) ----
//
// Grouping matters only from depth 3. A block of depth 2 aggregating C paths (3x3 in->d, BN, ReLU,
// 3x3 d->out, the path outputs summed, then BN) is exactly a basic block whose inner width is C*d:
// the first layers side by side are one 3x3 in->C*d, and the sum of the second layers over the
// paths is one 3x3 over the concatenated C*d channels. "Trivially wider", not a new architecture.

/** One path of the depth-2 block: 3x3 in->d, BN, ReLU, 3x3 d->out. */
class DepthTwoPath extends Module {
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly relu: ReLU;
  readonly conv2: Conv2d;

  constructor(inChannels: number, width: number, outChannels: number, stride: number) {
    super();
    this.conv1 = this.registerModule('conv1', makeConv(conv3x3(inChannels, width, stride)));
    this.bn1 = this.registerModule('bn1', new BatchNorm2d(width));
    this.relu = this.registerModule('relu', new ReLU());
    this.conv2 = this.registerModule('conv2', makeConv(conv3x3(width, outChannels)));
  }

  override forward(x: Tensor): Tensor {
    return this.conv2.forward(this.relu.forward(this.bn1.forward(this.conv1.forward(x))));
  }
}

/** The depth-2 block as C aggregated paths; keys paths.{i}.{conv1,bn1,conv2}, bn2, downsample.0/1. */
class DepthTwoPathsBlock extends Module {
  readonly paths: DepthTwoPath[];
  readonly bn2: BatchNorm2d;
  readonly relu: ReLU;
  readonly downsample: Sequential | null = null;

  constructor(readonly config: Required<ResNeXtBlockConfig>) {
    super();
    const { inChannels, outChannels, cardinality, pathWidth, stride } = config;
    this.paths = Array.from({ length: cardinality }, () => new DepthTwoPath(inChannels, pathWidth, outChannels, stride));
    this.registerModule('paths', new ModuleList(this.paths));
    this.bn2 = this.registerModule('bn2', new BatchNorm2d(outChannels));
    this.relu = this.registerModule('relu', new ReLU());
    if (shortcutFor(inChannels, outChannels, stride, 'projection') === 'projection') {
      this.downsample = this.registerModule('downsample',
        new Sequential(makeConv(conv1x1(inChannels, outChannels, stride)), new BatchNorm2d(outChannels)));
    }
  }

  override forward(x: Tensor): Tensor {
    const y = this.bn2.forward(this.paths.map((p) => p.forward(x)).reduce((acc, o) => add(acc, o)));
    return this.relu.forward(add(y, this.downsample ? this.downsample.forward(x) : x));
  }
}

/** The depth-2 block: 'paths' (C aggregated paths) or 'wide' (a BasicBlock of inner width C*d). */
export function depthTwoBlock(form: 'paths' | 'wide', config: ResNeXtBlockConfig): Module {
  const c = checkConfig(config);
  if (form === 'paths') return new DepthTwoPathsBlock(c);
  if (form !== 'wide') throw new Error(`depth-2 block: form must be 'paths' or 'wide', got ${String(form)}`);
  return new BasicBlock({
    kind: 'basic', inChannels: c.inChannels, width: c.cardinality * c.pathWidth, outChannels: c.outChannels, stride: c.stride,
    groups: 1, dilation: 1, shortcut: shortcutFor(c.inChannels, c.outChannels, c.stride, 'projection'),
  });
}

/** Converts a depth-2 block's weights between the paths and the wide form (exact rearrangements). */
export function convertDepthTwoState(sd: StateDict, from: 'paths' | 'wide', to: 'paths' | 'wide', cardinality: number): StateDict {
  if (!Number.isInteger(cardinality) || cardinality < 1) throw new Error(`depth-2 weight conversion: cardinality must be a positive integer, got ${cardinality}`);
  if (from === to) return new Map(sd);
  const out: StateDict = new Map();
  if (from === 'paths') {
    const paths = (k: string) => Array.from({ length: cardinality }, (_, i) => entry(sd, `paths.${i}.${k}`));
    out.set('conv1.weight', concatAxis(paths('conv1.weight'), 0));
    for (const k of BN_KEYS) out.set(`bn1.${k}`, concatAxis(paths(`bn1.${k}`), 0));
    out.set('bn1.num_batches_tracked', entry(sd, 'paths.0.bn1.num_batches_tracked'));
    // The sum over paths of conv2_i(y_i) is one conv over the concatenated y: input channels side by side.
    out.set('conv2.weight', concatAxis(paths('conv2.weight'), 1));
    for (const [k, v] of sd) if (/^(bn2|downsample)\./.test(k)) out.set(k, v);
    return sortLike(out, ['conv1.', 'bn1.', 'conv2.', 'bn2.', 'downsample.']);
  }
  const conv1 = entry(sd, 'conv1.weight');
  if (conv1.shape[0] % cardinality !== 0) throw new Error(`depth-2 weight conversion: conv1 has ${conv1.shape[0]} channels, not a multiple of cardinality ${cardinality}`);
  const d = conv1.shape[0] / cardinality;
  for (let i = 0; i < cardinality; i++) {
    const p = `paths.${i}.`;
    out.set(`${p}conv1.weight`, sliceAxis(conv1, 0, i * d, d));
    for (const k of BN_KEYS) out.set(`${p}bn1.${k}`, sliceAxis(entry(sd, `bn1.${k}`), 0, i * d, d));
    const counter = entry(sd, 'bn1.num_batches_tracked');
    out.set(`${p}bn1.num_batches_tracked`, { ...counter, data: counter.data.slice() });
    out.set(`${p}conv2.weight`, sliceAxis(entry(sd, 'conv2.weight'), 1, i * d, d));
  }
  for (const [k, v] of sd) if (/^(bn2|downsample)\./.test(k)) out.set(k, v);
  return out;
}
