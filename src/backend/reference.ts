// The reference backend: every op of the contract in plain TypeScript over logical NCHW
// Float32Arrays. It is the oracle the native backend is tested against and the fallback when the
// addon cannot load, so clarity and PyTorch's exact semantics come first. Sums are accumulated in
// float64 and rounded to float32 once, so the oracle is more accurate than what it judges.
// Convolution and linear go through one register-blocked matrix product (reference/gemm.ts), which
// keeps real test shapes (batch 7, 64 channels, 32x32) at a fraction of a second per call.
// bf16 training: where the native engine stores a tensor in bf16 (a conv's output under precision
// 'bf16', and what BN, ReLU, sums and max pooling make of it, and their gradients), this backend
// rounds the values to bf16 and marks the tensor, so the two can be compared at a stated tolerance.
import type {
  Backend, BackendInfo, BackendTensor, Conv2dParams, GradNeeds, Pool2dParams, SgdOptions, Shape,
} from './types.js';
import {
  conv2dBackwardBias, conv2dBackwardData, conv2dBackwardWeight, conv2dForward, convOutputSize,
  type ConvGeometry,
} from './reference/conv.js';
import {
  avgPoolBackward, avgPoolForward, maxPoolBackward, maxPoolForward, poolOutputSize, type PoolGeometry,
} from './reference/pool.js';
import { gemmABt } from './reference/gemm.js';

export { convOutputSize } from './reference/conv.js';
export { poolOutputSize } from './reference/pool.js';

export interface RefTensor extends BackendTensor {
  readonly shape: Shape;
  /** Logical row-major values. Empty after dispose. */
  data: Float32Array;
  disposed: boolean;
  /** Stored as bf16 by the native engine: the values are bf16 values (rounded when made). */
  bf16: boolean;
}

export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** A tensor over `data`; with `bf16`, the values are rounded to bf16 (in place) first. */
function make(data: Float32Array, shape: Shape, bf16 = false): RefTensor {
  return { shape: Object.freeze([...shape]), data: bf16 ? roundInPlace(data) : data, disposed: false, bf16 };
}

function roundInPlace(v: Float32Array): Float32Array {
  v.set(roundToBf16(v));
  return v;
}

/** The values as an op in `bf16` reads them: rounded to bf16 (a copy) when the op runs in bf16. */
function asRead(t: RefTensor, bf16: boolean): Float32Array {
  const v = vals(t);
  return bf16 && !t.bf16 ? roundToBf16(v) : v;
}

/**
 * A copy of `v` with every value rounded to the nearest bfloat16 (ties to even), as f32: what a bf16
 * convolution reads. Infinities and NaN pass through.
 */
export function roundToBf16(v: Float32Array): Float32Array {
  const out = new Float32Array(v.length);
  const src = new Uint32Array(v.buffer, v.byteOffset, v.length), dst = new Uint32Array(out.buffer);
  for (let i = 0; i < v.length; i++) {
    const b = src[i]!;
    dst[i] = (b & 0x7f800000) === 0x7f800000 ? b & 0xffff0000 : ((b + 0x7fff + ((b >>> 16) & 1)) & 0xffff0000) >>> 0;
  }
  return out;
}

/** The values of a live tensor; a disposed one is a bug upstream, reported instead of computed on. */
function vals(t: RefTensor): Float32Array {
  if (t.disposed) throw new Error(`reference backend: tensor of shape [${t.shape.join(', ')}] used after dispose`);
  return t.data;
}

/** The tensor layer checks shapes; this catches a caller that bypasses it before it reads past an end. */
function sameSize(op: string, a: Float32Array, b: Float32Array): void {
  if (a.length !== b.length) throw new Error(`reference backend: ${op} of tensors with ${a.length} and ${b.length} values`);
}

function convGeometry(x: Shape, w: Shape, p: Conv2dParams): ConvGeometry {
  const [n, c, h, wd] = x, [o, , kh, kw] = w;
  const [sh, sw] = p.stride, [ph, pw] = p.padding, [dh, dw] = p.dilation;
  return {
    n, c, h, w: wd, o, kh, kw, sh, sw, ph, pw, dh, dw, groups: p.groups,
    oh: convOutputSize(h, kh, sh, ph, dh), ow: convOutputSize(wd, kw, sw, pw, dw),
  };
}

function poolGeometry(x: Shape, p: Pool2dParams): PoolGeometry {
  const [n, c, h, w] = x;
  const [kh, kw] = p.kernel, [sh, sw] = p.stride, [ph, pw] = p.padding;
  return {
    planes: n * c, h, w, kh, kw, sh, sw, ph, pw,
    oh: poolOutputSize(h, kh, sh, ph, p.ceilMode), ow: poolOutputSize(w, kw, sw, pw, p.ceilMode),
  };
}

/** The [cols, rows] transpose of a row-major [rows, cols] matrix. */
function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j];
  return t;
}

/** Rows and row length of an [N, C, ...] tensor seen as N blocks of C channels of `inner` values. */
function channelLayout(shape: Shape): { n: number; c: number; inner: number } {
  return { n: shape[0], c: shape[1], inner: numel(shape.slice(2)) };
}

export class ReferenceBackend implements Backend<RefTensor> {
  readonly name = 'reference' as const;

  info(): BackendInfo {
    return { backend: 'reference', onednnVersion: null, isa: null, threads: 1 };
  }

  // ---- memory ----

  fromArray(data: Float32Array, shape: Shape): RefTensor {
    if (data.length !== numel(shape)) {
      throw new Error(`reference backend: ${data.length} values do not fill shape [${shape.join(', ')}]`);
    }
    return make(Float32Array.from(data), shape);
  }

  read(t: RefTensor): Float32Array {
    return Float32Array.from(vals(t));
  }

  zeros(shape: Shape): RefTensor {
    return make(new Float32Array(numel(shape)), shape);
  }

  dispose(t: RefTensor): void {
    t.disposed = true;
    t.data = new Float32Array(0);
  }

  byteSize(t: RefTensor): number {
    return t.data.byteLength;
  }

  reshape(x: RefTensor, shape: Shape): RefTensor {
    // A copy, so in-place ops on one (addInPlace, sgdStep) never show through the other. As the
    // native engine: a bf16 tensor stays bf16 only when the shape is unchanged.
    const same = shape.length === x.shape.length && shape.every((d, i) => d === x.shape[i]);
    return make(Float32Array.from(vals(x)), shape, x.bf16 && same);
  }

  // ---- elementwise ----

  add(a: RefTensor, b: RefTensor): RefTensor {
    const low = a.bf16 || b.bf16;
    const av = asRead(a, low), bv = asRead(b, low);
    sameSize('add', av, bv);
    const y = new Float32Array(av.length);
    for (let i = 0; i < y.length; i++) y[i] = av[i] + bv[i];
    return make(y, a.shape, low);
  }

  addRelu(a: RefTensor, b: RefTensor): RefTensor {
    const low = a.bf16 || b.bf16;
    const av = asRead(a, low), bv = asRead(b, low);
    sameSize('addRelu', av, bv);
    const y = new Float32Array(av.length);
    for (let i = 0; i < y.length; i++) { const v = av[i] + bv[i]; y[i] = v <= 0 ? 0 : v; }
    return make(y, a.shape, low);
  }

  addInPlace(dst: RefTensor, src: RefTensor): void {
    const d = vals(dst), s = asRead(src, dst.bf16);
    sameSize('addInPlace', d, s);
    for (let i = 0; i < d.length; i++) d[i] += s[i];
    if (dst.bf16) roundInPlace(d);
  }

  scale(x: RefTensor, s: number): RefTensor {
    const xv = vals(x);
    const y = new Float32Array(xv.length);
    for (let i = 0; i < y.length; i++) y[i] = xv[i] * s;
    return make(y, x.shape);
  }

  relu(x: RefTensor): RefTensor {
    const xv = vals(x);
    const y = new Float32Array(xv.length);
    // `v <= 0 ? 0 : v` keeps NaN as NaN, as torch.relu does.
    for (let i = 0; i < y.length; i++) { const v = xv[i]; y[i] = v <= 0 ? 0 : v; }
    return make(y, x.shape, x.bf16);
  }

  reluBackward(y: RefTensor, dy: RefTensor): RefTensor {
    const yv = vals(y), g = asRead(dy, y.bf16);
    const dx = new Float32Array(yv.length);
    for (let i = 0; i < dx.length; i++) dx[i] = yv[i] > 0 ? g[i] : 0;
    return make(dx, y.shape, y.bf16);
  }

  // ---- convolution ----

  conv2d(x: RefTensor, w: RefTensor, b: RefTensor | null, p: Conv2dParams): RefTensor {
    const g = convGeometry(x.shape, w.shape, p);
    const low = p.precision === 'bf16' ? roundToBf16 : (v: Float32Array) => v;
    const y = conv2dForward(low(vals(x)), low(vals(w)), b ? vals(b) : null, g);
    return make(y, [g.n, g.o, g.oh, g.ow], p.precision === 'bf16');
  }

  conv2dBackward(x: RefTensor, w: RefTensor, dy: RefTensor, p: Conv2dParams, needs: GradNeeds):
    { dx?: RefTensor; dw?: RefTensor; db?: RefTensor } {
    const g = convGeometry(x.shape, w.shape, p);
    const r: { dx?: RefTensor; dw?: RefTensor; db?: RefTensor } = {};
    // bf16: what the conv reads is rounded to bf16, dy included (oneDNN's backward-weights sums the
    // bias gradient from the same bf16 dy), accumulated in f32; dx is bf16 when x is.
    const bf16 = p.precision === 'bf16';
    const low = bf16 ? roundToBf16 : (v: Float32Array) => v;
    const dyLow = low(vals(dy));
    if (needs.input) r.dx = make(conv2dBackwardData(dyLow, low(vals(w)), g), x.shape, bf16 && x.bf16);
    if (needs.weight) r.dw = make(conv2dBackwardWeight(low(vals(x)), dyLow, g), w.shape);
    if (needs.bias) r.db = make(conv2dBackwardBias(dyLow, g.n, g.o, g.oh * g.ow), [g.o]);
    return r;
  }

  // ---- batch norm ----

  batchNormTrain(x: RefTensor, gamma: RefTensor, beta: RefTensor, runningMean: RefTensor, runningVar: RefTensor,
    momentum: number, eps: number): { y: RefTensor; mean: RefTensor; invStd: RefTensor } {
    const { n: N, c: C, inner: HW } = channelLayout(x.shape);
    const xv = vals(x), gv = vals(gamma), bv = vals(beta), rm = vals(runningMean), rv = vals(runningVar);
    const count = N * HW;
    // Statistics in float64 whatever x is; y has x's storage (bf16 rounds).
    const y = new Float32Array(xv.length), mean = new Float32Array(C), invStd = new Float32Array(C);
    for (let c = 0; c < C; c++) {
      // Two passes in float64: mean first, then the centred sum of squares (no cancellation).
      let s = 0;
      for (let n = 0; n < N; n++) { const base = (n * C + c) * HW; for (let i = 0; i < HW; i++) s += xv[base + i]; }
      const m = s / count;
      let ss = 0;
      for (let n = 0; n < N; n++) {
        const base = (n * C + c) * HW;
        for (let i = 0; i < HW; i++) { const d = xv[base + i] - m; ss += d * d; }
      }
      const biasedVar = ss / count;
      const is = 1 / Math.sqrt(biasedVar + eps);
      const a = gv[c] * is;
      for (let n = 0; n < N; n++) {
        const base = (n * C + c) * HW;
        for (let i = 0; i < HW; i++) y[base + i] = (xv[base + i] - m) * a + bv[c];
      }
      mean[c] = m;
      invStd[c] = is;
      const unbiasedVar = ss / (count - 1);
      rm[c] = (1 - momentum) * rm[c] + momentum * m;
      rv[c] = (1 - momentum) * rv[c] + momentum * unbiasedVar;
    }
    return { y: make(y, x.shape, x.bf16), mean: make(mean, [C]), invStd: make(invStd, [C]) };
  }

  /**
   * batchNormTrain then ReLU. The mask (1 where the output is positive) is what the backward reads,
   * as the native engine's fused kernel keeps a bit mask.
   */
  batchNormReluTrain(x: RefTensor, gamma: RefTensor, beta: RefTensor, runningMean: RefTensor, runningVar: RefTensor,
    momentum: number, eps: number): { y: RefTensor; mean: RefTensor; invStd: RefTensor; reluMask: RefTensor } {
    const r = this.batchNormTrain(x, gamma, beta, runningMean, runningVar, momentum, eps);
    const v = r.y.data, mask = new Float32Array(v.length);
    for (let i = 0; i < v.length; i++) { const keep = v[i] > 0; mask[i] = keep ? 1 : 0; if (!keep && !Number.isNaN(v[i])) v[i] = 0; }
    return { ...r, reluMask: make(mask, x.shape) };
  }

  batchNormReluBackward(x: RefTensor, gamma: RefTensor, mean: RefTensor, invStd: RefTensor, reluMask: RefTensor,
    dy: RefTensor): { dx: RefTensor; dgamma: RefTensor; dbeta: RefTensor } {
    const m = vals(reluMask), g = asRead(dy, x.bf16);
    const masked = new Float32Array(g.length);
    for (let i = 0; i < g.length; i++) masked[i] = m[i] > 0 ? g[i] : 0;
    return this.batchNormBackward(x, gamma, mean, invStd, make(masked, x.shape, x.bf16));
  }

  batchNormEval(x: RefTensor, gamma: RefTensor, beta: RefTensor, runningMean: RefTensor, runningVar: RefTensor,
    eps: number): RefTensor {
    const { n: N, c: C, inner: HW } = channelLayout(x.shape);
    const xv = vals(x), gv = vals(gamma), bv = vals(beta), rm = vals(runningMean), rv = vals(runningVar);
    const y = new Float32Array(xv.length);
    for (let c = 0; c < C; c++) {
      const a = gv[c] / Math.sqrt(rv[c] + eps), m = rm[c];
      for (let n = 0; n < N; n++) {
        const base = (n * C + c) * HW;
        for (let i = 0; i < HW; i++) y[base + i] = (xv[base + i] - m) * a + bv[c];
      }
    }
    return make(y, x.shape, x.bf16);
  }

  batchNormBackward(x: RefTensor, gamma: RefTensor, mean: RefTensor, invStd: RefTensor, dy: RefTensor):
    { dx: RefTensor; dgamma: RefTensor; dbeta: RefTensor } {
    const { n: N, c: C, inner: HW } = channelLayout(x.shape);
    const xv = vals(x), gv = vals(gamma), mv = vals(mean), iv = vals(invStd), g = asRead(dy, x.bf16);
    const count = N * HW;
    const dx = new Float32Array(xv.length), dgamma = new Float32Array(C), dbeta = new Float32Array(C);
    for (let c = 0; c < C; c++) {
      const m = mv[c], is = iv[c];
      // dbeta = sum dy, dgamma = sum dy * xhat, with xhat = (x - mean) * invStd.
      let sdy = 0, sdyx = 0;
      for (let n = 0; n < N; n++) {
        const base = (n * C + c) * HW;
        for (let i = 0; i < HW; i++) { sdy += g[base + i]; sdyx += g[base + i] * (xv[base + i] - m) * is; }
      }
      dbeta[c] = sdy;
      dgamma[c] = sdyx;
      // dx = gamma * invStd * (dy - mean(dy) - xhat * mean(dy * xhat))
      const k = gv[c] * is, mdy = sdy / count, mdyx = sdyx / count;
      for (let n = 0; n < N; n++) {
        const base = (n * C + c) * HW;
        for (let i = 0; i < HW; i++) {
          const xhat = (xv[base + i] - m) * is;
          dx[base + i] = k * (g[base + i] - mdy - xhat * mdyx);
        }
      }
    }
    return { dx: make(dx, x.shape, x.bf16), dgamma: make(dgamma, [C]), dbeta: make(dbeta, [C]) };
  }

  // ---- pooling ----

  maxPool2d(x: RefTensor, p: Pool2dParams): { y: RefTensor; argmax: RefTensor } {
    const g = poolGeometry(x.shape, p);
    const { y, argmax } = maxPoolForward(vals(x), g);
    const shape = [x.shape[0], x.shape[1], g.oh, g.ow];
    return { y: make(y, shape, x.bf16), argmax: make(argmax, shape) };
  }

  maxPool2dBackward(x: RefTensor, argmax: RefTensor, dy: RefTensor, p: Pool2dParams): RefTensor {
    return make(maxPoolBackward(vals(argmax), asRead(dy, x.bf16), poolGeometry(x.shape, p)), x.shape, x.bf16);
  }

  avgPool2d(x: RefTensor, p: Pool2dParams): RefTensor {
    const g = poolGeometry(x.shape, p);
    return make(avgPoolForward(vals(x), g, p.countIncludePad), [x.shape[0], x.shape[1], g.oh, g.ow]);
  }

  avgPool2dBackward(dy: RefTensor, inputShape: Shape, p: Pool2dParams): RefTensor {
    return make(avgPoolBackward(vals(dy), poolGeometry(inputShape, p), p.countIncludePad), inputShape);
  }

  globalAvgPool(x: RefTensor): RefTensor {
    const [N, C, H, W] = x.shape;
    const xv = vals(x), HW = H * W;
    const y = new Float32Array(N * C);
    for (let p = 0; p < N * C; p++) {
      let s = 0;
      for (let i = 0; i < HW; i++) s += xv[p * HW + i];
      y[p] = s / HW;
    }
    return make(y, [N, C, 1, 1]);
  }

  globalAvgPoolBackward(dy: RefTensor, inputShape: Shape): RefTensor {
    const [N, C, H, W] = inputShape;
    const g = vals(dy), HW = H * W;
    const dx = new Float32Array(N * C * HW);
    for (let p = 0; p < N * C; p++) dx.fill(g[p] / HW, p * HW, (p + 1) * HW);
    return make(dx, inputShape);
  }

  // ---- linear ----

  linear(x: RefTensor, w: RefTensor, b: RefTensor | null): RefTensor {
    const [N, K] = x.shape, [M] = w.shape;
    const bv = b ? vals(b) : null;
    // y[n, m] = b[m] + sum_k x[n, k] w[m, k]
    const acc = new Float64Array(N * M);
    if (bv) for (let n = 0; n < N; n++) for (let m = 0; m < M; m++) acc[n * M + m] = bv[m];
    gemmABt(vals(x), 0, vals(w), 0, acc, 0, N, M, K);
    return make(Float32Array.from(acc), [N, M]);
  }

  linearBackward(x: RefTensor, w: RefTensor, dy: RefTensor, needs: GradNeeds):
    { dx?: RefTensor; dw?: RefTensor; db?: RefTensor } {
    const [N, K] = x.shape, [M] = w.shape;
    const g = vals(dy);
    const r: { dx?: RefTensor; dw?: RefTensor; db?: RefTensor } = {};
    if (needs.input) {
      // dx[n, k] = sum_m dy[n, m] w[m, k]
      const acc = new Float64Array(N * K);
      gemmABt(g, 0, transpose(vals(w), M, K), 0, acc, 0, N, K, M);
      r.dx = make(Float32Array.from(acc), x.shape);
    }
    if (needs.weight) {
      // dw[m, k] = sum_n dy[n, m] x[n, k]
      const acc = new Float64Array(M * K);
      gemmABt(transpose(g, N, M), 0, transpose(vals(x), N, K), 0, acc, 0, M, K, N);
      r.dw = make(Float32Array.from(acc), w.shape);
    }
    if (needs.bias) {
      const db = new Float32Array(M);
      for (let m = 0; m < M; m++) { let s = 0; for (let n = 0; n < N; n++) s += g[n * M + m]; db[m] = s; }
      r.db = make(db, [M]);
    }
    return r;
  }

  // ---- loss ----

  crossEntropy(logits: RefTensor, labels: Int32Array, labelSmoothing: number): { loss: RefTensor; probs: RefTensor } {
    const [N, K] = logits.shape;
    const z = vals(logits);
    const probs = new Float32Array(N * K);
    const eps = labelSmoothing;
    let total = 0;
    for (let n = 0; n < N; n++) {
      const label = labels[n];
      if (!(label >= 0 && label < K)) throw new Error(`reference backend: label ${label} of sample ${n} is outside [0, ${K})`);
      let max = -Infinity;
      for (let k = 0; k < K; k++) max = Math.max(max, z[n * K + k]);
      let se = 0;
      for (let k = 0; k < K; k++) se += Math.exp(z[n * K + k] - max);
      const logSumExp = max + Math.log(se);
      // -log p_k = logSumExp - z_k
      let sumNegLogP = 0;
      for (let k = 0; k < K; k++) {
        sumNegLogP += logSumExp - z[n * K + k];
        probs[n * K + k] = Math.exp(z[n * K + k] - logSumExp);
      }
      const nll = logSumExp - z[n * K + label];
      total += (1 - eps) * nll + eps * (sumNegLogP / K);
    }
    return { loss: make(Float32Array.of(total / N), []), probs: make(probs, [N, K]) };
  }

  crossEntropyBackward(probs: RefTensor, labels: Int32Array, labelSmoothing: number, gradScale: number): RefTensor {
    const [N, K] = probs.shape;
    const p = vals(probs);
    const eps = labelSmoothing;
    const dz = new Float32Array(N * K);
    // d/dz_k of (1-eps)(-log p_y) + eps mean_j(-log p_j) is p_k - target_k, target = (1-eps) onehot + eps/K.
    const scale = gradScale / N, offTarget = eps / K, onTarget = 1 - eps + eps / K;
    for (let n = 0; n < N; n++) {
      for (let k = 0; k < K; k++) {
        const target = k === labels[n] ? onTarget : offTarget;
        dz[n * K + k] = (p[n * K + k] - target) * scale;
      }
    }
    return make(dz, [N, K]);
  }

  // ---- channel plumbing ----

  concatChannels(xs: readonly RefTensor[]): RefTensor {
    const { n: N, inner } = channelLayout(xs[0].shape);
    const C = xs.reduce((s, t) => s + t.shape[1], 0);
    const y = new Float32Array(N * C * inner);
    let c0 = 0;
    for (const t of xs) {
      const tv = vals(t), tc = t.shape[1];
      for (let n = 0; n < N; n++) y.set(tv.subarray(n * tc * inner, (n + 1) * tc * inner), (n * C + c0) * inner);
      c0 += tc;
    }
    return make(y, [N, C, ...xs[0].shape.slice(2)]);
  }

  splitChannels(x: RefTensor, sizes: readonly number[]): RefTensor[] {
    const { n: N, c: C, inner } = channelLayout(x.shape);
    const xv = vals(x);
    const out: RefTensor[] = [];
    let c0 = 0;
    for (const tc of sizes) {
      const y = new Float32Array(N * tc * inner);
      for (let n = 0; n < N; n++) y.set(xv.subarray((n * C + c0) * inner, (n * C + c0 + tc) * inner), n * tc * inner);
      out.push(make(y, [N, tc, ...x.shape.slice(2)]));
      c0 += tc;
    }
    return out;
  }

  shortcutA(x: RefTensor, outChannels: number, stride: number): RefTensor {
    const [N, C, H, W] = x.shape;
    const OH = Math.ceil(H / stride), OW = Math.ceil(W / stride);
    const before = Math.floor((outChannels - C) / 2);
    const xv = vals(x);
    const y = new Float32Array(N * outChannels * OH * OW);
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < C; c++) {
        const xPlane = (n * C + c) * H * W, yPlane = (n * outChannels + before + c) * OH * OW;
        for (let oy = 0; oy < OH; oy++) {
          for (let ox = 0; ox < OW; ox++) y[yPlane + oy * OW + ox] = xv[xPlane + oy * stride * W + ox * stride];
        }
      }
    }
    return make(y, [N, outChannels, OH, OW]);
  }

  shortcutABackward(dy: RefTensor, inputShape: Shape, stride: number): RefTensor {
    const [N, C, H, W] = inputShape;
    const [, outChannels, OH, OW] = dy.shape;
    const before = Math.floor((outChannels - C) / 2);
    const g = vals(dy);
    const dx = new Float32Array(N * C * H * W);
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < C; c++) {
        const xPlane = (n * C + c) * H * W, yPlane = (n * outChannels + before + c) * OH * OW;
        for (let oy = 0; oy < OH; oy++) {
          for (let ox = 0; ox < OW; ox++) dx[xPlane + oy * stride * W + ox * stride] = g[yPlane + oy * OW + ox];
        }
      }
    }
    return make(dx, inputShape);
  }

  // ---- optimizer ----

  sgdStep(param: RefTensor, grad: RefTensor, momentumBuffer: RefTensor | null, firstStep: boolean, o: SgdOptions): void {
    const pv = vals(param), gv = vals(grad), buf = momentumBuffer ? vals(momentumBuffer) : null;
    const f = Math.fround; // round where torch materializes a float32 tensor, so steps match it bit for bit or nearly
    const { lr, momentum, dampening, weightDecay, nesterov } = o;
    if (momentum !== 0 && !buf) throw new Error('reference backend: sgdStep with momentum needs a momentum buffer');
    for (let i = 0; i < pv.length; i++) {
      let d = gv[i];
      if (weightDecay !== 0) d = f(d + weightDecay * pv[i]);
      if (momentum !== 0 && buf) {
        buf[i] = firstStep ? d : f(f(buf[i] * momentum) + (1 - dampening) * d);
        d = nesterov ? f(d + momentum * buf[i]) : buf[i];
      }
      pv[i] = pv[i] - lr * d;
    }
  }
}
