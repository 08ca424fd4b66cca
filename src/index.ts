// The public API of Residual: `import { initBackend, loadModel, Tensor } from 'residual'`.
export { initBackend, defaultBackend, referenceBackend, type Backend, type BackendInfo } from './backend/index.js';
export * from './tensor/index.js';
export * from './nn/index.js';
export * from './models/index.js';
export {
  loadStateDictFile, openStateDictFile, saveStateDictFile, readSafetensors, writeSafetensors, WeightFileError,
  type LoadedTensor,
} from './io/index.js';
export * from './data/index.js';
export { SGD, decayGroups, type SgdConfig, type ParamGroup } from './train/sgd.js';
export { learningRate, parseSchedule, type ScheduleSpec } from './train/schedule.js';
export { train, evaluate, type TrainOptions, type EpochMetrics, type TrainResult } from './train/trainer.js';
export { saveCheckpoint, loadCheckpoint, listCheckpoints } from './train/checkpoint.js';
export { openData, loadersFor, subsetData, cardFor, type DataSpec } from './train/data_spec.js';
export { runTraining, RECIPES, type TrainRunOptions, type TrainRunResult, type TrainRunStart, type TrainSettings } from './train/run.js';
export {
  compileForInference, loadClassifier, compareLogits, type LogitAgreement, type CompileOptions, type CompiledModel, type Classifier, type ClassifierOptions, type Classification,
} from './infer/index.js';
export { loadFeatureExtractor, type FeatureExtractor, type FeatureExtractorOptions, type CompileOutput } from './infer/index.js';
export { calibrate, readCalibration, writeCalibration, type Calibration } from './infer/index.js';
export { exportOnnx, type OnnxExportOptions, type OnnxFileOptions } from './onnx/index.js';
export {
  pretrainedEntries, parsePretrainedSpec, isPretrainedSpec, fetchPretrained, checkWeightsArgument,
  pretrainedCachePath, pretrainedCacheStatus, residualHome, sha256PrefixOf, WeightsDownloadError,
  type PretrainedEntry, type EvalTransform, type FetchPretrainedOptions, type FetchedWeights,
  type DownloadProgress, type DownloadEvent,
} from './pretrained/index.js';
