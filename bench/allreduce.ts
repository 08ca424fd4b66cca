// Allreduce bandwidth between the ranks of an mpirun job (the figure the scaling estimate in
// BENCHMARKS.md starts from). Run under mpirun; rank 0 prints one JSON object.
//
//   mpirun -np 2 [--mca btl self,tcp] node dist/bench/allreduce.js [--sizes-mb 1,4,16,64,100] [--runs 5]
//
// For each size: the median seconds of an in-place float32 MPI_Allreduce (sum) over --runs after
// one warm-up, the algorithm bandwidth (bytes / s) and the bus bandwidth of a ring allreduce,
// 2 (p - 1) / p * bytes / s: what each link must carry, comparable across rank counts.
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { Mpi } from '../src/distributed/index.js';

const { values } = parseArgs({ options: { 'sizes-mb': { type: 'string', default: '1,4,16,64,100' }, runs: { type: 'string', default: '5' } } });
const sizes = values['sizes-mb']!.split(',').map(Number);
const runs = Number(values.runs);
const mpi = Mpi.init();
const rows = [];
for (const mb of sizes) {
  const buf = new Float32Array(Math.round((mb * 1024 * 1024) / 4)).fill(1);
  const times: number[] = [];
  for (let i = 0; i <= runs; i++) {
    mpi.barrier();
    const t0 = performance.now();
    mpi.allreduce(buf);
    const t = (performance.now() - t0) / 1000;
    if (i > 0) times.push(t);
  }
  times.sort((a, b) => a - b);
  const s = times[Math.floor(times.length / 2)];
  const bytes = buf.byteLength;
  rows.push({ mb, seconds: +s.toFixed(5), algbw_gb_s: +(bytes / s / 1e9).toFixed(3), busbw_gb_s: +((2 * (mpi.size - 1)) / mpi.size * bytes / s / 1e9).toFixed(3) });
}
if (mpi.rank === 0) console.log(JSON.stringify({ bench: 'allreduce', ranks: mpi.size, mpi: mpi.version.split(',')[0], btl: process.env.OMPI_MCA_btl ?? 'default', loadavg: loadavg()[0], date: new Date().toISOString(), rows }));
mpi.finalize();
