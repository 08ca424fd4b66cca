// Asked by binding.gyp at configure time: is MPI here, and with which flags? Prints `available`
// (1 or 0), or the include dirs / link flags that Open MPI's compiler wrapper reports. Never fails:
// without mpicc (libopenmpi-dev) the MPI addon is simply not built, and everything else still is.
// RESIDUAL_MPI=0 skips it even where MPI is installed.
import { spawnSync } from 'node:child_process';

function showme(what) {
  if (process.env.RESIDUAL_MPI === '0') return null;
  const r = spawnSync('mpicc', [`--showme:${what}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

const ask = process.argv[2];
if (ask === 'available') {
  console.log(showme('incdirs') !== null && showme('link') !== null ? 1 : 0);
} else if (ask === 'incdirs') {
  console.log(showme('incdirs') ?? '');
} else if (ask === 'link') {
  console.log(showme('link') ?? '');
} else {
  console.error('usage: node scripts/mpi-config.mjs available|incdirs|link');
  process.exit(2);
}
