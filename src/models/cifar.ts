// The CIFAR nets of the papers, for 32x32 inputs (any channel count: Fashion-MNIST has 1).
//
// ResNet-20/32/44/56/110/1202 (He et al. 2015, section 4.2): a 3x3 conv with 16 filters, three
// stages of n basic blocks with 16/32/64 filters on 32/16/8 maps (6n+2 layers), global average
// pooling and a linear layer. Shortcuts are option A: identity, or where a stage halves the map and
// doubles the channels, the input subsampled by 2 and zero-padded with new channels, so a ResNet
// has exactly the parameters of its plain twin (plain20..110: the same layers, no shortcuts).
// `shortcut: 'B'` uses projections instead (downsample.0/1), for the paper's option comparison.
//
// ResNeXt-29 (Xie et al. 2017, section 5.3): a 3x3 conv with 64 filters, three stages of three
// bottleneck blocks with outputs 256/512/1024, a grouped 3x3 conv of cardinality C and width
// C*d*2^stage inside, projection shortcuts where the shape changes, global pooling and a linear layer.
// "8x64d" is C = 8, d = 64.
//
// State-dict keys follow the torchvision names (conv1, bn1, layer1.0.conv1, layer1.0.downsample.0,
// fc), so one set of tools serves both families; the common CIFAR reimplementations name the head
// `linear` (akamaster) or `classifier`: rename that one key to load their checkpoints.
//
// Init: He normal with fan_out on every conv (torchvision's choice, and He et al.'s own), BN scale 1
// shift 0, PyTorch's default for the linear layer.
import { shortcutFor, type BlockSpec, type ShortcutKind } from './blocks.js';
import { ResNet, type NetSpec } from './net.js';

export interface CifarOptions {
  /** Classifier outputs (default 10). */
  numClasses?: number;
  /** Input channels (default 3; 1 for Fashion-MNIST). */
  inChannels?: number;
  zeroInitResidual?: boolean;
}

export interface CifarResNetOptions extends CifarOptions {
  /** Where a stage changes shape: 'A' zero-pad (the paper's CIFAR choice, default) or 'B' projection. */
  shortcut?: 'A' | 'B';
}

function positiveInt(builder: string, name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new Error(`${builder}: ${name} must be a positive integer, got ${String(v)}`);
  return v;
}

function stem(inChannels: number, width: number): NetSpec['stem'] {
  return { convs: [{ inChannels, outChannels: width, kernel: 3, stride: 1, padding: 1, dilation: 1, groups: 1 }], maxPool: null };
}

/**
 * The paper's CIFAR ResNet of depth 6n+2 (20, 32, 44, 56, 110, 1202, ...); `residual: false`
 * builds the plain net with the same layers.
 */
export function cifarResNetSpec(depth: number, opts: CifarResNetOptions = {}, residual = true): NetSpec {
  const name = `${residual ? 'resnet' : 'plain'}${depth}`;
  if (!Number.isInteger(depth) || depth < 8 || (depth - 2) % 6 !== 0) {
    throw new Error(`${name}: a CIFAR ResNet has depth 6n+2 (20, 32, 44, 56, 110, 1202), got ${depth}`);
  }
  const shortcutOption = opts.shortcut ?? 'A';
  if (shortcutOption !== 'A' && shortcutOption !== 'B') throw new Error(`${name}: shortcut must be 'A' or 'B', got ${String(shortcutOption)}`);
  const changed: ShortcutKind = !residual ? 'none' : shortcutOption === 'A' ? 'optionA' : 'projection';
  const n = (depth - 2) / 6;
  const inChannels = positiveInt(name, 'inChannels', opts.inChannels ?? 3);
  let channels = 16;
  const stages = [16, 32, 64].map((out, i) => {
    const blocks: BlockSpec[] = [];
    for (let j = 0; j < n; j++) {
      const stride = i > 0 && j === 0 ? 2 : 1;
      blocks.push({
        kind: 'basic', inChannels: channels, width: out, outChannels: out, stride, groups: 1, dilation: 1,
        shortcut: shortcutFor(channels, out, stride, changed),
      });
      channels = out;
    }
    return blocks;
  });
  return {
    name, stem: stem(inChannels, 16), stages,
    numClasses: positiveInt(name, 'numClasses', opts.numClasses ?? 10),
    zeroInitResidual: opts.zeroInitResidual ?? false,
  };
}

export interface CifarResNeXtOptions extends CifarOptions {
  /** C, the number of paths (groups of the 3x3 conv). */
  cardinality: number;
  /** d, the width of one path in the first stage (doubles with each stage). */
  bottleneckWidth: number;
  /** 9n+2 layers, n bottleneck blocks per stage (default 29: three blocks per stage). */
  depth?: number;
  /** Stem width; stage outputs are 4x, 8x, 16x it (default 64: outputs 256, 512, 1024). */
  baseChannels?: number;
}

/**
 * The ResNeXt paper's CIFAR network, and the general builder the cardinality experiment uses:
 * any cardinality C, path width d, depth and base width.
 */
export function cifarResNeXtSpec(opts: CifarResNeXtOptions, name?: string): NetSpec {
  const depth = opts.depth ?? 29;
  const label = name ?? `resnext${depth}_${opts.cardinality}x${opts.bottleneckWidth}d`;
  if (!Number.isInteger(depth) || depth < 11 || (depth - 2) % 9 !== 0) {
    throw new Error(`${label}: a CIFAR ResNeXt has depth 9n+2 (29 is three blocks per stage), got ${depth}`);
  }
  const cardinality = positiveInt(label, 'cardinality', opts.cardinality);
  const bottleneckWidth = positiveInt(label, 'bottleneckWidth', opts.bottleneckWidth);
  const base = positiveInt(label, 'baseChannels', opts.baseChannels ?? 64);
  const inChannels = positiveInt(label, 'inChannels', opts.inChannels ?? 3);
  const n = (depth - 2) / 9;
  let channels = base;
  const stages = [0, 1, 2].map((i) => {
    const outChannels = 4 * base * 2 ** i;
    const width = cardinality * bottleneckWidth * 2 ** i;
    const blocks: BlockSpec[] = [];
    for (let j = 0; j < n; j++) {
      const stride = i > 0 && j === 0 ? 2 : 1;
      blocks.push({
        kind: 'bottleneck', inChannels: channels, width, outChannels, stride, groups: cardinality, dilation: 1,
        shortcut: shortcutFor(channels, outChannels, stride, 'projection'),
      });
      channels = outChannels;
    }
    return blocks;
  });
  return {
    name: label, stem: stem(inChannels, base), stages,
    numClasses: positiveInt(label, 'numClasses', opts.numClasses ?? 10),
    zeroInitResidual: opts.zeroInitResidual ?? false,
  };
}

export const cifarSpecs = {
  resnet20: (o: CifarResNetOptions = {}) => cifarResNetSpec(20, o),
  resnet32: (o: CifarResNetOptions = {}) => cifarResNetSpec(32, o),
  resnet44: (o: CifarResNetOptions = {}) => cifarResNetSpec(44, o),
  resnet56: (o: CifarResNetOptions = {}) => cifarResNetSpec(56, o),
  resnet110: (o: CifarResNetOptions = {}) => cifarResNetSpec(110, o),
  resnet1202: (o: CifarResNetOptions = {}) => cifarResNetSpec(1202, o),
  plain20: (o: CifarResNetOptions = {}) => cifarResNetSpec(20, o, false),
  plain32: (o: CifarResNetOptions = {}) => cifarResNetSpec(32, o, false),
  plain44: (o: CifarResNetOptions = {}) => cifarResNetSpec(44, o, false),
  plain56: (o: CifarResNetOptions = {}) => cifarResNetSpec(56, o, false),
  plain110: (o: CifarResNetOptions = {}) => cifarResNetSpec(110, o, false),
  resnext29_8x64d: (o: CifarOptions = {}) => cifarResNeXtSpec({ ...o, cardinality: 8, bottleneckWidth: 64 }),
  resnext29_16x64d: (o: CifarOptions = {}) => cifarResNeXtSpec({ ...o, cardinality: 16, bottleneckWidth: 64 }),
} as const;

export type CifarModelName = keyof typeof cifarSpecs;

export const resnet20 = (o?: CifarResNetOptions) => new ResNet(cifarSpecs.resnet20(o));
export const resnet32 = (o?: CifarResNetOptions) => new ResNet(cifarSpecs.resnet32(o));
export const resnet44 = (o?: CifarResNetOptions) => new ResNet(cifarSpecs.resnet44(o));
export const resnet56 = (o?: CifarResNetOptions) => new ResNet(cifarSpecs.resnet56(o));
export const resnet110 = (o?: CifarResNetOptions) => new ResNet(cifarSpecs.resnet110(o));
export const resnet1202 = (o?: CifarResNetOptions) => new ResNet(cifarSpecs.resnet1202(o));
export const plain20 = (o?: CifarResNetOptions) => new ResNet(cifarSpecs.plain20(o));
export const plain32 = (o?: CifarResNetOptions) => new ResNet(cifarSpecs.plain32(o));
export const plain44 = (o?: CifarResNetOptions) => new ResNet(cifarSpecs.plain44(o));
export const plain56 = (o?: CifarResNetOptions) => new ResNet(cifarSpecs.plain56(o));
export const plain110 = (o?: CifarResNetOptions) => new ResNet(cifarSpecs.plain110(o));
export const resnext29_8x64d = (o?: CifarOptions) => new ResNet(cifarSpecs.resnext29_8x64d(o));
export const resnext29_16x64d = (o?: CifarOptions) => new ResNet(cifarSpecs.resnext29_16x64d(o));
/** Any CIFAR ResNeXt: cardinality, path width, depth, base width. */
export const cifarResNeXt = (o: CifarResNeXtOptions) => new ResNet(cifarResNeXtSpec(o));
