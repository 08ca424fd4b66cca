// A small streaming tar reader: ustar/GNU/pax headers, regular files and directories only.
//
// Safety: entries with absolute paths, `..` components or backslashes are rejected (path
// traversal), as are links and device entries; nothing is written outside `dest`. The total size
// and the number of entries are bounded. Extract into a fresh directory: the reader never creates
// symlinks, so no path inside it can lead elsewhere.

import { createWriteStream, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import { printable } from '../io/printable.js';

/** An entry name for a message: quoted, control characters escaped (names come from the archive). */
const shown = (name: string): string => printable(JSON.stringify(name));

export interface ExtractOptions {
  /** Name of the archive, for error messages. */
  archiveName?: string;
  /** Maximum total bytes of file data (default 4 GiB). */
  maxBytes?: number;
  /** Maximum number of entries (default 100000). */
  maxEntries?: number;
}

export interface TarEntry {
  path: string; // normalized, relative, '/'-separated
  type: 'file' | 'dir';
  size: number;
}

class ChunkReader {
  private chunks: Buffer[] = [];
  private avail = 0;
  private done = false;
  private readonly it: AsyncIterator<Buffer | Uint8Array | string>;

  constructor(src: AsyncIterable<Buffer | Uint8Array | string>) {
    this.it = src[Symbol.asyncIterator]();
  }

  /** Makes at least n bytes available; false if the input ends first. */
  private async fill(n: number): Promise<boolean> {
    while (this.avail < n && !this.done) {
      const r = await this.it.next();
      if (r.done) {
        this.done = true;
        break;
      }
      const b = typeof r.value === 'string' ? Buffer.from(r.value) : Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
      if (b.length) {
        this.chunks.push(b);
        this.avail += b.length;
      }
    }
    return this.avail >= n;
  }

  /** Takes up to n available bytes (at least 1 when any are available). */
  private takeSome(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length <= n) {
      this.chunks.shift();
      this.avail -= first.length;
      return first;
    }
    this.chunks[0] = first.subarray(n);
    this.avail -= n;
    return first.subarray(0, n);
  }

  /** Exactly n bytes, or null if the input ended before the first byte; throws if it ends midway. */
  async readExact(n: number, what: string): Promise<Buffer | null> {
    const ok = await this.fill(n);
    if (!ok) {
      if (this.avail === 0) return null;
      throw new Error(`${what}: the archive ends in the middle of a block (truncated)`);
    }
    const parts: Buffer[] = [];
    let need = n;
    while (need > 0) {
      const p = this.takeSome(need);
      parts.push(p);
      need -= p.length;
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
  }

  /** Streams n bytes to `sink`; throws if the input ends first. */
  async pipe(n: number, sink: (b: Buffer) => Promise<void> | void, what: string): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.avail === 0 && !(await this.fill(1))) throw new Error(`${what}: the archive ends inside this entry's data (truncated)`);
      const p = this.takeSome(left);
      left -= p.length;
      await sink(p);
    }
  }
}

function cstr(b: Buffer, off: number, len: number): string {
  const s = b.subarray(off, off + len);
  const z = s.indexOf(0);
  return s.subarray(0, z < 0 ? len : z).toString('utf8');
}

function parseNumber(b: Buffer, off: number, len: number, what: string): number {
  const f = b.subarray(off, off + len);
  if (f[0]! & 0x80) {
    // GNU base-256: big-endian, first byte's top bit set; 0xff starts a negative number, never valid here.
    if (f[0] === 0xff) throw new Error(`${what}: negative number in a header field; the archive is corrupt`);
    let v = f[0]! & 0x7f;
    for (let i = 1; i < len; i++) v = v * 256 + f[i]!;
    if (!Number.isSafeInteger(v)) throw new Error(`${what}: number field too large`);
    return v;
  }
  const s = cstr(b, off, len).trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new Error(`${what}: invalid octal number ${shown(s)} in the header`);
  return parseInt(s, 8);
}

function checksumOk(h: Buffer): boolean {
  const stored = parseNumber(h, 148, 8, 'tar header');
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < 512; i++) {
    const v = i >= 148 && i < 156 ? 0x20 : h[i]!;
    unsigned += v;
    signed += v > 127 ? v - 256 : v;
  }
  return stored === unsigned || stored === signed;
}

/** Normalizes an entry path; throws on absolute paths, `..` and backslashes. Returns '' for the root itself. */
export function safeEntryPath(name: string, archive: string): string {
  const bad = (why: string) => new Error(`${archive}: refusing to extract entry ${shown(name)}: ${why} (possible path traversal attack); the archive is not trustworthy`);
  if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) throw bad('absolute path');
  if (name.includes('\\')) throw bad('backslash in path');
  if (name.includes('\0')) throw bad('NUL in path');
  const segs = name.split('/').filter((s) => s !== '' && s !== '.');
  if (segs.some((s) => s === '..')) throw bad("'..' in path");
  return segs.join('/');
}

function parsePax(data: Buffer, what: string): Map<string, string> {
  const out = new Map<string, string>();
  let pos = 0;
  while (pos < data.length) {
    const sp = data.indexOf(0x20, pos);
    if (sp < 0) break;
    const lenText = data.subarray(pos, sp).toString('ascii');
    const len = /^\d{1,7}$/.test(lenText) ? Number(lenText) : NaN;
    if (!Number.isInteger(len) || len <= 0 || pos + len > data.length) throw new Error(`${what}: malformed pax extended header`);
    const rec = data.subarray(sp + 1, pos + len - 1).toString('utf8'); // drop trailing '\n'
    const eq = rec.indexOf('=');
    if (eq > 0) out.set(rec.slice(0, eq), rec.slice(eq + 1));
    pos += len;
  }
  return out;
}

/** Extracts a tar stream (already decompressed) into `dest`. Returns the entries written. */
export async function extractTar(input: AsyncIterable<Buffer | Uint8Array | string>, dest: string, opts: ExtractOptions = {}): Promise<TarEntry[]> {
  const archive = opts.archiveName ?? 'tar archive';
  const maxBytes = opts.maxBytes ?? 4 * 1024 ** 3;
  const maxEntries = opts.maxEntries ?? 100000;
  const r = new ChunkReader(input);
  const entries: TarEntry[] = [];
  let total = 0;
  let longName: string | null = null;
  let pax: Map<string, string> | null = null;
  mkdirSync(dest, { recursive: true });
  for (;;) {
    const h = await r.readExact(512, archive);
    if (!h) break; // end of input without the end-of-archive blocks: accept what was read
    if (h.every((v) => v === 0)) break; // end-of-archive marker
    if (!checksumOk(h)) throw new Error(`${archive}: bad tar header checksum after ${entries.length} entries: the archive is corrupt or not a tar file`);
    const magic = cstr(h, 257, 6);
    let name = cstr(h, 0, 100);
    if (magic === 'ustar') {
      const prefix = cstr(h, 345, 155);
      if (prefix) name = `${prefix}/${name}`;
    }
    let size = parseNumber(h, 124, 12, archive);
    const type = String.fromCharCode(h[156]!);
    const padded = Math.ceil(size / 512) * 512;
    const what = `${archive}: entry ${shown(name)}`;

    if (type === 'x' || type === 'g' || type === 'L') {
      if (size > 1024 * 1024) throw new Error(`${what}: extended header of ${size} bytes is too large`);
      const data = (await r.readExact(padded, what)) ?? Buffer.alloc(0);
      if (data.length < padded) throw new Error(`${what}: truncated`);
      if (type === 'x') pax = parsePax(data.subarray(0, size), what);
      else if (type === 'L') longName = cstr(data, 0, size);
      continue; // 'g' (global pax header): nothing we use
    }
    if (longName !== null) name = longName;
    if (pax?.has('path')) name = pax.get('path')!;
    if (pax?.has('size')) {
      // A pax size is decimal text: NaN, a negative or a fractional size would slip past the limits
      // below (NaN compares false) or never finish (0.5 bytes), so only plain digits are accepted.
      const text = pax.get('size')!;
      size = /^\d{1,16}$/.test(text) ? Number(text) : NaN;
      if (!Number.isSafeInteger(size)) throw new Error(`${archive}: entry ${shown(name)}: pax size ${shown(text)} is not a non-negative integer; the archive is corrupt`);
    }
    longName = null;
    pax = null;
    const dataPadded = Math.ceil(size / 512) * 512;

    if (entries.length >= maxEntries) throw new Error(`${archive}: more than ${maxEntries} entries; refusing to extract (not the expected archive?)`);
    const rel = safeEntryPath(name, archive);
    if (type === '5') {
      if (rel) mkdirSync(join(dest, rel), { recursive: true, mode: 0o755 });
      entries.push({ path: rel, type: 'dir', size: 0 });
      await r.pipe(dataPadded, () => {}, what);
      continue;
    }
    if (type !== '0' && type !== '\0' && type !== '7') {
      const kinds: Record<string, string> = { '1': 'a hard link', '2': 'a symbolic link', '3': 'a character device', '4': 'a block device', '6': 'a FIFO' };
      throw new Error(`${archive}: entry ${shown(name)} is ${kinds[type] ?? `of unsupported type ${shown(type)}`}; only regular files and directories are extracted`);
    }
    if (!rel) throw new Error(`${archive}: a file entry has an empty name`);
    total += size;
    if (total > maxBytes) throw new Error(`${archive}: the files add up to more than ${maxBytes} bytes; refusing to extract (not the expected archive?)`);
    const target = join(dest, rel);
    const parent = rel.includes('/') ? join(dest, rel.slice(0, rel.lastIndexOf('/'))) : dest;
    mkdirSync(parent, { recursive: true });
    const out = createWriteStream(target, { mode: 0o644 });
    const closed = once(out, 'close');
    let failed: Error | null = null;
    out.on('error', (e) => (failed = e));
    try {
      await r.pipe(size, async (b) => {
        if (failed) throw failed;
        if (!out.write(b)) await Promise.race([once(out, 'drain'), closed]);
      }, what);
    } finally {
      out.end();
      await closed.catch(() => {});
    }
    if (failed) throw new Error(`${what}: cannot write ${printable(target)}: ${(failed as Error).message}`);
    await r.pipe(dataPadded - size, () => {}, what);
    entries.push({ path: rel, type: 'file', size });
  }
  return entries;
}
