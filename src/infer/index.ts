// Inference paths: the compiled native plan.
export { compileForInference, type CompileOptions, type CompileOutput, type CompiledModel } from './compile.js';
export { loadClassifier, topK, type Classifier, type ClassifierOptions, type Classification } from './classifier.js';
export { loadFeatureExtractor, type FeatureExtractor, type FeatureExtractorOptions } from './features.js';
export { argmax, compareLogits, mergeAgreement, type LogitAgreement } from './compare.js';
export { calibrate } from './compile.js';
export { readCalibration, writeCalibration, type Calibration } from './quantize.js';
export { evaluateCompiled, type CompiledEvalResult } from './evaluate.js';
