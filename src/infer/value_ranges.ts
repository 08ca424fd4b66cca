// The range of every value of a network's lowered graph (models/graph.ts) over calibration images:
// what a QDQ ONNX export quantizes with. The int8 plan's own table (quantize.ts) has one range per
// fused plan op, which is not enough there: onnxruntime fuses a QuantizeLinear/DequantizeLinear pair
// around each conv into its int8 conv only when every conv output has a scale, including the ones a
// residual sum adds up (our plan sums those in its conv post-op and never quantizes them).
import type { Module } from '../nn/index.js';
import { runGraph } from '../models/graph_run.js';
import { valueNames, type Graph } from '../models/graph.js';
import { Tensor, noGrad, tidy } from '../tensor/index.js';

export type ValueRanges = Record<string, { min: number; max: number }>;

/**
 * Runs `n` images (NCHW float32) through `g` eagerly, `batch` at a time, and merges each value's
 * [min, max] into `table` by its valueNames() name. A NaN or infinity anywhere is refused with the
 * name of the value that made it first.
 */
export function recordValueRanges(g: Graph, model: Module, images: Float32Array, n: number, batch: number, table: ValueRanges = {}): ValueRanges {
  const names = valueNames(g);
  const per = g.input.reduce((a, b) => a * b, 1);
  const merge = (id: number, data: Float32Array, first: number, count: number): void => {
    let lo = Infinity, hi = -Infinity, finite = true;
    for (let k = 0; k < data.length; k++) {
      const v = data[k]!;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
      if (v - v !== 0) finite = false; // NaN or an infinity (a NaN fails both comparisons above)
    }
    if (!finite) {
      throw new Error(`calibration: ${names[id]} produced a non-finite value (NaN or infinity) on calibration images ${first}..${first + count - 1}; ` +
        'check the weights and the input');
    }
    const r = table[names[id]!];
    table[names[id]!] = r ? { min: Math.min(r.min, lo), max: Math.max(r.max, hi) } : { min: lo, max: hi };
  };
  // Eval mode, as the plans and the export compute: BN on its running statistics (and leaves them be).
  const modes = model.namedModules().map(([, m]) => [m, m.training] as const);
  model.eval();
  try {
    noGrad(() => {
      for (let i = 0; i < n; i += batch) {
        const m = Math.min(batch, n - i);
        tidy(() => {
          const x = Tensor.fromArray(images.subarray(i * per, (i + m) * per), [m, ...g.input]);
          merge(0, x.toArray(), i, m);
          runGraph(g, model, x, (id, _node, value) => merge(id, value.toArray(), i, m));
        });
      }
    });
  } finally {
    for (const [m, t] of modes) m.training = t;
  }
  return table;
}
