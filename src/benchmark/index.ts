export { benchmark, type BenchOptions, type BenchResult, type BenchMode, type BenchDtype } from './benchmark.js';
