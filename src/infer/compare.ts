// How closely two runs of a classifier agree (bf16 against f32, our engine against another): the
// share of samples with the same top-1 class and the largest logit difference, stated relative to
// the largest logit magnitude so that it reads the same for any model.

export interface LogitAgreement {
  samples: number;
  /** Samples whose arg-max class is the same in both. */
  top1Same: number;
  /** top1Same / samples. */
  top1Agreement: number;
  /** Largest |a - b| over every logit. */
  maxDeviation: number;
  /** Largest |a| (the reference run's largest logit magnitude). */
  largestLogit: number;
  /** maxDeviation / largestLogit. */
  relativeDeviation: number;
}

/** Index (0..len-1) of the largest of v[from .. from+len-1]: a row's top-1 class. */
export function argmax(v: Float32Array, from: number, len: number): number {
  let best = 0;
  for (let j = 1; j < len; j++) if (v[from + j]! > v[from + best]!) best = j;
  return best;
}

/** Compares logits `a` (the reference) and `b`, both [n, classes] row-major. */
export function compareLogits(a: Float32Array, b: Float32Array, n: number, classes: number): LogitAgreement {
  if (a.length !== n * classes || b.length !== n * classes) {
    throw new Error(`compareLogits: expected ${n} x ${classes} = ${n * classes} logits, got ${a.length} and ${b.length}`);
  }
  let same = 0, dev = 0, largest = 0;
  for (let s = 0; s < n; s++) {
    if (argmax(a, s * classes, classes) === argmax(b, s * classes, classes)) same++;
  }
  for (let i = 0; i < a.length; i++) {
    dev = Math.max(dev, Math.abs(a[i]! - b[i]!));
    largest = Math.max(largest, Math.abs(a[i]!));
  }
  return { samples: n, top1Same: same, top1Agreement: n ? same / n : 1, maxDeviation: dev, largestLogit: largest, relativeDeviation: largest ? dev / largest : dev };
}

/** Merges the agreement of several batches into one. */
export function mergeAgreement(parts: readonly LogitAgreement[]): LogitAgreement {
  const samples = parts.reduce((s, p) => s + p.samples, 0);
  const top1Same = parts.reduce((s, p) => s + p.top1Same, 0);
  const maxDeviation = Math.max(0, ...parts.map((p) => p.maxDeviation));
  const largestLogit = Math.max(0, ...parts.map((p) => p.largestLogit));
  return { samples, top1Same, top1Agreement: samples ? top1Same / samples : 1, maxDeviation, largestLogit, relativeDeviation: largestLogit ? maxDeviation / largestLogit : maxDeviation };
}
