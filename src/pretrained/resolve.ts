// What a command does with its --weights argument: a pretrained spec becomes a verified file in the
// cache (downloaded if needed) and settles the model; anything else is a path, passed on unchanged.
import { fetchPretrained, type FetchPretrainedOptions } from './cache.js';
import { isPretrainedSpec, parsePretrainedSpec } from './spec.js';
import type { PretrainedEntry } from './table.js';

export interface ResolvedWeights {
  /** A file or run folder to load (for a spec: the verified file in the cache). */
  path: string;
  /** The model to build: the spec's, or the one given. */
  model: string;
  /** The pretrained entry (eval transform, categories, metrics) when `weights` was a spec. */
  entry: PretrainedEntry | null;
}

/**
 * The model a --weights value settles and its pretrained entry, checked without touching the network
 * (so a command can refuse bad arguments before a download). For `torchvision:MODEL[.ENTRY]` the model
 * is the spec's and a different `model` is refused; for a path, `model` is required.
 */
export function checkWeightsArgument(weights: string, model?: string): { model: string; entry: PretrainedEntry | null } {
  if (!isPretrainedSpec(weights)) {
    if (!model) throw new Error(`--model is required with --weights ${weights} (or name pretrained weights, e.g. --weights torchvision:resnet50)`);
    return { model, entry: null };
  }
  const entry = parsePretrainedSpec(weights);
  if (model && model !== entry.model) {
    throw new Error(`--model ${model} does not fit --weights ${weights}, which are ${entry.model} weights; drop --model or give --model ${entry.model}`);
  }
  return { model: entry.model, entry };
}

/**
 * Resolves a --weights value for a command (see checkWeightsArgument for the model): a spec's file is
 * fetched into the cache (downloaded on first use, sha256 checked) and its path returned; a path is
 * returned as given.
 */
export async function resolveWeightsArgument(weights: string, model?: string, opts: FetchPretrainedOptions = {}): Promise<ResolvedWeights> {
  const checked = checkWeightsArgument(weights, model);
  if (!checked.entry) return { path: weights, ...checked };
  const { path } = await fetchPretrained(checked.entry, opts);
  return { path, ...checked };
}
