// The two residual blocks every model here is made of, with their lowering next to them (graph.ts:
// the one description of the block's layers that trace, plan and ONNX export read). Blocks are built
// from a plain BlockSpec, so the lowering needs no tensors; tests check that it and the modules agree
// key for key.
//
// Registration order mirrors torchvision (conv1, bn1, relu, conv2, bn2, [conv3, bn3,] downsample),
// which makes the state-dict key order identical to PyTorch's.
import { AvgPool2d, BatchNorm2d, Conv2d, Identity, Module, ReLU, Sequential, addThenRelu, bnRelu } from '../nn/index.js';
import { Tensor, shortcutA } from '../tensor/index.js';
import { GraphBuilder, childPath, convOptions, type ConvSpec, type Graph, type PoolSpec, type ValueId } from './graph.js';

/**
 * How a block's input reaches its sum:
 * - identity: added as is (shapes must match);
 * - projection: a strided 1x1 conv + BN, `downsample.0/1` (torchvision, paper option B);
 * - avgProjection: ResNet-D's (He et al. 2019, "Bag of Tricks"; timm's avg_down): a 2x2 average
 *   pool carries the stride (ceil mode, padding not counted; an Identity at stride 1), then a 1x1
 *   conv + BN at stride 1, `downsample.1/2`: no input pixel is skipped;
 * - optionA: subsampled and zero-padded to the new channel count (the paper's CIFAR nets);
 * - none: no shortcut and no sum at all (the paper's plain nets).
 */
export type ShortcutKind = 'identity' | 'projection' | 'avgProjection' | 'optionA' | 'none';

/** ResNet-D's shortcut pool: 2x2, ceil mode, the average over the pixels inside the input. */
export function avgDownPool(stride: number): PoolSpec {
  return { kernel: 2, stride, padding: 0, ceilMode: true, countIncludePad: false };
}

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
    } else if (spec.shortcut === 'avgProjection') {
      const p = avgDownPool(spec.stride);
      const pool = spec.stride > 1 ? new AvgPool2d(p.kernel, p.stride, p.padding, p.ceilMode, p.countIncludePad) : new Identity();
      this.downsample = this.registerModule('downsample',
        new Sequential(pool, makeConv(conv1x1(spec.inChannels, spec.outChannels)), new BatchNorm2d(spec.outChannels)));
    }
  }

  /** This block alone as a graph (paths without a prefix: "conv1", "downsample.0"...). */
  lower(input: readonly number[]): Graph {
    const g = new GraphBuilder(this.constructor.name, input);
    lowerBlock(g, '', this.spec, 0);
    return g.finish();
  }

  /** The BN whose scale zero_init_residual zeroes: the last one of the branch. */
  get lastNorm(): BatchNorm2d {
    return this.norms[this.norms.length - 1];
  }

  override forward(x: Tensor): Tensor {
    let y = x;
    const last = this.convs.length - 1;
    const { shortcut, outChannels, stride } = this.spec;
    // BN+ReLU and the residual add+ReLU run as fused ops (plain nets: the last BN+ReLU too).
    for (let i = 0; i <= last; i++) {
      const z = this.convs[i].forward(y);
      y = i < last || shortcut === 'none' ? bnRelu(this.norms[i], this.relu, z) : this.norms[i].forward(z);
    }
    if (shortcut === 'identity') return addThenRelu(this.relu, y, x);
    if (shortcut === 'projection' || shortcut === 'avgProjection') return addThenRelu(this.relu, y, this.downsample!.forward(x));
    if (shortcut === 'optionA') return addThenRelu(this.relu, y, shortcutA(x, outChannels, stride));
    return y;
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

/** Lowers ResidualBlock's layers in its forward order (and state-dict order); returns the block's output. */
export function lowerBlock(g: GraphBuilder, prefix: string, b: BlockSpec, x: ValueId): ValueId {
  checkSpec(b);
  const at = (name: string) => childPath(prefix, name);
  if (prefix) g.container(prefix, b.kind === 'basic' ? 'BasicBlock' : 'Bottleneck');
  const convs = branchConvs(b);
  let y = x;
  convs.forEach((c, i) => {
    y = g.conv(at(`conv${i + 1}`), c, y, at(`bn${i + 1}`));
    if (i < convs.length - 1) y = g.relu(at('relu'), y);
  });
  let s: ValueId | null = null;
  if (b.shortcut === 'identity') {
    s = x;
  } else if (b.shortcut === 'projection') {
    g.container(at('downsample'), 'Sequential');
    s = g.conv(at('downsample.0'), conv1x1(b.inChannels, b.outChannels, b.stride), x, at('downsample.1'));
  } else if (b.shortcut === 'avgProjection') {
    g.container(at('downsample'), 'Sequential');
    const pooled = b.stride > 1 ? g.pool('avgpool', at('downsample.0'), avgDownPool(b.stride), x) : x;
    s = g.conv(at('downsample.1'), conv1x1(b.inChannels, b.outChannels), pooled, at('downsample.2'));
  } else if (b.shortcut === 'optionA') {
    s = g.shortcutA(at('shortcut'), x, b.outChannels, b.stride);
  }
  if (s !== null) y = g.add(at('add'), y, s);
  return g.relu(at('relu'), y);
}
