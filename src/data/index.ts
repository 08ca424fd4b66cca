// The data layer: datasets (IDX / Fashion-MNIST, CIFAR-10/100, image folders), seeded transforms,
// and a DataLoader that builds NCHW float32 batches in a worker thread. Plain TypeScript: it
// depends on nothing else in the project but two dependency-free helpers shared with io/ (the load
// budget, io/budget.ts, and escaping names for printing, io/printable.ts).

export * from './dataset.js';
export * from './rng.js';
export * from './idx.js';
export * from './cifar.js';
export * from './download.js';
export * from './tar.js';
export * from './transforms.js';
export * from './imagefolder.js';
export * from './batch.js';
export { DataLoader, type DataLoaderOptions, type EpochOptions } from './loader.js';
export * from './labels.js';
export * from './decode.js';
export * from './presets.js';
