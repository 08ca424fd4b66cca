// Rebuilding a dataset from its WorkerSource (inside the loader's worker thread).

import { InMemoryDataset, Subset, type AnyDataset, type Dataset, type WorkerSource } from './dataset.js';

export async function datasetFromSource(src: WorkerSource, onSkip?: (file: string, error: string) => void): Promise<AnyDataset> {
  switch (src.kind) {
    case 'memory':
      return InMemoryDataset.fromWorkerSource(src);
    case 'subset': {
      const base = await datasetFromSource(src.base, onSkip);
      if (!('get' in base)) throw new Error('a Subset of an asynchronous dataset is not supported');
      return new Subset(base as Dataset, src.indices);
    }
    case 'image-folder': {
      // Loaded on demand so workers serving in-memory datasets never load sharp.
      const { ImageFolder } = await import('./imagefolder.js');
      return ImageFolder.fromWorkerSource(src, onSkip);
    }
    default:
      throw new Error(`unknown dataset source kind ${JSON.stringify((src as { kind: unknown }).kind)}`);
  }
}
