// The two residual blocks every model here is made of, each with a trace function next to it that
// walks the same layers on shapes only (see trace.ts). Blocks are built from a plain BlockSpec, so
// the walk needs no tensors; tests check that the walk and the modules agree key for key.
//
// Registration order mirrors torchvision (conv1, bn1, relu, conv2, bn2, [conv3, bn3,] downsample),
// which makes the state-dict key order identical to PyTorch's.
import { BatchNorm2d, Conv2d, Module, ReLU, Sequential } from '../nn/index.js';
import { Tensor, add, shortcutA } from '../tensor/index.js';
import { Tracer, convOptions, type ConvSpec, type Shape4 } from './trace.js';

/**
 * How a block's input reaches its sum:
 * - identity: added as is (shapes must match);
 * - projection: a strided 1x1 conv + BN, `downsample.0/1` (torchvision, paper option B);
 * - optionA: subsampled and zero-padded to the new channel count (the paper's CIFAR nets);
 * - none: no shortcut and no sum at all (the paper's plain nets).
 */
export type ShortcutKind = 'identity' | 'projection' | 'optionA' | 'none';

export interface BlockSpec {
  kind: 'basic' | 'bottleneck';
  inChannels: number;
  /** Channels inside the block: the bottleneck's 3x3 width; a basic block's conv1 output (= outChannels). */
  width: number;
  outChannels: number;
  /** On the 3x3 conv: conv1 of a basic block, conv2 of a bottleneck (torchvision "V1.5"). */
  stride: number;
  /** Cardinality of the bottleneck's grouped 3x3 conv. */
  groups: number;
  /** Dilation (and padding) of the bottleneck's 3x3 conv. */
  dilation: number;
  shortcut: ShortcutKind;
}

export function conv3x3(inChannels: number, outChannels: number, stride = 1, groups = 1, dilation = 1): ConvSpec {
  return { inChannels, outChannels, kernel: 3, stride, padding: dilation, dilation, groups };
}

export function conv1x1(inChannels: number, outChannels: number, stride = 1): ConvSpec {
  return { inChannels, outChannels, kernel: 1, stride, padding: 0, dilation: 1, groups: 1 };
}

export function makeConv(c: ConvSpec): Conv2d {
  return new Conv2d(c.inChannels, c.outChannels, c.kernel, { ...convOptions(c), bias: false });
}

/** The convolutions of a block's residual branch, in order. */
export function branchConvs(b: BlockSpec): ConvSpec[] {
  if (b.kind === 'basic') return [conv3x3(b.inChannels, b.width, b.stride), conv3x3(b.width, b.outChannels)];
  return [conv1x1(b.inChannels, b.width), conv3x3(b.width, b.width, b.stride, b.groups, b.dilation), conv1x1(b.width, b.outChannels)];
}

/** The shortcut a stage's block needs: identity when the shape is unchanged, `changed` otherwise. */
export function shortcutFor(inChannels: number, outChannels: number, stride: number, changed: ShortcutKind): ShortcutKind {
  if (changed === 'none') return 'none';
  return stride !== 1 || inChannels !== outChannels ? changed : 'identity';
}

function checkSpec(b: BlockSpec): void {
  if (b.shortcut === 'identity' && (b.stride !== 1 || b.inChannels !== b.outChannels)) {
    throw new Error(`block ${b.inChannels}->${b.outChannels} stride ${b.stride} changes shape, so an identity shortcut cannot be used`);
  }
  if (b.kind === 'basic' && (b.groups !== 1 || b.dilation !== 1)) {
    throw new Error('a basic block has no grouped or dilated convolution (groups 1, dilation 1)');
  }
}

/** A residual block: a branch of two (basic) or three (bottleneck) conv-BN layers plus a shortcut. */
export class ResidualBlock extends Module {
  readonly convs: Conv2d[] = [];
  readonly norms: BatchNorm2d[] = [];
  readonly relu: ReLU;
  readonly downsample: Sequential | null = null;

  constructor(readonly spec: BlockSpec) {
    super();
    checkSpec(spec);
    const convs = branchConvs(spec);
    let relu: ReLU | null = null;
    convs.forEach((c, i) => {
      this.convs.push(this.registerModule(`conv${i + 1}`, makeConv(c)));
      this.norms.push(this.registerModule(`bn${i + 1}`, new BatchNorm2d(c.outChannels)));
      // torchvision registers the block's one ReLU right after bn1 (basic) or bn3 (bottleneck).
      if ((spec.kind === 'basic' && i === 0) || (spec.kind === 'bottleneck' && i === 2)) relu = this.registerModule('relu', new ReLU());
    });
    this.relu = relu!;
    if (spec.shortcut === 'projection') {
      this.downsample = this.registerModule('downsample',
        new Sequential(makeConv(conv1x1(spec.inChannels, spec.outChannels, spec.stride)), new BatchNorm2d(spec.outChannels)));
    }
  }

  /** The BN whose scale zero_init_residual zeroes: the last one of the branch. */
  get lastNorm(): BatchNorm2d {
    return this.norms[this.norms.length - 1];
  }

  override forward(x: Tensor): Tensor {
    let y = x;
    const last = this.convs.length - 1;
    for (let i = 0; i <= last; i++) {
      y = this.norms[i].forward(this.convs[i].forward(y));
      if (i < last) y = this.relu.forward(y);
    }
    const { shortcut, outChannels, stride } = this.spec;
    if (shortcut === 'identity') y = add(y, x);
    else if (shortcut === 'projection') y = add(y, this.downsample!.forward(x));
    else if (shortcut === 'optionA') y = add(y, shortcutA(x, outChannels, stride));
    return this.relu.forward(y);
  }
}

/** torchvision's BasicBlock: two 3x3 conv-BN layers (expansion 1). */
export class BasicBlock extends ResidualBlock {
  constructor(spec: BlockSpec) {
    if (spec.kind !== 'basic') throw new Error(`BasicBlock: the spec describes a ${spec.kind} block`);
    super(spec);
  }
}

/** torchvision's Bottleneck: 1x1 reduce, 3x3 (grouped, strided, dilated), 1x1 expand (expansion 4 in ResNets). */
export class Bottleneck extends ResidualBlock {
  constructor(spec: BlockSpec) {
    if (spec.kind !== 'bottleneck') throw new Error(`Bottleneck: the spec describes a ${spec.kind} block`);
    super(spec);
  }
}

/** The block class a spec asks for. */
export function makeBlock(spec: BlockSpec): ResidualBlock {
  return spec.kind === 'basic' ? new BasicBlock(spec) : new Bottleneck(spec);
}

/** Walks ResidualBlock's layers in its forward order. */
export function traceBlock(t: Tracer, prefix: string, b: BlockSpec, x: Shape4): number[] {
  checkSpec(b);
  t.container(prefix, b.kind === 'basic' ? 'BasicBlock' : 'Bottleneck');
  const convs = branchConvs(b);
  let y: number[] = [...x];
  convs.forEach((c, i) => {
    y = t.conv(`${prefix}.conv${i + 1}`, c, y);
    y = t.batchNorm(`${prefix}.bn${i + 1}`, y);
    if (i < convs.length - 1) y = t.relu(`${prefix}.relu`, y);
  });
  if (b.shortcut === 'projection') {
    t.container(`${prefix}.downsample`, 'Sequential');
    const s = t.conv(`${prefix}.downsample.0`, conv1x1(b.inChannels, b.outChannels, b.stride), x);
    t.batchNorm(`${prefix}.downsample.1`, s);
  } else if (b.shortcut === 'optionA') {
    t.shortcutA(`${prefix}.shortcut`, b.outChannels, b.stride, x);
  }
  return t.relu(`${prefix}.relu`, y);
}
