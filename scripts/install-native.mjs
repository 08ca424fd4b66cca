// npm's install step: builds the oneDNN addon. Where it cannot be built (no libdnnl-dev, no C++
// compiler), `npm install residual` still succeeds: the library then runs on its plain TypeScript
// reference backend, says so once when it starts, and `residual info` tells how to get the engine.
// RESIDUAL_REQUIRE_NATIVE=1 (the repository's own setup and CI) makes a failed build an error.
import { spawnSync } from 'node:child_process';

const r = spawnSync('node-gyp', ['rebuild'], { stdio: 'inherit', shell: process.platform === 'win32' });
if (r.status === 0) process.exit(0);
const why = r.error ? r.error.message : `node-gyp exited with ${r.status ?? r.signal}`;
if (process.env.RESIDUAL_REQUIRE_NATIVE === '1') {
  console.error(`residual: building the native engine failed (${why}); RESIDUAL_REQUIRE_NATIVE=1 makes that an error`);
  process.exit(1);
}
console.error(`residual: the native oneDNN engine was not built (${why}).\n` +
  'residual: it will run on the slow reference backend. To build the engine: apt-get install libdnnl-dev g++ make, then npm run build:native');
