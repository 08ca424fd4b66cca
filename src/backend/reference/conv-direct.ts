// Direct convolution loops, for groups with few output channels (depthwise, heavily grouped),
// where im2col would copy as many values as there are multiply-adds. The loops run (kh, kw)
// outside and the output row inside, with the valid output range of each kernel tap computed once,
// so the innermost loop has no bounds checks. Sums are float64 (Float64Array scratch planes).

import type { ConvGeometry } from './conv.js';

/**
 * Output positions o in [lo, hi) whose input coordinate o*stride - pad + offset lies in [0, size).
 * `offset` is the kernel tap's dilated offset k*dilation.
 */
function validRange(size: number, outSize: number, stride: number, pad: number, offset: number): [number, number] {
  // o*stride >= pad - offset  and  o*stride <= size - 1 + pad - offset
  const lo = Math.max(0, Math.ceil((pad - offset) / stride));
  const hi = Math.min(outSize, Math.floor((size - 1 + pad - offset) / stride) + 1);
  return [lo, Math.max(lo, hi)];
}

interface Tap { lo: number; hi: number }

/** Valid output ranges for every kernel row (or column), indexed by the tap. */
function taps(size: number, outSize: number, k: number, stride: number, pad: number, dil: number): Tap[] {
  const r: Tap[] = [];
  for (let i = 0; i < k; i++) {
    const [lo, hi] = validRange(size, outSize, stride, pad, i * dil);
    r.push({ lo, hi });
  }
  return r;
}

export function conv2dForwardDirect(x: Float32Array, w: Float32Array, b: Float32Array | null, g: ConvGeometry): Float32Array {
  const { n: N, c: C, h: H, w: W, o: O, kh: KH, kw: KW, oh: OH, ow: OW, sh, sw, ph, pw, dh, dw, groups } = g;
  const cg = C / groups, og = O / groups;
  const y = new Float32Array(N * O * OH * OW);
  const acc = new Float64Array(OH * OW);
  const rows = taps(H, OH, KH, sh, ph, dh), cols = taps(W, OW, KW, sw, pw, dw);
  for (let n = 0; n < N; n++) {
    for (let gi = 0; gi < groups; gi++) {
      for (let oc = gi * og; oc < (gi + 1) * og; oc++) {
        acc.fill(b ? b[oc] : 0);
        for (let icg = 0; icg < cg; icg++) {
          const xPlane = (n * C + gi * cg + icg) * H * W;
          const wBase = (oc * cg + icg) * KH * KW;
          for (let ki = 0; ki < KH; ki++) {
            const { lo: ohLo, hi: ohHi } = rows[ki];
            for (let kj = 0; kj < KW; kj++) {
              const wv = w[wBase + ki * KW + kj];
              const { lo: owLo, hi: owHi } = cols[kj];
              const colOff = kj * dw - pw;
              const len = owHi - owLo;
              for (let oy = ohLo; oy < ohHi; oy++) {
                let xi = xPlane + (oy * sh - ph + ki * dh) * W + colOff + owLo * sw;
                const a0 = oy * OW + owLo, a1 = a0 + len;
                if (sw === 1) {
                  for (let ai = a0; ai < a1; ai++, xi++) acc[ai] += wv * x[xi];
                } else {
                  for (let ai = a0; ai < a1; ai++, xi += sw) acc[ai] += wv * x[xi];
                }
              }
            }
          }
        }
        y.set(acc, (n * O + oc) * OH * OW);
      }
    }
  }
  return y;
}

/** dx = conv_transpose(dy, w): every tap scatters back to the input position it read. */
export function conv2dBackwardDataDirect(dy: Float32Array, w: Float32Array, g: ConvGeometry): Float32Array {
  const { n: N, c: C, h: H, w: W, o: O, kh: KH, kw: KW, oh: OH, ow: OW, sh, sw, ph, pw, dh, dw, groups } = g;
  const cg = C / groups, og = O / groups;
  const dx = new Float32Array(N * C * H * W);
  const acc = new Float64Array(H * W);
  const rows = taps(H, OH, KH, sh, ph, dh), cols = taps(W, OW, KW, sw, pw, dw);
  for (let n = 0; n < N; n++) {
    for (let gi = 0; gi < groups; gi++) {
      for (let icg = 0; icg < cg; icg++) {
        acc.fill(0);
        for (let oc = gi * og; oc < (gi + 1) * og; oc++) {
          const dyPlane = (n * O + oc) * OH * OW;
          const wBase = (oc * cg + icg) * KH * KW;
          for (let ki = 0; ki < KH; ki++) {
            const { lo: ohLo, hi: ohHi } = rows[ki];
            for (let kj = 0; kj < KW; kj++) {
              const wv = w[wBase + ki * KW + kj];
              const { lo: owLo, hi: owHi } = cols[kj];
              const colOff = kj * dw - pw;
              for (let oy = ohLo; oy < ohHi; oy++) {
                const aRow = (oy * sh - ph + ki * dh) * W + colOff;
                const dyRow = dyPlane + oy * OW;
                for (let ox = owLo; ox < owHi; ox++) acc[aRow + ox * sw] += wv * dy[dyRow + ox];
              }
            }
          }
        }
        dx.set(acc, (n * C + gi * cg + icg) * H * W);
      }
    }
  }
  return dx;
}

/** dw[o, i, kh, kw] = sum over n, oy, ox of dy[n, o, oy, ox] * x[n, g*cg + i, iy, ix]. */
export function conv2dBackwardWeightDirect(x: Float32Array, dy: Float32Array, g: ConvGeometry): Float32Array {
  const { n: N, c: C, h: H, w: W, o: O, kh: KH, kw: KW, oh: OH, ow: OW, sh, sw, ph, pw, dh, dw, groups } = g;
  const cg = C / groups, og = O / groups;
  const acc = new Float64Array(O * cg * KH * KW);
  const rows = taps(H, OH, KH, sh, ph, dh), cols = taps(W, OW, KW, sw, pw, dw);
  for (let n = 0; n < N; n++) {
    for (let gi = 0; gi < groups; gi++) {
      for (let oc = gi * og; oc < (gi + 1) * og; oc++) {
        const dyPlane = (n * O + oc) * OH * OW;
        for (let icg = 0; icg < cg; icg++) {
          const xPlane = (n * C + gi * cg + icg) * H * W;
          const wBase = (oc * cg + icg) * KH * KW;
          for (let ki = 0; ki < KH; ki++) {
            const { lo: ohLo, hi: ohHi } = rows[ki];
            for (let kj = 0; kj < KW; kj++) {
              const { lo: owLo, hi: owHi } = cols[kj];
              const colOff = kj * dw - pw;
              let s = 0;
              for (let oy = ohLo; oy < ohHi; oy++) {
                const xRow = xPlane + (oy * sh - ph + ki * dh) * W + colOff;
                const dyRow = dyPlane + oy * OW;
                for (let ox = owLo; ox < owHi; ox++) s += dy[dyRow + ox] * x[xRow + ox * sw];
              }
              acc[wBase + ki * KW + kj] += s;
            }
          }
        }
      }
    }
  }
  return Float32Array.from(acc);
}
