// Direct convolution over NCHW Float32Arrays, weights OIHW (grouped: [O, C/G, KH, KW]).
//
// The loops run (kh, kw) outside and the output row inside, with the valid output range for each
// kernel tap computed once, so the innermost loop has no bounds checks and walks contiguous memory.
// Sums are accumulated in Float64Array scratch planes: the reference is an oracle, so it should be
// more accurate than the kernels it judges, not merely as accurate.

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

export function conv2dForward(x: Float32Array, w: Float32Array, b: Float32Array | null, g: ConvGeometry): Float32Array {
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
              for (let oy = ohLo; oy < ohHi; oy++) {
                const xRow = xPlane + (oy * sh - ph + ki * dh) * W + colOff;
                const aRow = oy * OW;
                for (let ox = owLo; ox < owHi; ox++) acc[aRow + ox] += wv * x[xRow + ox * sw];
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
export function conv2dBackwardData(dy: Float32Array, w: Float32Array, g: ConvGeometry): Float32Array {
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
export function conv2dBackwardWeight(x: Float32Array, dy: Float32Array, g: ConvGeometry): Float32Array {
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
