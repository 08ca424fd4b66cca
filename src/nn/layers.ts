// The layers a ResNet is made of, with PyTorch's constructor arguments, defaults and key names.
import {
  Tensor, add, addRelu, avgPool2d, batchNorm, batchNormRelu, conv2d, flatten, globalAvgPool, linear, maxPool2d, relu, type Conv2dOptions,
} from '../tensor/index.js';
import { defaultUniform, fans } from './init.js';
import { Counter, Module } from './module.js';

function checkPositiveInt(layer: string, name: string, v: number): void {
  if (!Number.isInteger(v) || v < 1) throw new Error(`${layer}: ${name} must be a positive integer, got ${String(v)}`);
}

export interface Conv2dConfig extends Conv2dOptions {
  bias?: boolean;
}

export class Conv2d extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  readonly kernelSize: [number, number];

  constructor(readonly inChannels: number, readonly outChannels: number, kernelSize: number | [number, number],
    readonly options: Conv2dConfig = {}) {
    super();
    checkPositiveInt('Conv2d', 'inChannels', inChannels);
    checkPositiveInt('Conv2d', 'outChannels', outChannels);
    const groups = options.groups ?? 1;
    checkPositiveInt('Conv2d', 'groups', groups);
    if (inChannels % groups || outChannels % groups) {
      throw new Error(`Conv2d: channels ${inChannels} -> ${outChannels} are not divisible by groups ${groups}`);
    }
    this.kernelSize = typeof kernelSize === 'number' ? [kernelSize, kernelSize] : kernelSize;
    this.kernelSize.forEach((k) => checkPositiveInt('Conv2d', 'kernelSize', k));
    const shape = [outChannels, inChannels / groups, ...this.kernelSize];
    const { fanIn } = fans(shape);
    this.weight = this.registerParameter('weight', Tensor.fromArray(defaultUniform(shape.reduce((a, b) => a * b), fanIn), shape));
    this.bias = (options.bias ?? true)
      ? this.registerParameter('bias', Tensor.fromArray(defaultUniform(outChannels, fanIn), [outChannels]))
      : null;
  }

  get stride(): number | readonly [number, number] { return this.options.stride ?? 1; }
  get groups(): number { return this.options.groups ?? 1; }

  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight, this.bias, this.options);
  }
}

export class BatchNorm2d extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;
  readonly runningMean: Tensor;
  readonly runningVar: Tensor;
  readonly numBatchesTracked: Counter;

  constructor(readonly numFeatures: number, readonly eps = 1e-5, readonly momentum = 0.1) {
    super();
    checkPositiveInt('BatchNorm2d', 'numFeatures', numFeatures);
    const ones = new Float32Array(numFeatures).fill(1);
    this.weight = this.registerParameter('weight', Tensor.fromArray(ones, [numFeatures]));
    this.bias = this.registerParameter('bias', Tensor.zeros([numFeatures]));
    this.runningMean = this.registerBuffer('running_mean', Tensor.zeros([numFeatures]));
    this.runningVar = this.registerBuffer('running_var', Tensor.fromArray(ones, [numFeatures]));
    this.numBatchesTracked = this.registerCounter('num_batches_tracked', new Counter(0));
  }

  forward(x: Tensor): Tensor {
    if (this.training) this.numBatchesTracked.value++;
    return batchNorm(x, this.weight, this.bias, this.runningMean, this.runningVar,
      { training: this.training, momentum: this.momentum, eps: this.eps });
  }

  /**
   * relu(this.forward(x)), as one fused op in training. When `forward` has been replaced or overridden
   * (SyncBatchNorm, a recording wrapper, a subclass), it is that forward followed by relu, so the
   * replacement is never bypassed.
   */
  forwardRelu(x: Tensor): Tensor {
    if (this.forward !== BatchNorm2d.prototype.forward || !this.training) return relu(this.forward(x));
    this.numBatchesTracked.value++;
    return batchNormRelu(x, this.weight, this.bias, this.runningMean, this.runningVar,
      { training: true, momentum: this.momentum, eps: this.eps });
  }
}

export class ReLU extends Module {
  forward(x: Tensor): Tensor {
    return relu(x);
  }

  /** Whether forward is ReLU's own (not replaced or overridden), so a caller may fuse it into another op. */
  get fusable(): boolean {
    return this.forward === ReLU.prototype.forward;
  }
}

/** relu(bn(x)): fused (BatchNorm2d.forwardRelu) unless the ReLU module's forward was replaced. */
export function bnRelu(bn: BatchNorm2d, reluModule: ReLU, x: Tensor): Tensor {
  return reluModule.fusable ? bn.forwardRelu(x) : reluModule.forward(bn.forward(x));
}

/** relu(a + b), the end of a residual block: one op unless the ReLU module's forward was replaced. */
export function addThenRelu(reluModule: ReLU, a: Tensor, b: Tensor): Tensor {
  return reluModule.fusable ? addRelu(a, b) : reluModule.forward(add(a, b));
}

export class Identity extends Module {
  forward(x: Tensor): Tensor {
    return x;
  }
}

export class MaxPool2d extends Module {
  constructor(readonly kernelSize: number, readonly stride = kernelSize, readonly padding = 0, readonly ceilMode = false) {
    super();
  }

  forward(x: Tensor): Tensor {
    return maxPool2d(x, { kernel: this.kernelSize, stride: this.stride, padding: this.padding, ceilMode: this.ceilMode });
  }
}

/** AvgPool2d; `countIncludePad: false` averages only the pixels inside the input (ResNet-D's shortcut). */
export class AvgPool2d extends Module {
  constructor(readonly kernelSize: number, readonly stride = kernelSize, readonly padding = 0, readonly ceilMode = false,
    readonly countIncludePad = true) {
    super();
  }

  forward(x: Tensor): Tensor {
    return avgPool2d(x, {
      kernel: this.kernelSize, stride: this.stride, padding: this.padding, ceilMode: this.ceilMode, countIncludePad: this.countIncludePad,
    });
  }
}

/** AdaptiveAvgPool2d((1, 1)), the only output size a ResNet head uses. */
export class AdaptiveAvgPool2d extends Module {
  constructor(outputSize: number | [number, number] = 1) {
    super();
    const [h, w] = typeof outputSize === 'number' ? [outputSize, outputSize] : outputSize;
    if (h !== 1 || w !== 1) throw new Error(`AdaptiveAvgPool2d: only output size 1 is supported, got ${h}x${w}`);
  }

  forward(x: Tensor): Tensor {
    return globalAvgPool(x);
  }
}

export class Flatten extends Module {
  forward(x: Tensor): Tensor {
    return flatten(x);
  }
}

export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(readonly inFeatures: number, readonly outFeatures: number, bias = true) {
    super();
    checkPositiveInt('Linear', 'inFeatures', inFeatures);
    checkPositiveInt('Linear', 'outFeatures', outFeatures);
    this.weight = this.registerParameter('weight',
      Tensor.fromArray(defaultUniform(inFeatures * outFeatures, inFeatures), [outFeatures, inFeatures]));
    this.bias = bias ? this.registerParameter('bias', Tensor.fromArray(defaultUniform(outFeatures, inFeatures), [outFeatures])) : null;
  }

  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }
}

/** Runs its children in order; they are keyed "0", "1", ... in the state dict, as in PyTorch. */
export class Sequential extends Module {
  private readonly layers: Module[] = [];

  constructor(...layers: Module[]) {
    super();
    layers.forEach((m) => this.append(m));
  }

  append(m: Module): this {
    this.registerModule(String(this.layers.length), m);
    this.layers.push(m);
    return this;
  }

  get length(): number {
    return this.layers.length;
  }

  at(i: number): Module {
    return this.layers[i];
  }

  forward(x: Tensor): Tensor {
    let y = x;
    for (const m of this.layers) y = m.forward(y);
    return y;
  }
}
