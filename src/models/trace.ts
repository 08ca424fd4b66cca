// The analytic trace, a reader of the lowered graph (graph.ts): output shapes, parameters,
// state-dict entries and multiply-accumulates per layer, without allocating a weight or running a kernel.
// This is what `residual models` and `residual summary` print: counting ResNet-152 at 224x224 this
// way takes a millisecond, while a forward pass on the reference backend would take minutes.
//
// MACs follow the convention of REFERENCE.md (and torchvision's "GFLOPS"): convolutions and linear
// layers only; BatchNorm, ReLU, pooling and the residual sums are not counted.
import { shapeOf, type Graph, type GraphNode } from './graph.js';

/** One state-dict entry a layer owns: `param` entries count as parameters, `buffer` entries do not. */
export interface StateKey {
  key: string;
  shape: number[];
  kind: 'param' | 'buffer';
}

export interface LayerRecord {
  /** Module path, e.g. "layer1.0.conv1"; the same path the state-dict keys start with. */
  name: string;
  type: string;
  /** The layer's configuration in a few characters, e.g. "3x3 s2 g32" for a conv. */
  detail: string;
  outShape: number[];
  params: number;
  macs: number;
  state: StateKey[];
}

export interface TraceResult {
  layers: LayerRecord[];
  inputShape: number[];
  outputShape: number[];
  params: number;
  macs: number;
  /** Types of the composite modules by path ("layer1" Sequential, "layer1.0" BasicBlock...). */
  containers: Record<string, string>;
}

function prod(xs: readonly number[]): number {
  return xs.reduce((a, b) => a * b, 1);
}

function batchNormState(path: string, c: number): StateKey[] {
  return [
    { key: `${path}.weight`, shape: [c], kind: 'param' },
    { key: `${path}.bias`, shape: [c], kind: 'param' },
    { key: `${path}.running_mean`, shape: [c], kind: 'buffer' },
    { key: `${path}.running_var`, shape: [c], kind: 'buffer' },
    { key: `${path}.num_batches_tracked`, shape: [], kind: 'buffer' },
  ];
}

function record(name: string, type: string, outShape: number[], macs: number, state: StateKey[], detail = ''): LayerRecord {
  const params = state.filter((s) => s.kind === 'param').reduce((a, s) => a + prod(s.shape), 0);
  return { name, type, detail, outShape, params, macs, state };
}

/** The layer records of one node at `batch` samples (a conv with its BN gives two; add, flatten, concat none). */
function nodeRecords(g: Graph, n: GraphNode, batch: number): LayerRecord[] {
  const out = [batch, ...n.out];
  switch (n.op) {
    case 'conv': {
      const c = n.conv;
      const weight = [c.outChannels, c.inChannels / c.groups, c.kernel, c.kernel];
      const macs = prod(out) * (c.inChannels / c.groups) * c.kernel * c.kernel;
      const detail = [`${c.kernel}x${c.kernel}`, c.stride > 1 ? `s${c.stride}` : '', c.groups > 1 ? `g${c.groups}` : '',
        c.dilation > 1 ? `d${c.dilation}` : ''].filter(Boolean).join(' ');
      const conv = record(n.path, 'Conv2d', out, macs, [{ key: `${n.path}.weight`, shape: weight, kind: 'param' }], detail);
      return n.bn ? [conv, record(n.bn, 'BatchNorm2d', out, 0, batchNormState(n.bn, c.outChannels))] : [conv];
    }
    case 'batchnorm': return [record(n.path, 'BatchNorm2d', out, 0, batchNormState(n.path, n.out[0]!))];
    case 'relu': return [record(n.path, 'ReLU', out, 0, [])];
    case 'shortcutA': return [record(n.path, 'ShortcutA', out, 0, [], n.stride > 1 ? `s${n.stride}` : '')];
    case 'maxpool':
    case 'avgpool':
      return [record(n.path, n.op === 'maxpool' ? 'MaxPool2d' : 'AvgPool2d', out, 0, [], `${n.pool.kernel}x${n.pool.kernel} s${n.pool.stride}`)];
    case 'gap': return [record(n.path, 'AdaptiveAvgPool2d', out, 0, [])];
    case 'linear': {
      const inFeatures = shapeOf(g, n.src)[0]!;
      const o = n.out[0]!;
      return [record(n.path, 'Linear', out, batch * inFeatures * o, [
        { key: `${n.path}.weight`, shape: [o, inFeatures], kind: 'param' },
        { key: `${n.path}.bias`, shape: [o], kind: 'param' },
      ])];
    }
    case 'add': case 'flatten': case 'concat': return [];
  }
}

/** The trace of a lowered module at `batch` samples: one record per layer, in forward order. */
export function traceGraph(g: Graph, batch = 1): TraceResult {
  const layers = g.nodes.flatMap((n) => nodeRecords(g, n, batch));
  return {
    layers,
    inputShape: [batch, ...g.input],
    outputShape: [batch, ...shapeOf(g, g.output)],
    params: layers.reduce((a, l) => a + l.params, 0),
    macs: layers.reduce((a, l) => a + l.macs, 0),
    containers: { ...g.containers },
  };
}

/** Sums layer records into one row per module at the given depth ("layer1.0" is depth 2). */
export function groupByDepth(layers: readonly LayerRecord[], depth: number, containers: Record<string, string> = {}): LayerRecord[] {
  const out: LayerRecord[] = [];
  for (const l of layers) {
    const parts = l.name.split('.');
    const name = parts.slice(0, depth).join('.');
    const last = out[out.length - 1];
    if (parts.length > depth && last && last.name === name) {
      last.params += l.params;
      last.macs += l.macs;
      last.outShape = l.outShape;
      last.state.push(...l.state);
    } else {
      const grouped = parts.length > depth;
      out.push({ ...l, name, type: grouped ? containers[name] ?? 'Module' : l.type, detail: grouped ? '' : l.detail, state: [...l.state] });
    }
  }
  return out;
}
