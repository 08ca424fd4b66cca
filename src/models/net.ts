// The trunk every model here shares: a stem (conv1, bn1, relu, optional maxpool), stages of
// residual blocks named layer1..layerN, global average pooling and a linear head `fc`. The
// ImageNet family (resnet.ts), ResNet-D (resnet_d.ts) and the CIFAR family (cifar.ts) differ only in
// the NetSpec they build. lowerNet is the network's one structural description (graph.ts).
import { BatchNorm2d, Conv2d, Identity, Linear, MaxPool2d, AdaptiveAvgPool2d, Module, ReLU, Sequential, kaimingNormalFanOut, bnRelu } from '../nn/index.js';
import { Tensor, flatten, isGradEnabled, tidy } from '../tensor/index.js';
import { ResidualBlock, lowerBlock, makeBlock, makeConv, type BlockSpec } from './blocks.js';
import { GraphBuilder, type ConvSpec, type Graph, type PoolSpec, type ValueId } from './graph.js';
import { traceGraph, type TraceResult } from './trace.js';

export interface NetSpec {
  /** The builder's name, e.g. "resnet50"; informative only. */
  name: string;
  /**
   * `convs`: one conv (torchvision's 7x7, the CIFAR 3x3) is `conv1`; several (ResNet-D's deep stem,
   * 3x3 32-32-64) make `conv1` a Sequential of conv, BN, ReLU, ..., conv (keys conv1.0/1/3/4/6).
   * The last one is followed by bn1 and relu, then the max pool if any.
   */
  stem: { convs: ConvSpec[]; maxPool: PoolSpec | null };
  /** stages[i] is layer{i+1}; each holds its blocks in order. */
  stages: BlockSpec[][];
  numClasses: number;
  /** Zero the last BN scale of every residual branch, so each block starts as the identity. */
  zeroInitResidual: boolean;
}

/** Names forwardFeatures accepts: "stem", "layer1".."layerN", "pool" (pooled, flattened) and "logits". */
export type FeatureName = 'stem' | `layer${number}` | 'pool' | 'logits';

export function featureNames(spec: NetSpec): string[] {
  return ['stem', ...spec.stages.map((_, i) => `layer${i + 1}`), 'pool', 'logits'];
}

/**
 * What fine-tuning keeps fixed: 'none'; 'trunk' (everything but the classifier `fc`); 'stages:N'
 * (the stem and the first N stages, layer1..layerN; 'stages:0' is the stem alone).
 */
export type FreezeSpec = 'none' | 'trunk' | `stages:${number}`;

/** Reads a FreezeSpec as the CLI spells it, with an error that lists the forms. */
export function parseFreeze(text: string, stageCount?: number): FreezeSpec {
  if (text === 'none' || text === 'trunk') return text;
  const m = /^stages:(\d+)$/.exec(text);
  if (m) {
    const n = Number(m[1]);
    if (stageCount !== undefined && n > stageCount) throw new Error(`--freeze ${text}: the model has only ${stageCount} stages (stages:0..${stageCount})`);
    return `stages:${n}`;
  }
  throw new Error(`--freeze must be none, trunk or stages:N (the stem and the first N stages), got "${text}"`);
}

/** The channels a network takes: its first conv's input. */
export function inputChannels(spec: NetSpec): number {
  return spec.stem.convs[0]!.inChannels;
}

export function headFeatures(spec: NetSpec): number {
  const last = spec.stages[spec.stages.length - 1];
  return last[last.length - 1].outChannels;
}

export class ResNet extends Module {
  /** A Conv2d, or a Sequential for a deep stem (see NetSpec.stem). */
  readonly conv1: Conv2d | Sequential;
  readonly bn1: BatchNorm2d;
  readonly relu: ReLU;
  readonly maxpool: MaxPool2d | null;
  readonly stages: Sequential[] = [];
  readonly avgpool: AdaptiveAvgPool2d;
  // Kept in step with the child "fc" by registerModule below: a head swapped from outside (as
  // torchvision users do, `fc = Identity()`) must be the one forward and the exporters see, not the
  // disposed one it replaced.
  private headModule: Linear | Identity;

  /**
   * `initWeights: false` skips torchvision's init (the layers keep PyTorch's defaults): for models
   * whose weights are about to be loaded, where the He init would be drawn only to be overwritten.
   */
  constructor(readonly spec: NetSpec, { initWeights = true }: { initWeights?: boolean } = {}) {
    super();
    const { stem } = spec;
    if (stem.convs.length === 0) throw new Error(`${spec.name}: the stem needs at least one conv`);
    const last = stem.convs[stem.convs.length - 1]!;
    this.conv1 = this.registerModule('conv1', stem.convs.length === 1 ? makeConv(last)
      : new Sequential(...stem.convs.flatMap((c, i) => (i < stem.convs.length - 1 ? [makeConv(c), new BatchNorm2d(c.outChannels), new ReLU()] : [makeConv(c)]))));
    this.bn1 = this.registerModule('bn1', new BatchNorm2d(last.outChannels));
    this.relu = this.registerModule('relu', new ReLU());
    this.maxpool = stem.maxPool
      ? this.registerModule('maxpool', new MaxPool2d(stem.maxPool.kernel, stem.maxPool.stride, stem.maxPool.padding))
      : null;
    spec.stages.forEach((blocks, i) => {
      this.stages.push(this.registerModule(`layer${i + 1}`, new Sequential(...blocks.map(makeBlock))));
    });
    this.avgpool = this.registerModule('avgpool', new AdaptiveAvgPool2d(1));
    this.headModule = this.registerModule('fc', new Linear(headFeatures(spec), spec.numClasses));
    if (initWeights) this.initWeights();
  }

  /** torchvision's init: He normal (fan_out) convs, BN scale 1 and shift 0, PyTorch's default Linear. */
  private initWeights(): void {
    for (const [, m] of this.namedModules()) {
      if (m instanceof Conv2d) m.weight.assign(kaimingNormalFanOut(m.weight.shape));
    }
    if (this.spec.zeroInitResidual) {
      for (const [, m] of this.namedModules()) {
        // A plain block has no residual branch to silence; zeroing it would cut the signal.
        if (m instanceof ResidualBlock && m.spec.shortcut !== 'none') m.lastNorm.weight.assign(new Float32Array(m.lastNorm.numFeatures));
      }
    }
  }

  /**
   * The classifier `fc`, a Linear. Throws when fc was replaced by an Identity (the model then
   * outputs its pooled features and has no classifier); `head` gives either.
   */
  get fc(): Linear {
    if (this.headModule instanceof Identity) {
      throw new Error(`${this.spec.name}: fc is an Identity (the model outputs its pooled features), so there is no classifier to read; use model.head, a Linear or an Identity`);
    }
    return this.headModule;
  }

  /** The module registered as fc: the Linear classifier, or an Identity when the model is a feature extractor. */
  get head(): Linear | Identity {
    return this.headModule;
  }

  /** Outputs of forward: the Linear's classes, or the pooled feature width with an Identity head. */
  get numClasses(): number {
    return this.headModule instanceof Linear ? this.headModule.outFeatures : headFeatures(this.spec);
  }

  /**
   * Replacing "fc" also replaces the head forward uses. Only a Linear or an Identity is taken: the
   * compiled plan and the ONNX exporter know those two heads, and anything else would fail there later.
   */
  override registerModule<M extends Module>(name: string, m: M): M {
    if (name === 'fc') {
      if (!(m instanceof Linear) && !(m instanceof Identity)) {
        throw new Error(`${this.spec.name}: fc must be a Linear (a classifier) or an Identity (pooled features), got a ${m.constructor.name}; ` +
          'to put another head on the features, run forwardFeatures(x, ["pool"]) and apply it yourself');
      }
      super.registerModule(name, m);
      this.headModule = m;
      return m;
    }
    return super.registerModule(name, m);
  }

  /** Swaps the classifier for a freshly initialized one with `numClasses` outputs (fine-tuning). */
  replaceHead(numClasses: number): Linear {
    if (!Number.isInteger(numClasses) || numClasses < 1) throw new Error(`replaceHead: numClasses must be a positive integer, got ${numClasses}`);
    const head = this.registerModule('fc', new Linear(headFeatures(this.spec), numClasses));
    head.train(this.training);
    return head;
  }

  /** The network as it is now (its head a Linear of any width, or an Identity) as a graph (lowerNet). */
  lower(input: readonly number[]): Graph {
    return lowerNet(this.spec, input, this.headModule instanceof Linear ? { outFeatures: this.headModule.outFeatures } : null);
  }

  /**
   * Freezes part of the network for fine-tuning (see FreezeSpec; no argument: all of it): frozen
   * layers take no gradient, skip their backward pass and keep BatchNorm in eval mode. Everything
   * else is made trainable. unfreeze() makes all of it trainable again.
   */
  override freeze(what?: FreezeSpec): this {
    if (what === undefined) return super.freeze();
    const spec = parseFreeze(what, this.stages.length);
    this.unfreeze(this.headModule.training);
    if (spec === 'none') return this;
    const frozenStages = spec === 'trunk' ? this.stages.length : Number(spec.slice('stages:'.length));
    for (const m of this.stemModules()) m.freeze();
    this.stages.slice(0, frozenStages).forEach((s) => s.freeze());
    return this;
  }

  /** 'none', 'trunk' or 'stages:N': what freeze() left frozen (a head frozen too reads as 'trunk'). */
  get frozenLayers(): FreezeSpec {
    if (!this.conv1.frozen) return 'none';
    const n = this.stages.findIndex((s) => !s.frozen);
    return n === -1 ? 'trunk' : `stages:${n}`;
  }

  private stemModules(): Module[] {
    return [this.conv1, this.bn1, this.relu, ...(this.maxpool ? [this.maxpool] : [])];
  }

  override forward(x: Tensor): Tensor {
    return this.forwardFeatures(x, ['logits']).logits;
  }

  /**
   * Runs the network up to the last feature asked for and returns those outputs by name: "stem"
   * (after the max pool), "layer1".."layerN", "pool" ([N, C] pooled features) and "logits".
   * Later layers are not run. Memory is the caller's to manage, as with forward (wrap in tidy()).
   */
  forwardFeatures(x: Tensor, names: readonly string[]): Record<string, Tensor> {
    const known = featureNames(this.spec);
    const unknown = names.filter((n) => !known.includes(n));
    if (unknown.length || names.length === 0) {
      throw new Error(`forwardFeatures: unknown feature ${unknown.map((n) => `"${n}"`).join(', ') || '(none asked)'}; ` +
        `this model has ${known.join(', ')}`);
    }
    const c = inputChannels(this.spec);
    if (x.shape.length !== 4 || x.shape[1] !== c) {
      throw new Error(`${this.spec.name}: input must be [N, ${c}, H, W], got [${x.shape.join(',')}]`);
    }
    const wanted = new Set(names);
    const lastIndex = Math.max(...names.map((n) => known.indexOf(n)));
    const out: Record<string, Tensor> = {};
    const stepsDone = (name: string, y: Tensor): boolean => {
      if (wanted.has(name)) out[name] = y;
      return known.indexOf(name) >= lastIndex;
    };
    // A part that records no tape (frozen, or no gradient wanted) frees its intermediate
    // activations as soon as it is done: a frozen ResNet-50 trunk then holds one stage's
    // activations at a time instead of all of them until the step ends.
    const recordsNothing = (frozen: boolean, input: Tensor) => !isGradEnabled() || (frozen && !input.requiresGrad);
    const part = (frozen: boolean, input: Tensor, fn: () => Tensor) => (recordsNothing(frozen, input) ? tidy(fn) : fn());
    let y = part(this.conv1.frozen, x, () => {
      const s = bnRelu(this.bn1, this.relu, this.conv1.forward(x));
      return this.maxpool ? this.maxpool.forward(s) : s;
    });
    if (stepsDone('stem', y)) return out;
    for (let i = 0; i < this.stages.length; i++) {
      const input = y;
      y = part(this.stages[i].frozen, input, () => this.stages[i].forward(input));
      if (stepsDone(`layer${i + 1}`, y)) return out;
    }
    y = flatten(this.avgpool.forward(y));
    if (stepsDone('pool', y)) return out;
    stepsDone('logits', this.headModule.forward(y));
    return out;
  }
}

/** What ends the network: the Linear's outputs, or null for an Identity (the pooled features). */
export type HeadShape = { outFeatures: number } | null;

/**
 * The network as a graph at per-sample input [C, H, W]: the stem, the stages, the pool (flattened)
 * and the head, with the features "stem", "layer1".."layerN", "pool" and "logits" marked.
 */
export function lowerNet(spec: NetSpec, input: readonly number[], head: HeadShape = { outFeatures: spec.numClasses }): Graph {
  const g = new GraphBuilder(spec.name, input);
  const { convs, maxPool } = spec.stem;
  let y: ValueId = 0;
  if (convs.length > 1) g.container('conv1', 'Sequential');
  convs.forEach((c, i) => {
    const last = i === convs.length - 1;
    // A deep stem's layers sit at conv1.{3i, 3i+1, 3i+2}: conv, BN, ReLU; the last conv's BN is bn1.
    y = g.conv(convs.length === 1 ? 'conv1' : `conv1.${3 * i}`, c, y, last ? 'bn1' : `conv1.${3 * i + 1}`);
    y = g.relu(last ? 'relu' : `conv1.${3 * i + 2}`, y);
  });
  if (maxPool) y = g.pool('maxpool', 'maxpool', maxPool, y);
  g.mark('stem', y);
  spec.stages.forEach((blocks, i) => {
    g.container(`layer${i + 1}`, 'Sequential');
    blocks.forEach((b, j) => { y = lowerBlock(g, `layer${i + 1}.${j}`, b, y); });
    g.mark(`layer${i + 1}`, y);
  });
  y = g.flatten('flatten', g.gap('avgpool', y));
  g.mark('pool', y);
  if (head) y = g.linear('fc', y, headFeatures(spec), head.outFeatures);
  g.mark('logits', y);
  return g.finish(y);
}

/** The layer-by-layer walk of a NetSpec at an input shape [C, H, W] (batch 1) or [N, C, H, W]. */
export function traceNet(spec: NetSpec, input: readonly number[]): TraceResult {
  if (input.length !== 3 && input.length !== 4) throw new Error(`${spec.name}: input shape must be [C, H, W], got [${input.join(',')}]`);
  return traceGraph(lowerNet(spec, input.slice(-3)), input.length === 4 ? input[0] : 1);
}
