// `--weights` as every command spells it (a file, a run folder, or torchvision:MODEL[.ENTRY]),
// resolved with a download progress line on stderr; see models/weights.ts.
import { resolveWeights, type ResolvedWeights } from '../models/weights.js';
import { downloadProgress } from './progress.js';

export function resolveWeightsArgument(command: string, weights: string, model?: string): Promise<ResolvedWeights> {
  return resolveWeights(weights, model, { onProgress: downloadProgress(command) });
}
