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
 * Resolves a --weights value for a command. For `torchvision:MODEL[.ENTRY]` the model comes from the
 * spec (a different `model` is refused) and the file is fetched into the cache; for a path, `model`
 * is required and the path is returned as given. The spec is checked before any download starts.
 */
export async function resolveWeightsArgument(weights: string, model?: string, opts: FetchPretrainedOptions = {}): Promise<ResolvedWeights> {
  if (!isPretrainedSpec(weights)) {
    if (!model) throw new Error(`--model is required with --weights ${weights} (or name pretrained weights, e.g. --weights torchvision:resnet50)`);
    return { path: weights, model, entry: null };
  }
  const entry = parsePretrainedSpec(weights);
  if (model && model !== entry.model) {
    throw new Error(`--model ${model} does not fit --weights ${weights}, which are ${entry.model} weights; drop --model or give --model ${entry.model}`);
  }
  const { path } = await fetchPretrained(entry, opts);
  return { path, model: entry.model, entry };
}
