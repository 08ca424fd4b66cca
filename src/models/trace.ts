// An analytic walk over a model's layer configurations: output shapes, parameters, state-dict
// entries and multiply-accumulates per layer, without allocating a weight or running a kernel.
// This is what `residual models` and `residual summary` print: counting ResNet-152 at 224x224 this
// way takes a millisecond, while a forward pass on the reference backend would take minutes.
//
// MACs follow the convention of REFERENCE.md (and torchvision's "GFLOPS"): convolutions and linear
// layers only; BatchNorm, ReLU, pooling and the residual sums are not counted.
import { conv2dOutputShape, conv2dParams, windowOutputSize, type Conv2dOptions } from '../tensor/ops.js';

export type Shape4 = readonly number[];

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

export interface PoolSpec {
  kernel: number;
  stride: number;
  padding: number;
}

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

export function convOptions(c: ConvSpec): Conv2dOptions {
  return { stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups };
}

/** Collects layer records as a model's trace function walks its layers in forward order. */
export class Tracer {
  readonly layers: LayerRecord[] = [];
  readonly containers: Record<string, string> = {};

  /** Names a composite module, so a summary grouped by depth can say what each row is. */
  container(name: string, type: string): void {
    this.containers[name] = type;
  }

  private add(name: string, type: string, outShape: number[], macs: number, state: StateKey[], detail = ''): number[] {
    const params = state.filter((s) => s.kind === 'param').reduce((a, s) => a + prod(s.shape), 0);
    this.layers.push({ name, type, detail, outShape, params, macs, state });
    return outShape;
  }

  conv(name: string, c: ConvSpec, x: Shape4): number[] {
    if (x[1] !== c.inChannels) {
      throw new Error(`${name}: expects ${c.inChannels} input channels, the walk reached it with ${x[1]} (shape [${x.join(',')}])`);
    }
    const weight = [c.outChannels, c.inChannels / c.groups, c.kernel, c.kernel];
    const out = conv2dOutputShape(x, weight, conv2dParams(convOptions(c)));
    if (out[2] < 1 || out[3] < 1) {
      throw new Error(`${name}: a ${c.kernel}x${c.kernel} kernel does not fit input [${x.join(',')}]; use a larger input`);
    }
    const macs = prod(out) * (c.inChannels / c.groups) * c.kernel * c.kernel;
    const detail = [`${c.kernel}x${c.kernel}`, c.stride > 1 ? `s${c.stride}` : '', c.groups > 1 ? `g${c.groups}` : '',
      c.dilation > 1 ? `d${c.dilation}` : ''].filter(Boolean).join(' ');
    return this.add(name, 'Conv2d', out, macs, [{ key: `${name}.weight`, shape: weight, kind: 'param' }], detail);
  }

  batchNorm(name: string, x: Shape4): number[] {
    const c = x[1];
    return this.add(name, 'BatchNorm2d', [...x], 0, [
      { key: `${name}.weight`, shape: [c], kind: 'param' },
      { key: `${name}.bias`, shape: [c], kind: 'param' },
      { key: `${name}.running_mean`, shape: [c], kind: 'buffer' },
      { key: `${name}.running_var`, shape: [c], kind: 'buffer' },
      { key: `${name}.num_batches_tracked`, shape: [], kind: 'buffer' },
    ]);
  }

  relu(name: string, x: Shape4): number[] {
    return this.add(name, 'ReLU', [...x], 0, []);
  }

  maxPool(name: string, p: PoolSpec, x: Shape4): number[] {
    const oh = windowOutputSize(x[2], p.kernel, p.stride, p.padding, 1, false);
    const ow = windowOutputSize(x[3], p.kernel, p.stride, p.padding, 1, false);
    if (oh < 1 || ow < 1) throw new Error(`${name}: the pooling window does not fit input [${x.join(',')}]; use a larger input`);
    return this.add(name, 'MaxPool2d', [x[0], x[1], oh, ow], 0, [], `${p.kernel}x${p.kernel} s${p.stride}`);
  }

  globalAvgPool(name: string, x: Shape4): number[] {
    return this.add(name, 'AdaptiveAvgPool2d', [x[0], x[1], 1, 1], 0, []);
  }

  /** The CIFAR ResNets' option-A shortcut: subsample, zero-pad channels; nothing to learn. */
  shortcutA(name: string, outChannels: number, stride: number, x: Shape4): number[] {
    return this.add(name, 'ShortcutA', [x[0], outChannels, Math.ceil(x[2] / stride), Math.ceil(x[3] / stride)], 0, [],
      stride > 1 ? `s${stride}` : '');
  }

  linear(name: string, inFeatures: number, outFeatures: number, x: readonly number[]): number[] {
    if (x[1] !== inFeatures) throw new Error(`${name}: expects ${inFeatures} features, the walk reached it with ${x[1]}`);
    return this.add(name, 'Linear', [x[0], outFeatures], x[0] * inFeatures * outFeatures, [
      { key: `${name}.weight`, shape: [outFeatures, inFeatures], kind: 'param' },
      { key: `${name}.bias`, shape: [outFeatures], kind: 'param' },
    ]);
  }

  result(inputShape: readonly number[], outputShape: readonly number[]): TraceResult {
    return {
      layers: this.layers,
      inputShape: [...inputShape],
      outputShape: [...outputShape],
      params: this.layers.reduce((a, l) => a + l.params, 0),
      macs: this.layers.reduce((a, l) => a + l.macs, 0),
      containers: this.containers,
    };
  }
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
