// The one lowering. Every network, and each block kind on its own, is described once as a small
// typed graph: nodes in forward order, each with its module path, its per-sample output shape and
// its weights by reference (the module path that holds them, which is also the state-dict prefix).
// The analytic trace (trace.ts: params, MACs, shapes, keys), the compiled inference plan
// (infer/compile.ts) and the ONNX exporter (onnx/export.ts) are readers of this graph; nothing else
// walks the blocks. A new stem, shortcut or block is added by its model file's lowering alone.
//
// The graph is the eval-mode structure: a conv node names the BatchNorm that follows it (readers
// fold it or keep it), ReLUs and sums are nodes of their own (readers fuse them). Shape arithmetic
// is tensor/ops.ts's, applied here and nowhere else on the TypeScript side.
import type { Module } from '../nn/module.js';
import { conv2dOutputShape, conv2dParams, windowOutputSize, type Conv2dOptions } from '../tensor/ops.js';

/** A convolution's configuration, as Conv2d takes it (every conv in these nets is bias-free). */
export interface ConvSpec {
  inChannels: number;
  outChannels: number;
  kernel: number;
  stride: number;
  padding: number;
  dilation: number;
  groups: number;
}

/** A square pooling window; `ceilMode` and `countIncludePad` as PyTorch's (defaults false, true). */
export interface PoolSpec {
  kernel: number;
  stride: number;
  padding: number;
  ceilMode?: boolean;
  countIncludePad?: boolean;
}

export function convOptions(c: ConvSpec): Conv2dOptions {
  return { stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups };
}

/** A value of the graph: 0 is the input, node i writes value i + 1. */
export type ValueId = number;

/** One operation. `out` is its per-sample output shape: [C, H, W], or [D] after flatten and linear. */
export type GraphNode = { path: string; out: number[] } & (
  /** A convolution; `bn` is the path of the BatchNorm right after it, or null. */
  | { op: 'conv'; src: ValueId; conv: ConvSpec; bn: string | null }
  /** A BatchNorm that does not follow a conv directly (ResNeXt form (a): after the sum of the paths). */
  | { op: 'batchnorm'; src: ValueId }
  | { op: 'relu'; src: ValueId }
  /** The residual sum: `src` is the branch, `other` the shortcut. */
  | { op: 'add'; src: ValueId; other: ValueId }
  /** The paper's option A: every stride-th pixel, channels zero-padded to `out[0]`. */
  | { op: 'shortcutA'; src: ValueId; stride: number }
  | { op: 'maxpool' | 'avgpool'; src: ValueId; pool: PoolSpec }
  /** AdaptiveAvgPool2d(1): [C, H, W] -> [C, 1, 1]. */
  | { op: 'gap'; src: ValueId }
  /** [C, 1, 1] -> [C] (torch.flatten, not a module: it owns no path of its own). */
  | { op: 'flatten'; src: ValueId }
  | { op: 'linear'; src: ValueId }
  /** Channel concatenation (ResNeXt form (b)). */
  | { op: 'concat'; srcs: ValueId[] });

export interface Graph {
  /** The module's name, e.g. "resnet50" or "Bottleneck". */
  name: string;
  /** Per-sample input shape [C, H, W]. */
  input: number[];
  nodes: GraphNode[];
  /** The value the module returns (its forward's output). */
  output: ValueId;
  /** Named values a caller may stop at: "stem", "layer1".."layerN", "pool", "logits" for a network. */
  features: Record<string, ValueId>;
  /** Composite modules by path ("layer1" Sequential, "layer1.0" BasicBlock...), for summaries. */
  containers: Record<string, string>;
}

/** A module that can describe itself as a Graph at a per-sample input shape [C, H, W]. */
export interface Lowerable {
  lower(input: readonly number[]): Graph;
}

export function isLowerable(m: unknown): m is Lowerable {
  return typeof (m as Partial<Lowerable> | null)?.lower === 'function';
}

/** The per-sample shape of a value. */
export function shapeOf(g: Graph, v: ValueId): number[] {
  return v === 0 ? g.input : g.nodes[v - 1]!.out;
}

/** The values a node reads. */
export function inputsOf(n: GraphNode): ValueId[] {
  if (n.op === 'concat') return n.srcs;
  if (n.op === 'add') return [n.src, n.other];
  return [n.src];
}

/** How many nodes read each value (index = ValueId). */
export function readerCounts(g: Graph): number[] {
  const counts = new Array<number>(g.nodes.length + 1).fill(0);
  for (const n of g.nodes) for (const v of inputsOf(n)) counts[v]!++;
  return counts;
}

/**
 * The module a node references by path, checked to be of `type`; a conv also to hold the weight its
 * ConvSpec says (a module swapped in from outside would not). Readers resolve weights through this.
 */
export function moduleAt<M extends Module>(modules: ReadonlyMap<string, Module>, path: string, type: new (...a: never[]) => M,
  conv?: ConvSpec): M {
  const m = modules.get(path);
  if (!(m instanceof type)) throw new Error(`${path}: expected a ${type.name} at this path, found ${m ? `a ${m.constructor.name}` : 'nothing'}`);
  if (conv) {
    const want = [conv.outChannels, conv.inChannels / conv.groups, conv.kernel, conv.kernel].join(', ');
    const have = (m as unknown as { weight?: { shape: number[] } }).weight?.shape.join(', ');
    if (have !== want) throw new Error(`${path}: weight [${have}] is not the [${want}] the network's spec has`);
  }
  return m;
}

/** "prefix.name", or "name" at the top (a block lowered on its own has no prefix). */
export function childPath(prefix: string, name: string): string {
  return prefix ? `${prefix}.${name}` : name;
}

function text(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Builds a Graph node by node, checking each node's input shape and computing its output shape. */
export class GraphBuilder {
  readonly nodes: GraphNode[] = [];
  readonly features: Record<string, ValueId> = {};
  readonly containers: Record<string, string> = {};
  readonly input: number[];

  constructor(readonly name: string, input: readonly number[]) {
    if (!Array.isArray(input) || input.length !== 3 || input.some((d) => !Number.isInteger(d) || d < 1)) {
      throw new Error(`${name}: input must be [C, H, W] of positive integers, got ${JSON.stringify(input)}`);
    }
    this.input = [...input];
  }

  shape(v: ValueId): number[] {
    return v === 0 ? this.input : this.nodes[v - 1]!.out;
  }

  private push(node: GraphNode): ValueId {
    this.nodes.push(node);
    return this.nodes.length;
  }

  private spatial(path: string, v: ValueId, what: string): [number, number, number] {
    const s = this.shape(v);
    if (s.length !== 3) throw new Error(`${path}: ${what} needs a [C, H, W] input, got ${text(s)}`);
    return s as [number, number, number];
  }

  container(path: string, type: string): void {
    this.containers[path] = type;
  }

  /** Names a value a caller may stop at (a network's features). */
  mark(name: string, v: ValueId): void {
    this.features[name] = v;
  }

  conv(path: string, conv: ConvSpec, src: ValueId, bn: string | null): ValueId {
    const x = this.spatial(path, src, 'a convolution');
    if (x[0] !== conv.inChannels) throw new Error(`${path}: expects ${conv.inChannels} input channels, gets ${x[0]} (input ${text(x)})`);
    const weight = [conv.outChannels, conv.inChannels / conv.groups, conv.kernel, conv.kernel];
    const [, c, h, w] = conv2dOutputShape([1, ...x], weight, conv2dParams(convOptions(conv)));
    if (h! < 1 || w! < 1) {
      throw new Error(`${path}: input ${text(x)} is too small for this ${conv.kernel}x${conv.kernel} stride ${conv.stride} convolution; use a larger input`);
    }
    return this.push({ op: 'conv', path, src, conv, bn, out: [c!, h!, w!] });
  }

  batchNorm(path: string, src: ValueId): ValueId {
    return this.push({ op: 'batchnorm', path, src, out: [...this.spatial(path, src, 'a BatchNorm')] });
  }

  relu(path: string, src: ValueId): ValueId {
    return this.push({ op: 'relu', path, src, out: [...this.shape(src)] });
  }

  add(path: string, src: ValueId, other: ValueId): ValueId {
    const a = this.shape(src), b = this.shape(other);
    if (a.join() !== b.join()) throw new Error(`${path}: cannot add ${text(a)} and ${text(b)}`);
    return this.push({ op: 'add', path, src, other, out: [...a] });
  }

  shortcutA(path: string, src: ValueId, outChannels: number, stride: number): ValueId {
    const [c, h, w] = this.spatial(path, src, 'an option-A shortcut');
    if (outChannels < c) throw new Error(`${path}: option A cannot shrink ${c} channels to ${outChannels}`);
    return this.push({ op: 'shortcutA', path, src, stride, out: [outChannels, Math.ceil(h / stride), Math.ceil(w / stride)] });
  }

  pool(op: 'maxpool' | 'avgpool', path: string, pool: PoolSpec, src: ValueId): ValueId {
    const [c, h, w] = this.spatial(path, src, 'pooling');
    const ceil = pool.ceilMode ?? false;
    const oh = windowOutputSize(h, pool.kernel, pool.stride, pool.padding, 1, ceil);
    const ow = windowOutputSize(w, pool.kernel, pool.stride, pool.padding, 1, ceil);
    if (oh < 1 || ow < 1) throw new Error(`${path}: input ${text([c, h, w])} is too small for a ${pool.kernel}x${pool.kernel} stride ${pool.stride} pool; use a larger input`);
    return this.push({ op, path, src, pool, out: [c, oh, ow] });
  }

  gap(path: string, src: ValueId): ValueId {
    return this.push({ op: 'gap', path, src, out: [this.spatial(path, src, 'global pooling')[0], 1, 1] });
  }

  flatten(path: string, src: ValueId): ValueId {
    return this.push({ op: 'flatten', path, src, out: [this.shape(src).reduce((a, b) => a * b, 1)] });
  }

  linear(path: string, src: ValueId, inFeatures: number, outFeatures: number): ValueId {
    const x = this.shape(src);
    if (x.length !== 1 || x[0] !== inFeatures) throw new Error(`${path}: takes ${inFeatures} features, gets ${text(x)} (flatten first)`);
    return this.push({ op: 'linear', path, src, out: [outFeatures] });
  }

  concat(path: string, srcs: ValueId[]): ValueId {
    const shapes = srcs.map((v) => this.spatial(path, v, 'concatenation'));
    if (shapes.some((s) => s[1] !== shapes[0]![1] || s[2] !== shapes[0]![2])) {
      throw new Error(`${path}: cannot concatenate ${shapes.map(text).join(', ')} (their H and W differ)`);
    }
    return this.push({ op: 'concat', path, srcs, out: [shapes.reduce((a, s) => a + s[0], 0), shapes[0]![1], shapes[0]![2]] });
  }

  finish(output: ValueId = this.nodes.length): Graph {
    return { name: this.name, input: this.input, nodes: this.nodes, output, features: this.features, containers: this.containers };
  }
}

/**
 * A stable name for every value (index = ValueId): "input" for 0, else the path of the node that
 * makes it, with "#2", "#3"... for a path's later nodes (a block's one ReLU runs two or three times).
 * Calibrations key value ranges by these names, so they read the same across processes.
 */
export function valueNames(g: Graph): string[] {
  const seen = new Map<string, number>();
  return ['input', ...g.nodes.map((n) => {
    const k = (seen.get(n.path) ?? 0) + 1;
    seen.set(n.path, k);
    return k === 1 ? n.path : `${n.path}#${k}`;
  })];
}
