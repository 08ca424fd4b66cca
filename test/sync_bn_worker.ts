// One rank of test/distributed.test.ts's synchronized-BatchNorm check, run under mpirun -np 2. Every
// rank computes batch norm's forward and backward on the whole batch in float64 (the oracle) and with
// the backend in one process (f32, the engine's own rounding), then the synchronized one on its
// unequal slice (5 samples: 2 and 3), and prints one JSON line: per quantity, max |got - oracle| over
// the oracle's largest entry, for the synchronized and for the one-process batch norm.
import { initBackend } from '../src/backend/index.js';
import { DataParallel } from '../src/distributed/index.js';
import { BatchNorm2d } from '../src/nn/index.js';
import { Tensor } from '../src/tensor/index.js';

const [N, C, H, W] = [5, 4, 5, 5];
const per = C * H * W;
// Channel c: mean about 3 + c, spread 0.5 + 0.3 c, so the statistics differ per channel and the
// mean is large against the spread (what a one-pass E[x^2] - E[x]^2 in f32 would get wrong).
const x = Float32Array.from({ length: N * per }, (_, i) => {
  const c = Math.floor(i / (H * W)) % C;
  return 3 + c + (0.5 + 0.3 * c) * Math.sin(1.3 * i + 0.2 * c * c);
});
const g = Float32Array.from({ length: N * per }, (_, i) => Math.cos(0.7 * i) + 0.1 * (Math.floor(i / (H * W)) % C));
const gamma = Float32Array.from({ length: C }, (_, c) => 0.5 + 0.25 * c);
const beta = Float32Array.from({ length: C }, (_, c) => 0.1 * c - 0.2);

function makeBn(): BatchNorm2d {
  const bn = new BatchNorm2d(C);
  bn.weight.assign(gamma);
  bn.bias.assign(beta);
  bn.train();
  return bn;
}

function rel(got: Float32Array, want: Float32Array | Float64Array): number {
  let big = 0;
  let d = 0;
  for (let i = 0; i < want.length; i++) { big = Math.max(big, Math.abs(want[i])); d = Math.max(d, Math.abs(got[i] - want[i])); }
  return d / big;
}

/** Batch norm in float64: forward, backward for dy = g / N (a mean loss), running statistics from (0, 1). */
function oracle() {
  const cnt = N * H * W;
  const at = (nn: number, c: number, k: number) => nn * per + c * H * W + k;
  const y = new Float64Array(N * per);
  const dx = new Float64Array(N * per);
  const dgamma = new Float64Array(C);
  const dbeta = new Float64Array(C);
  const rm = new Float64Array(C);
  const rv = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    let m = 0;
    for (let nn = 0; nn < N; nn++) for (let k = 0; k < H * W; k++) m += x[at(nn, c, k)];
    m /= cnt;
    let v = 0;
    for (let nn = 0; nn < N; nn++) for (let k = 0; k < H * W; k++) v += (x[at(nn, c, k)] - m) ** 2;
    v /= cnt;
    const is = 1 / Math.sqrt(v + 1e-5);
    for (let nn = 0; nn < N; nn++) for (let k = 0; k < H * W; k++) {
      const i = at(nn, c, k);
      const xh = (x[i] - m) * is;
      y[i] = gamma[c] * xh + beta[c];
      dbeta[c] += g[i] / N;
      dgamma[c] += (g[i] / N) * xh;
    }
    for (let nn = 0; nn < N; nn++) for (let k = 0; k < H * W; k++) {
      const i = at(nn, c, k);
      dx[i] = gamma[c] * is * (g[i] / N - dbeta[c] / cnt - (x[i] - m) * is * dgamma[c] / cnt);
    }
    rm[c] = 0.1 * m;
    rv[c] = 0.9 + 0.1 * v * cnt / (cnt - 1);
  }
  return { y, dx, dgamma, dbeta, rm, rv };
}

await initBackend('native');
const dp = new DataParallel({ syncBn: true });

// The oracle: one process, the whole batch, a loss that is the mean over the samples (as training's).
const ref = makeBn();
const xr = Tensor.fromArray(x, [N, C, H, W], { requiresGrad: true });
const yr = ref.forward(xr);
yr.backward(Tensor.fromArray(g.map((v) => v / N), [N, C, H, W]));

// This rank: its rows, its loss the mean over its own samples, gradients weighted by its share.
const start = Math.floor((dp.rank * N) / dp.size);
const end = Math.floor(((dp.rank + 1) * N) / dp.size);
const n = end - start;
const bn = makeBn();
dp.wrap(bn);
dp.beginStep(n, N);
const xs = Tensor.fromArray(x.slice(start * per, end * per), [n, C, H, W], { requiresGrad: true });
const ys = bn.forward(xs);
ys.backward(Tensor.fromArray(g.slice(start * per, end * per).map((v) => v / n), [n, C, H, W]));
dp.finishGradients(false);

const share = n / N;
const o = oracle();
const mine = (a: Float64Array) => a.slice(start * per, end * per);
const compare = (y: Float32Array, dx: Float32Array, b: BatchNorm2d) => ({
  y: rel(y, mine(o.y)), dx: rel(dx, mine(o.dx)),
  dgamma: rel(b.weight.grad!.toArray(), o.dgamma), dbeta: rel(b.bias.grad!.toArray(), o.dbeta),
  running_mean: rel(b.runningMean.toArray(), o.rm), running_var: rel(b.runningVar.toArray(), o.rv),
});
console.log(JSON.stringify({
  rank: dp.rank,
  samples: n,
  // The rank's input gradient is of its own mean loss: times its share, the global loss's.
  sync: compare(ys.toArray(), xs.grad!.toArray().map((v) => v * share), bn),
  one_process: compare(yr.toArray().slice(start * per, end * per), xr.grad!.toArray().slice(start * per, end * per), ref),
}));
dp.finish();
