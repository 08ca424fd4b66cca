// Accuracy bookkeeping from logits read back as row-major [N, K] values.

export interface Tally {
  samples: number;
  lossSum: number;
  top1: number;
  top5: number;
}

export function emptyTally(): Tally {
  return { samples: 0, lossSum: 0, top1: 0, top5: 0 };
}

/** Adds a batch: its mean loss and how many rows had the label first, or within the first five. */
export function addBatch(t: Tally, logits: Float32Array, labels: Int32Array, classes: number, meanLoss: number): void {
  const n = labels.length;
  for (let i = 0; i < n; i++) {
    const row = i * classes;
    const own = logits[row + labels[i]];
    // A row with a NaN or infinite logit is never right: with NaN every comparison is false, so it
    // would otherwise rank first (a diverged model reported 100% accuracy).
    let finite = true;
    for (let k = 0; k < classes && finite; k++) finite = Number.isFinite(logits[row + k]);
    if (!finite) continue;
    // Rank of the true class: how many classes score strictly higher (ties count in its favour).
    let higher = 0;
    for (let k = 0; k < classes; k++) if (logits[row + k] > own) higher++;
    if (higher === 0) t.top1++;
    if (higher < 5) t.top5++;
  }
  t.samples += n;
  t.lossSum += meanLoss * n;
}

export function summarize(t: Tally): { loss: number; acc: number; top5: number } {
  const n = Math.max(1, t.samples);
  return { loss: t.lossSum / n, acc: t.top1 / n, top5: t.top5 / n };
}
