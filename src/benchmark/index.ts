export { benchmark, type BenchOptions, type BenchResult, type BenchMode, type BenchDtype } from './benchmark.js';
export { hostInfo, parseCpuinfo, type HostInfo } from './host.js';
