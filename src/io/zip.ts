// A small read-only zip reader for PyTorch archives: central directory, STORED and DEFLATE entries,
// ZIP64. Entries are read on demand with positioned reads, so memory stays at one entry at a time.

import * as zlib from 'node:zlib';
import type { RandomAccessFile } from './file.js';

const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;

/** Deflate cannot expand data by more than about 1032:1; anything claiming more is corrupt or hostile. */
const MAX_DEFLATE_RATIO = 1032;
const MAX_ENTRY_BYTES = 0x7fffffff;

export interface ZipEntry {
  readonly name: string;
  readonly method: number;
  readonly compressedSize: number;
  readonly size: number;
  readonly crc32: number;
  readonly localHeaderOffset: number;
  readonly flags: number;
}

function u16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}
function u32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16)) + b[o + 3]! * 16777216;
}
function u64(b: Uint8Array, o: number): number {
  return u32(b, o) + u32(b, o + 4) * 4294967296;
}

export function looksLikeZip(head: Uint8Array): boolean {
  return head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && ((head[2] === 3 && head[3] === 4) || (head[2] === 5 && head[3] === 6));
}

export class ZipReader {
  readonly entries = new Map<string, ZipEntry>();
  private dataStarts = new Map<string, number>();

  private constructor(readonly file: RandomAccessFile) {}

  static open(file: RandomAccessFile): ZipReader {
    const z = new ZipReader(file);
    z.readCentralDirectory();
    return z;
  }

  private fail(problem: string): never {
    this.file.fail(problem);
  }

  private readCentralDirectory(): void {
    const f = this.file;
    const truncated =
      'no zip end-of-central-directory record found: the archive is truncated (an interrupted download or save?) or not a zip file; re-download or re-save it';
    if (f.size < 22) this.fail(truncated);
    const tailLen = Math.min(f.size, 22 + 0xffff);
    const tailStart = f.size - tailLen;
    const tail = f.read(tailStart, tailLen, 'zip end record');
    let eocd = -1;
    for (let i = tail.length - 22; i >= 0; i--) {
      if (u32(tail, i) === SIG_EOCD && i + 22 + u16(tail, i + 20) === tail.length) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) {
      // Tolerate bytes appended after the comment (some tools do that), as other zip readers do.
      for (let i = tail.length - 22; i >= 0; i--) {
        if (u32(tail, i) === SIG_EOCD && i + 22 + u16(tail, i + 20) <= tail.length) {
          eocd = i;
          break;
        }
      }
    }
    if (eocd < 0) this.fail(truncated);
    let count = u16(tail, eocd + 10);
    let cdSize = u32(tail, eocd + 12);
    let cdOffset = u32(tail, eocd + 16);
    const eocdAbs = tailStart + eocd;
    if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
      if (eocdAbs < 20) this.fail('zip says it is ZIP64 but has no ZIP64 locator; the file is corrupt');
      const loc = f.read(eocdAbs - 20, 20, 'ZIP64 locator');
      if (u32(loc, 0) !== SIG_ZIP64_LOCATOR) this.fail('zip says it is ZIP64 but has no ZIP64 locator; the file is corrupt');
      const z64Offset = u64(loc, 8);
      if (z64Offset + 56 > eocdAbs - 20) this.fail('ZIP64 end record lies outside the file; the file is corrupt');
      const rec = f.read(z64Offset, 56, 'ZIP64 end record');
      if (u32(rec, 0) !== SIG_ZIP64_EOCD) this.fail('ZIP64 end record has a bad signature; the file is corrupt');
      count = u64(rec, 32);
      cdSize = u64(rec, 40);
      cdOffset = u64(rec, 48);
    }
    if (!Number.isSafeInteger(cdOffset + cdSize) || cdOffset + cdSize > f.size) {
      this.fail(
        `zip central directory (bytes ${cdOffset}..${cdOffset + cdSize}) lies outside the file (${f.size} bytes); the archive is truncated or corrupt`,
      );
    }
    if (count * 46 > cdSize) this.fail(`zip declares ${count} entries but its directory is only ${cdSize} bytes; the file is corrupt`);
    const cd = f.read(cdOffset, cdSize, 'zip central directory');
    const dec = new TextDecoder('utf-8');
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > cd.length || u32(cd, p) !== SIG_CENTRAL) this.fail(`zip central directory entry ${i} is malformed; the file is corrupt`);
      const flags = u16(cd, p + 8);
      const method = u16(cd, p + 10);
      const crc32 = u32(cd, p + 16);
      let compressedSize = u32(cd, p + 20);
      let size = u32(cd, p + 24);
      const nameLen = u16(cd, p + 28);
      const extraLen = u16(cd, p + 30);
      const commentLen = u16(cd, p + 32);
      let localHeaderOffset = u32(cd, p + 42);
      const end = p + 46 + nameLen + extraLen + commentLen;
      if (end > cd.length) this.fail(`zip central directory entry ${i} runs past the directory; the file is corrupt`);
      const name = dec.decode(cd.subarray(p + 46, p + 46 + nameLen));
      // ZIP64 extended information: present fields follow the order size, compressed size, offset.
      let e = p + 46 + nameLen;
      const extraEnd = e + extraLen;
      while (e + 4 <= extraEnd) {
        const id = u16(cd, e);
        const len = u16(cd, e + 2);
        if (e + 4 + len > extraEnd) break;
        if (id === 0x0001) {
          let q = e + 4;
          const take = (): number => {
            if (q + 8 > e + 4 + len) this.fail(`zip entry ${name}: ZIP64 extra field too short; the file is corrupt`);
            const v = u64(cd, q);
            q += 8;
            return v;
          };
          if (size === 0xffffffff) size = take();
          if (compressedSize === 0xffffffff) compressedSize = take();
          if (localHeaderOffset === 0xffffffff) localHeaderOffset = take();
        }
        e += 4 + len;
      }
      if (!Number.isSafeInteger(size) || !Number.isSafeInteger(compressedSize) || !Number.isSafeInteger(localHeaderOffset)) {
        this.fail(`zip entry ${name} has impossible sizes; the file is corrupt`);
      }
      if (localHeaderOffset + 30 + compressedSize > f.size) {
        this.fail(`zip entry ${name} (offset ${localHeaderOffset}, ${compressedSize} bytes) lies outside the file (${f.size} bytes); the archive is truncated or corrupt`);
      }
      this.entries.set(name, { name, method, compressedSize, size, crc32, localHeaderOffset, flags });
      p = end;
    }
  }

  /** Absolute offset of an entry's first data byte (after its local header). */
  dataStart(entry: ZipEntry): number {
    const cached = this.dataStarts.get(entry.name);
    if (cached !== undefined) return cached;
    const h = this.file.read(entry.localHeaderOffset, 30, `zip local header of ${entry.name}`);
    if (u32(h, 0) !== SIG_LOCAL) this.fail(`zip entry ${entry.name}: bad local header signature at byte ${entry.localHeaderOffset}; the file is corrupt`);
    const start = entry.localHeaderOffset + 30 + u16(h, 26) + u16(h, 28);
    if (start + entry.compressedSize > this.file.size) {
      this.fail(`zip entry ${entry.name}: data (bytes ${start}..${start + entry.compressedSize}) runs past the end of the file (${this.file.size} bytes); the archive is truncated`);
    }
    this.dataStarts.set(entry.name, start);
    return start;
  }

  /**
   * Read a whole STORED entry straight into `target` (exactly entry.size bytes) and check its CRC-32.
   * Returns false, reading nothing, if the entry is compressed or the size differs.
   */
  readStoredInto(entry: ZipEntry, target: Uint8Array): boolean {
    if (entry.method !== 0 || entry.flags & 1 || entry.compressedSize !== entry.size || target.length !== entry.size) return false;
    this.file.readInto(this.dataStart(entry), target, `zip entry ${entry.name}`);
    if ((zlib.crc32(target) >>> 0) !== entry.crc32) {
      this.fail(`zip entry ${entry.name} fails its CRC-32 check; the file is corrupt (re-download or re-save it)`);
    }
    return true;
  }

  /**
   * Read a whole entry (inflating if needed) and check its CRC-32. `limit` caps the bytes it may
   * allocate: the declared size is checked against it before anything is read or inflated, and
   * inflation stops at the declared size whatever the stream says.
   */
  read(entry: ZipEntry, limit = MAX_ENTRY_BYTES): Uint8Array {
    if (entry.flags & 1) this.fail(`zip entry ${entry.name} is encrypted; unsupported`);
    if (entry.size > limit) {
      this.fail(`zip entry ${entry.name} is ${entry.size} bytes once inflated, over the limit of ${limit} bytes; refusing (a corrupt or hostile file, or raise RESIDUAL_MAX_LOAD_BYTES if you trust it)`);
    }
    const start = this.dataStart(entry);
    const raw = this.file.read(start, entry.compressedSize, `zip entry ${entry.name}`);
    let data: Uint8Array;
    if (entry.method === 0) {
      if (entry.compressedSize !== entry.size) {
        this.fail(`zip entry ${entry.name} is stored uncompressed but its two sizes differ (${entry.compressedSize} vs ${entry.size}); the file is corrupt`);
      }
      data = raw;
    } else if (entry.method === 8) {
      if (entry.size > MAX_ENTRY_BYTES || entry.size > MAX_DEFLATE_RATIO * entry.compressedSize + 1024) {
        this.fail(`zip entry ${entry.name} claims to inflate ${entry.compressedSize} bytes to ${entry.size}; refusing (corrupt or hostile file)`);
      }
      try {
        data = zlib.inflateRawSync(raw, { maxOutputLength: Math.max(1, entry.size) });
      } catch (e) {
        this.fail(`zip entry ${entry.name} does not decompress (${(e as Error).message}); the file is corrupt`);
      }
      if (data.length !== entry.size) {
        this.fail(`zip entry ${entry.name} inflates to ${data.length} bytes, not the declared ${entry.size}; the file is corrupt`);
      }
    } else {
      this.fail(`zip entry ${entry.name} uses compression method ${entry.method}; only stored (0) and deflate (8) are supported`);
    }
    if ((zlib.crc32(data) >>> 0) !== entry.crc32) {
      this.fail(`zip entry ${entry.name} fails its CRC-32 check; the file is corrupt (re-download or re-save it)`);
    }
    return data;
  }
}
