// Accuracy of a compiled plan (f32, bf16 or int8) over a loader, and how often its top-1 agrees with
// the f32 plan's: the question a user of a lower precision asks ("what does it cost me?").
import type { DataLoader } from '../data/index.js';
import { addBatch, emptyTally, summarize } from '../train/metrics.js';
import type { ResNet } from '../models/net.js';
import { argmax } from './compare.js';
import { compileForInference } from './compile.js';
import type { Calibration } from './quantize.js';
import type { PlanDtype } from '../backend/index.js';

export interface CompiledEvalResult {
  dtype: PlanDtype;
  samples: number;
  loss: number;
  acc: number;
  top5: number;
  /** Against the f32 plan (absent when dtype is f32): images whose top-1 class is the same, and their share. */
  agreement?: { same: number; rate: number; f32Acc: number };
}

/** Mean cross-entropy of the rows of `logits` ([n, k]) against `labels`, in float64. */
function meanLoss(logits: Float32Array, labels: Int32Array, k: number): number {
  let sum = 0;
  for (let i = 0; i < labels.length; i++) {
    let max = -Infinity;
    for (let j = 0; j < k; j++) max = Math.max(max, logits[i * k + j]!);
    let z = 0;
    for (let j = 0; j < k; j++) z += Math.exp(logits[i * k + j]! - max);
    sum += max + Math.log(z) - logits[i * k + labels[i]!]!;
  }
  return sum / labels.length;
}

export async function evaluateCompiled(
  model: ResNet, loader: DataLoader, o: { input: readonly number[]; dtype: PlanDtype; calibration?: Calibration },
): Promise<CompiledEvalResult> {
  const maxBatch = loader.batchSize;
  const plan = compileForInference(model, { input: o.input, maxBatch, dtype: o.dtype, calibration: o.calibration });
  const ref = o.dtype === 'f32' ? null : compileForInference(model, { input: o.input, maxBatch });
  const tally = emptyTally(), refTally = emptyTally();
  let same = 0;
  try {
    for await (const b of loader.epoch(0)) {
      const logits = plan.run(b.x, b.n);
      const k = logits.length / b.n;
      addBatch(tally, logits, b.y, k, meanLoss(logits, b.y, k));
      if (ref) {
        const r = ref.run(b.x, b.n);
        addBatch(refTally, r, b.y, k, meanLoss(r, b.y, k));
        for (let i = 0; i < b.n; i++) if (argmax(logits, i * k, k) === argmax(r, i * k, k)) same++;
      }
    }
  } finally {
    plan.dispose();
    ref?.dispose();
  }
  const r: CompiledEvalResult = { dtype: o.dtype, samples: tally.samples, ...summarize(tally) };
  if (ref) r.agreement = { same, rate: same / Math.max(1, tally.samples), f32Acc: summarize(refTally).acc };
  return r;
}
