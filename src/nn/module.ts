// Module: a tree of layers with named parameters and buffers, PyTorch-style. State-dict keys are
// the dotted paths PyTorch would use ("layer1.0.conv1.weight"), so torchvision checkpoints map 1:1.
import { Tensor, keep, shapeToString } from '../tensor/index.js';

/** One entry of a state dict as stored in a file: values are always carried as float32. */
export interface StateEntry {
  shape: number[];
  /** The dtype to write it with: F32 for parameters and statistics, I64 for counters. */
  dtype: 'F32' | 'I64';
  data: Float32Array;
}

export type StateDict = Map<string, StateEntry>;

/** A scalar counter kept in JS but saved in the state dict (BatchNorm's num_batches_tracked). */
export class Counter {
  constructor(public value = 0) {}
}

export interface LoadResult {
  missing: string[];
  unexpected: string[];
}

export abstract class Module {
  training = true;
  /**
   * A frozen module keeps its parameters out of training: they take no gradient, and the module
   * stays in eval mode whatever train() says, so its BatchNorm statistics stop moving too (what
   * fine-tuning a pretrained trunk wants; timm's FrozenBatchNorm2d does the same).
   */
  private frozenFlag = false;
  private readonly params = new Map<string, Tensor>();
  private readonly buffers = new Map<string, Tensor>();
  private readonly counters = new Map<string, Counter>();
  private readonly children = new Map<string, Module>();

  abstract forward(x: Tensor): Tensor;

  /** Alias of forward, so a module reads like a function call. */
  call(x: Tensor): Tensor {
    return this.forward(x);
  }

  protected registerParameter(name: string, t: Tensor): Tensor {
    t.requiresGrad = true;
    this.params.set(name, keep(t)); // a model outlives any tidy() it was built in
    return t;
  }

  protected registerBuffer(name: string, t: Tensor): Tensor {
    this.buffers.set(name, keep(t));
    return t;
  }

  protected registerCounter(name: string, c: Counter): Counter {
    this.counters.set(name, c);
    return c;
  }

  /** Adds or replaces a child module (replacing is how a classifier head is swapped). */
  registerModule<M extends Module>(name: string, m: M): M {
    const old = this.children.get(name);
    if (old && old !== m) old.dispose();
    this.children.set(name, m);
    return m;
  }

  getModule(name: string): Module | undefined {
    return this.children.get(name);
  }

  /** Direct children in registration order. */
  namedChildren(): [string, Module][] {
    return [...this.children];
  }

  /** Every module in the tree, depth first, this one first with the name ''. */
  namedModules(prefix = ''): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [name, child] of this.children) out.push(...child.namedModules(prefix ? `${prefix}.${name}` : name));
    return out;
  }

  namedParameters(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [path, m] of this.namedModules()) {
      for (const [name, t] of m.params) out.push([path ? `${path}.${name}` : name, t]);
    }
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  namedBuffers(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [path, m] of this.namedModules()) {
      for (const [name, t] of m.buffers) out.push([path ? `${path}.${name}` : name, t]);
    }
    return out;
  }

  private namedCounters(): [string, Counter][] {
    const out: [string, Counter][] = [];
    for (const [path, m] of this.namedModules()) {
      for (const [name, c] of m.counters) out.push([path ? `${path}.${name}` : name, c]);
    }
    return out;
  }

  /** Number of parameter values (what torchvision's sum(p.numel()) counts). */
  parameterCount(): number {
    return this.parameters().reduce((a, t) => a + t.size, 0);
  }

  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode && !m.frozenFlag;
    return this;
  }

  get frozen(): boolean {
    return this.frozenFlag;
  }

  /** Freezes this module and everything under it (see `frozen`); unfreeze() undoes it. */
  freeze(): this {
    for (const [, m] of this.namedModules()) {
      m.frozenFlag = true;
      m.training = false;
      for (const p of m.params.values()) {
        p.requiresGrad = false;
        p.grad?.dispose();
        p.grad = null;
      }
    }
    return this;
  }

  /** Makes this module and everything under it trainable again, in the mode `training` (default: this module's). */
  unfreeze(training = true): this {
    for (const [, m] of this.namedModules()) {
      m.frozenFlag = false;
      m.training = training;
      for (const p of m.params.values()) p.requiresGrad = true;
    }
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Drops the gradients of every parameter (PyTorch's zero_grad(set_to_none=True)). */
  zeroGrad(): void {
    for (const p of this.parameters()) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /** A copy of every parameter, buffer and counter, keyed as PyTorch's state_dict() keys them, in its order. */
  stateDict(): StateDict {
    const sd: StateDict = new Map();
    for (const [path, m] of this.namedModules()) {
      const key = (name: string) => (path ? `${path}.${name}` : name);
      for (const [name, t] of m.params) sd.set(key(name), { shape: [...t.shape], dtype: 'F32', data: t.toArray() });
      for (const [name, t] of m.buffers) sd.set(key(name), { shape: [...t.shape], dtype: 'F32', data: t.toArray() });
      for (const [name, c] of m.counters) sd.set(key(name), { shape: [], dtype: 'I64', data: new Float32Array([c.value]) });
    }
    return sd;
  }

  /**
   * Copies values into the module. Strict (the default) requires the key sets to match exactly;
   * a shape mismatch is always an error. All problems are reported together.
   */
  loadStateDict(sd: ReadonlyMap<string, { shape: readonly number[]; data: Float32Array }>, opts: { strict?: boolean } = {}): LoadResult {
    const strict = opts.strict ?? true;
    const targets = new Map<string, Tensor | Counter>([...this.namedParameters(), ...this.namedBuffers(), ...this.namedCounters()]);
    const missing = [...targets.keys()].filter((k) => !sd.has(k));
    const unexpected = [...sd.keys()].filter((k) => !targets.has(k));
    const misShaped: string[] = [];
    for (const [k, entry] of sd) {
      const t = targets.get(k);
      if (t instanceof Tensor) {
        const same = entry.shape.length === t.shape.length && entry.shape.every((d, i) => d === t.shape[i]);
        if (!same || entry.data.length !== t.size) {
          misShaped.push(`${k}: file has ${shapeToString(entry.shape)}, model has ${shapeToString(t.shape)}`);
        }
      } else if (t instanceof Counter && entry.data.length !== 1) {
        misShaped.push(`${k}: file has ${shapeToString(entry.shape)}, model has a scalar`);
      }
    }
    const problems: string[] = [];
    if (misShaped.length) problems.push(`mis-shaped: ${misShaped.join('; ')}`);
    if (strict && missing.length) problems.push(`missing: ${missing.join(', ')}`);
    if (strict && unexpected.length) problems.push(`unexpected: ${unexpected.join(', ')}`);
    if (problems.length) {
      throw new Error(`loadStateDict: the weights do not fit this model (${problems.join(' | ')})` +
        (strict && !misShaped.length ? '; pass strict: false to load the keys that match' : ''));
    }
    for (const [k, entry] of sd) {
      const t = targets.get(k);
      if (t instanceof Tensor) t.assign(entry.data);
      else if (t instanceof Counter) t.value = entry.data[0];
    }
    return { missing, unexpected };
  }

  /** Frees every parameter, buffer and gradient of the tree. */
  dispose(): void {
    for (const [, m] of this.namedModules()) {
      for (const t of m.params.values()) t.dispose();
      for (const t of m.buffers.values()) t.dispose();
    }
  }
}
