// Max and average pooling with PyTorch's output-size rule and divisor rules (aten CPU kernels).

/**
 * PyTorch's pooling_output_shape: floor (or ceil) of (in + 2p - (k-1) - 1) / s, plus 1; with ceil
 * mode the last window is dropped if it would start inside the right padding.
 */
export function poolOutputSize(input: number, kernel: number, stride: number, padding: number, ceilMode: boolean): number {
  const span = input + 2 * padding - (kernel - 1) - 1 + (ceilMode ? stride - 1 : 0);
  let out = Math.floor(span / stride) + 1;
  if (ceilMode && (out - 1) * stride >= input + padding) out--;
  return out;
}

export interface PoolGeometry {
  planes: number; // N * C
  h: number; w: number; oh: number; ow: number;
  kh: number; kw: number; sh: number; sw: number; ph: number; pw: number;
}

/**
 * Returns the maxima and, per output, the flat index of the winner inside its own H*W input plane
 * (stored as a float; exact for planes up to 2^24 elements). Padded positions count as -inf, so
 * they never win; NaN wins and propagates, and ties go to the first position in scan order, as in
 * PyTorch.
 */
export function maxPoolForward(x: Float32Array, g: PoolGeometry): { y: Float32Array; argmax: Float32Array } {
  const { planes, h: H, w: W, oh: OH, ow: OW, kh: KH, kw: KW, sh, sw, ph, pw } = g;
  const y = new Float32Array(planes * OH * OW);
  const argmax = new Float32Array(planes * OH * OW);
  for (let p = 0; p < planes; p++) {
    const xPlane = p * H * W, yPlane = p * OH * OW;
    for (let oy = 0; oy < OH; oy++) {
      const y0 = Math.max(oy * sh - ph, 0), y1 = Math.min(oy * sh - ph + KH, H);
      for (let ox = 0; ox < OW; ox++) {
        const x0 = Math.max(ox * sw - pw, 0), x1 = Math.min(ox * sw - pw + KW, W);
        let best = -Infinity, bestIdx = y0 * W + x0;
        for (let iy = y0; iy < y1; iy++) {
          for (let ix = x0; ix < x1; ix++) {
            const v = x[xPlane + iy * W + ix];
            if (v > best || v !== v) { best = v; bestIdx = iy * W + ix; if (v !== v) break; }
          }
          if (best !== best) break;
        }
        y[yPlane + oy * OW + ox] = best;
        argmax[yPlane + oy * OW + ox] = bestIdx;
      }
    }
  }
  return { y, argmax };
}

export function maxPoolBackward(argmax: Float32Array, dy: Float32Array, g: PoolGeometry): Float32Array {
  const { planes, h: H, w: W, oh: OH, ow: OW } = g;
  const dx = new Float32Array(planes * H * W);
  const acc = new Float64Array(H * W);
  for (let p = 0; p < planes; p++) {
    acc.fill(0);
    const yPlane = p * OH * OW;
    for (let i = 0; i < OH * OW; i++) acc[argmax[yPlane + i]] += dy[yPlane + i];
    dx.set(acc, p * H * W);
  }
  return dx;
}

/**
 * Window [y0, y1) x [x0, x1) clipped to the input, and its divisor by PyTorch's rule: with
 * count_include_pad the window clipped to the padded input (so the part past the right padding
 * that ceil mode adds is not counted), otherwise only the real input positions.
 */
function avgWindow(oy: number, ox: number, g: PoolGeometry, countIncludePad: boolean):
  { y0: number; y1: number; x0: number; x1: number; divisor: number } {
  const { h: H, w: W, kh: KH, kw: KW, sh, sw, ph, pw } = g;
  let y0 = oy * sh - ph, x0 = ox * sw - pw;
  let y1 = Math.min(y0 + KH, H + ph), x1 = Math.min(x0 + KW, W + pw);
  const padded = (y1 - y0) * (x1 - x0);
  y0 = Math.max(y0, 0); x0 = Math.max(x0, 0);
  y1 = Math.min(y1, H); x1 = Math.min(x1, W);
  const divisor = countIncludePad ? padded : (y1 - y0) * (x1 - x0);
  return { y0, y1, x0, x1, divisor };
}

export function avgPoolForward(x: Float32Array, g: PoolGeometry, countIncludePad: boolean): Float32Array {
  const { planes, h: H, w: W, oh: OH, ow: OW } = g;
  const y = new Float32Array(planes * OH * OW);
  for (let oy = 0; oy < OH; oy++) {
    for (let ox = 0; ox < OW; ox++) {
      const { y0, y1, x0, x1, divisor } = avgWindow(oy, ox, g, countIncludePad);
      for (let p = 0; p < planes; p++) {
        const xPlane = p * H * W;
        let s = 0;
        for (let iy = y0; iy < y1; iy++) for (let ix = x0; ix < x1; ix++) s += x[xPlane + iy * W + ix];
        y[p * OH * OW + oy * OW + ox] = s / divisor;
      }
    }
  }
  return y;
}

export function avgPoolBackward(dy: Float32Array, g: PoolGeometry, countIncludePad: boolean): Float32Array {
  const { planes, h: H, w: W, oh: OH, ow: OW } = g;
  const acc = new Float64Array(planes * H * W);
  for (let oy = 0; oy < OH; oy++) {
    for (let ox = 0; ox < OW; ox++) {
      const { y0, y1, x0, x1, divisor } = avgWindow(oy, ox, g, countIncludePad);
      for (let p = 0; p < planes; p++) {
        const share = dy[p * OH * OW + oy * OW + ox] / divisor;
        const xPlane = p * H * W;
        for (let iy = y0; iy < y1; iy++) for (let ix = x0; ix < x1; ix++) acc[xPlane + iy * W + ix] += share;
      }
    }
  }
  return Float32Array.from(acc);
}
