// Building a registered model around a weight file: the options the weights imply (classes, input
// channels, shortcut type) are read from them, so a person names only the model and the file.
import { existsSync } from 'node:fs';
import { CHECKPOINTS_DIR, MODEL_FILE, loadStateDictFile, weightsFileOf, type LoadedTensor } from '../io/index.js';
import type { ResNet } from './net.js';
import { getModel, listModels, traceModel, type ModelOptions } from './registry.js';

/** What loadModel takes beyond the builder's options. */
export interface LoadModelOptions extends ModelOptions {
  /**
   * When `numClasses` differs from the weights' classifier: false (default) refuses, true loads the
   * trunk and puts a freshly initialised `fc` with `numClasses` outputs on it (fine-tuning).
   */
  resetHead?: boolean;
}

/**
 * CIFAR reimplementations name the head `linear` (akamaster) or `classifier`; ours is `fc`, as in
 * torchvision. Renames the head when that is the only difference.
 */
export function renameHead(sd: Map<string, LoadedTensor>, warn: (m: string) => void = () => {}): Map<string, LoadedTensor> {
  if (sd.has('fc.weight')) return sd;
  const from = ['linear', 'classifier'].find((p) => sd.has(`${p}.weight`));
  if (!from) return sd;
  warn(`using the weights' "${from}.*" as the classifier "fc.*"`);
  return new Map([...sd].map(([k, v]) => [k.startsWith(`${from}.`) ? `fc.${k.slice(from.length + 1)}` : k, v]));
}

/** Options the weights imply: classes from fc, input channels from conv1, option B shortcuts. */
export function optionsFromWeights(model: string, sd: Map<string, LoadedTensor>): ModelOptions {
  const opts: ModelOptions = {};
  const fc = sd.get('fc.weight');
  if (fc?.shape.length === 2) opts.numClasses = fc.shape[0];
  const conv1 = sd.get('conv1.weight') ?? sd.get('conv1.0.weight'); // a deep stem's (ResNet-D) first conv
  if (conv1?.shape.length === 4) opts.inChannels = conv1.shape[1];
  const entry = getModel(model);
  if (entry.family === 'cifar' && /^(resnet|plain)/.test(model) && [...sd.keys()].some((k) => k.includes('.downsample.'))) {
    opts.shortcut = 'B';
  }
  return opts;
}

/**
 * The weight file a path names: the file itself, or for a training run folder (or one of its
 * checkpoint folders) the newest checkpoint's model.safetensors.
 */
export function resolveWeightsPath(path: string): string {
  if (/^[a-z]+:[a-z]/i.test(path) && !existsSync(path)) {
    throw new Error(`weights ${path} name pretrained weights, which are fetched asynchronously: use await loadPretrained('${path}') ` +
      `(or await resolveWeights('${path}') for the cached file's path)`);
  }
  if (!existsSync(path)) throw new Error(`weights ${path} do not exist`);
  const file = weightsFileOf(path);
  if (file) return file;
  throw new Error(`weights ${path} is a folder without ${MODEL_FILE} or ${CHECKPOINTS_DIR}/epoch-*/${MODEL_FILE}`);
}

/**
 * Builds `name` with the weights in `weightsPath` (a .pth, a .safetensors or a run folder) or, without
 * it, with fresh initial weights. `opts` adds options the weights do not settle.
 */
export function loadModel(name: string, weightsPath?: string | null, opts: LoadModelOptions = {}, warn: (m: string) => void = () => {}): ResNet {
  const entry = getModel(name);
  const { resetHead = false, ...buildOpts } = opts;
  if (!weightsPath) return entry.build(buildOpts);
  const { weights, implied } = readWeights(name, weightsPath, warn);
  if (buildOpts.inChannels !== undefined && implied.inChannels !== undefined && buildOpts.inChannels !== implied.inChannels) {
    throw new Error(`${weightsPath}: the weights take ${implied.inChannels} input channels, but ${buildOpts.inChannels} were asked for`);
  }
  const newHead = buildOpts.numClasses !== undefined && implied.numClasses !== undefined && buildOpts.numClasses !== implied.numClasses
    ? buildOpts.numClasses : null;
  if (newHead !== null && !resetHead) {
    throw new Error(`${weightsPath}: the weights classify ${implied.numClasses} classes, but ${newHead} were asked for. ` +
      'To fine-tune them on your classes, pass resetHead: true (the CLI: residual train --weights W --num-classes K), ' +
      'which keeps the trunk and starts a new classifier');
  }
  const model = buildWithWeights(name, weights, { ...buildOpts, ...implied }, weightsPath);
  if (newHead !== null) {
    model.replaceHead(newHead);
    warn(`the classifier fc (${implied.numClasses} classes in the weights) was replaced by a new one with ${newHead} outputs, initialised at random`);
  }
  return model;
}

/**
 * The state dict in `weightsPath` (a .pth, a .safetensors or a run folder; a head saved under
 * another name is renamed to fc) and the options it settles (classes, input channels). For callers
 * that reconcile those with their own before building (the CLI's infer and export); then
 * buildWithWeights.
 */
export function readWeights(name: string, weightsPath: string, warn: (m: string) => void = () => {}): { weights: Map<string, LoadedTensor>; implied: ModelOptions } {
  const weights = renameHead(loadStateDictFile(resolveWeightsPath(weightsPath)), warn);
  return { weights, implied: optionsFromWeights(name, weights) };
}

/** `name` built with `opts` and loaded with `weights`; weights that do not fit are summarized (describeMismatch). */
export function buildWithWeights(name: string, weights: Map<string, LoadedTensor>, opts: ModelOptions, source: string): ResNet {
  const model = getModel(name).build(opts, { initWeights: false });
  try {
    model.loadStateDict(weights);
  } catch (e) {
    model.dispose();
    throw new Error(`${source} does not fit ${name}: ${describeMismatch(name, opts, weights, e as Error)}`);
  }
  return model;
}

/**
 * A short account of why weights do not fit a model: counts and a few examples of missing,
 * unexpected and mis-shaped keys rather than every key, and the registered model whose state dict
 * the weights do match, if any (resnet50 weights given to resnet18, say).
 */
export function describeMismatch(name: string, opts: ModelOptions, weights: ReadonlyMap<string, { shape: readonly number[] }>, cause?: Error): string {
  const expected = stateShapes(name, opts, weights);
  if (!expected) return cause?.message ?? 'the weights do not fit';
  const missing = [...expected.keys()].filter((k) => !weights.has(k));
  const unexpected = [...weights.keys()].filter((k) => !expected.has(k));
  const misShaped = [...expected].filter(([k, shape]) => weights.has(k) && weights.get(k)!.shape.join('x') !== shape.join('x'))
    .map(([k, shape]) => `${k} (file ${weights.get(k)!.shape.join('x') || 'scalar'}, model ${shape.join('x') || 'scalar'})`);
  const few = (xs: string[]) => xs.slice(0, 3).join(', ') + (xs.length > 3 ? `, ... ${xs.length - 3} more` : '');
  const parts: string[] = [];
  if (missing.length) parts.push(`${missing.length} of the model's keys missing (${few(missing)})`);
  if (unexpected.length) parts.push(`${unexpected.length} unexpected keys (${few(unexpected)})`);
  if (misShaped.length) parts.push(`${misShaped.length} mis-shaped (${few(misShaped)})`);
  const likely = modelsMatching(weights).filter((m) => m !== name);
  const hint = likely.length ? `; the weights look like ${likely.slice(0, 3).join(' or ')}: try --model ${likely[0]}` : '';
  return (parts.length ? parts.join('; ') : cause?.message ?? 'the weights do not fit') + hint;
}

/** State-dict key -> shape of a registered model built with these options and the weights' head and input. */
function stateShapes(name: string, opts: ModelOptions, weights: ReadonlyMap<string, { shape: readonly number[] }>): Map<string, readonly number[]> | null {
  try {
    const t = traceModel(name, undefined, { ...opts, ...optionsFromWeights(name, weights as Map<string, LoadedTensor>) });
    return new Map(t.layers.flatMap((l) => l.state.map((s) => [s.key, s.shape] as [string, readonly number[]])));
  } catch {
    return null;
  }
}

/** Registered models whose every state-dict key and shape the weights have (head and input channels as the weights say). */
export function modelsMatching(weights: ReadonlyMap<string, { shape: readonly number[] }>): string[] {
  const out: string[] = [];
  for (const e of listModels()) {
    const shapes = stateShapes(e.name, {}, weights);
    if (!shapes || shapes.size !== weights.size) continue;
    if ([...shapes].every(([k, shape]) => weights.get(k)?.shape.join('x') === shape.join('x'))) out.push(e.name);
  }
  return out;
}
