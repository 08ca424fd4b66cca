// Downloading one file into place, verified: Node's own http/https (no dependency), redirects
// followed, the body streamed to a temp file in the destination's folder while it is hashed, and
// only a complete file whose sha256 starts with the expected prefix is fsynced and renamed to its
// final name. Every failure removes the temp file, so the destination holds a good file or nothing.
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, rmSync } from 'node:fs';
import { mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises';
import * as http from 'node:http';
import * as https from 'node:https';
import { basename, dirname, join } from 'node:path';
import { syncDirectory } from '../io/index.js';

/** What went wrong, for callers that react differently (all carry a message a person can act on). */
export type DownloadFailure = 'network' | 'http' | 'redirect' | 'truncated' | 'timeout' | 'hash' | 'write';

export class WeightsDownloadError extends Error {
  constructor(
    readonly kind: DownloadFailure,
    readonly url: string,
    readonly path: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'WeightsDownloadError';
  }
}

/** Where a download is: `start` once the server answered, `data` per chunk, then `done` or `failed`. */
export interface DownloadEvent {
  url: string;
  path: string;
  phase: 'start' | 'data' | 'done' | 'failed';
}

/** Called as bytes arrive; `total` is null when the server does not say. */
export type DownloadProgress = (bytes: number, total: number | null, event: DownloadEvent) => void;

export interface WeightsDownloadOptions {
  /** Give up when no byte arrives for this long (default: RESIDUAL_DOWNLOAD_IDLE_TIMEOUT seconds, else 30 s). */
  idleTimeoutMs?: number;
  /** Redirects followed before giving up (default 5). */
  maxRedirects?: number;
  onProgress?: DownloadProgress;
}

const DEFAULT_IDLE_TIMEOUT_S = 30;

/** The idle timeout: the option, else RESIDUAL_DOWNLOAD_IDLE_TIMEOUT (seconds), else 30 s. */
export function idleTimeoutMs(option?: number): number {
  if (option !== undefined) {
    if (!(option > 0)) throw new Error(`idleTimeoutMs must be a positive number of milliseconds, got ${option}`);
    return option;
  }
  const env = process.env['RESIDUAL_DOWNLOAD_IDLE_TIMEOUT'];
  if (env === undefined || env === '') return DEFAULT_IDLE_TIMEOUT_S * 1000;
  const s = Number(env);
  if (!(s > 0)) throw new Error(`RESIDUAL_DOWNLOAD_IDLE_TIMEOUT must be a positive number of seconds, got "${env}"`);
  return s * 1000;
}

/** Error codes that mean the machine cannot reach the server at all (rather than a server problem). */
const UNREACHABLE = new Set(['ENOTFOUND', 'EAI_AGAIN', 'ECONNREFUSED', 'ENETUNREACH', 'EHOSTUNREACH', 'ENETDOWN', 'EHOSTDOWN', 'EADDRNOTAVAIL']);

class IdleTimeout extends Error {}

/**
 * One GET; resolves with the response (any status), rejects on connection errors and idle timeouts.
 * `watch.timedOut` tells later body errors caused by the idle timer from a broken connection.
 */
function get(url: URL, timeoutMs: number, watch: { timedOut: boolean }): Promise<{ req: http.ClientRequest; res: http.IncomingMessage }> {
  return new Promise((resolve, reject) => {
    const mod = url.protocol === 'https:' ? https : http;
    // agent: false — one connection per request, closed after it, so no pooled socket outlives us.
    const req = mod.get(url, { agent: false, headers: { 'user-agent': 'residual' } });
    // The socket's inactivity timer covers connecting, waiting for headers and every gap in the body.
    req.setTimeout(timeoutMs, () => {
      watch.timedOut = true;
      req.destroy(new IdleTimeout());
    });
    req.once('response', (res) => resolve({ req, res }));
    req.once('error', reject);
  });
}

function removeStaleTemps(dir: string, file: string): void {
  // Temp files of downloads killed midway (kill -9, power loss): ours carry the pid; only dead ones go.
  const prefix = `.${file}.download-`;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) {
    if (!n.startsWith(prefix)) continue;
    const pid = Number(n.slice(prefix.length).split('-')[0]);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    let alive = true;
    try {
      process.kill(pid, 0);
    } catch (e) {
      alive = (e as NodeJS.ErrnoException).code === 'EPERM';
    }
    if (!alive) rmSync(join(dir, n), { force: true });
  }
}

function sizeText(bytes: number): string {
  return bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${bytes} bytes`;
}

/**
 * Downloads `url` to `path` (creating its folder), accepting the file only when its sha256 starts with
 * `sha256Prefix` (torchvision's check_hash). `handHint` ends the messages of failures where putting
 * the file there by hand is the way out. Resolves with the file's sha256 and size.
 */
export async function downloadVerified(
  url: string,
  path: string,
  sha256Prefix: string,
  opts: WeightsDownloadOptions & { handHint?: string } = {},
): Promise<{ sha256: string; bytes: number }> {
  const timeoutMs = idleTimeoutMs(opts.idleTimeoutMs);
  const maxRedirects = opts.maxRedirects ?? 5;
  const hint = opts.handHint ? `; ${opts.handHint}` : '';
  const dir = dirname(path);
  function fail(kind: DownloadFailure, message: string, cause?: unknown): never {
    throw new WeightsDownloadError(kind, url, path, message, cause === undefined ? undefined : { cause });
  }

  try {
    await mkdir(dir, { recursive: true });
  } catch (e) {
    fail('write', `cannot create the cache folder ${dir}: ${(e as Error).message}; set RESIDUAL_HOME to a writable folder`, e);
  }
  removeStaleTemps(dir, basename(path));
  const tmp = join(dir, `.${basename(path)}.download-${process.pid}-${randomBytes(4).toString('hex')}`);
  let fh: FileHandle | null = null;
  let received = 0;
  let total: number | null = null;
  let started = false;
  const watch = { timedOut: false };
  try {
    // Follow redirects by hand: we want each hop's URL in the messages and a bounded chain.
    let current = new URL(url);
    let res: http.IncomingMessage;
    for (let hop = 0; ; hop++) {
      if (current.protocol !== 'http:' && current.protocol !== 'https:') {
        fail('redirect', `${hop ? `${url} redirects to ${current.href}, which` : url} is not an http(s) URL; weights are downloaded over http or https only`);
      }
      try {
        ({ res } = await get(current, timeoutMs, watch));
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        if (err instanceof IdleTimeout) fail('timeout', `downloading ${current.href}: no answer in ${timeoutMs / 1000} s (RESIDUAL_DOWNLOAD_IDLE_TIMEOUT changes the limit)${hint}`);
        if (err.code && UNREACHABLE.has(err.code)) {
          fail('network', `cannot reach ${current.href} (${err.code}: no network, or the host is down)${hint}`, e);
        }
        fail('network', `downloading ${current.href} failed: ${err.code ?? err.message}${hint}`, e);
      }
      const status = res.statusCode ?? 0;
      if ([301, 302, 303, 307, 308].includes(status) && res.headers.location) {
        res.resume();
        if (hop >= maxRedirects) fail('redirect', `${url}: more than ${maxRedirects} redirects (the last to ${res.headers.location}); check the URL or the mirror`);
        current = new URL(res.headers.location, current);
        continue;
      }
      if (status !== 200) {
        res.resume();
        fail('http', `downloading ${current.href} failed: HTTP ${status} ${res.statusMessage ?? ''}`.trimEnd() + hint);
      }
      break;
    }

    const length = res.headers['content-length'];
    total = length !== undefined && /^\d+$/.test(length) ? Number(length) : null;
    try {
      fh = await open(tmp, 'wx', 0o644);
    } catch (e) {
      res.destroy();
      fail('write', `cannot write in the cache folder ${dir}: ${(e as Error).message}; set RESIDUAL_HOME to a writable folder`, e);
    }
    started = true;
    opts.onProgress?.(0, total, { url, path, phase: 'start' });
    const hash = createHash('sha256');
    try {
      for await (const chunk of res as AsyncIterable<Buffer>) {
        hash.update(chunk);
        await fh!.write(chunk);
        received += chunk.length;
        opts.onProgress?.(received, total, { url, path, phase: 'data' });
      }
    } catch (e) {
      if (watch.timedOut) fail('timeout', `downloading ${current.href}: no data for ${timeoutMs / 1000} s after ${sizeText(received)}; try again (RESIDUAL_DOWNLOAD_IDLE_TIMEOUT changes the limit)${hint}`);
      if ((e as NodeJS.ErrnoException).syscall === 'write') fail('write', `writing ${tmp} failed: ${(e as Error).message}; free some space or set RESIDUAL_HOME elsewhere`, e);
      fail('truncated', `downloading ${current.href}: the connection broke after ${sizeText(received)}${total === null ? '' : ` of ${sizeText(total)}`}; try again${hint}`, e);
    }
    if (watch.timedOut) fail('timeout', `downloading ${current.href}: no data for ${timeoutMs / 1000} s after ${sizeText(received)}; try again${hint}`);
    if (total !== null && received !== total) {
      fail('truncated', `downloading ${current.href}: got ${sizeText(received)} but the server announced ${sizeText(total)}; the transfer was cut, try again${hint}`);
    }
    const sha256 = hash.digest('hex');
    if (!sha256.startsWith(sha256Prefix)) {
      fail('hash', `downloading ${current.href}: sha256 mismatch: the file name promises a sha256 starting with ${sha256Prefix}, ` +
        `the ${sizeText(received)} received hash to ${sha256}. Nothing was kept; the server (or mirror) sent a different or damaged file`);
    }
    await fh!.sync();
    await fh!.close();
    fh = null;
    await rename(tmp, path);
    syncDirectory(dir);
    opts.onProgress?.(received, total, { url, path, phase: 'done' });
    return { sha256, bytes: received };
  } catch (e) {
    if (fh) await fh.close().catch(() => {});
    await rm(tmp, { force: true }).catch(() => {});
    if (started) opts.onProgress?.(received, total, { url, path, phase: 'failed' });
    if (e instanceof WeightsDownloadError) throw e;
    throw new WeightsDownloadError('write', url, path, `downloading ${url} to ${path} failed: ${(e as Error).message}`, { cause: e });
  }
}
