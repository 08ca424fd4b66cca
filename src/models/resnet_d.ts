// ResNet-D (He et al. 2019, "Bag of Tricks for Image Classification with CNNs"), as timm builds it
// (resnet26d, resnet50d, resnext50d_32x4d): torchvision's bottleneck ResNet with two changes that keep
// every input pixel in play where the stride falls:
//   - a deep stem: three 3x3 convs 32-32-64 (the first stride 2) instead of one 7x7, `conv1.0/1/3/4/6`
//     then bn1, relu and the max pool as before;
//   - the projection shortcut averages 2x2 first (ceil mode, padding not counted; an Identity at
//     stride 1) and then runs its 1x1 conv at stride 1, `downsample.1/2` (see ShortcutKind).
// Everything else (stride on the 3x3, widths, keys) is torchvision's, so this file only rewrites the
// spec; the lowering (graph.ts) makes trace, plan and ONNX export of it work as for any other net.
import type { BlockSpec } from './blocks.js';
import { ResNet, type NetSpec } from './net.js';
import { resnetSpec, type BlockKind, type ResNetOptions } from './resnet.js';

/** timm's deep-stem widths: 32, 32, then the stage input of 64. */
const DEEP_STEM = [32, 32, 64];

export function resnetDSpec(name: string, kind: BlockKind, layers: readonly number[], opts: ResNetOptions = {}): NetSpec {
  if (opts.replaceStrideWithDilation?.some(Boolean)) {
    throw new Error(`${name}: replaceStrideWithDilation is not supported for ResNet-D (its average-pool shortcut would need 'same' padding)`);
  }
  const base = resnetSpec(name, kind, layers, opts);
  let inChannels = base.stem.convs[0]!.inChannels;
  const convs = DEEP_STEM.map((outChannels, i) => {
    const c = { inChannels, outChannels, kernel: 3, stride: i === 0 ? 2 : 1, padding: 1, dilation: 1, groups: 1 };
    inChannels = outChannels;
    return c;
  });
  const stages = base.stages.map((blocks) => blocks.map((b): BlockSpec => (b.shortcut === 'projection' ? { ...b, shortcut: 'avgProjection' } : b)));
  return { ...base, stem: { ...base.stem, convs }, stages };
}

function fixedGroups(name: string, opts: ResNetOptions, groups: number, widthPerGroup: number): ResNetOptions {
  if ((opts.groups ?? groups) !== groups || (opts.widthPerGroup ?? widthPerGroup) !== widthPerGroup) {
    throw new Error(`${name}: groups and widthPerGroup are fixed at ${groups} and ${widthPerGroup} by this builder; use resnetDSpec() for other values`);
  }
  return { ...opts, groups, widthPerGroup };
}

export const resnetDSpecs = {
  resnet26d: (o: ResNetOptions = {}) => resnetDSpec('resnet26d', 'bottleneck', [2, 2, 2, 2], o),
  resnet50d: (o: ResNetOptions = {}) => resnetDSpec('resnet50d', 'bottleneck', [3, 4, 6, 3], o),
  resnext50d_32x4d: (o: ResNetOptions = {}) =>
    resnetDSpec('resnext50d_32x4d', 'bottleneck', [3, 4, 6, 3], fixedGroups('resnext50d_32x4d', o, 32, 4)),
} as const;

export const resnet26d = (o?: ResNetOptions) => new ResNet(resnetDSpecs.resnet26d(o));
export const resnet50d = (o?: ResNetOptions) => new ResNet(resnetDSpecs.resnet50d(o));
export const resnext50d_32x4d = (o?: ResNetOptions) => new ResNet(resnetDSpecs.resnext50d_32x4d(o));
