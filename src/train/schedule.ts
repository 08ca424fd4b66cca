// Learning-rate schedules as pure functions of the iteration, so a resumed run gets the same rate.

export type ScheduleSpec =
  /** The ResNet paper's: divide by `gamma`'s inverse at each milestone (in iterations). */
  | { kind: 'multistep'; milestones: number[]; gamma?: number }
  | { kind: 'cosine'; minLr?: number }
  /** Leslie Smith's one-cycle, as torch.optim.lr_scheduler.OneCycleLR with cosine annealing. */
  | { kind: 'onecycle'; pctStart?: number; divFactor?: number; finalDivFactor?: number }
  | { kind: 'constant' };

export interface ScheduleConfig {
  spec: ScheduleSpec;
  /** Peak learning rate. */
  lr: number;
  totalIters: number;
  /** Linear warm-up from lr * warmupStartFactor over this many iterations (not for onecycle, which has its own). */
  warmupIters?: number;
  warmupStartFactor?: number;
}

function cosineBetween(from: number, to: number, t: number): number {
  return to + (from - to) * (1 + Math.cos(Math.PI * Math.min(1, Math.max(0, t)))) / 2;
}

/** The learning rate for iteration `it` (0-based). */
export function learningRate(c: ScheduleConfig, it: number): number {
  const s = c.spec;
  if (s.kind === 'onecycle') {
    const pct = s.pctStart ?? 0.3;
    const initial = c.lr / (s.divFactor ?? 25);
    const final = initial / (s.finalDivFactor ?? 1e4);
    // The phase boundaries exactly as OneCycleLR computes them (floats, not rounded).
    const up = pct * c.totalIters - 1;
    const end = c.totalIters - 1;
    return it <= up ? cosineBetween(initial, c.lr, it / up) : cosineBetween(c.lr, final, (it - up) / (end - up));
  }
  const warm = c.warmupIters ?? 0;
  if (it < warm) {
    const start = c.warmupStartFactor ?? 0.1;
    return c.lr * (start + (1 - start) * (it / warm));
  }
  switch (s.kind) {
    case 'constant':
      return c.lr;
    case 'multistep': {
      const passed = s.milestones.filter((m) => it >= m).length;
      return c.lr * Math.pow(s.gamma ?? 0.1, passed);
    }
    case 'cosine': {
      const span = Math.max(1, c.totalIters - warm);
      return cosineBetween(c.lr, s.minLr ?? 0, (it - warm) / span);
    }
  }
}

/**
 * Parses the CLI's --schedule: "onecycle", "cosine", "constant", or "multistep:E1,E2" with
 * milestones in epochs (converted to iterations by the caller's itersPerEpoch).
 */
export function parseSchedule(text: string, itersPerEpoch: number): ScheduleSpec {
  const [name, arg] = text.split(':');
  switch (name) {
    case 'onecycle':
      return { kind: 'onecycle', pctStart: arg ? Number(arg) : 0.15 };
    case 'cosine':
      return { kind: 'cosine' };
    case 'constant':
      return { kind: 'constant' };
    case 'multistep': {
      const epochs = (arg ?? '').split(',').filter(Boolean).map(Number);
      if (epochs.length === 0 || epochs.some((e) => !(e > 0))) {
        throw new Error(`--schedule multistep needs milestones in epochs, e.g. multistep:30,60 (got "${text}")`);
      }
      return { kind: 'multistep', milestones: epochs.map((e) => Math.round(e * itersPerEpoch)) };
    }
    default:
      throw new Error(`--schedule must be onecycle[:PCT], cosine, constant or multistep:E1,E2, got "${text}"`);
  }
}
