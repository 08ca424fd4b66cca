// Inference paths: the compiled native plan.
export { compileForInference, type CompileOptions, type CompiledModel } from './compile.js';
