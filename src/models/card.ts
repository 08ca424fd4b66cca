// A model card: what a set of weights is, so that a model trained on `folder:pets` comes back as a
// classifier of cats and dogs rather than of "class 0" and "class 1". It travels with the weights:
// in the safetensors `__metadata__` (one JSON string under CARD_KEY, so every safetensors reader
// keeps it) and in a training checkpoint's state.json.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { SafetensorsFile, detectWeightFileFormat } from '../io/index.js';

export interface ModelCard {
  /** The registered model name (`residual models`). */
  model: string;
  /** One name per output, in output order. */
  classes: string[];
  /** [C, H, W] the network was trained on. */
  input: [number, number, number];
  /** Per-channel normalisation applied after scaling pixels to [0, 1]. */
  mean: number[];
  std: number[];
  /**
   * The eval transform: resize so the shorter side is `resize`, then center-crop to H x W
   * (torchvision's Resize + CenterCrop). Absent: resize straight to H x W.
   */
  resize?: number;
  /** The dataset it was trained on, as `--data` spelled it. */
  dataset?: string;
  /** The weights training started from, when it was fine-tuned. */
  finetunedFrom?: string;
}

export const CARD_KEY = 'residual_card';

function fail(where: string, why: string): never {
  throw new Error(`${where}: the model card (${CARD_KEY}) ${why}; re-export the weights or pass --labels/--input by hand`);
}

/** Checks a parsed card field by field, so a damaged file gives one clear error instead of odd predictions. */
export function checkCard(raw: unknown, where: string): ModelCard {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) fail(where, 'is not a JSON object');
  const c = raw as Record<string, unknown>;
  const numbers = (v: unknown, n: number) => Array.isArray(v) && v.length === n && v.every((x) => typeof x === 'number' && Number.isFinite(x));
  if (typeof c.model !== 'string' || !c.model) fail(where, 'has no model name');
  if (!Array.isArray(c.classes) || c.classes.length === 0 || !c.classes.every((x) => typeof x === 'string')) fail(where, 'has no list of class names');
  if (!numbers(c.input, 3) || !(c.input as number[]).every((d) => Number.isInteger(d) && d >= 1)) fail(where, 'has no input [C, H, W]');
  const channels = (c.input as number[])[0]!;
  if (!numbers(c.mean, channels) || !numbers(c.std, channels) || !(c.std as number[]).every((s) => s > 0)) {
    fail(where, `needs a mean and a positive std for each of the ${channels} channels`);
  }
  if (c.resize !== undefined && !(Number.isInteger(c.resize) && (c.resize as number) >= 1)) fail(where, 'has a resize that is not a positive integer');
  for (const k of ['dataset', 'finetunedFrom'] as const) if (c[k] !== undefined && typeof c[k] !== 'string') fail(where, `has a ${k} that is not a string`);
  return {
    model: c.model as string, classes: [...(c.classes as string[])], input: [...(c.input as number[])] as [number, number, number],
    mean: [...(c.mean as number[])], std: [...(c.std as number[])],
    ...(c.resize !== undefined ? { resize: c.resize as number } : {}),
    ...(c.dataset !== undefined ? { dataset: c.dataset as string } : {}),
    ...(c.finetunedFrom !== undefined ? { finetunedFrom: c.finetunedFrom as string } : {}),
  };
}

/** The card as safetensors metadata entries. */
export function cardMetadata(card: ModelCard): Record<string, string> {
  return { [CARD_KEY]: JSON.stringify(card) };
}

/** The card in safetensors metadata, or null when there is none. */
export function cardFromMetadata(metadata: Readonly<Record<string, string>> | null, where: string): ModelCard | null {
  const text = metadata?.[CARD_KEY];
  if (text === undefined) return null;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    fail(where, `is not valid JSON (${(e as Error).message})`);
  }
  return checkCard(raw, where);
}

/**
 * The card of a weight file: from its safetensors metadata, else from the state.json of the
 * checkpoint folder it sits in. Null when neither has one (torchvision files, older runs).
 */
export function readCard(weightsFile: string): ModelCard | null {
  if (detectWeightFileFormat(weightsFile) === 'safetensors') {
    const f = SafetensorsFile.open(weightsFile);
    try {
      const card = cardFromMetadata(f.metadata, weightsFile);
      if (card) return card;
    } finally {
      f.close();
    }
  }
  const state = join(dirname(weightsFile), 'state.json');
  if (!existsSync(state)) return null;
  let parsed: { card?: unknown };
  try {
    parsed = JSON.parse(readFileSync(state, 'utf8')) as { card?: unknown };
  } catch {
    return null; // a damaged state.json is reported by whoever needs the rest of it
  }
  return parsed.card === undefined ? null : checkCard(parsed.card, state);
}
