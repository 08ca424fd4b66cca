// Shared plumbing for the weight-file readers and writers: the error type, bounded random-access reads,
// and atomic writes (temp file in the same folder, fsync, rename).

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { printable } from './printable.js';

/**
 * Thrown for every unreadable, malformed or refused weight file. `file` is the path given by the
 * caller. The message quotes names read from the file, so control characters in it are escaped.
 */
export class WeightFileError extends Error {
  readonly file: string;
  constructor(file: string, problem: string, options?: { cause?: unknown }) {
    super(printable(`${file}: ${problem}`), options);
    this.name = 'WeightFileError';
    this.file = file;
  }
}

/**
 * A file opened for positioned reads. Every read is checked against the file size before anything
 * is allocated, so a size declared inside a file can never make us allocate more than the file holds.
 */
export class RandomAccessFile {
  readonly path: string;
  readonly size: number;
  private fd: number;

  private constructor(path: string, fd: number, size: number) {
    this.path = path;
    this.fd = fd;
    this.size = size;
  }

  static open(path: string): RandomAccessFile {
    let fd: number;
    try {
      fd = fs.openSync(path, 'r');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const why =
        code === 'ENOENT'
          ? 'no such file; check the path'
          : code === 'EACCES'
            ? 'permission denied; check the file permissions'
            : code === 'EISDIR'
              ? 'is a directory, not a weight file'
              : `cannot open (${(e as Error).message})`;
      throw new WeightFileError(path, why, { cause: e });
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new WeightFileError(path, 'is not a regular file');
      return new RandomAccessFile(path, fd, st.size);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  fail(problem: string): never {
    throw new WeightFileError(this.path, problem);
  }

  /** Read exactly `length` bytes at `position`; `what` names the thing being read for the error message. */
  read(position: number, length: number, what: string): Uint8Array {
    if (!Number.isSafeInteger(position) || !Number.isSafeInteger(length) || position < 0 || length < 0) {
      this.fail(`${what}: invalid byte range (offset ${position}, length ${length}); the file is corrupt`);
    }
    if (position + length > this.size) {
      this.fail(
        `${what}: needs bytes ${position}..${position + length} but the file has only ${this.size} bytes; ` +
          'the file is truncated or corrupt (re-download or re-save it)',
      );
    }
    const buf = new Uint8Array(length);
    this.readInto(position, buf, what);
    return buf;
  }

  /** Fill `target` with the bytes at `position` (range checked like read()). */
  readInto(position: number, target: Uint8Array, what: string): void {
    const length = target.length;
    if (!Number.isSafeInteger(position) || position < 0 || position + length > this.size) {
      this.fail(
        `${what}: needs bytes ${position}..${position + length} but the file has only ${this.size} bytes; ` +
          'the file is truncated or corrupt (re-download or re-save it)',
      );
    }
    let done = 0;
    while (done < length) {
      const n = fs.readSync(this.fd, target, done, length - done, position + done);
      if (n === 0) this.fail(`${what}: unexpected end of file at byte ${position + done}; the file shrank while being read`);
      done += n;
    }
  }

  close(): void {
    if (this.fd >= 0) {
      fs.closeSync(this.fd);
      this.fd = -1;
    }
  }
}

/** Sequential reader over a RandomAccessFile with a small buffer (for the legacy pickle stream). */
export class FileStream {
  private buf: Uint8Array = new Uint8Array(0);
  private bufStart = 0;
  pos: number;
  constructor(
    readonly file: RandomAccessFile,
    start = 0,
  ) {
    this.pos = start;
  }

  get remaining(): number {
    return this.file.size - this.pos;
  }

  readByte(): number {
    const rel = this.pos - this.bufStart;
    if (rel >= 0 && rel < this.buf.length) {
      this.pos++;
      return this.buf[rel]!;
    }
    if (this.pos >= this.file.size) this.file.fail(`unexpected end of file at byte ${this.pos}; the file is truncated`);
    const len = Math.min(65536, this.file.size - this.pos);
    this.buf = this.file.read(this.pos, len, 'pickle stream');
    this.bufStart = this.pos;
    this.pos++;
    return this.buf[0]!;
  }

  readBytes(n: number, what: string): Uint8Array {
    if (n > this.remaining) {
      this.file.fail(`${what}: declares ${n} bytes at byte ${this.pos} but only ${this.remaining} remain; the file is truncated or corrupt`);
    }
    const rel = this.pos - this.bufStart;
    if (rel >= 0 && rel + n <= this.buf.length) {
      this.pos += n;
      return this.buf.subarray(rel, rel + n);
    }
    const out = this.file.read(this.pos, n, what);
    this.pos += n;
    return out;
  }
}

/**
 * Makes a rename in `dir` durable (the rename itself lives in the directory). Best effort: not every
 * platform can fsync a directory, and that is not worth failing a write that already succeeded.
 */
export function syncDirectory(dir: string): void {
  try {
    const fd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // best effort
  }
}

/**
 * Writes a file through a temp file in the same folder, fsync and rename: all or nothing. `data` may
 * be a sequence of chunks (a large export streamed without one big buffer). The one atomic write of
 * the project: checkpoints' files, exports, caches and reports all go through it.
 */
export function writeAtomic(file: string, data: string | Uint8Array | Iterable<Uint8Array>): void {
  const dir = nodePath.dirname(nodePath.resolve(file));
  const tmp = nodePath.join(dir, `.${nodePath.basename(file)}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
  const chunks: Iterable<Uint8Array> = typeof data === 'string' ? [Buffer.from(data)] : data instanceof Uint8Array ? [data] : data;
  try {
    const fd = fs.openSync(tmp, 'wx', 0o644);
    try {
      for (const bytes of chunks) {
        for (let done = 0; done < bytes.length; ) done += fs.writeSync(fd, bytes, done, bytes.length - done);
      }
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (e) {
    try { fs.unlinkSync(tmp); } catch { /* already gone */ }
    // Name the file the caller asked for, not our temp file.
    const err = e as NodeJS.ErrnoException;
    throw new Error(`cannot write ${file}: ${err.code === 'ENOENT' ? 'its folder does not exist' : err.message}`, { cause: e });
  }
  syncDirectory(dir);
}

/** Fails early, with a clear message, when `file` cannot be written (before any work is done). */
export function checkOutputPath(file: string): void {
  const dir = nodePath.dirname(nodePath.resolve(file));
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new Error(`cannot write ${file}: the folder ${dir} does not exist (create it first)`);
  }
  if (!st.isDirectory()) throw new Error(`cannot write ${file}: ${dir} is not a folder`);
  if (fs.existsSync(file) && fs.statSync(file).isDirectory()) throw new Error(`cannot write ${file}: it is a folder; give a file name inside it`);
}

