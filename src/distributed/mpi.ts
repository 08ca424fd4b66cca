// The MPI binding (native/mpi.cc, built as residual_mpi.node where Open MPI is installed): whether
// it is there, why not, and a small typed wrapper whose every wait has a timeout.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../backend/native.js';

type Reducible = Float32Array | Float64Array | Int32Array | Uint8Array;

interface MpiAddon {
  init(timeoutMs: number): { rank: number; size: number; threadLevel: number; version: string };
  allreduceStart(a: Reducible, op: 'sum' | 'max' | 'min'): number;
  allreduceWait(id: number, timeoutMs: number): { seconds: number; queued: number };
  broadcast(a: Reducible, root: number, timeoutMs: number): void;
  barrier(timeoutMs: number): void;
  finalize(timeoutMs: number): void;
  abort(code: number): never;
  stats(): { allreduceSeconds: number; bytesReduced: number };
}

const FIX = 'install Open MPI (apt-get install openmpi-bin libopenmpi-dev), then npm run build:native in the residual package folder';

let addon: MpiAddon | undefined;
let loadError: string | undefined;

function load(): MpiAddon | undefined {
  if (addon || loadError) return addon;
  const file = join(packageRoot(), 'build', 'Release', 'residual_mpi.node');
  if (!existsSync(file)) {
    loadError = `the MPI addon was not built (${file} is missing: mpicc was not found when the native addon was built)`;
    return undefined;
  }
  try {
    addon = createRequire(import.meta.url)(file) as MpiAddon;
  } catch (e) {
    loadError = `the MPI addon does not load: ${(e as Error).message}`;
  }
  return addon;
}

/** Whether data-parallel training can run here; if not, why and what to do. */
export function distributedAvailability(): { available: true } | { available: false; reason: string; fix: string } {
  load();
  return addon ? { available: true } : { available: false, reason: loadError!, fix: FIX };
}

/** The world size when this process was started by an MPI launcher (mpirun, srun with PMIx), else null. */
export function launchedWorldSize(env: NodeJS.ProcessEnv = process.env): number | null {
  const size = env.OMPI_COMM_WORLD_SIZE ?? env.PMIX_SIZE ?? env.PMI_SIZE;
  const n = size === undefined ? NaN : Number(size);
  return Number.isInteger(n) && n >= 1 ? n : null;
}

/** Ranks of this job on this host (Open MPI says it; elsewhere assume one). */
export function localWorldSize(env: NodeJS.ProcessEnv = process.env): number {
  const n = Number(env.OMPI_COMM_WORLD_LOCAL_SIZE ?? 1);
  return Number.isInteger(n) && n >= 1 ? n : 1;
}

/** Seconds a collective may take before this rank gives up: RESIDUAL_DIST_TIMEOUT, default 600. */
export function collectiveTimeoutSeconds(env: NodeJS.ProcessEnv = process.env): number {
  const text = env.RESIDUAL_DIST_TIMEOUT;
  if (text === undefined || text === '') return 600;
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`RESIDUAL_DIST_TIMEOUT must be a positive number of seconds, got "${text}"`);
  return n;
}

export interface PendingReduce {
  /** Blocks until the allreduce is done; seconds it spent inside MPI. Throws on timeout. */
  wait(): { seconds: number; queued: number };
}

/** MPI_COMM_WORLD after MPI_Init: rank, size and the collectives used by data-parallel training. */
export class Mpi {
  readonly rank: number;
  readonly size: number;
  readonly version: string;
  private finalized = false;

  private constructor(private readonly a: MpiAddon, readonly timeoutMs: number) {
    const r = a.init(timeoutMs);
    this.rank = r.rank;
    this.size = r.size;
    this.version = r.version;
  }

  /** Starts MPI (once per process). Throws a clear error where the binding is missing. */
  static init(): Mpi {
    if (current) return current;
    const a = load();
    if (!a) throw new Error(`distributed training is unavailable: ${loadError}; ${FIX}`);
    current = new Mpi(a, collectiveTimeoutSeconds() * 1000);
    return current;
  }

  /** Sums (or max/min) `a` element-wise over all ranks, in place, on the communication thread. */
  allreduceStart(a: Reducible, op: 'sum' | 'max' | 'min' = 'sum'): PendingReduce {
    const id = this.a.allreduceStart(a, op);
    let result: { seconds: number; queued: number } | undefined;
    return { wait: () => (result ??= this.a.allreduceWait(id, this.timeoutMs)) };
  }

  allreduce(a: Reducible, op: 'sum' | 'max' | 'min' = 'sum'): void {
    this.allreduceStart(a, op).wait();
  }

  broadcast(a: Reducible, root = 0): void {
    this.a.broadcast(a, root, this.timeoutMs);
  }

  barrier(): void {
    this.a.barrier(this.timeoutMs);
  }

  /** Seconds spent inside allreduce so far and the bytes reduced. */
  stats(): { allreduceSeconds: number; bytesReduced: number } {
    return this.a.stats();
  }

  finalize(): void {
    if (this.finalized) return;
    this.finalized = true;
    this.a.finalize(this.timeoutMs);
  }

  /** Ends this process and makes the launcher end every other rank. */
  abort(code = 1): never {
    return this.a.abort(code);
  }
}

let current: Mpi | undefined;
