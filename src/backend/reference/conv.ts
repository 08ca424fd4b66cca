// Convolution over NCHW Float32Arrays, weights OIHW (grouped: [O, C/G, KH, KW]), as im2col and a
// matrix product per image and group: the textbook formulation, so the oracle stays easy to
// check by eye, with the product in gemm.ts fast enough for real test shapes.
//
// For one image and one group, let P = OH*OW output positions and R = (C/G)*KH*KW taps. The patch
// matrix holds, for every position and tap, the input value that tap reads (0 in the padding):
//   forward          y[oc, p]   = b[oc] + sum_r w[oc, r] * patch[p, r]
//   backward weight  dw[oc, r] += sum_p dy[oc, p] * patch[p, r]
//   backward data    dpatch[p, r] = sum_oc dy[oc, p] * w[oc, r], then each dpatch entry is added
//                    back to the input position its tap read (col2im).
// All sums are float64; outputs are rounded to float32 once.
//
// Groups with fewer than 4 output channels (depthwise and heavily grouped convolutions) go to the
// direct loops of conv-direct.ts instead: there im2col would copy as many values as there are
// multiply-adds. The tests hold both paths to the same literal loop, to each other, to finite
// differences and to PyTorch.

import { gemmABt } from './gemm.js';
import { conv2dBackwardDataDirect, conv2dBackwardWeightDirect, conv2dForwardDirect } from './conv-direct.js';

export interface ConvGeometry {
  n: number; c: number; h: number; w: number;
  o: number; kh: number; kw: number;
  oh: number; ow: number;
  sh: number; sw: number; ph: number; pw: number; dh: number; dw: number;
  groups: number;
}

/** PyTorch's convolution output size: floor((in + 2p - d(k-1) - 1) / s) + 1. */
export function convOutputSize(input: number, kernel: number, stride: number, padding: number, dilation: number): number {
  return Math.floor((input + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1;
}

/**
 * For every output position p and tap r = (ci*KH + ki)*KW + kj of group `gi` of image `n`: the flat
 * index into x of the value it reads, or -1 where it reads padding. Shared by im2col and col2im,
 * so both agree on the geometry by construction. Layout [p][r] if `positionMajor`, else [r][p].
 */
function tapIndices(g: ConvGeometry, positionMajor: boolean): Int32Array {
  const { c: C, h: H, w: W, kh: KH, kw: KW, oh: OH, ow: OW, sh, sw, ph, pw, dh, dw, groups } = g;
  const cg = C / groups, P = OH * OW, R = cg * KH * KW;
  const idx = new Int32Array(P * R);
  for (let oy = 0; oy < OH; oy++) {
    for (let ox = 0; ox < OW; ox++) {
      const p = oy * OW + ox;
      for (let ci = 0; ci < cg; ci++) {
        for (let ki = 0; ki < KH; ki++) {
          const iy = oy * sh - ph + ki * dh;
          for (let kj = 0; kj < KW; kj++) {
            const ix = ox * sw - pw + kj * dw;
            const r = (ci * KH + ki) * KW + kj;
            const inside = iy >= 0 && iy < H && ix >= 0 && ix < W;
            idx[positionMajor ? p * R + r : r * P + p] = inside ? (ci * H + iy) * W + ix : -1;
          }
        }
      }
    }
  }
  return idx;
}

/** patch[i] = x[base + idx[i]], 0 where idx[i] = -1. `base` is the first input channel of the group. */
function im2col(x: Float32Array, base: number, idx: Int32Array, patch: Float32Array): void {
  for (let i = 0; i < idx.length; i++) {
    const j = idx[i];
    patch[i] = j < 0 ? 0 : x[base + j];
  }
}

/** Which implementation the convolution of `g` uses; 'auto' picks by the output channels per group. */
export type ConvPath = 'auto' | 'gemm' | 'direct';

function useDirect(g: ConvGeometry, path: ConvPath): boolean {
  return path === 'direct' || (path === 'auto' && g.o / g.groups < 4);
}

export function conv2dForward(x: Float32Array, w: Float32Array, b: Float32Array | null, g: ConvGeometry,
  path: ConvPath = 'auto'): Float32Array {
  if (useDirect(g, path)) return conv2dForwardDirect(x, w, b, g);
  const { n: N, c: C, h: H, w: W, o: O, kh: KH, kw: KW, oh: OH, ow: OW, groups } = g;
  const cg = C / groups, og = O / groups, P = OH * OW, R = cg * KH * KW;
  const y = new Float32Array(N * O * P);
  const idx = tapIndices(g, true);
  const patch = new Float32Array(P * R);
  const acc = new Float64Array(og * P);
  for (let n = 0; n < N; n++) {
    for (let gi = 0; gi < groups; gi++) {
      im2col(x, (n * C + gi * cg) * H * W, idx, patch);
      for (let oc = 0; oc < og; oc++) acc.fill(b ? b[gi * og + oc] : 0, oc * P, (oc + 1) * P);
      gemmABt(w, gi * og * R, patch, 0, acc, 0, og, P, R);
      y.set(acc, (n * O + gi * og) * P);
    }
  }
  return y;
}

export function conv2dBackwardData(dy: Float32Array, w: Float32Array, g: ConvGeometry, path: ConvPath = 'auto'): Float32Array {
  if (useDirect(g, path)) return conv2dBackwardDataDirect(dy, w, g);
  const { n: N, c: C, h: H, w: W, o: O, kh: KH, kw: KW, oh: OH, ow: OW, groups } = g;
  const cg = C / groups, og = O / groups, P = OH * OW, R = cg * KH * KW;
  const dx = new Float32Array(N * C * H * W);
  const idx = tapIndices(g, true);
  const dyT = new Float32Array(P * og);    // [p][oc]
  const wT = new Float32Array(R * og);     // [r][oc]
  const dpatch = new Float64Array(P * R);  // [p][r]
  const acc = new Float64Array(cg * H * W);
  for (let gi = 0; gi < groups; gi++) {
    for (let oc = 0; oc < og; oc++) {
      for (let r = 0; r < R; r++) wT[r * og + oc] = w[(gi * og + oc) * R + r];
    }
    for (let n = 0; n < N; n++) {
      for (let oc = 0; oc < og; oc++) {
        const plane = (n * O + gi * og + oc) * P;
        for (let p = 0; p < P; p++) dyT[p * og + oc] = dy[plane + p];
      }
      dpatch.fill(0);
      gemmABt(dyT, 0, wT, 0, dpatch, 0, P, R, og);
      acc.fill(0);
      for (let i = 0; i < idx.length; i++) {
        const j = idx[i];
        if (j >= 0) acc[j] += dpatch[i];
      }
      dx.set(acc, (n * C + gi * cg) * H * W);
    }
  }
  return dx;
}

export function conv2dBackwardWeight(x: Float32Array, dy: Float32Array, g: ConvGeometry, path: ConvPath = 'auto'): Float32Array {
  if (useDirect(g, path)) return conv2dBackwardWeightDirect(x, dy, g);
  const { n: N, c: C, h: H, w: W, o: O, kh: KH, kw: KW, oh: OH, ow: OW, groups } = g;
  const cg = C / groups, og = O / groups, P = OH * OW, R = cg * KH * KW;
  const idx = tapIndices(g, false);
  const patchT = new Float32Array(R * P);  // [r][p]
  const acc = new Float64Array(O * R);     // [oc][r], the layout of w
  for (let n = 0; n < N; n++) {
    for (let gi = 0; gi < groups; gi++) {
      im2col(x, (n * C + gi * cg) * H * W, idx, patchT);
      gemmABt(dy, (n * O + gi * og) * P, patchT, 0, acc, gi * og * R, og, R, P);
    }
  }
  return Float32Array.from(acc);
}

/** db[o] = sum of dy over n, y, x. */
export function conv2dBackwardBias(dy: Float32Array, n: number, o: number, planeSize: number): Float32Array {
  const db = new Float32Array(o);
  for (let oc = 0; oc < o; oc++) {
    let s = 0;
    for (let i = 0; i < n; i++) {
      const base = (i * o + oc) * planeSize;
      for (let j = 0; j < planeSize; j++) s += dy[base + j];
    }
    db[oc] = s;
  }
  return db;
}
