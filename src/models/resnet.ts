// torchvision's ImageNet ResNet family: the same layers, options, widths, strides and state-dict
// keys as torchvision.models.resnet, so its checkpoints load 1:1 and give the same numbers.
//   - stride on the bottleneck's 3x3 conv ("ResNet V1.5"), on conv1 of a basic block;
//   - bottleneck width int(planes * widthPerGroup / 64) * groups, output planes * 4;
//   - a projection shortcut (downsample.0/1) only on a stage's first block, where the shape changes;
//   - replaceStrideWithDilation trades a stage's stride for dilation (the stage's first block keeps
//     the previous dilation), as segmentation backbones need.
// Plain twins (plain18, plain34) are the same nets with every shortcut removed, projections included.
import { shortcutFor, type BlockSpec, type ShortcutKind } from './blocks.js';
import { ResNet, type NetSpec } from './net.js';

export interface ResNetOptions {
  /** Classifier outputs (default 1000). */
  numClasses?: number;
  /** Zero the last BN scale of each residual branch (torchvision's zero_init_residual). */
  zeroInitResidual?: boolean;
  /** Cardinality of the bottleneck's 3x3 conv (default 1). */
  groups?: number;
  /** Channels per group of the bottleneck's 3x3 conv at planes 64 (default 64). */
  widthPerGroup?: number;
  /** For layer2..layer4: replace the stride 2 with dilation (default [false, false, false]). */
  replaceStrideWithDilation?: readonly [boolean, boolean, boolean];
  /** Input channels (default 3). */
  inChannels?: number;
}

export type BlockKind = 'basic' | 'bottleneck';

const EXPANSION: Record<BlockKind, number> = { basic: 1, bottleneck: 4 };

function positiveInt(builder: string, name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new Error(`${builder}: ${name} must be a positive integer, got ${String(v)}`);
  return v;
}

/**
 * The spec of torchvision's ResNet(block, layers, ...). `shortcuts: false` builds the plain twin:
 * the same convolutions with no shortcut at all.
 */
export function resnetSpec(name: string, kind: BlockKind, layers: readonly number[], opts: ResNetOptions = {},
  shortcuts = true): NetSpec {
  const numClasses = positiveInt(name, 'numClasses', opts.numClasses ?? 1000);
  const inChannels = positiveInt(name, 'inChannels', opts.inChannels ?? 3);
  const groups = positiveInt(name, 'groups', opts.groups ?? 1);
  const widthPerGroup = positiveInt(name, 'widthPerGroup', opts.widthPerGroup ?? 64);
  const dilate = opts.replaceStrideWithDilation ?? [false, false, false];
  if (dilate.length !== 3) {
    throw new Error(`${name}: replaceStrideWithDilation should be null or a 3-element tuple, got ${JSON.stringify(dilate)}`);
  }
  if (kind === 'basic' && (groups !== 1 || widthPerGroup !== 64)) {
    throw new Error(`${name}: BasicBlock only supports groups=1 and widthPerGroup=64 (got groups ${groups}, widthPerGroup ${widthPerGroup})`);
  }
  if (kind === 'basic' && dilate.some(Boolean)) {
    throw new Error(`${name}: dilation > 1 is not supported in BasicBlock (replaceStrideWithDilation needs a bottleneck model)`);
  }
  layers.forEach((n, i) => positiveInt(name, `layers[${i}]`, n));
  const changed: ShortcutKind = shortcuts ? 'projection' : 'none';
  const expansion = EXPANSION[kind];
  let inPlanes = 64;
  let dilation = 1;
  const stages: BlockSpec[][] = layers.map((count, i) => {
    const planes = 64 * 2 ** i;
    let stride = i === 0 ? 1 : 2;
    const previousDilation = dilation;
    if (i > 0 && dilate[i - 1]) {
      dilation *= stride;
      stride = 1;
    }
    const width = kind === 'basic' ? planes : Math.floor(planes * (widthPerGroup / 64)) * groups;
    const outChannels = planes * expansion;
    const blocks: BlockSpec[] = [];
    for (let j = 0; j < count; j++) {
      const first = j === 0;
      const blockIn = first ? inPlanes : outChannels;
      const blockStride = first ? stride : 1;
      blocks.push({
        kind, inChannels: blockIn, width, outChannels, stride: blockStride,
        groups: kind === 'basic' ? 1 : groups,
        dilation: first ? previousDilation : dilation,
        shortcut: shortcutFor(blockIn, outChannels, blockStride, changed),
      });
    }
    inPlanes = outChannels;
    return blocks;
  });
  return {
    name,
    stem: {
      convs: [{ inChannels, outChannels: 64, kernel: 7, stride: 2, padding: 3, dilation: 1, groups: 1 }],
      maxPool: { kernel: 3, stride: 2, padding: 1 },
    },
    stages,
    numClasses,
    zeroInitResidual: opts.zeroInitResidual ?? false,
  };
}

// Options a builder fixes; passing a different value is an error, as in torchvision.
function fixed(name: string, opts: ResNetOptions, values: Partial<Record<'groups' | 'widthPerGroup', number>>): ResNetOptions {
  for (const [k, v] of Object.entries(values) as ['groups' | 'widthPerGroup', number][]) {
    if (opts[k] !== undefined && opts[k] !== v) {
      throw new Error(`${name}: ${k} is fixed at ${v} by this builder, got ${opts[k]}; use resnetSpec() for other values`);
    }
  }
  return { ...opts, ...values };
}

export const imagenetSpecs = {
  resnet18: (o: ResNetOptions = {}) => resnetSpec('resnet18', 'basic', [2, 2, 2, 2], o),
  resnet34: (o: ResNetOptions = {}) => resnetSpec('resnet34', 'basic', [3, 4, 6, 3], o),
  resnet50: (o: ResNetOptions = {}) => resnetSpec('resnet50', 'bottleneck', [3, 4, 6, 3], o),
  resnet101: (o: ResNetOptions = {}) => resnetSpec('resnet101', 'bottleneck', [3, 4, 23, 3], o),
  resnet152: (o: ResNetOptions = {}) => resnetSpec('resnet152', 'bottleneck', [3, 8, 36, 3], o),
  resnext50_32x4d: (o: ResNetOptions = {}) =>
    resnetSpec('resnext50_32x4d', 'bottleneck', [3, 4, 6, 3], fixed('resnext50_32x4d', o, { groups: 32, widthPerGroup: 4 })),
  resnext101_32x8d: (o: ResNetOptions = {}) =>
    resnetSpec('resnext101_32x8d', 'bottleneck', [3, 4, 23, 3], fixed('resnext101_32x8d', o, { groups: 32, widthPerGroup: 8 })),
  resnext101_64x4d: (o: ResNetOptions = {}) =>
    resnetSpec('resnext101_64x4d', 'bottleneck', [3, 4, 23, 3], fixed('resnext101_64x4d', o, { groups: 64, widthPerGroup: 4 })),
  wide_resnet50_2: (o: ResNetOptions = {}) =>
    resnetSpec('wide_resnet50_2', 'bottleneck', [3, 4, 6, 3], fixed('wide_resnet50_2', o, { widthPerGroup: 128 })),
  wide_resnet101_2: (o: ResNetOptions = {}) =>
    resnetSpec('wide_resnet101_2', 'bottleneck', [3, 4, 23, 3], fixed('wide_resnet101_2', o, { widthPerGroup: 128 })),
  plain18: (o: ResNetOptions = {}) => resnetSpec('plain18', 'basic', [2, 2, 2, 2], o, false),
  plain34: (o: ResNetOptions = {}) => resnetSpec('plain34', 'basic', [3, 4, 6, 3], o, false),
} as const;

export type ImageNetModelName = keyof typeof imagenetSpecs;

export const resnet18 = (o?: ResNetOptions) => new ResNet(imagenetSpecs.resnet18(o));
export const resnet34 = (o?: ResNetOptions) => new ResNet(imagenetSpecs.resnet34(o));
export const resnet50 = (o?: ResNetOptions) => new ResNet(imagenetSpecs.resnet50(o));
export const resnet101 = (o?: ResNetOptions) => new ResNet(imagenetSpecs.resnet101(o));
export const resnet152 = (o?: ResNetOptions) => new ResNet(imagenetSpecs.resnet152(o));
export const resnext50_32x4d = (o?: ResNetOptions) => new ResNet(imagenetSpecs.resnext50_32x4d(o));
export const resnext101_32x8d = (o?: ResNetOptions) => new ResNet(imagenetSpecs.resnext101_32x8d(o));
export const resnext101_64x4d = (o?: ResNetOptions) => new ResNet(imagenetSpecs.resnext101_64x4d(o));
export const wide_resnet50_2 = (o?: ResNetOptions) => new ResNet(imagenetSpecs.wide_resnet50_2(o));
export const wide_resnet101_2 = (o?: ResNetOptions) => new ResNet(imagenetSpecs.wide_resnet101_2(o));
/** resnet18 without shortcuts: the ImageNet plain-18 of the ResNet paper's Table 2. */
export const plain18 = (o?: ResNetOptions) => new ResNet(imagenetSpecs.plain18(o));
/** resnet34 without shortcuts: the ImageNet plain-34 of the ResNet paper's Table 2. */
export const plain34 = (o?: ResNetOptions) => new ResNet(imagenetSpecs.plain34(o));

