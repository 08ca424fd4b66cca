// What loadClassifier and loadFeatureExtractor share: the model built with its weights, and the
// preprocessing those weights were made with, settled the same way for both so that an image
// classified and an image embedded see the same pixels:
//  - weights with a model card (`residual train` writes one into every checkpoint) or a pretrained
//    spec (its table entry amounts to one): the card's input size, eval transform, mean/std, classes;
//  - an older run folder: its dataset's size, mean/std and class names, from state.json's arguments;
//  - otherwise the model's input ([C, H, W], default the registry's): 3x224x224 gets torchvision's
//    ImageNet eval transform (resize 256, center crop 224, ImageNet mean/std), other sizes a direct
//    resize; 1-channel models see the image's luma (PIL's convert('L')).
import { existsSync, readFileSync } from 'node:fs';
import { defaultBackend, initBackend } from '../backend/index.js';
import { dirname, join } from 'node:path';
import {
  FASHION_MNIST_MEAN, FASHION_MNIST_STD, IMAGENET_MEAN, IMAGENET_STD, Rng, datasetPreset,
  applyTransforms, decodeImage, type ImageCHW, type ImageSizeInfo, type TransformSpec,
} from '../data/index.js';
import { getModel, inputChannels, loadModel, resolveWeights, ResNet, type ModelCard } from '../models/index.js';
import type { FetchPretrainedOptions } from '../pretrained/index.js';
import type { PlanDtype } from '../backend/index.js';

export interface Preprocessing {
  channels: number;
  height: number;
  width: number;
  mean: readonly number[];
  std: readonly number[];
  /** Resize the shorter side to this, then center-crop; absent: torchvision's default for the size. */
  resize?: number;
  labels: string | readonly string[] | null;
}

export function fromCard(card: ModelCard): Preprocessing {
  const [channels, height, width] = card.input;
  return { channels, height, width, mean: card.mean, std: card.std, resize: card.resize, labels: card.classes };
}

/** Preprocessing and labels of a run folder's dataset, read from its checkpoint's state.json. */
export function fromRun(weightsFile: string): Preprocessing | null {
  const state = join(dirname(weightsFile), 'state.json');
  if (!existsSync(state)) return null;
  let run: { data?: string } | undefined;
  try {
    run = (JSON.parse(readFileSync(state, 'utf8')) as { run?: { data?: string } }).run;
  } catch (e) {
    throw new Error(`${state}: not valid JSON (${(e as Error).message}); restore the checkpoint's state.json, or pass the input size explicitly`);
  }
  const p = run?.data ? datasetPreset(run.data) : null;
  if (!p) return null;
  const [channels, height, width] = p.input;
  return { channels, height, width, mean: p.mean, std: p.std, labels: p.labels };
}

/**
 * The eval transform: resize the shorter side to `resize` and center-crop (a model card's, or
 * torchvision's 256 -> 224 at 224x224); other sizes without a card are resized directly.
 */
export function evalTransforms(pre: { height: number; width: number; mean: readonly number[]; std: readonly number[]; resize?: number }): TransformSpec[] {
  const resize = pre.resize ?? (pre.height === 224 && pre.width === 224 ? 256 : undefined);
  const normalize: TransformSpec = { type: 'normalize', mean: pre.mean, std: pre.std };
  return resize !== undefined
    ? [{ type: 'resize', size: resize }, { type: 'centerCrop', size: [pre.height, pre.width] }, normalize]
    : [{ type: 'resize', size: [pre.height, pre.width] }, normalize];
}

/** Luma, as PIL's convert('L'): 0.299 R + 0.587 G + 0.114 B, rounded. */
export function luma(img: { data: Uint8Array; height: number; width: number }): ImageCHW {
  const plane = img.height * img.width;
  const gray = new Uint8Array(plane);
  const d = img.data;
  for (let i = 0; i < plane; i++) gray[i] = Math.round(0.299 * d[i]! + 0.587 * d[plane + i]! + 0.114 * d[2 * plane + i]!);
  return { data: gray, channels: 1, height: img.height, width: img.width };
}

/**
 * One image (bytes or a file path) decoded, reduced to luma for a 1-channel model, and transformed:
 * the classifier's preprocess(), shared with loadFeatureExtractor so both see the same pixels.
 */
export async function preprocessImage(
  image: Buffer | Uint8Array | string, channels: number, transforms: readonly TransformSpec[],
  opts: { maxPixels?: number; admit?: (info: ImageSizeInfo) => void } = {},
): Promise<Float32Array> {
  // A large image is shrunk inside libvips while it decodes (off the main thread) to twice the
  // first resize's target; the resize below then works as PIL's on far fewer pixels.
  const first = transforms[0];
  const shrinkFor = first?.type === 'resize' ? (typeof first.size === 'number' ? first.size : [first.size[0], first.size[1]] as [number, number]) : undefined;
  const img = await decodeImage(image, { maxPixels: opts.maxPixels, shrinkFor, admit: opts.admit });
  const chw: ImageCHW = channels === 1 ? luma(img) : { data: img.data, channels: 3, height: img.height, width: img.width };
  const x = applyTransforms(chw, transforms, new Rng(0));
  return x.data instanceof Float32Array ? x.data : Float32Array.from(x.data);
}

/** The standard preprocessing of an input without a card or run: ImageNet statistics for RGB, Fashion-MNIST's for grayscale. */
export function standardPreprocessing([c, h, w]: readonly number[]): Preprocessing {
  const rgb = c === 3;
  return { channels: c!, height: h!, width: w!, mean: rgb ? IMAGENET_MEAN : FASHION_MNIST_MEAN, std: rgb ? IMAGENET_STD : FASHION_MNIST_STD, labels: null };
}

export interface ModelSource {
  model?: string | ResNet;
  weights?: string | null;
  input?: readonly number[];
  download?: FetchPretrainedOptions;
  warn?: (message: string) => void;
}

/**
 * The model `o` names (built and loaded, ownsModel true) or is (kept as given), and its
 * preprocessing. `caller` prefixes the errors.
 */
export async function loadWithPreprocessing(caller: string, o: ModelSource): Promise<{ model: ResNet; ownsModel: boolean; pre: Preprocessing; name: string }> {
  if (o.model instanceof ResNet) {
    if (o.weights) throw new Error(`${caller}: \`weights\` goes with a model name; a built model already has its weights`);
    // Default input: the registry's size for this architecture, with the model's own channels.
    const size = o.model.spec.stem.maxPool ? [224, 224] : [32, 32];
    return { model: o.model, ownsModel: false, name: o.model.spec.name, pre: standardPreprocessing(o.input ?? [inputChannels(o.model.spec), ...size]) };
  }
  const resolved = o.weights ? await resolveWeights(o.weights, o.model, o.download) : null;
  const weightsFile = resolved?.path ?? null;
  const card = resolved?.card ?? null;
  const name = resolved?.model ?? o.model ?? '';
  if (!name) throw new Error(`${caller}: the weights ${o.weights} do not say which model they belong to; give \`model\` (see \`residual models\`)`);
  const entry = getModel(name); // unknown names fail here, listing the known ones
  const [dc, dh, dw] = o.input ?? card?.input ?? entry.defaultInput;
  const known = card ? fromCard(card) : weightsFile && !o.input ? fromRun(weightsFile) : null;
  // An explicit input size wins over the card's; its mean, std and class names still apply.
  const pre = known && o.input ? { ...known, channels: dc!, height: dh!, width: dw!, resize: undefined } : known ?? standardPreprocessing([dc!, dh!, dw!]);
  if (pre.mean.length !== pre.channels) throw new Error(`${caller}: input has ${pre.channels} channels, but the weights' model card normalises ${pre.mean.length}`);
  if (pre.channels !== 1 && pre.channels !== 3) throw new Error(`${caller}: input must have 1 (grayscale) or 3 (RGB) channels, got ${pre.channels}`);
  return { model: loadModel(name, weightsFile, { inChannels: pre.channels }, o.warn), ownsModel: true, pre, name };
}

export function positiveInt(caller: string, what: string, v: unknown, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new Error(`${caller}: ${what} must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * The options loadClassifier and loadFeatureExtractor share, checked the same way, and the engine
 * chosen (initBackend() when none is yet; bf16 needs the native one).
 */
export async function checkRunnerOptions(caller: string, o: ModelSource & { dtype?: PlanDtype; maxBatch?: number; maxPixels?: number }, defaultMaxBatch: number):
  Promise<{ dtype: PlanDtype; maxBatch: number; maxPixels: number | undefined; native: boolean }> {
  if (!o || (o.model !== undefined && typeof o.model !== 'string' && !(o.model instanceof ResNet))) {
    throw new Error(`${caller}: \`model\` must be a model name (see \`residual models\`) or a ResNet`);
  }
  if (o.model === undefined && !o.weights) throw new Error(`${caller}: give \`model\` (a name, see \`residual models\`), or \`weights\` whose model card names it`);
  const dtype = o.dtype ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'bf16' && dtype !== 'int8') throw new Error(`${caller}: dtype must be 'f32', 'bf16' or 'int8', got ${JSON.stringify(dtype)}`);
  const maxBatch = positiveInt(caller, 'maxBatch', o.maxBatch, defaultMaxBatch);
  const maxPixels = o.maxPixels === undefined ? undefined : positiveInt(caller, 'maxPixels', o.maxPixels, 0);
  if (o.input !== undefined && (!Array.isArray(o.input) || o.input.length !== 3 || o.input.some((d) => !Number.isInteger(d) || d < 1))) {
    throw new Error(`${caller}: input must be [C, H, W] of positive integers (e.g. [3, 224, 224]), got ${JSON.stringify(o.input)}`);
  }
  if (defaultBackend().name !== 'native') await initBackend();
  const native = defaultBackend().name === 'native';
  if (!native && dtype !== 'f32') {
    throw new Error(`${caller}: dtype ${dtype} needs the native backend, which did not load; use dtype f32 or build the addon (npm run build:native)`);
  }
  return { dtype, maxBatch, maxPixels, native };
}
