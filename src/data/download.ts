// Downloading CIFAR-10 / CIFAR-100 (binary version): fetch, verify MD5, unpack, move into place.
//
// The archive is streamed to a temporary folder inside `dir` (so the final rename stays on one file
// system), hashed on the way, and unpacked with our own tar reader there; only a complete, verified
// dataset folder is renamed to dir/cifar-10-batches-bin (or cifar-100-binary). On any failure the
// temporary folder is removed and nothing is left behind.

import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { createGunzip } from 'node:zlib';
import { cifarFolderName, findCifarDir, type CifarName } from './cifar.js';
import { extractTar } from './tar.js';

export const CIFAR_BASE_URL = 'https://www.cs.toronto.edu/~kriz/';

export const CIFAR_ARCHIVES: Readonly<Record<CifarName, { file: string; md5: string }>> = Object.freeze({
  cifar10: { file: 'cifar-10-binary.tar.gz', md5: 'c32a1d4ab5d03f1284b67883e8d87530' },
  cifar100: { file: 'cifar-100-binary.tar.gz', md5: '03b5dce01913d631647c71ecec9e9cb8' },
});

export interface DownloadOptions {
  /**
   * Where to fetch from: a base URL (the archive's file name is appended) or the full URL of a
   * .tar.gz. Default: the RESIDUAL_CIFAR_URL environment variable, else the official site.
   */
  url?: string;
  /** Expected MD5 of the archive (default: the official archive's). */
  md5?: string;
  /** Download even if the dataset folder already exists (it is replaced). Default false. */
  force?: boolean;
  /** Give up after this long (default 30 minutes). */
  timeoutMs?: number;
  /** Refuse archives larger than this (default 1 GiB). */
  maxBytes?: number;
  /** Called as bytes arrive (total is null when the server does not say). */
  onProgress?: (received: number, total: number | null) => void;
}

export function cifarArchiveUrl(which: CifarName, url?: string): string {
  const base = url ?? process.env['RESIDUAL_CIFAR_URL'] ?? CIFAR_BASE_URL;
  if (/\.tar\.gz$|\.tgz$/.test(base)) return base;
  return base.replace(/\/*$/, '/') + CIFAR_ARCHIVES[which].file;
}

/**
 * Downloads and unpacks CIFAR-10 or CIFAR-100 into `dir` (creating it), returning the dataset folder
 * (dir/cifar-10-batches-bin or dir/cifar-100-binary). Does nothing when it is already there.
 */
export async function downloadCifar(which: CifarName, dir: string, opts: DownloadOptions = {}): Promise<string> {
  if (which !== 'cifar10' && which !== 'cifar100') throw new Error(`downloadCifar: which must be 'cifar10' or 'cifar100', got ${JSON.stringify(which)}`);
  const { file, md5: officialMd5 } = CIFAR_ARCHIVES[which];
  const expectedMd5 = (opts.md5 ?? officialMd5).toLowerCase();
  const url = cifarArchiveUrl(which, opts.url);
  const folder = cifarFolderName(which);
  const final = join(dir, folder);
  if (!opts.force && findCifarDir(which, final) === final) return final;

  mkdirSync(dir, { recursive: true });
  const tmp = mkdtempSync(join(dir, `.${folder}.download-`));
  try {
    const archive = join(tmp, file);
    const timeoutMs = opts.timeoutMs ?? 30 * 60 * 1000;
    const maxBytes = opts.maxBytes ?? 1024 ** 3;
    let res: Response;
    try {
      res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: 'follow' });
    } catch (e) {
      const err = e as Error & { cause?: Error };
      throw new Error(`Downloading ${url} failed: ${err.cause?.message ?? err.message}; check the network, or set the url option / RESIDUAL_CIFAR_URL to a reachable mirror`);
    }
    if (!res.ok || !res.body) {
      await res.body?.cancel().catch(() => {});
      throw new Error(`Downloading ${url} failed: HTTP ${res.status} ${res.statusText}; check the URL (the url option or RESIDUAL_CIFAR_URL must point to a folder holding ${file}, or to the file itself)`);
    }
    const lenHeader = res.headers.get('content-length');
    const total = lenHeader !== null && /^\d+$/.test(lenHeader) ? Number(lenHeader) : null;
    if (total !== null && total > maxBytes) throw new Error(`Downloading ${url}: the server announces ${total} bytes, more than the ${maxBytes}-byte limit; this is not the expected archive`);

    const hash = createHash('md5');
    const out = createWriteStream(archive);
    let received = 0;
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        received += chunk.length;
        if (received > maxBytes) throw new Error(`Downloading ${url}: more than ${maxBytes} bytes received; this is not the expected archive`);
        hash.update(chunk);
        if (!out.write(chunk)) await once(out, 'drain');
        opts.onProgress?.(received, total);
      }
    } catch (e) {
      out.destroy();
      const err = e as Error;
      if (err.message.startsWith('Downloading ')) throw err;
      throw new Error(`Downloading ${url} failed after ${received} bytes: ${err.name === 'TimeoutError' ? `timed out after ${timeoutMs} ms` : err.message}; try again`);
    }
    out.end();
    await once(out, 'close');
    if (total !== null && received !== total) throw new Error(`Downloading ${url}: received ${received} bytes but the server announced ${total}; the transfer was cut: try again`);

    const got = hash.digest('hex');
    if (got !== expectedMd5) {
      throw new Error(
        `Downloading ${url}: MD5 checksum mismatch: got ${got}, expected ${expectedMd5}. The download is corrupt or is not the ${file} archive; nothing was kept. ` +
          `Try again, or if you use a mirror with a different archive, pass its md5`,
      );
    }

    const unpacked = join(tmp, 'unpacked');
    try {
      const gunzip = createGunzip();
      const rs = createReadStream(archive);
      rs.on('error', (e) => gunzip.destroy(e));
      rs.pipe(gunzip);
      await extractTar(gunzip, unpacked, { archiveName: url, maxBytes: 4 * maxBytes });
    } catch (e) {
      const msg = (e as Error).message;
      throw new Error(msg.includes(url) ? msg : `Unpacking ${url} failed: ${msg}`);
    }
    const inner = join(unpacked, folder);
    if (findCifarDir(which, inner) !== inner) {
      throw new Error(`${url}: the archive does not contain ${folder}/${which === 'cifar10' ? 'test_batch.bin' : 'test.bin'}; it is not the ${which} binary archive`);
    }
    if (existsSync(final)) renameSync(final, join(tmp, 'previous')); // force, or an incomplete leftover
    renameSync(inner, final);
    return final;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
