// Building a registered model around a weight file: the options the weights imply (classes, input
// channels, shortcut type) are read from them, so a person names only the model and the file.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { loadStateDictFile, type LoadedTensor } from '../io/index.js';
import type { ResNet } from './net.js';
import { getModel, type ModelOptions } from './registry.js';

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
  const conv1 = sd.get('conv1.weight');
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
  if (!existsSync(path)) throw new Error(`weights ${path} do not exist`);
  if (!statSync(path).isDirectory()) return path;
  const direct = join(path, 'model.safetensors');
  if (existsSync(direct)) return direct;
  const root = join(path, 'checkpoints');
  if (existsSync(root)) {
    // Checkpoint folders sort by epoch and batch (zero-padded names).
    const names = readdirSync(root).filter((n) => /^epoch-\d+/.test(n) && existsSync(join(root, n, 'model.safetensors'))).sort();
    if (names.length) return join(root, names[names.length - 1], 'model.safetensors');
  }
  throw new Error(`weights ${path} is a folder without model.safetensors or checkpoints/epoch-*/model.safetensors`);
}

/**
 * Builds `name` with the weights in `weightsPath` (a .pth, a .safetensors or a run folder) or, without
 * it, with fresh initial weights. `opts` adds options the weights do not settle.
 */
export function loadModel(name: string, weightsPath?: string | null, opts: ModelOptions = {}, warn: (m: string) => void = () => {}): ResNet {
  const entry = getModel(name);
  if (!weightsPath) return entry.build(opts);
  const weights = renameHead(loadStateDictFile(resolveWeightsPath(weightsPath)), warn);
  const implied = optionsFromWeights(name, weights);
  for (const k of ['numClasses', 'inChannels'] as const) {
    if (opts[k] !== undefined && implied[k] !== undefined && opts[k] !== implied[k]) {
      throw new Error(`${weightsPath}: the weights have ${k} ${implied[k]}, but ${opts[k]} was asked for`);
    }
  }
  const model = entry.build({ ...opts, ...implied }, { initWeights: false });
  try {
    model.loadStateDict(weights);
  } catch (e) {
    model.dispose();
    throw new Error(`${weightsPath} does not fit ${name}: ${(e as Error).message}`);
  }
  return model;
}
