// The memory budget for loading a weight file: the bytes its tensors will occupy once read (as
// float32, every view and alias counted as the loader materialises it) plus the largest buffer held
// while reading, checked against a cap before anything is copied. A 17 KB .pth of stride-0 views or a
// 4 MB storage aliased a thousand times would otherwise allocate gigabytes before any other check.

import * as os from 'node:os';

export const MAX_LOAD_BYTES_ENV = 'RESIDUAL_MAX_LOAD_BYTES';

/** The largest torchvision model here (wide_resnet101_2) is 0.5 GB as float32; 2 GiB leaves room for far larger. */
const DEFAULT_CAP = 2 * 1024 ** 3;

/** "4GiB", "512MB", "1.5G", "1073741824" -> bytes (K/M/G are powers of 1024). */
function parseSize(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$/i.exec(text);
  if (!m) return null;
  const n = Math.floor(Number(m[1]) * 1024 ** ' kmgt'.indexOf((m[2] || ' ').toLowerCase()));
  return Number.isSafeInteger(n) && n >= 1 ? n : null;
}

/**
 * The cap on the bytes one weight file may make us allocate: RESIDUAL_MAX_LOAD_BYTES if set, else
 * 2 GiB or a quarter of the machine's memory, whichever is smaller.
 */
export function maxLoadBytes(): number {
  const env = process.env[MAX_LOAD_BYTES_ENV];
  if (env !== undefined && env !== '') {
    const n = parseSize(env);
    if (n === null) throw new Error(`${MAX_LOAD_BYTES_ENV}="${env}" is not a size: write e.g. 4GiB, 512MB or 1073741824`);
    return n;
  }
  return Math.min(DEFAULT_CAP, Math.floor(os.totalmem() / 4));
}

/** Resolves an explicit cap (an option) or the default. */
export function resolveMaxLoadBytes(explicit: number | undefined, what: string): number {
  if (explicit === undefined) return maxLoadBytes();
  if (!Number.isSafeInteger(explicit) || explicit < 1) throw new Error(`${what}: maxBytes must be a positive integer, got ${explicit}`);
  return explicit;
}

export function formatBytes(n: number): string {
  if (n >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(2)} GiB`;
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${n} bytes`;
}

/** The hint every refusal ends with: how to raise the cap when the file is trusted. */
export function raiseHint(): string {
  return `if you trust the file and have the memory, raise the limit with ${MAX_LOAD_BYTES_ENV} (e.g. ${MAX_LOAD_BYTES_ENV}=8GiB) or the maxBytes option`;
}
