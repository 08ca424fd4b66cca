// Reading PyTorch torch.save files without Python: the zip format (default since PyTorch 1.6) and
// the legacy format (_use_new_zipfile_serialization=False, and files written by PyTorch < 1.6).
//
// The pickle inside is run by the restricted VM in pickle.ts with a whitelist of globals implemented
// here in TypeScript; nothing named by the file is ever executed. Tensors come back as lazy
// references (TensorRef) so that only the tensors a caller asks for are read, one storage at a time.

import * as os from 'node:os';
import { DTYPE_SIZES, decodeInto, shapeNumel, type LoadedTensor, type StoredDType } from './dtypes.js';
import { formatBytes, raiseHint, resolveMaxLoadBytes } from './budget.js';
import { FileStream, RandomAccessFile } from './file.js';
import {
  MemorySource,
  PyCallable,
  PyClassRef,
  PyDict,
  PyTuple,
  describe,
  unpickle,
  type ByteSource,
  type PyValue,
} from './pickle.js';
import { ZipReader, looksLikeZip, type ZipEntry } from './zip.js';

/** torch.<X>Storage → the element type it holds. */
const STORAGE_DTYPES: Readonly<Record<string, StoredDType>> = {
  DoubleStorage: 'F64',
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
};

/** Largest data.pkl we accept. A state dict's pickle is kilobytes; this only bounds hostile input. */
const MAX_PICKLE_BYTES = 256 * 1024 * 1024;

/** Largest tensor we build from a smaller storage (stride-0 expanded views): 64 MB of float32. */
const MAX_EXPANDED_ELEMS = 1 << 24;

const littleEndianHost = os.endianness() === 'LE';

const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL = 1001;

class StorageClassRef extends PyClassRef {
  constructor(
    qualname: string,
    readonly dtype: StoredDType,
  ) {
    super(qualname);
  }
}

/** One storage a file refers to. `numel` counts elements of `dtype`. */
export interface StorageRef {
  readonly kind: 'storage';
  readonly key: string;
  readonly dtype: StoredDType;
  readonly numel: number;
  readonly location: string;
  /** Legacy files only: this storage is a view of `key` starting `viewOffset` elements in. */
  readonly viewOffset: number;
}

/** A tensor found in the pickle; its data is read only by PthFile.materialize. */
export class TensorRef {
  readonly kind = 'tensor';
  constructor(
    readonly storage: StorageRef,
    readonly storageOffset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
  setState(_state: PyValue): void {
    // Tensor subclasses (Parameter) carry Python attributes here; they are not weights.
  }
}

export function isTensorRef(v: unknown): v is TensorRef {
  return v instanceof TensorRef;
}

function intList(v: PyValue, what: string, fail: (m: string) => never): number[] {
  const items = v instanceof PyTuple ? v.items : Array.isArray(v) ? v : null;
  if (!items) fail(`${what} is a ${describe(v)}, expected a tuple of integers; unsupported or corrupt file`);
  return items.map((x) => {
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) {
      fail(`${what} contains ${String(x)}, expected non-negative integers; unsupported or corrupt file`);
    }
    return x;
  });
}

function rejectGlobal(module: string, name: string, fail: (m: string) => never): never {
  const q = `${module}.${name}`;
  let hint: string;
  if (module.startsWith('__torch__')) {
    hint =
      'this is a TorchScript archive (torch.jit.save), not a torch.save file. In Python: ' +
      "torch.save(torch.jit.load(path).state_dict(), 'weights.pt')";
  } else if (/^(torch\.nn|torchvision|timm|__main__)(\.|$)/.test(module)) {
    hint =
      'the file holds a whole pickled model object, not a state dict. In Python: ' +
      "torch.save(torch.load(path).state_dict(), 'weights.pt') (or save it as safetensors)";
  } else {
    hint =
      'only tensors, storages, OrderedDict and plain containers are allowed, because a pickle can run ' +
      'arbitrary code through any other global (nothing was executed). If you trust the file, load it in ' +
      "Python and re-save only the weights: torch.save(model.state_dict(), 'weights.pt') or safetensors";
  }
  fail(`refusing to load Python global '${q}': ${hint}`);
}

/** The whitelist. Everything here is implemented in TypeScript and only builds data. */
function makeFindGlobal(fail: (m: string) => never): (module: string, name: string) => PyValue {
  const rebuildTensor = (args: PyValue[], fn: string): TensorRef => {
    if (args.length < 4) fail(`${fn} called with ${args.length} arguments, expected at least 4; unsupported or corrupt file`);
    const storage = args[0];
    if (!(storage !== null && typeof storage === 'object' && 'kind' in storage && storage.kind === 'storage')) {
      fail(`${fn}: first argument is a ${describe(storage ?? null)}, not a storage; unsupported or corrupt file`);
    }
    const offset = args[1];
    if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) {
      fail(`${fn}: storage offset ${String(offset)} is not a non-negative integer; the file is corrupt`);
    }
    const shape = intList(args[2]!, `${fn} size`, fail);
    const stride = intList(args[3]!, `${fn} stride`, fail);
    if (shape.length !== stride.length) fail(`${fn}: size has ${shape.length} dims but stride has ${stride.length}; the file is corrupt`);
    return new TensorRef(storage as StorageRef, offset, shape, stride);
  };
  const asTensor = (v: PyValue | undefined, fn: string): TensorRef => {
    if (!(v instanceof TensorRef)) fail(`${fn}: expected a tensor, got a ${describe(v ?? null)}; unsupported file`);
    return v;
  };
  const table: Record<string, PyValue> = {
    'collections.OrderedDict': new PyCallable('collections.OrderedDict', (args) => {
      const d = new PyDict(true);
      const init = args[0];
      if (args.length > 1) fail('collections.OrderedDict called with more than one argument; unsupported file');
      if (init !== undefined) {
        const items = Array.isArray(init) ? init : init instanceof PyTuple ? init.items : null;
        if (!items) fail(`collections.OrderedDict called with a ${describe(init)}; unsupported file`);
        for (const it of items) {
          if (!(it instanceof PyTuple) || it.items.length !== 2) fail('collections.OrderedDict item is not a pair; unsupported file');
          d.map.set(it.items[0]!, it.items[1]!);
        }
      }
      return d;
    }),
    'torch._utils._rebuild_tensor': new PyCallable('torch._utils._rebuild_tensor', (a) => rebuildTensor(a, '_rebuild_tensor')),
    'torch._utils._rebuild_tensor_v2': new PyCallable('torch._utils._rebuild_tensor_v2', (a) => rebuildTensor(a, '_rebuild_tensor_v2')),
    'torch._utils._rebuild_parameter': new PyCallable('torch._utils._rebuild_parameter', (a) => asTensor(a[0], '_rebuild_parameter')),
    'torch._utils._rebuild_parameter_with_state': new PyCallable('torch._utils._rebuild_parameter_with_state', (a) =>
      asTensor(a[0], '_rebuild_parameter_with_state'),
    ),
    'torch._tensor._rebuild_from_type_v2': new PyCallable('torch._tensor._rebuild_from_type_v2', (a) => {
      const [fn, type, args] = a;
      if (!(fn instanceof PyCallable) || !(type instanceof PyClassRef) || !(args instanceof PyTuple)) {
        fail('torch._tensor._rebuild_from_type_v2 called with unexpected arguments; unsupported file');
      }
      return asTensor(fn.call(args.items), '_rebuild_from_type_v2');
    }),
    'torch.Tensor': new PyClassRef('torch.Tensor'),
    'torch.nn.parameter.Parameter': new PyClassRef('torch.nn.parameter.Parameter'),
    'torch.Size': new PyCallable('torch.Size', (a) => {
      const v = a[0];
      if (!(v instanceof PyTuple || Array.isArray(v))) fail('torch.Size called with a non-sequence; unsupported file');
      return new PyTuple(v instanceof PyTuple ? v.items : v);
    }),
    // Protocol-2 pickles encode Python 3 bytes as _codecs.encode(str, 'latin1').
    '_codecs.encode': new PyCallable('_codecs.encode', (a) => {
      const [s, enc] = a;
      if (typeof s !== 'string' || (enc !== 'latin1' && enc !== 'latin-1')) fail('_codecs.encode used for something other than latin1 bytes; refused');
      const b = new Uint8Array(s.length);
      for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i) & 0xff;
      return b;
    }),
  };
  for (const [cls, dt] of Object.entries(STORAGE_DTYPES)) table[`torch.${cls}`] = new StorageClassRef(`torch.${cls}`, dt);
  return (module, name) => {
    const v = table[`${module}.${name}`];
    if (v === undefined) rejectGlobal(module, name, fail);
    return v;
  };
}

/**
 * Protocol 0 (pickle_protocol=0) writes a persistent id as the text of its tuple, e.g.
 * "('storage', <class 'torch.FloatStorage'>, '0', 'cpu', 6)" (legacy files add a view, or None).
 * Parses exactly that shape of Python repr: tuples, quoted strings, integers, None and
 * <class 'module.Name'>, the class resolved through the same whitelist as GLOBAL.
 */
function pidFromText(text: string, findGlobal: (module: string, name: string) => PyValue, fail: (m: string) => never): PyValue {
  let i = 0;
  const bad = (): never => fail(`persistent id ${JSON.stringify(text.slice(0, 120))} is not a storage tuple; unsupported or corrupt file`);
  const ws = () => { while (text[i] === ' ') i++; };
  const value = (depth: number): PyValue => {
    ws();
    const c = text[i];
    if (c === '(') {
      if (depth > 4) bad();
      i++;
      const items: PyValue[] = [];
      for (;;) {
        ws();
        if (text[i] === ')') { i++; break; }
        items.push(value(depth + 1));
        ws();
        if (text[i] === ',') i++;
        else if (text[i] !== ')') bad();
      }
      return new PyTuple(items);
    }
    if (c === "'" || c === '"') {
      const end = text.indexOf(c, i + 1);
      if (end < 0) bad();
      const s = text.slice(i + 1, end);
      if (s.includes('\\')) bad(); // storage keys and locations never need escapes
      i = end + 1;
      return s;
    }
    const cls = /^<class '([\w.]+)\.(\w+)'>/.exec(text.slice(i));
    if (cls) {
      i += cls[0].length;
      return findGlobal(cls[1]!, cls[2]!);
    }
    const num = /^-?\d{1,15}/.exec(text.slice(i));
    if (num) {
      i += num[0].length;
      return Number(num[0]);
    }
    if (text.startsWith('None', i)) {
      i += 4;
      return null;
    }
    return bad();
  };
  const v = value(0);
  ws();
  if (i !== text.length) bad();
  return v;
}

function parseStoragePid(
  pid: PyValue,
  legacy: boolean,
  fail: (m: string) => never,
): { key: string; dtype: StoredDType; numel: number; location: string; view: { key: string; offset: number; numel: number } | null } {
  if (!(pid instanceof PyTuple) || pid.items.length < 5 || pid.items[0] !== 'storage') {
    fail(`unsupported persistent id ${describe(pid)} in the pickle (expected a ('storage', ...) tuple); not a tensor file`);
  }
  const [, type, key, location, numel, view] = pid.items;
  if (!(type instanceof StorageClassRef)) {
    fail(`storage of type ${describe(type ?? null)} is not supported (supported: ${Object.keys(STORAGE_DTYPES).join(', ')})`);
  }
  if (typeof key !== 'string' || key.length === 0 || key.length > 1024) fail('storage key is not a string; the file is corrupt');
  if (typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) fail(`storage ${key} has a bad element count; the file is corrupt`);
  let viewInfo = null;
  if (legacy && view !== undefined && view !== null) {
    if (!(view instanceof PyTuple) || view.items.length !== 3) fail(`storage ${key} has malformed view metadata; the file is corrupt`);
    const [vk, vo, vn] = view.items;
    if (typeof vk !== 'string' || typeof vo !== 'number' || typeof vn !== 'number' || !Number.isSafeInteger(vo) || !Number.isSafeInteger(vn) || vo < 0 || vn < 0) {
      fail(`storage ${key} has malformed view metadata; the file is corrupt`);
    }
    viewInfo = { key: vk, offset: vo, numel: vn };
  }
  return { key, dtype: type.dtype, numel, location: typeof location === 'string' ? location : 'cpu', view: viewInfo };
}

/** Where a storage's bytes are in the file. */
interface StorageLocation {
  dtype: StoredDType;
  numel: number;
  /** zip: the entry; legacy: absolute offset of element 0. */
  entry?: ZipEntry;
  offset?: number;
}

/** A parsed torch.save file. Call close() when done. */
export class PthFile {
  readonly format: 'zip' | 'legacy';
  readonly root: PyValue;
  private readonly file: RandomAccessFile;
  private readonly zip: ZipReader | null;
  private readonly locations: Map<string, StorageLocation>;
  private readonly bigEndian: boolean;
  private cache: { key: string; bytes: Uint8Array } | null = null;
  /** The most bytes one read may allocate (see budget.ts). */
  maxBytes = 0;

  private constructor(
    file: RandomAccessFile,
    format: 'zip' | 'legacy',
    root: PyValue,
    zip: ZipReader | null,
    locations: Map<string, StorageLocation>,
    bigEndian: boolean,
  ) {
    this.file = file;
    this.format = format;
    this.root = root;
    this.zip = zip;
    this.locations = locations;
    this.bigEndian = bigEndian;
  }

  get path(): string {
    return this.file.path;
  }

  /** `maxBytes`: the most one read may allocate (default RESIDUAL_MAX_LOAD_BYTES, see budget.ts). */
  static open(path: string, opts: { maxBytes?: number } = {}): PthFile {
    const maxBytes = resolveMaxLoadBytes(opts.maxBytes, 'PthFile.open');
    const file = RandomAccessFile.open(path);
    try {
      const head = file.read(0, Math.min(file.size, 512), 'file header');
      const f = looksLikeZip(head) ? PthFile.openZip(file, maxBytes) : isLegacyPickle(head) ? PthFile.openLegacy(file) : null;
      if (f) {
        f.maxBytes = maxBytes;
        return f;
      }
      if (head.length >= 262 && String.fromCharCode(...head.subarray(257, 262)) === 'ustar') {
        file.fail('this is a tar-format checkpoint from PyTorch < 0.4; re-save it with a newer PyTorch (torch.save(torch.load(path), new_path))');
      }
      return file.fail('not a PyTorch file (neither a zip archive nor a pickle stream)');
    } catch (e) {
      file.close();
      throw e;
    }
  }

  private static openZip(file: RandomAccessFile, maxBytes: number): PthFile {
    const fail: (m: string) => never = (m) => file.fail(m);
    const zip = ZipReader.open(file);
    // The archive's top-level folder is named after the file torch.save wrote (e.g. "archive/").
    let prefix: string | null = null;
    for (const name of zip.entries.keys()) {
      const m = /^([^/]*\/)?data\.pkl$/.exec(name);
      if (m) {
        prefix = m[1] ?? '';
        break;
      }
    }
    if (prefix === null) {
      if ([...zip.entries.keys()].some((n) => n.endsWith('constants.pkl') || n.includes('/code/'))) {
        fail("this is a TorchScript archive without data.pkl; in Python: torch.save(torch.jit.load(path).state_dict(), 'weights.pt')");
      }
      fail('zip archive has no data.pkl, so it is not a torch.save file');
    }
    let bigEndian = false;
    const bo = zip.entries.get(`${prefix}byteorder`);
    if (bo) {
      if (bo.size > 64) fail(`byteorder entry is ${bo.size} bytes, not 'little' or 'big'; the file is corrupt`);
      const s = new TextDecoder().decode(zip.read(bo)).trim();
      if (s === 'big') bigEndian = true;
      else if (s !== 'little') fail(`unknown byteorder '${s.slice(0, 20)}' in the archive`);
    }
    const pklEntry = zip.entries.get(`${prefix}data.pkl`)!;
    const pklLimit = Math.min(MAX_PICKLE_BYTES, maxBytes);
    if (pklEntry.size > pklLimit) fail(`data.pkl is ${pklEntry.size} bytes; refusing more than ${pklLimit} (not a state dict)`);
    const pkl = zip.read(pklEntry);
    const locations = new Map<string, StorageLocation>();
    const storages = new Map<string, StorageRef>();
    const findGlobal = makeFindGlobal(fail);
    const root = unpickle(new MemorySource(pkl, fail), {
      fail,
      findGlobal,
      persistentLoad: (pid) => {
        const p = parseStoragePid(typeof pid === 'string' ? pidFromText(pid, findGlobal, fail) : pid, false, fail);
        const known = storages.get(p.key);
        if (known) {
          if (known.dtype !== p.dtype) fail(`storage ${p.key} is used with two dtypes (${known.dtype}, ${p.dtype}); unsupported`);
          return known;
        }
        const entryName = `${prefix}data/${p.key}`;
        const entry = zip.entries.get(entryName);
        if (!entry) {
          fail(`tensor storage '${p.key}' refers to archive entry '${entryName}', which is not in the archive; the file is corrupt or truncated`);
        }
        const need = p.numel * DTYPE_SIZES[p.dtype];
        if (entry.size < need) {
          fail(`storage '${p.key}' declares ${p.numel} ${p.dtype} elements (${need} bytes) but its archive entry holds ${entry.size} bytes; the file is corrupt`);
        }
        locations.set(p.key, { dtype: p.dtype, numel: p.numel, entry });
        const ref: StorageRef = { kind: 'storage', key: p.key, dtype: p.dtype, numel: p.numel, location: p.location, viewOffset: 0 };
        storages.set(p.key, ref);
        return ref;
      },
    });
    return new PthFile(file, 'zip', root, zip, locations, bigEndian);
  }

  private static openLegacy(file: RandomAccessFile): PthFile {
    const fail: (m: string) => never = (m) => file.fail(m);
    const stream = new FileStream(file, 0);
    const src: ByteSource = stream;
    const plainOpts = { fail, findGlobal: makeFindGlobal(fail) };
    const magic = unpickle(src, plainOpts);
    if (magic !== LEGACY_MAGIC) {
      fail('is a pickle but not a PyTorch checkpoint (no torch.save magic number); only torch.save files are supported');
    }
    const protocol = unpickle(src, plainOpts);
    if (protocol !== LEGACY_PROTOCOL) fail(`legacy torch.save protocol ${String(protocol)} is not supported (expected ${LEGACY_PROTOCOL})`);
    const sysInfo = unpickle(src, plainOpts);
    let bigEndian = false;
    if (sysInfo instanceof PyDict && sysInfo.map.get('little_endian') === false) bigEndian = true;
    // Roots are the storages whose bytes follow; views (very old files) point into a root.
    const roots = new Map<string, { dtype: StoredDType; numel: number }>();
    const storages = new Map<string, StorageRef>();
    const root = unpickle(src, {
      ...plainOpts,
      persistentLoad: (pid) => {
        const p = parseStoragePid(typeof pid === 'string' ? pidFromText(pid, plainOpts.findGlobal, fail) : pid, true, fail);
        const known = roots.get(p.key);
        if (known && known.dtype !== p.dtype) fail(`storage ${p.key} is used with two dtypes (${known.dtype}, ${p.dtype}); unsupported`);
        if (!known) roots.set(p.key, { dtype: p.dtype, numel: p.numel });
        if (p.view) {
          const id = `${p.key}@${p.view.key}`;
          const v = storages.get(id);
          if (v) return v;
          if (p.view.offset + p.view.numel > p.numel) fail(`storage view ${p.view.key} lies outside storage ${p.key}; the file is corrupt`);
          const ref: StorageRef = { kind: 'storage', key: p.key, dtype: p.dtype, numel: p.view.numel, location: p.location, viewOffset: p.view.offset };
          storages.set(id, ref);
          return ref;
        }
        const existing = storages.get(p.key);
        if (existing) return existing;
        const ref: StorageRef = { kind: 'storage', key: p.key, dtype: p.dtype, numel: p.numel, location: p.location, viewOffset: 0 };
        storages.set(p.key, ref);
        return ref;
      },
    });
    const keys = unpickle(src, plainOpts);
    if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string')) fail('legacy storage key list is malformed; the file is corrupt');
    const locations = new Map<string, StorageLocation>();
    let pos = stream.pos;
    for (const key of keys as string[]) {
      const r = roots.get(key);
      if (!r) fail(`legacy storage list names '${key}', which no tensor uses; the file is corrupt`);
      const countBytes = file.read(pos, 8, `size of storage ${key}`);
      const dv = new DataView(countBytes.buffer);
      const count = dv.getUint32(bigEndian ? 4 : 0, !bigEndian) + dv.getUint32(bigEndian ? 0 : 4, !bigEndian) * 4294967296;
      const elem = DTYPE_SIZES[r.dtype];
      if (!Number.isSafeInteger(count) || pos + 8 + count * elem > file.size) {
        fail(`storage ${key} declares ${count} elements (bytes ${pos + 8}..${pos + 8 + count * elem}) but the file has only ${file.size} bytes; the file is truncated`);
      }
      if (count < r.numel) fail(`storage ${key} holds ${count} elements but tensors expect ${r.numel}; the file is corrupt`);
      locations.set(key, { dtype: r.dtype, numel: count, offset: pos + 8 });
      pos += 8 + count * elem;
    }
    for (const k of roots.keys()) {
      if (!locations.has(k)) fail(`storage '${k}' is used by a tensor but its data is not in the file; the file is corrupt or truncated`);
    }
    return new PthFile(file, 'legacy', root, null, locations, bigEndian);
  }

  private storageBytes(key: string): Uint8Array {
    if (this.cache?.key === key) return this.cache.bytes;
    this.cache = null; // let the previous storage go before allocating the next
    const loc = this.locations.get(key);
    if (!loc) this.file.fail(`storage '${key}' has no data in the file`);
    const size = loc.entry ? loc.entry.size : loc.numel * DTYPE_SIZES[loc.dtype];
    if (size > this.maxBytes) {
      this.file.fail(`storage '${key}' is ${formatBytes(size)} once read, over the ${formatBytes(this.maxBytes)} limit for one weight file; ${raiseHint()}`);
    }
    let bytes: Uint8Array;
    if (loc.entry) bytes = this.zip!.read(loc.entry, this.maxBytes);
    else bytes = this.file.read(loc.offset!, loc.numel * DTYPE_SIZES[loc.dtype], `storage ${key}`);
    this.cache = { key, bytes };
    return bytes;
  }

  /** Read a tensor's values (gathering strided views) as float32. */
  materialize(t: TensorRef, name = 'tensor'): LoadedTensor {
    const fail: (m: string) => never = (m) => this.file.fail(`${name}: ${m}`);
    const st = t.storage;
    const { numel, maxIndex } = this.checkView(t, name);
    if (numel === 0) return { dtype: st.dtype, shape: t.shape.slice(), data: new Float32Array(0) };

    if (numel * 4 > this.maxBytes) {
      fail(`has ${numel} elements (${formatBytes(numel * 4)} as float32), over the ${formatBytes(this.maxBytes)} limit for one weight file; ${raiseHint()}`);
    }
    const out = new Float32Array(numel);
    const result = { dtype: st.dtype, shape: t.shape.slice(), data: out };
    const elem = DTYPE_SIZES[st.dtype];
    const first = st.viewOffset + t.storageOffset;
    if (this.readsDirectly(t)) {
      // Fast path: read straight into the result (one pass over memory instead of two).
      const loc = this.locations.get(st.key);
      const target = new Uint8Array(out.buffer);
      if (loc?.entry && this.zip!.readStoredInto(loc.entry, target)) return result;
      if (loc?.offset !== undefined) {
        this.file.readInto(loc.offset + first * 4, target, `${name}: storage ${st.key}`);
        return result;
      }
    }
    const bytes = this.storageBytes(st.key);
    const span = maxIndex - t.storageOffset + 1;
    const slice = bytes.subarray(first * elem, (first + span) * elem);
    if (slice.length !== span * elem) fail('storage is shorter than its declared size; the file is corrupt');
    if (isContiguous(t.shape, t.stride)) {
      decodeInto(st.dtype, slice, numel, out, 0, this.bigEndian);
      return result;
    }
    const tmp = new Float32Array(span);
    decodeInto(st.dtype, slice, span, tmp, 0, this.bigEndian);
    gather(tmp, t.shape, t.stride, out);
    return result;
  }

  /**
   * Checks a view against its storage (whose size the file backs) and the expanded-view cap, from
   * the metadata alone; materialize() and the load budget call it before allocating anything.
   */
  checkView(t: TensorRef, name = 'tensor'): { numel: number; maxIndex: number } {
    const fail: (m: string) => never = (m) => this.file.fail(`${name}: ${m}`);
    const st = t.storage;
    const numel = shapeNumel(t.shape, fail);
    if (numel === 0) return { numel, maxIndex: -1 };
    let maxIndex = t.storageOffset;
    for (let d = 0; d < t.shape.length; d++) maxIndex += (t.shape[d]! - 1) * t.stride[d]!;
    if (!Number.isSafeInteger(maxIndex) || maxIndex >= st.numel) {
      fail(
        `view (offset ${t.storageOffset}, size [${t.shape.join(', ')}], stride [${t.stride.join(', ')}]) reaches element ${maxIndex} ` +
          `of a storage with ${st.numel} elements; the file is corrupt`,
      );
    }
    // Expanded views (stride 0) can be far larger than their storage; cap what a small file can make us allocate.
    if (numel > st.numel && numel > MAX_EXPANDED_ELEMS) {
      fail(
        `is an expanded view of ${numel} elements over a storage of ${st.numel}; refusing more than ${MAX_EXPANDED_ELEMS} ` +
          'elements for such views. Re-save it with tensor.contiguous()',
      );
    }
    return { numel, maxIndex };
  }

  /** True when materialize() reads `t` straight into its result, with no storage buffer in between. */
  private readsDirectly(t: TensorRef): boolean {
    const st = t.storage;
    if (st.dtype !== 'F32' || this.bigEndian || !littleEndianHost || !isContiguous(t.shape, t.stride)) return false;
    const loc = this.locations.get(st.key);
    if (loc?.offset !== undefined) return true;
    const e = loc?.entry;
    const numel = t.shape.reduce((a, b) => a * b, 1);
    return e !== undefined && st.viewOffset + t.storageOffset === 0 && numel * 4 === e.size && e.method === 0 && !(e.flags & 1) && e.compressedSize === e.size;
  }

  /**
   * What materialising every tensor in `refs` costs, computed from the metadata alone: the float32
   * results (an expanded view or an alias of a shared storage counts in full, as it is copied) plus
   * the largest storage buffer and gather scratch held while reading one of them.
   */
  loadCost(refs: readonly TensorRef[], names?: readonly string[]): { output: number; transient: number; expanded: number; aliased: number } {
    let output = 0, transient = 0, expanded = 0, aliased = 0;
    const users = new Map<string, number>();
    for (const [i, t] of refs.entries()) {
      const { numel } = this.checkView(t, names?.[i]);
      output += numel * 4;
      if (numel > t.storage.numel) expanded++;
      const n = (users.get(t.storage.key) ?? 0) + 1;
      users.set(t.storage.key, n);
      if (n > 1) aliased++;
      if (numel === 0 || this.readsDirectly(t)) continue;
      const loc = this.locations.get(t.storage.key);
      const storage = loc?.entry ? loc.entry.size : loc ? loc.numel * DTYPE_SIZES[loc.dtype] : 0;
      let span = 1;
      for (let d = 0; d < t.shape.length; d++) span += (t.shape[d]! - 1) * t.stride[d]!;
      transient = Math.max(transient, storage + (isContiguous(t.shape, t.stride) ? 0 : span * 4));
    }
    return { output, transient, expanded, aliased };
  }

  close(): void {
    this.cache = null;
    this.file.close();
  }
}

/**
 * A pickle stream as torch.save's legacy format starts it: protocol 2+ begins with PROTO (0x80);
 * protocols 0 and 1 (pickle_protocol=0/1) with the magic number as a text LONG ('L') or INT ('I').
 */
function isLegacyPickle(head: Uint8Array): boolean {
  if (head[0] === 0x80) return true;
  const text = String.fromCharCode(...head.subarray(0, 8));
  return /^[LI]-?\d/.test(text);
}

function isContiguous(shape: readonly number[], stride: readonly number[]): boolean {
  let expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expected) return false;
    expected *= shape[d]!;
  }
  return true;
}

/** Row-major copy of a strided view whose first element is src[0]. */
function gather(src: Float32Array, shape: readonly number[], stride: readonly number[], out: Float32Array): void {
  const nd = shape.length;
  if (nd === 0) {
    out[0] = src[0]!;
    return;
  }
  const last = nd - 1;
  const n0 = shape[last]!;
  const s0 = stride[last]!;
  const idx = new Array<number>(nd).fill(0);
  let base = 0;
  let o = 0;
  for (;;) {
    for (let j = 0; j < n0; j++) out[o++] = src[base + j * s0]!;
    let d = last - 1;
    for (; d >= 0; d--) {
      idx[d]!++;
      base += stride[d]!;
      if (idx[d]! < shape[d]!) break;
      base -= stride[d]! * shape[d]!;
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}
