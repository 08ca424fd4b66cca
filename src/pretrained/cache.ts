// The download cache: <root>/weights/torchvision/<file name>, root = RESIDUAL_HOME, else
// $XDG_CACHE_HOME/residual, else ~/.cache/residual. A file is downloaded once; a file found there
// (a download, or one a person dropped in by hand) is hash-checked before its first use, and a small
// marker beside it (.<file>.sha256, keyed by size and mtime) spares re-hashing 500 MB on every start.
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync, statSync, type Stats } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { writeAtomic } from '../io/index.js';
import { downloadVerified, type WeightsDownloadOptions } from './download.js';
import { parsePretrainedSpec } from './spec.js';
import type { PretrainedEntry } from './table.js';

export interface PretrainedCacheOptions {
  /** The cache root (default: RESIDUAL_HOME, else $XDG_CACHE_HOME/residual, else ~/.cache/residual). */
  home?: string;
  /** Replaces torchvision's download base URL (default: RESIDUAL_WEIGHTS_MIRROR, if set). */
  mirror?: string;
}

export type FetchPretrainedOptions = PretrainedCacheOptions & WeightsDownloadOptions;

/** The cache root: the option, else RESIDUAL_HOME, else $XDG_CACHE_HOME/residual, else ~/.cache/residual. */
export function residualHome(home?: string): string {
  if (home) return resolve(home);
  const env = process.env['RESIDUAL_HOME'];
  if (env) return resolve(env);
  const xdg = process.env['XDG_CACHE_HOME'];
  // The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
  if (xdg && xdg.startsWith('/')) return join(xdg, 'residual');
  return join(homedir(), '.cache', 'residual');
}

/** Where an entry's file lives in the cache (it may not be there yet); drop a file here by hand to skip the download. */
export function pretrainedCachePath(entry: PretrainedEntry | string, opts: PretrainedCacheOptions = {}): string {
  const e = typeof entry === 'string' ? parsePretrainedSpec(entry) : entry;
  return join(residualHome(opts.home), 'weights', e.source, e.fileName);
}

/** The URL an entry downloads from: its own, or the mirror (option or RESIDUAL_WEIGHTS_MIRROR) + its file name. */
export function pretrainedDownloadUrl(entry: PretrainedEntry, opts: PretrainedCacheOptions = {}): string {
  const mirror = opts.mirror ?? process.env['RESIDUAL_WEIGHTS_MIRROR'];
  if (!mirror) return entry.url;
  // torchvision's URLs are all base + file name, so a mirror is a folder holding the same names.
  return mirror.replace(/\/*$/, '/') + entry.fileName;
}

/**
 * The sha256 prefix a file name promises: what follows its last '-' up to the extension
 * (resnet50-11ad3fa6.pth -> 11ad3fa6), torchvision's check_hash convention.
 */
export function sha256PrefixOf(fileName: string): string {
  const m = /-([0-9a-f]+)\.[^-]*$/.exec(fileName);
  if (!m || m[1]!.length < 6 || m[1]!.length > 64) {
    throw new Error(`the weights file name "${fileName}" carries no sha256 prefix (expected NAME-<6 to 64 hex digits>.EXT, as torchvision names its files)`);
  }
  return m[1]!;
}

interface VerifiedMarker {
  sha256: string;
  size: number;
  mtimeMs: number;
}

function markerPath(path: string): string {
  return join(dirname(path), `.${basename(path)}.sha256`);
}

function readMarker(path: string, st: Stats): VerifiedMarker | null {
  try {
    const m = JSON.parse(readFileSync(markerPath(path), 'utf8')) as VerifiedMarker;
    // A file replaced or rewritten since it was hashed changes size or mtime: hash it again.
    return m.size === st.size && m.mtimeMs === st.mtimeMs && typeof m.sha256 === 'string' ? m : null;
  } catch {
    return null;
  }
}

function writeMarker(path: string, sha256: string): void {
  try {
    const st = statSync(path);
    writeAtomic(markerPath(path), JSON.stringify({ sha256, size: st.size, mtimeMs: st.mtimeMs }) + '\n');
  } catch {
    // Only a time saver: without it the file is hashed again next time.
  }
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Whether an entry's file is in the cache: `verified` (hashed and matching), `unverified` (hashed on first use) or `missing`. */
export function pretrainedCacheStatus(entry: PretrainedEntry, opts: PretrainedCacheOptions = {}): 'verified' | 'unverified' | 'missing' {
  const path = pretrainedCachePath(entry, opts);
  let st: Stats;
  try {
    st = statSync(path);
  } catch {
    return 'missing';
  }
  if (!st.isFile()) return 'unverified';
  const m = readMarker(path, st);
  return m && m.sha256.startsWith(sha256PrefixOf(entry.fileName)) ? 'verified' : 'unverified';
}

/** What fetchPretrained hands back: the verified file and the entry it holds. */
export interface FetchedWeights {
  path: string;
  entry: PretrainedEntry;
  /** True when this call downloaded the file, false when the cache had it. */
  downloaded: boolean;
}

/**
 * The local path of pretrained weights, downloading them into the cache on first use. `spec` is a
 * spec (`torchvision:resnet50.IMAGENET1K_V2`) or an entry (tests and callers with their own table:
 * only `source`, `url` and `fileName` matter here). A file already in the cache is hash-checked once;
 * a file that does not match its name's sha256 prefix is refused, never used.
 */
export async function fetchPretrained(spec: string | PretrainedEntry, opts: FetchPretrainedOptions = {}): Promise<FetchedWeights> {
  const entry = typeof spec === 'string' ? parsePretrainedSpec(spec) : spec;
  const prefix = sha256PrefixOf(entry.fileName);
  const path = pretrainedCachePath(entry, opts);
  let st: Stats | null = null;
  try {
    st = statSync(path);
  } catch {
    // not cached yet
  }
  if (st) {
    if (!st.isFile()) throw new Error(`${path} (the cache's place for ${entry.spec}) is not a file; remove it and try again`);
    if (readMarker(path, st)?.sha256.startsWith(prefix)) return { path, entry, downloaded: false };
    let sha256: string;
    try {
      sha256 = await sha256File(path);
    } catch (e) {
      throw new Error(`${path}: cannot read the cached weights (${(e as Error).message}); fix its permissions or remove it`, { cause: e });
    }
    if (!sha256.startsWith(prefix)) {
      throw new Error(
        `${path}: this file is not ${entry.spec}: its sha256 is ${sha256}, but the name promises one starting with ${prefix}. ` +
          `It is damaged or a different file; delete it (residual downloads the right one) or put the file from ${entry.url} there`,
      );
    }
    writeMarker(path, sha256);
    return { path, entry, downloaded: false };
  }
  const url = pretrainedDownloadUrl(entry, opts);
  const handHint = url === entry.url
    ? `without a network, download ${entry.url} elsewhere and put it at ${path}`
    : `check the mirror (${url.slice(0, url.length - entry.fileName.length)}), or put ${entry.fileName} (from ${entry.url}) at ${path} by hand`;
  const { sha256 } = await downloadVerified(url, path, prefix, { ...opts, handHint });
  writeMarker(path, sha256);
  return { path, entry, downloaded: true };
}
