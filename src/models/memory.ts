// How much memory a batch needs before it is asked for: a `--batch 1000000000` is refused with a
// reason and a batch that fits, instead of an allocator error (or gigabytes) halfway into a run.
import { totalmem } from 'node:os';
import type { NetSpec } from './net.js';
import { traceNet } from './net.js';

/** Float32 bytes of every layer's output for one sample at `input` [C, H, W]. */
export function activationBytesPerSample(spec: NetSpec, input: readonly number[]): number {
  return traceNet(spec, input).layers.reduce((a, l) => a + l.outShape.slice(1).reduce((x, y) => x * y, 1), 0) * 4;
}

/** The budget for activations: RESIDUAL_MAX_TRAIN_BYTES, else 3/4 of the machine's memory. */
export function activationBudget(): number {
  const env = process.env.RESIDUAL_MAX_TRAIN_BYTES;
  return env !== undefined && Number(env) > 0 ? Number(env) : 0.75 * totalmem();
}

/**
 * Refuses a batch whose activations would not fit. Training keeps every layer's output for the
 * backward pass and gives it a gradient of the same size, so `copies` is about 3 there; inference
 * frees as it goes, and 1 is a safe upper bound.
 */
export function checkBatchMemory(what: string, spec: NetSpec, input: readonly number[], batch: number, copies: number): void {
  const perSample = activationBytesPerSample(spec, input) * copies;
  const budget = activationBudget();
  const need = perSample * batch;
  if (need > budget) {
    const gb = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;
    throw new Error(`${what}: batch ${batch} of ${spec.name} at ${input.join('x')} needs about ${gb(need)} for activations, over the budget of ${gb(budget)} ` +
      `(3/4 of this machine's memory, or RESIDUAL_MAX_TRAIN_BYTES); a batch of at most ${Math.max(1, Math.floor(budget / perSample))} fits`);
  }
}
