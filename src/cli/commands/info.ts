import { initBackend, nativeLoadError } from '../../backend/index.js';
import { parse } from '../args.js';
import { distributedAvailability } from '../../distributed/mpi.js';
import { hostInfo } from '../../benchmark/host.js';

export const summary = 'the backend in use, oneDNN version, CPU, ISA and threads';

export async function run(argv: string[]): Promise<number> {
  const { values } = parse('info', argv, { json: { type: 'boolean' } });
  if (values.help) {
    console.log('usage: residual info [--json]');
    return 0;
  }
  const info = (await initBackend()).info();
  // On the reference backend, why the engine did not load and how to get it.
  const why = info.backend === 'native' ? null : nativeLoadError()?.message.replace(/^residual: /, '') ?? null;
  const fix = 'apt-get install libdnnl-dev g++ make, then npm run build:native (in the residual package folder)';
  // Data-parallel training (residual train --distributed under mpirun) needs the optional MPI addon.
  const dist = distributedAvailability();
  const distributed = dist.available ? { distributed: 'available (mpirun -np N residual train --distributed)' } : { distributed: 'unavailable', distributed_error: dist.reason, distributed_fix: dist.fix };
  // The CPU matters to every speed figure: the same engine is ~2x apart on Zen 4 and Zen 5 (BENCHMARKS.md).
  const host = hostInfo();
  if (values.json) {
    console.log(JSON.stringify(why === null ? { ...info, host, ...distributed } : { ...info, host, native_error: why, native_fix: fix, ...distributed }));
  } else {
    const cpu = [host.cpu, host.microarchitecture, host.family !== null ? `family ${host.family} model ${host.model}` : null].filter((x) => x).join(', ');
    console.log(`backend: ${info.backend}\noneDNN: ${info.onednnVersion ?? '-'}\nCPU: ${cpu || '-'} (${host.logical_cpus} logical CPUs; ${host.features.join(' ') || 'no AVX-512'})\n` +
      `ISA: ${info.isa ?? '-'}\nthreads: ${info.threads}`);
    if (why !== null) console.log(`native engine: not loaded (${why})\nto get it: ${fix}`);
    console.log(dist.available ? `distributed: ${distributed.distributed}` : `distributed: unavailable (${dist.reason})\nto get it: ${dist.fix}`);
  }
  return 0;
}
