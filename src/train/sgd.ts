// SGD with momentum, Nesterov and weight decay, PyTorch semantics (torch.optim.SGD), stepping in
// place on the backend. Parameters come in groups so that, as an option, BatchNorm and bias
// parameters get no weight decay.
import type { Module } from '../nn/index.js';
import { Tensor, keep } from '../tensor/index.js';

export interface SgdConfig {
  lr: number;
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
}

export interface ParamGroup {
  params: Tensor[];
  /** Overrides the optimizer's weight decay for this group. */
  weightDecay?: number;
  /** This group's learning rate as a multiple of the optimizer's (and its schedule's); default 1. */
  lrScale?: number;
}

/** Saved optimizer state: the momentum buffers in parameter order (null where none yet). */
export interface SgdState {
  lr: number;
  buffers: (Float32Array | null)[];
}

function check(cfg: SgdConfig): Required<SgdConfig> {
  const c = { momentum: 0, dampening: 0, weightDecay: 0, nesterov: false, ...cfg };
  if (!(c.lr >= 0)) throw new Error(`SGD: lr must be >= 0, got ${c.lr}`);
  if (!(c.momentum >= 0)) throw new Error(`SGD: momentum must be >= 0, got ${c.momentum}`);
  if (!(c.weightDecay >= 0)) throw new Error(`SGD: weightDecay must be >= 0, got ${c.weightDecay}`);
  if (c.nesterov && (c.momentum <= 0 || c.dampening !== 0)) {
    throw new Error('SGD: Nesterov momentum requires a momentum > 0 and zero dampening');
  }
  return c;
}

/**
 * Splits a model's parameters into those that get weight decay and those that do not: the
 * one-dimensional ones (BatchNorm weights and biases, every bias).
 */
export function decayGroups(model: Module, weightDecay: number): ParamGroup[] {
  const decay: Tensor[] = [];
  const noDecay: Tensor[] = [];
  for (const [, p] of model.namedParameters()) (p.shape.length <= 1 ? noDecay : decay).push(p);
  return [{ params: decay, weightDecay }, { params: noDecay, weightDecay: 0 }];
}

/**
 * Splits each group in two: parameters under one of `prefixes` (module paths such as "fc") get
 * their learning rate multiplied by `scale` (a new head learns faster than a pretrained trunk).
 * The order of parameters within the groups is kept, so optimizer state stays aligned on resume.
 */
export function scaleGroups(model: Module, groups: ParamGroup[], prefixes: readonly string[], scale: number): ParamGroup[] {
  if (!(scale > 0) || !Number.isFinite(scale)) throw new Error(`scaleGroups: the learning-rate scale must be a positive number, got ${scale}`);
  const scaled = new Set(model.namedParameters().filter(([k]) => prefixes.some((p) => k === p || k.startsWith(`${p}.`))).map(([, t]) => t));
  return groups.flatMap((g) => [
    { ...g, params: g.params.filter((p) => !scaled.has(p)) },
    { ...g, params: g.params.filter((p) => scaled.has(p)), lrScale: (g.lrScale ?? 1) * scale },
  ]).filter((g) => g.params.length > 0);
}

export class SGD {
  private readonly cfg: Required<SgdConfig>;
  readonly groups: ParamGroup[];
  private readonly buffers = new Map<Tensor, Tensor>();

  constructor(params: Tensor[] | ParamGroup[], cfg: SgdConfig) {
    this.cfg = check(cfg);
    this.groups = params.length > 0 && params[0] instanceof Tensor
      ? [{ params: params as Tensor[] }]
      : (params as ParamGroup[]);
  }

  get lr(): number {
    return this.cfg.lr;
  }

  set lr(v: number) {
    if (!(v >= 0)) throw new Error(`SGD: lr must be >= 0, got ${v}`);
    this.cfg.lr = v;
  }

  private allParams(): Tensor[] {
    return this.groups.flatMap((g) => g.params);
  }

  /** Applies one update to every parameter that has a gradient. */
  step(): void {
    const { lr, momentum, dampening, nesterov } = this.cfg;
    for (const g of this.groups) {
      const weightDecay = g.weightDecay ?? this.cfg.weightDecay;
      const groupLr = lr * (g.lrScale ?? 1);
      for (const p of g.params) {
        if (!p.grad) continue;
        let buf = this.buffers.get(p) ?? null;
        const first = buf === null;
        if (momentum > 0 && buf === null) {
          buf = keep(Tensor.zeros(p.shape, { backend: p.backend }));
          this.buffers.set(p, buf);
        }
        p.backend.sgdStep(p.handle, p.grad.handle, buf?.handle ?? null, first, { lr: groupLr, momentum, dampening, weightDecay, nesterov });
      }
    }
  }

  zeroGrad(): void {
    for (const p of this.allParams()) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  stateDict(): SgdState {
    return { lr: this.cfg.lr, buffers: this.allParams().map((p) => this.buffers.get(p)?.toArray() ?? null) };
  }

  loadStateDict(s: SgdState): void {
    const params = this.allParams();
    if (s.buffers.length !== params.length) {
      throw new Error(`SGD.loadStateDict: the state has ${s.buffers.length} parameters, this optimizer ${params.length}`);
    }
    this.lr = s.lr;
    params.forEach((p, i) => {
      const data = s.buffers[i];
      this.buffers.get(p)?.dispose();
      this.buffers.delete(p);
      if (data === null) return;
      if (data.length !== p.size) throw new Error(`SGD.loadStateDict: buffer ${i} has ${data.length} values, parameter has ${p.size}`);
      this.buffers.set(p, keep(Tensor.fromArray(data, p.shape, { backend: p.backend })));
    });
  }

  dispose(): void {
    for (const b of this.buffers.values()) b.dispose();
    this.buffers.clear();
  }
}
