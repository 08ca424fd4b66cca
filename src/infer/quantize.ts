// Post-training static quantization for the int8 plan: calibration records the range of every plan
// op's output over a set of images (an f32 plan of the same ops run with planCalibrate), and an int8
// plan takes one scale per value from it. Weights are quantized by the plan itself (symmetric, per
// output channel), so a calibration is all an int8 model needs besides its f32 weights; it is small
// JSON, saved beside the weights so a served model does not recalibrate at start.
import { readFileSync } from 'node:fs';
import type { PlanOp } from '../backend/types.js';
import { writeAtomic } from '../io/file.js';

/** The calibrated output range of each plan op, by op name (the module path of the conv, pool, ...). */
export interface Calibration {
  format: 'residual-calibration';
  version: 1;
  /** The model it was made for (spec name) and the input shape [C, H, W] it saw. */
  model: string;
  input: [number, number, number];
  /** How many images it ran. */
  images: number;
  ops: Record<string, { min: number; max: number }>;
  /**
   * The range of every value of the lowered graph, by valueNames() name (value_ranges.ts): what a
   * QDQ ONNX export quantizes with. Made on request (calibrate(..., { values: true })), from the
   * same images as `ops`.
   */
  values?: Record<string, { min: number; max: number }>;
}

/** Merges per-batch ranges [min0, max0, min1, max1, ...] (plan op order) into the calibration's table. */
export function mergeRanges(table: Calibration['ops'], ops: readonly PlanOp[], ranges: Float32Array): void {
  if (ranges.length !== 2 * ops.length) throw new Error(`calibration: ${ranges.length / 2} ranges for ${ops.length} plan ops`);
  ops.forEach((op, i) => {
    const lo = ranges[2 * i]!, hi = ranges[2 * i + 1]!;
    if (!Number.isFinite(lo) || !Number.isFinite(hi)) {
      throw new Error(`calibration: ${op.name} produced a non-finite value (NaN or infinity) on the calibration images; check the weights and the input`);
    }
    const r = table[op.name];
    table[op.name] = r ? { min: Math.min(r.min, lo), max: Math.max(r.max, hi) } : { min: lo, max: hi };
  });
}

/**
 * The int8 plan's ops: each op's output scale from the calibration (u8 for a value that is never
 * negative, s8 otherwise), and the convs that read the raw input kept in f32 (the stem: its 3
 * channels give int8 little to do and its input has the widest relative range).
 */
export function quantizeOps(ops: readonly PlanOp[], cal: Calibration, inputBuffer: number): PlanOp[] {
  let inputLive = true; // the input's buffer is reused once the input is read
  return ops.map((op) => {
    const r = cal.ops[op.name];
    if (!r) {
      throw new Error(`int8: the calibration has no range for ${op.name} (it was made for ${cal.model} at ` +
        `[${cal.input.join(', ')}]; calibrate this model again)`);
    }
    const qsigned = r.min < 0;
    const amax = Math.max(Math.abs(r.min), Math.abs(r.max));
    const qscale = amax > 0 ? amax / (qsigned ? 127 : 255) : 1; // an all-zero output quantizes exactly with any scale
    const q = { ...op, qscale, qsigned };
    const readsInput = inputLive && q.src === inputBuffer;
    if (q.dst === inputBuffer) inputLive = false;
    return q.type === 'conv' && readsInput ? { ...q, keep: true } : q;
  });
}

/** Checks a calibration read from JSON: its shape, and that it was made for this model and input. */
export function checkCalibration(value: unknown, model: string, input: readonly number[], where: string): Calibration {
  const c = value as Partial<Calibration> | null;
  if (!c || typeof c !== 'object' || c.format !== 'residual-calibration' || c.version !== 1) {
    throw new Error(`${where}: not a Residual calibration (expected {"format": "residual-calibration", "version": 1, ...})`);
  }
  if (!Array.isArray(c.input) || c.input.length !== 3 || typeof c.model !== 'string' || !c.ops || typeof c.ops !== 'object') {
    throw new Error(`${where}: a calibration needs model, input [C, H, W] and ops`);
  }
  if (c.model !== model || c.input.some((d, i) => d !== input[i])) {
    throw new Error(`${where}: calibrated for ${c.model} at [${c.input.join(', ')}], but the model is ${model} at [${input.join(', ')}]; ` +
      'calibrate again (residual calibrate, or --calibration DIR|data-spec)');
  }
  if (c.values !== undefined && (!c.values || typeof c.values !== 'object')) throw new Error(`${where}: values must be an object of ranges`);
  for (const [name, r] of [...Object.entries(c.ops), ...Object.entries(c.values ?? {})]) {
    if (!r || typeof r.min !== 'number' || typeof r.max !== 'number' || !Number.isFinite(r.min) || !Number.isFinite(r.max) || r.min > r.max) {
      throw new Error(`${where}: the range of ${name} is not a finite [min, max]`);
    }
  }
  return c as Calibration;
}

const MAX_CALIBRATION_BYTES = 16 << 20; // a ResNet-152's table is about 30 KB

export function readCalibration(file: string, model: string, input: readonly number[]): Calibration {
  let text: string;
  try {
    const buf = readFileSync(file);
    if (buf.length > MAX_CALIBRATION_BYTES) throw new Error(`${buf.length} bytes, more than a calibration ever needs (${MAX_CALIBRATION_BYTES})`);
    text = buf.toString('utf8');
  } catch (e) {
    throw new Error(`calibration ${file}: ${(e as Error).message}`, { cause: e });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`calibration ${file}: not JSON (${(e as Error).message})`, { cause: e });
  }
  return checkCalibration(json, model, input, `calibration ${file}`);
}

export function writeCalibration(file: string, cal: Calibration): void {
  writeAtomic(file, `${JSON.stringify(cal, null, 1)}\n`);
}
