// Naming pretrained weights the way torchvision does: `torchvision:resnet50.IMAGENET1K_V2`, or
// `torchvision:resnet50` / `torchvision:resnet50.DEFAULT` for the entry torchvision calls DEFAULT.
import { PRETRAINED_ENTRIES, type PretrainedEntry } from './table.js';

const SOURCE_PREFIX = 'torchvision:';

/** Whether a --weights value names pretrained weights (`torchvision:...`) rather than a file or folder. */
export function isPretrainedSpec(text: string): boolean {
  return text.startsWith(SOURCE_PREFIX);
}

function modelsWithWeights(): string[] {
  return [...new Set(PRETRAINED_ENTRIES.map((e) => e.model))];
}

function describeEntries(entries: readonly PretrainedEntry[]): string {
  return entries.map((e) => (e.isDefault ? `${e.name} (DEFAULT)` : e.name)).join(', ');
}

/**
 * The published entries, all of them or one model's (in torchvision's order). A model without
 * published weights is an error that lists the models that have some.
 */
export function pretrainedEntries(model?: string): readonly PretrainedEntry[] {
  if (model === undefined) return PRETRAINED_ENTRIES;
  const entries = PRETRAINED_ENTRIES.filter((e) => e.model === model);
  if (entries.length === 0) {
    throw new Error(`torchvision publishes no weights for "${model}"; models with pretrained weights: ${modelsWithWeights().join(', ')}`);
  }
  return entries;
}

/**
 * The entry a spec names: `torchvision:MODEL` (torchvision's DEFAULT), `torchvision:MODEL.DEFAULT`
 * or `torchvision:MODEL.ENTRY` (the entry name in any letter case). Unknown models and entries are
 * errors that list what exists.
 */
export function parsePretrainedSpec(text: string): PretrainedEntry {
  if (!isPretrainedSpec(text)) {
    throw new Error(`"${text}" is not a pretrained weights name; write torchvision:MODEL[.ENTRY], e.g. torchvision:resnet50.IMAGENET1K_V2`);
  }
  const rest = text.slice(SOURCE_PREFIX.length);
  const dot = rest.indexOf('.');
  const model = dot < 0 ? rest : rest.slice(0, dot);
  const entryName = dot < 0 ? 'DEFAULT' : rest.slice(dot + 1);
  if (model === '') {
    throw new Error(`${text}: no model named; write torchvision:MODEL[.ENTRY] with MODEL one of ${modelsWithWeights().join(', ')}`);
  }
  const entries = PRETRAINED_ENTRIES.filter((e) => e.model === model);
  if (entries.length === 0) {
    throw new Error(`${text}: torchvision publishes no weights for "${model}"; models with pretrained weights: ${modelsWithWeights().join(', ')}`);
  }
  const wanted = entryName.toUpperCase();
  const found = wanted === 'DEFAULT' ? entries.find((e) => e.isDefault) : entries.find((e) => e.name === wanted);
  if (!found) {
    throw new Error(`${text}: ${model} has no weights named "${entryName}"; it has ${describeEntries(entries)}`);
  }
  return found;
}
