// The trunk every model here shares: a stem (conv1, bn1, relu, optional maxpool), stages of
// residual blocks named layer1..layerN, global average pooling and a linear head `fc`. The
// ImageNet family (resnet.ts) and the CIFAR family (cifar.ts) differ only in the NetSpec they build.
import { BatchNorm2d, Conv2d, Identity, Linear, MaxPool2d, AdaptiveAvgPool2d, Module, ReLU, Sequential, kaimingNormalFanOut } from '../nn/index.js';
import { Tensor, flatten, isGradEnabled, tidy } from '../tensor/index.js';
import { ResidualBlock, makeBlock, makeConv, traceBlock, type BlockSpec } from './blocks.js';
import { Tracer, type ConvSpec, type PoolSpec, type TraceResult } from './trace.js';

export interface NetSpec {
  /** The builder's name, e.g. "resnet50"; informative only. */
  name: string;
  stem: { conv: ConvSpec; maxPool: PoolSpec | null };
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

export function headFeatures(spec: NetSpec): number {
  const last = spec.stages[spec.stages.length - 1];
  return last[last.length - 1].outChannels;
}

export class ResNet extends Module {
  readonly conv1: Conv2d;
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
    this.conv1 = this.registerModule('conv1', makeConv(stem.conv));
    this.bn1 = this.registerModule('bn1', new BatchNorm2d(stem.conv.outChannels));
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
    if (x.shape.length !== 4 || x.shape[1] !== this.spec.stem.conv.inChannels) {
      throw new Error(`${this.spec.name}: input must be [N, ${this.spec.stem.conv.inChannels}, H, W], got [${x.shape.join(',')}]`);
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
      const s = this.relu.forward(this.bn1.forward(this.conv1.forward(x)));
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

/** The layer-by-layer walk of a NetSpec at an input shape [C, H, W] (batch 1) or [N, C, H, W]. */
export function traceNet(spec: NetSpec, input: readonly number[]): TraceResult {
  const x = input.length === 3 ? [1, ...input] : [...input];
  if (x.length !== 4) throw new Error(`${spec.name}: input shape must be [C, H, W], got [${input.join(',')}]`);
  const t = new Tracer();
  let y = t.conv('conv1', spec.stem.conv, x);
  y = t.batchNorm('bn1', y);
  y = t.relu('relu', y);
  if (spec.stem.maxPool) y = t.maxPool('maxpool', spec.stem.maxPool, y);
  spec.stages.forEach((blocks, i) => {
    t.container(`layer${i + 1}`, 'Sequential');
    blocks.forEach((b, j) => { y = traceBlock(t, `layer${i + 1}.${j}`, b, y); });
  });
  y = t.globalAvgPool('avgpool', y);
  y = t.linear('fc', y[1], spec.numClasses, [y[0], y[1]]);
  return t.result(x, y);
}
