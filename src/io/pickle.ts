// A restricted Python pickle interpreter: just enough to read what torch.save writes.
//
// Safety model: this VM can only *build data*. It has no way to call anything but the callables the
// caller hands out through `findGlobal`, and those are TypeScript functions that build plain values.
// Any GLOBAL / STACK_GLOBAL / INST naming something the caller does not allow is rejected before any
// later opcode runs, and the opcodes that instantiate arbitrary classes (OBJ, NEWOBJ, NEWOBJ_EX, EXT*)
// are refused outright. Every length read from the stream is checked against what is left of the
// stream before anything is allocated.

const MAX_LINE = 1 << 16;

// Bounds on what a pickle can make the VM hold. A state dict's pickle needs a stack of tens of
// values, a memo of a few per tensor and marks nested a few deep; these limits are thousands of times
// that, yet far below what kills V8 (an array past ~10^8 elements is a fatal error, not an exception:
// a 175 KB zip holding 180M NONE opcodes used to crash every command that loads weights).
/** Values on the VM stack at once. */
export const MAX_PICKLE_STACK = 1 << 22;
/** Memo entries. */
export const MAX_PICKLE_MEMO = 1 << 22;
/** MARKs open at once (container nesting depth). */
export const MAX_PICKLE_MARKS = 1 << 16;
/** Values the pickle may create or insert into containers in total (bounds list/dict growth). */
export const MAX_PICKLE_VALUES = 1 << 25;

/** Where the VM reads pickle bytes from. */
export interface ByteSource {
  readByte(): number;
  readBytes(n: number, what: string): Uint8Array;
  /** Bytes left; lengths declared in the stream are checked against this before reading. */
  readonly remaining: number;
  /** Absolute offset, for error messages. */
  readonly pos: number;
}

export class MemorySource implements ByteSource {
  pos = 0;
  constructor(
    private readonly bytes: Uint8Array,
    private readonly onError: (msg: string) => never,
  ) {}
  get remaining(): number {
    return this.bytes.length - this.pos;
  }
  readByte(): number {
    if (this.pos >= this.bytes.length) this.onError(`pickle data ends unexpectedly at byte ${this.pos}; the file is truncated or corrupt`);
    return this.bytes[this.pos++]!;
  }
  readBytes(n: number, what: string): Uint8Array {
    if (n > this.remaining) {
      this.onError(`${what}: declares ${n} bytes at byte ${this.pos} of the pickle but only ${this.remaining} remain; the file is corrupt`);
    }
    const out = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
}

export class PyTuple {
  constructor(readonly items: PyValue[]) {}
}

/** Primitive keys compare by value; tuple/object keys (rare in checkpoints) are kept by identity. */
export type DictKey = PyValue;

export class PyDict {
  readonly map = new Map<DictKey, PyValue>();
  /** Instance attributes set by BUILD (e.g. a state dict's `_metadata`). */
  attrs: PyValue = null;
  constructor(readonly ordered: boolean) {}
}

export class PySet {
  readonly items: PyValue[] = [];
  constructor(readonly frozen: boolean) {}
}

/** A whitelisted global that can be called by REDUCE. */
export class PyCallable {
  constructor(
    readonly qualname: string,
    readonly call: (args: PyValue[]) => PyValue,
  ) {}
}

/** A whitelisted global that is only a marker (e.g. torch.FloatStorage); calling it is refused. */
export class PyClassRef {
  constructor(readonly qualname: string) {}
}

/** Objects produced by the caller's callables/persistent_load may implement this to accept BUILD. */
export interface Buildable {
  setState(state: PyValue): void;
}

export type PyValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PyValue[]
  | PyTuple
  | PyDict
  | PySet
  | PyCallable
  | PyClassRef
  | { readonly kind: string };

export interface PickleOptions {
  /** Resolve `module.name`; must throw for anything not allowed. */
  findGlobal(module: string, name: string): PyValue;
  /** BINPERSID / PERSID handler. */
  persistentLoad?(pid: PyValue): PyValue;
  /** Throws with file context. */
  fail(msg: string): never;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeUtf8(b: Uint8Array, fail: (m: string) => never): string {
  try {
    return utf8.decode(b);
  } catch {
    return fail('pickle contains a string that is not valid UTF-8; the file is corrupt');
  }
}

function latin1(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]!);
  return s;
}

function decodeLong(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
  if (b[b.length - 1]! & 0x80) v -= 1n << BigInt(8 * b.length);
  if (v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  return v;
}

export function describe(v: PyValue): string {
  if (v === null) return 'None';
  if (Array.isArray(v)) return 'list';
  if (v instanceof Uint8Array) return 'bytes';
  if (typeof v === 'object') {
    if (v instanceof PyCallable || v instanceof PyClassRef) return v.qualname;
    if ('kind' in v) return String(v.kind);
    return v.constructor.name;
  }
  return typeof v;
}

/** Run one pickle from `src` up to its STOP and return the result. */
export function unpickle(src: ByteSource, opts: PickleOptions): PyValue {
  try {
    return run(src, opts);
  } catch (e) {
    // Backstop for the limits above: an engine limit (call stack, array or Map size) still becomes an
    // error that names the file, never a bare RangeError.
    if (e instanceof RangeError) {
      return opts.fail(`pickle is too large or too deeply nested to read (${e.message} at byte ${src.pos}); the file is corrupt or hostile`);
    }
    throw e;
  }
}

function run(src: ByteSource, opts: PickleOptions): PyValue {
  const fail: (msg: string) => never = opts.fail;
  const stack: PyValue[] = [];
  const marks: number[] = [];
  const memo = new Map<number, PyValue>();
  let made = 0;
  const tooMany = (what: string): never => fail(`pickle ${what} at byte ${src.pos}; the file is corrupt or hostile, not a state dict`);
  const count = (n: number): void => {
    made += n;
    if (made > MAX_PICKLE_VALUES) tooMany(`creates more than ${MAX_PICKLE_VALUES} values`);
  };
  const push = (v: PyValue): void => {
    if (stack.length >= MAX_PICKLE_STACK) tooMany(`stack grows past ${MAX_PICKLE_STACK} values`);
    count(1);
    stack.push(v);
  };
  const memoize = (idx: number, v: PyValue): void => {
    if (memo.size >= MAX_PICKLE_MEMO && !memo.has(idx)) tooMany(`memo grows past ${MAX_PICKLE_MEMO} entries`);
    memo.set(idx, v);
  };

  const pop = (): PyValue => {
    if (stack.length === 0 || (marks.length > 0 && stack.length <= marks[marks.length - 1]!)) {
      fail(`pickle stack underflow at byte ${src.pos}; the file is corrupt`);
    }
    return stack.pop()!;
  };
  const top = (): PyValue => {
    if (stack.length === 0 || (marks.length > 0 && stack.length <= marks[marks.length - 1]!)) fail(`pickle stack underflow at byte ${src.pos}; the file is corrupt`);
    return stack[stack.length - 1]!;
  };
  const popMark = (): PyValue[] => {
    const m = marks.pop();
    if (m === undefined) fail(`pickle uses a MARK that was never set (byte ${src.pos}); the file is corrupt`);
    return stack.splice(m);
  };
  const u32 = (): number => {
    const b = src.readBytes(4, 'pickle length');
    return (b[0]! | (b[1]! << 8) | (b[2]! << 16)) + b[3]! * 16777216;
  };
  const u64 = (): number => {
    const lo = u32();
    const hi = u32();
    const v = hi * 4294967296 + lo;
    if (!Number.isSafeInteger(v)) fail(`pickle declares an impossible 64-bit length at byte ${src.pos}; the file is corrupt`);
    return v;
  };
  const readLine = (): string => {
    let s = '';
    for (;;) {
      const c = src.readByte();
      if (c === 0x0a) return s;
      s += String.fromCharCode(c);
      if (s.length > MAX_LINE) fail(`pickle text line longer than ${MAX_LINE} bytes at byte ${src.pos}; the file is corrupt`);
    }
  };
  const setItems = (d: PyValue, items: PyValue[]): void => {
    if (!(d instanceof PyDict)) fail(`pickle SETITEM(S) on a ${describe(d)}, not a dict; unsupported file`);
    if (items.length % 2 !== 0) fail('pickle SETITEMS with an odd number of items; the file is corrupt');
    count(items.length);
    for (let i = 0; i < items.length; i += 2) {
      d.map.set(items[i]!, items[i + 1]!);
    }
  };
  const appendItems = (l: PyValue, items: PyValue[]): void => {
    count(items.length);
    if (Array.isArray(l)) {
      for (const it of items) l.push(it);
    } else if (l instanceof PySet && !l.frozen) {
      for (const it of items) l.items.push(it);
    } else {
      fail(`pickle APPEND(S) on a ${describe(l)}, not a list; unsupported file`);
    }
  };
  const global = (module: string, name: string): PyValue => opts.findGlobal(module, name);

  for (;;) {
    const at = src.pos;
    const op = src.readByte();
    switch (op) {
      case 0x80: // PROTO
        if (src.readByte() > 5) fail(`pickle protocol newer than 5 at byte ${at}; unsupported file`);
        break;
      case 0x95: // FRAME (framing is transparent for a sequential reader)
        src.readBytes(8, 'pickle frame');
        break;
      case 0x2e: // STOP
        if (stack.length !== 1 || marks.length !== 0) {
          fail(`pickle STOP with ${stack.length} values on the stack; the file is corrupt`);
        }
        return stack.pop()!;
      case 0x28: // MARK
        if (marks.length >= MAX_PICKLE_MARKS) tooMany(`nests more than ${MAX_PICKLE_MARKS} MARKs`);
        marks.push(stack.length);
        break;
      case 0x30: // POP
        if (marks.length > 0 && stack.length === marks[marks.length - 1]) popMark();
        else pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        push(top());
        break;
      case 0x4e: // NONE
        push(null);
        break;
      case 0x88: // NEWTRUE
        push(true);
        break;
      case 0x89: // NEWFALSE
        push(false);
        break;
      case 0x4a: {
        // BININT
        const b = src.readBytes(4, 'BININT');
        push(b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24));
        break;
      }
      case 0x4b: // BININT1
        push(src.readByte());
        break;
      case 0x4d: {
        // BININT2
        const lo = src.readByte();
        push(lo | (src.readByte() << 8));
        break;
      }
      case 0x8a: {
        // LONG1
        const n = src.readByte();
        push(decodeLong(src.readBytes(n, 'LONG1')));
        break;
      }
      case 0x8b: {
        // LONG4
        const n = u32();
        if (n > 1024) fail(`pickle integer of ${n} bytes at byte ${at}; refusing (the file is corrupt or hostile)`);
        push(decodeLong(src.readBytes(n, 'LONG4')));
        break;
      }
      case 0x49: {
        // INT (text)
        const s = readLine();
        if (s === '00') push(false);
        else if (s === '01') push(true);
        else {
          const v = Number(s);
          if (!Number.isInteger(v)) fail(`pickle INT ${JSON.stringify(s)} is not an integer; the file is corrupt`);
          push(v);
        }
        break;
      }
      case 0x4c: {
        // LONG (text)
        const s = readLine().replace(/L$/, '');
        if (!/^-?\d+$/.test(s)) fail(`pickle LONG ${JSON.stringify(s)} is not an integer; the file is corrupt`);
        const v = BigInt(s);
        push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x47: {
        // BINFLOAT (big-endian double)
        const b = src.readBytes(8, 'BINFLOAT');
        push(new DataView(b.buffer, b.byteOffset, 8).getFloat64(0, false));
        break;
      }
      case 0x46: {
        // FLOAT (text)
        const v = Number(readLine());
        push(v);
        break;
      }
      case 0x58: // BINUNICODE
        push(decodeUtf8(src.readBytes(u32(), 'BINUNICODE'), fail));
        break;
      case 0x8c: // SHORT_BINUNICODE
        push(decodeUtf8(src.readBytes(src.readByte(), 'SHORT_BINUNICODE'), fail));
        break;
      case 0x8d: // BINUNICODE8
        push(decodeUtf8(src.readBytes(u64(), 'BINUNICODE8'), fail));
        break;
      case 0x56: // UNICODE (raw-unicode-escape text; ASCII subset is enough for torch)
        push(readLine());
        break;
      case 0x54: // BINSTRING (py2 str)
        push(latin1(src.readBytes(u32(), 'BINSTRING')));
        break;
      case 0x55: // SHORT_BINSTRING
        push(latin1(src.readBytes(src.readByte(), 'SHORT_BINSTRING')));
        break;
      case 0x53: {
        // STRING (quoted text)
        const s = readLine();
        push(s.length >= 2 && (s[0] === "'" || s[0] === '"') ? s.slice(1, -1) : s);
        break;
      }
      case 0x42: // BINBYTES
        push(src.readBytes(u32(), 'BINBYTES').slice());
        break;
      case 0x43: // SHORT_BINBYTES
        push(src.readBytes(src.readByte(), 'SHORT_BINBYTES').slice());
        break;
      case 0x8e: // BINBYTES8
        push(src.readBytes(u64(), 'BINBYTES8').slice());
        break;
      case 0x96: // BYTEARRAY8
        push(src.readBytes(u64(), 'BYTEARRAY8').slice());
        break;
      case 0x29: // EMPTY_TUPLE
        push(new PyTuple([]));
        break;
      case 0x85: // TUPLE1
        push(new PyTuple([pop()]));
        break;
      case 0x86: {
        // TUPLE2
        const b = pop();
        const a = pop();
        push(new PyTuple([a, b]));
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        const a = pop();
        push(new PyTuple([a, b, c]));
        break;
      }
      case 0x74: // TUPLE
        push(new PyTuple(popMark()));
        break;
      case 0x5d: // EMPTY_LIST
        push([]);
        break;
      case 0x6c: // LIST
        push(popMark());
        break;
      case 0x61: {
        // APPEND
        const v = pop();
        appendItems(top(), [v]);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        appendItems(top(), items);
        break;
      }
      case 0x7d: // EMPTY_DICT
        push(new PyDict(false));
        break;
      case 0x64: {
        // DICT
        const items = popMark();
        const d = new PyDict(false);
        setItems(d, items);
        push(d);
        break;
      }
      case 0x73: {
        // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x8f: // EMPTY_SET
        push(new PySet(false));
        break;
      case 0x90: {
        // ADDITEMS
        const items = popMark();
        appendItems(top(), items);
        break;
      }
      case 0x91: {
        // FROZENSET
        // A loop, not push(...items): spreading 300,000 items overflows the call stack.
        const s = new PySet(true);
        for (const it of popMark()) s.items.push(it);
        push(s);
        break;
      }
      case 0x70: {
        // PUT (text)
        const idx = Number(readLine());
        if (!Number.isSafeInteger(idx) || idx < 0) fail(`pickle PUT with a bad index at byte ${at}; the file is corrupt`);
        memoize(idx, top());
        break;
      }
      case 0x71: // BINPUT
        memoize(src.readByte(), top());
        break;
      case 0x72: // LONG_BINPUT
        memoize(u32(), top());
        break;
      case 0x94: // MEMOIZE
        memoize(memo.size, top());
        break;
      case 0x67: // GET (text)
      case 0x68: // BINGET
      case 0x6a: {
        // LONG_BINGET
        const idx = op === 0x67 ? Number(readLine()) : op === 0x68 ? src.readByte() : u32();
        if (!memo.has(idx)) fail(`pickle refers to memo entry ${idx} that was never stored (byte ${at}); the file is corrupt`);
        push(memo.get(idx)!);
        break;
      }
      case 0x63: {
        // GLOBAL
        const module = readLine();
        const name = readLine();
        push(global(module, name));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail(`pickle STACK_GLOBAL with non-string names at byte ${at}; the file is corrupt`);
        push(global(module, name));
        break;
      }
      case 0x69: {
        // INST: names a class and instantiates it. Resolve first (rejects non-whitelisted names), then refuse.
        const module = readLine();
        const name = readLine();
        global(module, name);
        fail(`pickle instantiates ${module}.${name} with INST (byte ${at}); this loader does not support that`);
        break;
      }
      case 0x6f: // OBJ
      case 0x81: // NEWOBJ
      case 0x92: {
        // NEWOBJ_EX
        const opname = op === 0x6f ? 'OBJ' : op === 0x81 ? 'NEWOBJ' : 'NEWOBJ_EX';
        fail(
          `pickle creates a Python object with ${opname} (byte ${at}); only tensors, dicts, lists and numbers are supported. ` +
            'Re-save just the state dict (torch.save(model.state_dict(), path)) or use safetensors',
        );
        break;
      }
      case 0x82:
      case 0x83:
      case 0x84:
        fail(`pickle uses the copyreg extension registry (EXT opcode, byte ${at}); unsupported and refused`);
        break;
      case 0x52: {
        // REDUCE
        const args = pop();
        const fn = pop();
        if (!(fn instanceof PyCallable)) {
          fail(`pickle calls ${describe(fn)}, which is not an allowed callable (byte ${at}); refused`);
        }
        if (!(args instanceof PyTuple)) fail(`pickle REDUCE arguments are a ${describe(args)}, not a tuple; the file is corrupt`);
        push(fn.call(args.items));
        break;
      }
      case 0x62: {
        // BUILD
        const state = pop();
        const obj = top();
        if (obj instanceof PyDict) {
          obj.attrs = state;
        } else if (obj !== null && typeof obj === 'object' && 'setState' in obj && typeof (obj as Buildable).setState === 'function') {
          (obj as Buildable).setState(state);
        } else {
          fail(`pickle sets the state of a ${describe(obj)} (BUILD at byte ${at}); unsupported`);
        }
        break;
      }
      case 0x51: {
        // BINPERSID
        const pid = pop();
        if (!opts.persistentLoad) fail(`pickle refers to external data (persistent id) at byte ${at}, which this file type cannot have`);
        push(opts.persistentLoad(pid));
        break;
      }
      case 0x50: {
        // PERSID (text)
        const pid = readLine();
        if (!opts.persistentLoad) fail(`pickle refers to external data (persistent id) at byte ${at}, which this file type cannot have`);
        push(opts.persistentLoad(pid));
        break;
      }
      case 0x97:
      case 0x98:
        fail(`pickle uses out-of-band buffers (protocol 5, byte ${at}); unsupported`);
        break;
      default:
        fail(`unknown pickle opcode 0x${op.toString(16).padStart(2, '0')} at byte ${at}; the file is corrupt or not a PyTorch file`);
    }
  }
}
