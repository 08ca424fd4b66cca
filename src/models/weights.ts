// What a `weights` argument names, settled in one place for every command and for the library:
// `torchvision:MODEL[.ENTRY]` is fetched into the cache (downloaded once, sha256 checked) and says
// which model it is and how to feed it; a file or run folder is found on disk, and its model card,
// if it has one, says the same.
import { resolveWeightsArgument as resolvePretrained, isPretrainedSpec, type FetchPretrainedOptions, type PretrainedEntry } from '../pretrained/index.js';
import { readCard, type ModelCard } from './card.js';
import { loadModel, resolveWeightsPath, type LoadModelOptions } from './load.js';
import type { ResNet } from './net.js';

export interface ResolvedWeights {
  /** The local weight file. */
  path: string;
  /** The model the weights are for: the one asked for, the spec's, or the model card's; null if none says. */
  model: string | null;
  /** The pretrained table's entry (eval transform, categories, metrics) for a spec. */
  entry: PretrainedEntry | null;
  /**
   * What the weights are and how to feed them: their model card (from `residual train`), or for a
   * spec the card its table entry amounts to (ImageNet classes, torchvision's eval transform).
   */
  card: ModelCard | null;
}

/** The model card of a pretrained table entry. */
export function pretrainedCard(entry: PretrainedEntry): ModelCard {
  const t = entry.transform;
  return {
    model: entry.model, classes: [...entry.categories], input: [3, t.cropSize, t.cropSize], mean: [...t.mean], std: [...t.std],
    resize: t.resizeSize,
  };
}

/** Resolves `weights` for `model` (optional when the weights name it); a model they contradict is refused. */
export async function resolveWeights(weights: string, model?: string, opts: FetchPretrainedOptions = {}): Promise<ResolvedWeights> {
  if (isPretrainedSpec(weights)) {
    const r = await resolvePretrained(weights, model, opts);
    return { path: r.path, model: r.model, entry: r.entry, card: r.entry ? pretrainedCard(r.entry) : null };
  }
  const path = resolveWeightsPath(weights);
  const card = readCard(path);
  if (card && model && card.model !== model) {
    throw new Error(`--weights ${weights} hold a ${card.model} (their model card says so), but the model asked for is ${model}; drop --model or give ${card.model}`);
  }
  return { path, model: model ?? card?.model ?? null, entry: null, card };
}

/**
 * torchvision's `resnet50(weights="IMAGENET1K_V2")`: builds the model a spec names with its
 * pretrained weights, downloaded once into the cache and hash-checked. Also takes a file or run folder
 * whose model card names the model. `opts` as loadModel's (e.g. numClasses with resetHead: true).
 */
export async function loadPretrained(weights: string, opts: LoadModelOptions & { model?: string; download?: FetchPretrainedOptions; warn?: (m: string) => void } = {}): Promise<ResNet> {
  const { model, download, warn, ...load } = opts;
  const r = await resolveWeights(weights, model, download);
  if (!r.model) throw new Error(`loadPretrained: ${weights} do not say which model they hold; pass { model: NAME }`);
  return loadModel(r.model, r.path, load, warn);
}
