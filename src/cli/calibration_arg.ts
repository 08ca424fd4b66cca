// Where an int8 command (eval, serve, infer, bench of a trained model) gets its calibration:
// --calibration FILE.json, or --calibration DATA (a data spec, or an image folder) to calibrate on
// now; by default the calibration saved beside the weights, else one made from the training images
// of the model's own data and saved there, so the next start does not recalibrate. A QDQ ONNX export
// (values: true) needs the range of every graph value too: a saved calibration without them is made
// again, with them, and saved in its place.
import { existsSync, statSync } from 'node:fs';
import { dirname, join, basename } from 'node:path';
import { DataLoader } from '../data/index.js';
import { calibrate } from '../infer/compile.js';
import { readCalibration, writeCalibration, type Calibration } from '../infer/quantize.js';
import { readCard } from '../models/card.js';
import type { ResNet } from '../models/net.js';
import { openData, type DataSpec } from '../train/data_spec.js';
import { resolveWeightsArgument } from './weights_arg.js';

/** Images calibrate() sees by default: a few hundred, drawn at random (a seeded shuffle) from the training split. */
export const CALIBRATION_IMAGES = 512;

/** The calibration file that belongs to a weights path: calibration.json in a run folder, else NAME.calibration.json beside the file. */
export function calibrationPathFor(weightsPath: string): string {
  if (existsSync(weightsPath) && statSync(weightsPath).isDirectory()) return join(weightsPath, 'calibration.json');
  return join(dirname(weightsPath), `${basename(weightsPath).replace(/\.[^.]*$/, '')}.calibration.json`);
}

/** `count` images of `data`'s training split, transformed as for evaluation, checked against the model's input. */
async function calibrationImages(data: DataSpec, input: readonly number[], count: number, what: string): Promise<{ x: Float32Array; n: number }> {
  if (data.train.length === 0) throw new Error(`${what}: ${data.name} has no training images to calibrate on`);
  const [c, h, w] = data.input;
  if (c !== input[0]) {
    throw new Error(`${what}: ${data.name} has ${c}-channel images but the model takes ${input[0]} channels; calibrate on the data the model was trained for`);
  }
  if (h !== input[1] || w !== input[2]) {
    throw new Error(`${what}: ${data.name} gives ${c}x${h}x${w} images but the model runs at ${input.join('x')}; calibrate at the model's input size`);
  }
  const n = Math.min(count, data.train.length);
  const loader = new DataLoader(data.train, { batchSize: n, shuffle: true, seed: 0, transforms: data.testTransforms, worker: false });
  for await (const b of loader.epoch(0)) return { x: b.x, n: b.n };
  throw new Error(`${what}: ${data.name} gave no batch`);
}

export async function resolveCalibration(
  command: string, model: ResNet, weightsPath: string | null, input: readonly number[],
  o: { calibration?: string; data?: DataSpec | (() => Promise<DataSpec | undefined>); images?: number; values?: boolean; log?: (m: string) => void },
): Promise<Calibration> {
  const what = `${command} --calibration`;
  const count = o.images ?? CALIBRATION_IMAGES;
  if (!Number.isInteger(count) || count < 1) throw new Error(`${command}: --calibration-images must be a positive integer, got ${count}`);
  const spec = o.calibration;
  if (spec?.toLowerCase().endsWith('.json')) {
    const cal = readCalibration(spec, model.spec.name, input);
    if (o.values && !cal.values) {
      throw new Error(`${what}: ${spec} has the int8 plan's ranges only, and an int8 ONNX export needs the range of every graph value; ` +
        'give --calibration DATA (a data spec or an image folder) to calibrate now');
    }
    return cal;
  }
  const saved = weightsPath ? calibrationPathFor(weightsPath) : null;
  let stale: string | null = null; // a saved calibration without the graph values asked for
  if (!spec && saved && existsSync(saved)) {
    const cal = readCalibration(saved, model.spec.name, input);
    if (!o.values || cal.values) return cal;
    stale = saved;
  }
  let data = typeof o.data === 'function' ? await o.data() : o.data;
  if (spec) {
    const isDir = existsSync(spec) && statSync(spec).isDirectory();
    data = await openData(isDir ? `folder:${spec}` : spec, { imageSize: input[1] });
  }
  if (!data) {
    throw new Error(`${command}: int8 needs a calibration${stale ? ` with graph-value ranges (${stale} has the int8 plan's only)` : ''}: ` +
      '--calibration FILE.json, or --calibration DATA (a data spec or an image folder)');
  }
  if (stale) o.log?.(`${stale} has no graph-value ranges (an int8 ONNX export needs them): calibrating again`);
  const { x, n } = await calibrationImages(data, input, count, what);
  const cal = calibrate(model, x, n, { input, values: o.values });
  if (!saved) return cal;
  try {
    writeCalibration(saved, cal);
    o.log?.(`calibrated int8 on ${n} ${data.name} training images; saved ${saved}`);
  } catch (e) {
    o.log?.(`calibrated int8 on ${n} ${data.name} training images (could not save ${saved}: ${(e as Error).message})`);
  }
  return cal;
}

/**
 * For loadClassifier/loadFeatureExtractor (serve, predict, embed): once the model is loaded, its
 * calibration from --calibration, the file beside --weights, or the training images of the dataset
 * the weights' model card names (saved beside them).
 */
export function calibrationFromArgs(command: string, a: { weights?: string; model?: string; calibration?: string }) {
  return async (model: ResNet, input: [number, number, number]): Promise<Calibration> => {
    const weights = a.weights ? (await resolveWeightsArgument(command, a.weights, a.model)).path : null;
    const dataset = weights ? readCard(weights)?.dataset : undefined;
    return resolveCalibration(command, model, weights, input, {
      calibration: a.calibration, data: async () => (dataset ? openData(dataset, { imageSize: input[1] }) : undefined),
      log: (m) => console.error(`${command}: ${m}`),
    });
  };
}
