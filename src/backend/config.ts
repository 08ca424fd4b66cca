// The engine configuration: every environment switch and option of the native engine, read and
// checked once at initBackend(), then handed to native/ as data (native/ reads no environment).
//
// Environment (all optional; options passed to initBackend win):
//   RESIDUAL_NATIVE_POOL_MB   freed buffers the allocator keeps for reuse, at least (default 1024)
//   RESIDUAL_NATIVE_NO_REF=1  a reference-kernel choice by oneDNN is an error (benchmarks, CI)
//   RESIDUAL_NATIVE_GROUPED   own (default) | onednn: the training convs with 4/8-channel groups
//   RESIDUAL_PLAN_LAYOUT      nhwc | blocked | any: the compiled plan's activation layout (default: the plan decides)
//   RESIDUAL_PLAN_WINOGRAD    1 | 0: Winograd in blocked plans (a plan's own winograd option wins)
//   RESIDUAL_PLAN_STRIDED     nhwc: a blocked plan runs its strided 3x3 convs NHWC
//   RESIDUAL_PLAN_GROUPED     own | onednn: the plan's convs with 4/8-channel groups

/** The compiled plan's A/B decisions; '' / 'auto' leave the measured default to the plan. */
export interface PlanConfig {
  layout: '' | 'nhwc' | 'blocked' | 'any';
  winograd: 'auto' | 'on' | 'off';
  strided: '' | 'nhwc';
  grouped: '' | 'own' | 'onednn';
}

export interface EngineConfig {
  /** Bytes of freed tensor buffers the allocator may keep for reuse (at least; it keeps up to the peak of live bytes). */
  poolBytes: number;
  /** Make a reference-kernel choice an error. */
  refuseRef: boolean;
  /** Train convs with 4/8-channel groups on oneDNN's kernels instead of ours. */
  groupedOnednn: boolean;
  plan: PlanConfig;
}

/** What initBackend accepts: any part of the configuration; the rest comes from the environment. */
export interface EngineOptions extends Partial<Omit<EngineConfig, 'plan'>> {
  plan?: Partial<PlanConfig>;
  /**
   * OpenMP threads for the engine's kernels (default: OMP_NUM_THREADS, else every core). Given before
   * the addon first loads it is every kernel thread's count (the async plan workers' too); after, it
   * is the calling thread's.
   */
  threads?: number;
}

function oneOf<V extends string>(name: string, value: string, allowed: readonly V[]): V {
  if (!(allowed as readonly string[]).includes(value)) {
    const named = allowed.filter((a) => a !== '');
    const list = named.length > 1 ? `${named.slice(0, -1).join(', ')} or ${named[named.length - 1]}` : named[0];
    throw new Error(`${name} must be ${list}, got "${value}"`);
  }
  return value as V;
}

/** The configuration from `env` and `options` (options win), checked. */
export function readEngineConfig(options: EngineOptions = {}, env: NodeJS.ProcessEnv = process.env): EngineConfig {
  const get = (k: string) => env[k] ?? '';
  const poolMb = get('RESIDUAL_NATIVE_POOL_MB');
  const mb = poolMb === '' ? 1024 : Number(poolMb);
  if (!Number.isFinite(mb)) throw new Error(`RESIDUAL_NATIVE_POOL_MB must be a number of megabytes, got "${poolMb}"`);
  const wino = oneOf('RESIDUAL_PLAN_WINOGRAD', get('RESIDUAL_PLAN_WINOGRAD'), ['', '1', '0']);
  const fromEnv: EngineConfig = {
    poolBytes: Math.max(0, Math.floor(mb)) * 2 ** 20,
    refuseRef: get('RESIDUAL_NATIVE_NO_REF') === '1',
    groupedOnednn: get('RESIDUAL_NATIVE_GROUPED') === 'onednn',
    plan: {
      layout: oneOf('RESIDUAL_PLAN_LAYOUT', get('RESIDUAL_PLAN_LAYOUT'), ['', 'nhwc', 'blocked', 'any']),
      winograd: wino === '' ? 'auto' : wino === '1' ? 'on' : 'off',
      strided: oneOf('RESIDUAL_PLAN_STRIDED', get('RESIDUAL_PLAN_STRIDED'), ['', 'nhwc']),
      grouped: oneOf('RESIDUAL_PLAN_GROUPED', get('RESIDUAL_PLAN_GROUPED'), ['', 'own', 'onednn']),
    },
  };
  const { plan, ...engine } = options;
  const merged: EngineConfig = { ...fromEnv, ...engine, plan: { ...fromEnv.plan, ...plan } };
  oneOf('plan.layout', merged.plan.layout, ['', 'nhwc', 'blocked', 'any']);
  oneOf('plan.winograd', merged.plan.winograd, ['auto', 'on', 'off']);
  oneOf('plan.strided', merged.plan.strided, ['', 'nhwc']);
  oneOf('plan.grouped', merged.plan.grouped, ['', 'own', 'onednn']);
  return merged;
}
