// BatchNorm folding, shared by the ONNX exporter and the compiled inference plan: conv then eval BN
// is y = s * (W*x + b - mean) + beta with s = gamma / sqrt(var + eps), i.e. one conv with weights
// s*W and bias beta + s*(b - mean). Computed in float64 and rounded once to float32, so the folded
// net differs from the unfolded one only by float32 rounding.
import type { BatchNorm2d, Conv2d } from '../nn/index.js';

/** Eval-mode BN as a per-channel affine y = scale * x + shift (float64). */
export interface Affine {
  scale: Float64Array;
  shift: Float64Array;
}

export function bnAffine(bn: BatchNorm2d): Affine {
  const gamma = bn.weight.toArray(), beta = bn.bias.toArray();
  const mean = bn.runningMean.toArray(), variance = bn.runningVar.toArray();
  const scale = new Float64Array(bn.numFeatures), shift = new Float64Array(bn.numFeatures);
  for (let c = 0; c < bn.numFeatures; c++) {
    scale[c] = gamma[c]! / Math.sqrt(variance[c]! + bn.eps);
    shift[c] = beta[c]! - mean[c]! * scale[c]!;
  }
  return { scale, shift };
}

/**
 * The conv's weights (plain OIHW) and bias with `affine` folded in. `withShift: false` leaves out
 * the shift (ResNeXt form (a) adds it once after its sum); the bias is null only when there is
 * neither a conv bias nor a shift to carry.
 */
export function foldConv(conv: Conv2d, affine: Affine | null, withShift = true): { weight: Float32Array; bias: Float32Array | null } {
  const weight = conv.weight.toArray();
  const bias = conv.bias ? conv.bias.toArray() : null;
  if (!affine) return { weight, bias };
  const perOut = weight.length / conv.outChannels;
  const folded = new Float32Array(weight.length);
  const b = new Float32Array(conv.outChannels);
  for (let o = 0; o < conv.outChannels; o++) {
    const s = affine.scale[o]!;
    for (let k = o * perOut; k < (o + 1) * perOut; k++) folded[k] = weight[k]! * s;
    b[o] = (withShift ? affine.shift[o]! : 0) + (bias ? bias[o]! * s : 0);
  }
  return { weight: folded, bias: withShift || bias ? b : null };
}

/** Conv followed by an eval BN, folded: always has a bias. */
export function foldConvBn(conv: Conv2d, bn: BatchNorm2d): { weight: Float32Array; bias: Float32Array } {
  if (bn.numFeatures !== conv.outChannels) {
    throw new Error(`cannot fold a BatchNorm of ${bn.numFeatures} channels into a conv with ${conv.outChannels} outputs`);
  }
  const r = foldConv(conv, bnAffine(bn));
  return { weight: r.weight, bias: r.bias! };
}
