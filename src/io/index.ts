// Weight files in and out: PyTorch torch.save files (zip and legacy) and safetensors.

import * as nodePath from 'node:path';
import type { LoadedTensor } from './dtypes.js';
import { formatBytes, raiseHint, resolveMaxLoadBytes } from './budget.js';
import { RandomAccessFile, WeightFileError } from './file.js';
import { PyDict, describe, type PyValue } from './pickle.js';
import { PthFile, TensorRef } from './pth.js';
import { looksLikeZip } from './zip.js';
import { SafetensorsFile, looksLikeSafetensors, writeSafetensors, type SafetensorsEntry, type WritableDType } from './safetensors.js';

export { WeightFileError, checkOutputPath, writeAtomic, syncDirectory } from './file.js';
export { MAX_LOAD_BYTES_ENV, maxLoadBytes } from './budget.js';
export { printable, printableLines } from './printable.js';
export {
  CHECKPOINTS_DIR, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, checkpointName, checkpointsDir, listCheckpointDirs, weightsFileOf,
} from './run_folder.js';
export type { LoadedTensor, StoredDType } from './dtypes.js';
export { DTYPE_SIZES, floatToBf16, floatToHalf, bf16ToFloat, halfToFloat } from './dtypes.js';
export {
  MAX_HEADER_BYTES,
  SafetensorsFile,
  readSafetensors,
  writeSafetensors,
  type SafetensorsEntry,
  type SafetensorsTensorInfo,
  type WritableDType,
} from './safetensors.js';
export { PthFile, TensorRef, type StorageRef } from './pth.js';

/** A state dict as loaded from a file: parameter name → tensor (values as float32, stored dtype kept). */
export type StateDict = Map<string, LoadedTensor>;

export type WeightFileFormat = 'pth-zip' | 'pth-legacy' | 'safetensors';

/** Identify a weight file by its content (the extension is only used to pick the better error message). */
export function detectWeightFileFormat(path: string): WeightFileFormat {
  const f = RandomAccessFile.open(path);
  try {
    const head = f.read(0, Math.min(f.size, 16), 'file header');
    // Safetensors first: its 8-byte header length can start with 0x80 (e.g. 384), a pickle's PROTO byte.
    // The reverse cannot happen: a pickle or zip read as a length is far larger than any file.
    if (looksLikeSafetensors(head, f.size)) return 'safetensors';
    if (looksLikeZip(head)) return 'pth-zip';
    if (head[0] === 0x80) return 'pth-legacy';
    // pickle_protocol=0 or 1: the legacy magic number as a text LONG ('L1195...L') or INT.
    if (/^[LI]-?\d/.test(String.fromCharCode(...head.subarray(0, 8)))) return 'pth-legacy';
    if (nodePath.extname(path).toLowerCase() === '.safetensors') return 'safetensors';
    const hex = [...head.subarray(0, 8)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    return f.fail(
      `not a recognized weight file (first bytes: ${hex || 'none, the file is empty'}). ` +
        'Expected a PyTorch torch.save file (.pt/.pth) or a .safetensors file',
    );
  } finally {
    f.close();
  }
}

/** Keys under which training scripts commonly nest the state dict. */
const WRAPPER_KEYS = ['state_dict', 'model', 'model_state_dict'];

function findStateDict(path: string, root: PyValue): PyDict {
  let d = root;
  for (let depth = 0; depth < 4; depth++) {
    if (!(d instanceof PyDict)) {
      throw new WeightFileError(path, `the saved object is a ${describe(d)}, not a state dict (expected a dict of tensors)`);
    }
    let hasTensor = false;
    for (const v of d.map.values()) {
      if (v instanceof TensorRef) {
        hasTensor = true;
        break;
      }
    }
    if (hasTensor) return d;
    const inner = WRAPPER_KEYS.map((k) => d instanceof PyDict && d.map.get(k)).find((v) => v instanceof PyDict);
    if (!(inner instanceof PyDict)) break;
    d = inner;
  }
  if (d instanceof PyDict && d.map.size === 0) return d;
  const keys =
    d instanceof PyDict
      ? [...d.map.keys()]
          .slice(0, 10)
          .map((k) => (typeof k === 'string' ? `'${k}'` : k !== null && typeof k === 'object' ? describe(k) : String(k)))
          .join(', ')
      : describe(d);
  throw new WeightFileError(
    path,
    `no state dict found: the top-level keys are [${keys}] and none holds tensors. ` +
      `Expected a dict of tensors or a checkpoint with one under ${WRAPPER_KEYS.map((k) => `'${k}'`).join(' / ')}`,
  );
}

/** Prefixes wrappers put on every key: DataParallel/DistributedDataParallel, and torch.compile. */
const WRAPPER_PREFIXES = ['module.', '_orig_mod.'];

/** Drop wrapper prefixes (`module.`, `_orig_mod.`, in any nesting) when every key has them. */
function stripPrefixes(names: readonly string[]): string[] {
  let out = names.slice();
  for (;;) {
    if (out.length === 0) return out;
    const prefix = WRAPPER_PREFIXES.find((p) => out.every((k) => k.startsWith(p) && k.length > p.length));
    if (prefix === undefined) return out;
    out = out.map((k) => k.slice(prefix.length));
  }
}

export interface LoadOptions {
  /**
   * The most bytes loading the file may allocate: every tensor as float32 (views and aliases counted
   * in full) plus the largest read buffer. Checked before anything is read. Default: the
   * RESIDUAL_MAX_LOAD_BYTES environment variable, else 2 GiB or a quarter of the machine's memory.
   */
  maxBytes?: number;
}

function checkBudget(path: string, count: number, cost: { output: number; transient: number; expanded?: number; aliased?: number }, cap: number): void {
  const total = cost.output + cost.transient;
  if (total <= cap) return;
  const why = [
    cost.expanded ? `${cost.expanded} expanded (stride-0) view${cost.expanded === 1 ? '' : 's'}` : '',
    cost.aliased ? `${cost.aliased} tensor${cost.aliased === 1 ? '' : 's'} sharing another's storage` : '',
  ].filter(Boolean).join(' and ');
  throw new WeightFileError(path,
    `its ${count} tensor${count === 1 ? '' : 's'} would take ${formatBytes(total)} in memory once loaded as float32${why ? ` (counting ${why}, each copied in full)` : ''}, ` +
    `over the ${formatBytes(cap)} limit for one weight file; refusing before reading any data; ${raiseHint()}`);
}

/** A state dict file opened for reading one tensor at a time (memory: one tensor plus one storage). */
export interface StateDictReader {
  readonly path: string;
  readonly format: WeightFileFormat;
  /** Parameter names after unwrapping, in file order. */
  readonly names: readonly string[];
  /** Stored dtype and shape of a tensor, without reading its data. */
  info(name: string): { dtype: string; shape: number[] };
  read(name: string): LoadedTensor;
  close(): void;
}

/**
 * Open a PyTorch file (torch.save, zip or legacy format) or a safetensors file, chosen by content,
 * and index its state dict without reading tensor data. Unwraps {'state_dict': ...} / {'model': ...} /
 * {'model_state_dict': ...} checkpoints and strips the DataParallel `module.` (and torch.compile
 * `_orig_mod.`) prefix. Pickles are read by a restricted interpreter that never executes anything;
 * files naming other Python globals are refused with a WeightFileError.
 */
export function openStateDictFile(path: string, opts: LoadOptions = {}): StateDictReader {
  const cap = resolveMaxLoadBytes(opts.maxBytes, 'openStateDictFile');
  const format = detectWeightFileFormat(path);
  const unknown = (name: string): never => {
    throw new WeightFileError(path, `no tensor named '${name}' in the state dict`);
  };
  if (format === 'safetensors') {
    const f = SafetensorsFile.open(path);
    // Every byte is backed by the file, but a float32 result is up to 4x an int8 tensor's bytes.
    let output = 0, transient = 0;
    for (const t of f.tensors.values()) {
      const count = t.shape.reduce((a, b) => a * b, 1);
      output += count * 4;
      if (t.dtype !== 'F32') transient = Math.max(transient, t.end - t.begin);
    }
    try {
      checkBudget(path, f.tensors.size, { output, transient }, cap);
    } catch (e) {
      f.close();
      throw e;
    }
    const raw = [...f.tensors.keys()];
    const names = stripPrefixes(raw);
    const byName = new Map(names.map((n, i) => [n, raw[i]!]));
    return {
      path,
      format,
      names,
      info: (name) => {
        const t = f.tensors.get(byName.get(name) ?? unknown(name))!;
        return { dtype: t.dtype, shape: t.shape.slice() };
      },
      read: (name) => f.read(byName.get(name) ?? unknown(name)),
      close: () => f.close(),
    };
  }
  const f = PthFile.open(path, { maxBytes: cap });
  try {
    const sd = findStateDict(path, f.root);
    const raw: string[] = [];
    const refs: TensorRef[] = [];
    for (const [k, v] of sd.map) {
      if (typeof k !== 'string') {
        const label = k !== null && typeof k === 'object' ? describe(k) : String(k);
        throw new WeightFileError(path, `state dict key ${label} is not a string; this is not a module's state dict`);
      }
      if (!(v instanceof TensorRef)) {
        throw new WeightFileError(
          path,
          `state dict entry '${k}' is a ${describe(v)}, not a tensor; re-save with only tensors (torch.save(model.state_dict(), path))`,
        );
      }
      raw.push(k);
      refs.push(v);
    }
    checkBudget(path, refs.length, f.loadCost(refs, raw), cap);
    const names = stripPrefixes(raw);
    const byName = new Map(names.map((n, i) => [n, i]));
    const index = (name: string): number => byName.get(name) ?? unknown(name);
    return {
      path,
      format,
      names,
      info: (name) => {
        const t = refs[index(name)]!;
        return { dtype: t.storage.dtype, shape: t.shape.slice() };
      },
      read: (name) => {
        const i = index(name);
        return f.materialize(refs[i]!, raw[i]!);
      },
      close: () => f.close(),
    };
  } catch (e) {
    f.close();
    throw e;
  }
}

/** Load a whole state dict (see openStateDictFile for what is accepted). */
export function loadStateDictFile(path: string, opts: LoadOptions = {}): StateDict {
  const r = openStateDictFile(path, opts);
  try {
    const out: StateDict = new Map();
    for (const name of r.names) out.set(name, r.read(name));
    return out;
  } finally {
    r.close();
  }
}

/**
 * Save a state dict as safetensors (atomically). I64/F16/BF16 tensors keep their dtype (so PyTorch
 * sees num_batches_tracked as int64); everything else is written as F32.
 */
export function saveStateDictFile(path: string, sd: ReadonlyMap<string, LoadedTensor>, metadata?: Record<string, string>): void {
  const entries = new Map<string, SafetensorsEntry>();
  for (const [k, t] of sd) {
    const dtype: WritableDType = t.dtype === 'I64' || t.dtype === 'F16' || t.dtype === 'BF16' ? t.dtype : 'F32';
    entries.set(k, { dtype, shape: t.shape, data: t.data });
  }
  writeSafetensors(path, entries, metadata);
}
