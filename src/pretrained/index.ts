// Named pretrained weights, torchvision's way: the table of published entries, spec parsing
// (`torchvision:resnet50.IMAGENET1K_V2`), and the verified download cache.
export { PRETRAINED_ENTRIES, TORCHVISION_BASE_URL, type EvalTransform, type PretrainedEntry } from './table.js';
export { isPretrainedSpec, parsePretrainedSpec, pretrainedEntries } from './spec.js';
export {
  fetchPretrained, pretrainedCachePath, pretrainedCacheStatus, pretrainedDownloadUrl, residualHome, sha256PrefixOf,
  type FetchedWeights, type FetchPretrainedOptions, type PretrainedCacheOptions,
} from './cache.js';
export { WeightsDownloadError, downloadVerified, type DownloadEvent, type DownloadFailure, type WeightsDownloadOptions, type DownloadProgress } from './download.js';
export { checkWeightsArgument, resolveWeightsArgument, type ResolvedWeights } from './resolve.js';
