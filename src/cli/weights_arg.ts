// `--weights` as every command spells it: a weight file, a training run folder, or (once the
// pretrained table is in) a named pretrained entry. Resolves it to a local file and, where the
// weights say, the model they belong to, so `--model` may be left out.
import { readCard, resolveWeightsPath } from '../models/index.js';

export interface WeightsArgument {
  /** The local weight file. */
  path: string;
  /** The model the weights name (their model card), if they name one. */
  model?: string;
}

export async function resolveWeightsArgument(weights: string, model?: string): Promise<WeightsArgument> {
  const path = resolveWeightsPath(weights);
  const card = readCard(path);
  if (card && model && card.model !== model) {
    throw new Error(`--weights ${weights} hold a ${card.model} (their model card says so), but --model is ${model}; drop --model or pick ${card.model}`);
  }
  return { path, model: card?.model };
}
