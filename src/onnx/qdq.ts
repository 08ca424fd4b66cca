// The int8 side of the ONNX export: which values of the lowered graph get a QuantizeLinear /
// DequantizeLinear pair, with which scale and zero point, and the conv weights and biases as
// integers. The scheme is onnxruntime's own default for static quantization, the one its CPU int8
// kernels (QLinearConv on u8 x s8, QLinearAdd, u8 MaxPool) are fused from:
//
//   activations  uint8, asymmetric, one scale per tensor, from the calibrated [min, max] (widened to
//                hold 0, so zero padding is exact); a value that is never negative gets zero point 0,
//                the scale max/255 our int8 plan gives it too
//   weights      int8, symmetric (zero point 0, [-127, 127]), one scale per output channel (axis 0)
//   biases       int32, scale input scale x weight scale, zero point 0: the accumulator's own units
//
// Like our int8 plan, the convs that read the network's input (the stem) and the head (global pool,
// flatten, classifier) stay float32: the stem's few input channels give int8 little to do, and its
// input has the widest relative range. A ReLU is kept as a node before its QuantizeLinear (a runtime
// drops it there: zero point 0 clamps at 0 anyway); max pool and the option-A shortcut (slicing and
// zero padding) leave values as they are, so their pair takes their input's scale, which lets a
// runtime run them on the uint8 values directly.
import { inputsOf, readerCounts, valueNames, type Graph, type ValueId } from '../models/graph.js';

export interface QParams {
  /** float32-exact scale (it is stored as float32). */
  scale: number;
  /** uint8 zero point. */
  zeroPoint: number;
}

export type Ranges = Readonly<Record<string, { min: number; max: number }>>;

/** uint8 asymmetric parameters for values in [min, max]. */
export function activationParams(min: number, max: number): QParams {
  const lo = Math.min(0, min), hi = Math.max(0, max);
  if (hi - lo === 0) return { scale: 1, zeroPoint: 0 }; // an all-zero value quantizes exactly with any scale
  const scale = Math.fround((hi - lo) / 255);
  const zeroPoint = Math.min(255, Math.max(0, Math.round(-lo / scale)));
  return { scale, zeroPoint };
}

/** Symmetric per-output-channel int8 weights ([O, ...] row-major) and their scales. */
export function quantizeWeights(w: Float32Array, outChannels: number): { q: Int8Array; scales: Float32Array } {
  const per = w.length / outChannels;
  const q = new Int8Array(w.length), scales = new Float32Array(outChannels);
  for (let o = 0; o < outChannels; o++) {
    let amax = 0;
    for (let k = o * per; k < (o + 1) * per; k++) amax = Math.max(amax, Math.abs(w[k]!));
    const s = amax > 0 ? Math.fround(amax / 127) : 1; // an all-zero channel is exact with any scale
    scales[o] = s;
    for (let k = o * per; k < (o + 1) * per; k++) q[k] = Math.max(-127, Math.min(127, Math.round(w[k]! / s)));
  }
  return { q, scales };
}

/** The bias in int32 at scale inputScale x weightScale[o] (the scales it is dequantized with). */
export function quantizeBias(b: Float32Array, inputScale: number, weightScales: Float32Array): { q: Int32Array; scales: Float32Array } {
  const q = new Int32Array(b.length), scales = new Float32Array(b.length);
  for (let o = 0; o < b.length; o++) {
    scales[o] = inputScale * weightScales[o]!;
    q[o] = Math.max(-2147483647, Math.min(2147483647, Math.round(b[o]! / scales[o]!)));
  }
  return { q, scales };
}

/**
 * The quantization parameters of every value that gets a QuantizeLinear/DequantizeLinear pair after
 * it, from the calibrated ranges (keyed by valueNames()). `fail` reports a node the scheme does not
 * cover or a value the ranges lack.
 */
export function planQdq(g: Graph, ranges: Ranges, fail: (path: string, problem: string) => never): Map<ValueId, QParams> {
  const names = valueNames(g);
  const readers = readerCounts(g);
  const onlyReader = new Map<ValueId, ValueId>(); // value -> the node value that reads it, when one does
  g.nodes.forEach((n, i) => {
    for (const v of inputsOf(n)) if (readers[v] === 1) onlyReader.set(v, i + 1);
  });
  const feedsRelu = (v: ValueId): boolean => {
    const r = onlyReader.get(v);
    return r !== undefined && g.nodes[r - 1]!.op === 'relu';
  };
  const own = (v: ValueId): QParams => {
    const r = ranges[names[v]!];
    if (!r) fail(g.nodes[v - 1]!.path, `the calibration has no range for the value ${names[v]}; calibrate this model again with graph values`);
    return activationParams(r.min, r.max);
  };
  const q = new Map<ValueId, QParams>();
  g.nodes.forEach((n, i) => {
    const v = i + 1;
    switch (n.op) {
      case 'conv':
      case 'add': if (!feedsRelu(v)) q.set(v, own(v)); return;
      case 'relu':
      case 'avgpool': q.set(v, own(v)); return;
      case 'maxpool':
      case 'shortcutA': q.set(v, q.get(n.src) ?? own(v)); return;
      case 'gap':
      case 'flatten':
      case 'linear': return;
      case 'batchnorm':
      case 'concat':
        fail(n.path, `${n.op === 'concat' ? 'a concatenation' : 'a BatchNorm that does not follow a convolution'} has no int8 export ` +
          '(ResNeXt forms (a)/(b): convert their weights to form (c), the grouped bottleneck, with convertResNeXtBlockState)');
    }
  });
  return q;
}
