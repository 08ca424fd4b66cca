// A minimal protocol-buffers encoder, enough to write ONNX files: varints, 32-bit floats and
// length-delimited fields (strings, bytes, nested messages).
//
// A message is kept as a list of byte chunks plus its total length, never flattened: a nested
// message needs its length before its bytes, and an ONNX model is mostly a few hundred MB of
// initializer data that should be written to disk from where it already lies, not copied into one
// buffer per nesting level. Only the small fields (tags, varints, names) are copied.

const WIRE_VARINT = 0;
const WIRE_FIXED32 = 5;
const WIRE_LEN = 2;

/** Largest encoded message protobuf parsers accept (2 GiB - 1, a signed 32-bit length). */
export const PROTO_MAX_BYTES = 2 ** 31 - 1;

export class ProtoWriter {
  private readonly chunks: Uint8Array[] = [];
  /** Small fields collect here until a large chunk or a nested message is appended. */
  private pending: number[] = [];
  private size = 0;

  /** Encoded length in bytes. */
  get length(): number {
    return this.size;
  }

  private byte(b: number): void {
    this.pending.push(b);
    this.size++;
  }

  private flush(): void {
    if (this.pending.length) {
      this.chunks.push(Uint8Array.from(this.pending));
      this.pending = [];
    }
  }

  /** Appends bytes as they are; large ones are referenced, not copied (do not change them afterwards). */
  private raw(bytes: Uint8Array): void {
    if (bytes.length <= 64) {
      for (let i = 0; i < bytes.length; i++) this.pending.push(bytes[i]!);
      this.size += bytes.length;
      return;
    }
    this.flush();
    this.chunks.push(bytes);
    this.size += bytes.length;
  }

  /** An unsigned varint; negative int64 values are written as their 64-bit two's complement (10 bytes). */
  varint(v: number | bigint): void {
    if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) {
      while (v >= 0x80) {
        this.byte((v % 0x80) | 0x80);
        v = Math.floor(v / 0x80);
      }
      this.byte(v);
      return;
    }
    if (typeof v === 'number' && !Number.isSafeInteger(v)) throw new Error(`protobuf: ${v} is not an integer that can be encoded exactly`);
    let u = BigInt.asUintN(64, BigInt(v));
    while (u >= 0x80n) {
      this.byte(Number(u & 0x7fn) | 0x80);
      u >>= 7n;
    }
    this.byte(Number(u));
  }

  private tag(field: number, wire: number): void {
    this.varint(field * 8 + wire);
  }

  /** int32, int64, uint64, enum and bool fields. */
  int(field: number, v: number | bigint): this {
    this.tag(field, WIRE_VARINT);
    this.varint(v);
    return this;
  }

  float(field: number, v: number): this {
    this.tag(field, WIRE_FIXED32);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.raw(b);
    return this;
  }

  string(field: number, s: string): this {
    return this.bytes(field, Buffer.from(s, 'utf8'));
  }

  bytes(field: number, b: Uint8Array): this {
    this.tag(field, WIRE_LEN);
    this.varint(b.length);
    this.raw(b);
    return this;
  }

  /** A nested message; `m` is consumed (its chunks are shared, not copied). */
  message(field: number, m: ProtoWriter): this {
    this.tag(field, WIRE_LEN);
    this.varint(m.length);
    m.flush();
    this.flush();
    for (const c of m.chunks) this.chunks.push(c); // a graph has thousands: no spread
    this.size += m.length;
    return this;
  }

  /** The encoding as chunks to write one after another. */
  parts(): Uint8Array[] {
    this.flush();
    return this.chunks.slice();
  }

  /** The encoding in one buffer (copies everything: for small messages and tests). */
  finish(): Uint8Array {
    const out = new Uint8Array(this.size);
    let at = 0;
    for (const c of this.parts()) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}
