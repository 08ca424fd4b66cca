// What `residual train` needs to run data-parallel: the decision (--distributed, or a launch by
// mpirun), the MPI side started, threads per rank, and an error path that ends every rank.
import { availableParallelism } from 'node:os';
import { printableLines } from '../io/printable.js';
import { DataParallel } from './ddp.js';
import { collectiveTimeoutSeconds, launchedWorldSize, localWorldSize } from './mpi.js';

export interface DistributedRun {
  dp: DataParallel;
  /** Engine threads per rank unless the user chose: the cores shared by the ranks on this host. */
  defaultThreads: string;
  describe(): string;
  summary(): Record<string, unknown>;
  /** Prints a fatal error of this rank and ends the job: the other ranks are blocked in a collective. */
  fail(e: unknown): never;
}

export function distributedOptions(command: string, o: { distributed?: boolean; syncBn?: boolean }): DistributedRun | null {
  const launched = launchedWorldSize();
  const on = !!o.distributed || (launched !== null && launched > 1);
  if (!on) {
    if (o.syncBn) throw new Error(`${command}: --sync-bn synchronizes BatchNorm over the ranks of a data-parallel run; add --distributed and start it with mpirun (README, "More than one machine")`);
    return null;
  }
  if (launched === null) {
    throw new Error(`${command}: --distributed runs one rank per process started by an MPI launcher: ` +
      `mpirun -np 2 residual ${command} --distributed ... (README, "More than one machine")`);
  }
  collectiveTimeoutSeconds(); // a bad RESIDUAL_DIST_TIMEOUT fails here, before MPI starts
  const dp = new DataParallel({ syncBn: !!o.syncBn });
  const local = localWorldSize();
  const threads = Math.max(1, Math.floor(availableParallelism() / local));
  return {
    dp,
    defaultThreads: String(threads),
    describe: () => `data-parallel: ${dp.size} ranks (${local} on this host), ${dp.syncBn ? 'synchronized' : 'per-rank'} BatchNorm statistics, ` +
      `collective timeout ${collectiveTimeoutSeconds()} s; ${dp.mpi.version.split(',')[0]}`,
    summary: () => ({ ranks: dp.size, local_ranks: local, sync_bn: dp.syncBn, timeout_s: collectiveTimeoutSeconds(), mpi: dp.mpi.version.split(',')[0] }),
    fail: (e: unknown) => {
      const err = e instanceof Error ? e : new Error(String(e));
      console.error(`residual: rank ${dp.rank} of ${dp.size}: ${printableLines(process.env.RESIDUAL_DEBUG ? err.stack ?? err.message : err.message)}`);
      console.error(`residual: rank ${dp.rank}: ending every rank of the job (MPI_Abort)`);
      return dp.mpi.abort(1);
    },
  };
}
