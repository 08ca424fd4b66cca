// Element types of weight files and their conversion to and from float32.
//
// Every reader in src/io hands tensors out as Float32Array (the only compute dtype of Residual) and
// keeps the dtype the file stored, spelled the safetensors way ('F32', 'F16', 'BF16', 'I64', ...),
// whichever format the file was. Integer values beyond 2^24 and float64 values lose precision in the
// conversion; weights never need that, and BatchNorm's num_batches_tracked stays far below it.

export type StoredDType =
  | 'F64'
  | 'F32'
  | 'F16'
  | 'BF16'
  | 'F8_E4M3'
  | 'F8_E5M2'
  | 'I64'
  | 'I32'
  | 'I16'
  | 'I8'
  | 'U64'
  | 'U32'
  | 'U16'
  | 'U8'
  | 'BOOL';

export const DTYPE_SIZES: Readonly<Record<StoredDType, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
};

export function isStoredDType(s: unknown): s is StoredDType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_SIZES, s);
}

/** A tensor as the readers return it: values widened to float32, `dtype` what the file stored. */
export interface LoadedTensor {
  dtype: string;
  shape: number[];
  data: Float32Array;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE half (binary16) bits to a number. */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac === 0 ? sign * Infinity : NaN;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** float32 to IEEE half bits, round to nearest even (what PyTorch's .half() does). */
export function floatToHalf(v: number): number {
  f32Scratch[0] = v;
  const x = u32Scratch[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  // Unbiased exponent of the float32 value.
  const e = exp - 127;
  if (e > 15) return sign | 0x7c00; // overflow to infinity
  if (e >= -14) {
    // Normal half. Round the 23-bit mantissa to 10 bits.
    let m = mant >>> 13;
    const rest = mant & 0x1fff;
    let he = e + 15;
    if (rest > 0x1000 || (rest === 0x1000 && (m & 1) === 1)) {
      m++;
      if (m === 0x400) {
        m = 0;
        he++;
        if (he === 0x1f) return sign | 0x7c00;
      }
    }
    return sign | (he << 10) | m;
  }
  if (e < -25) return sign; // below half the smallest subnormal: zero
  // Subnormal half: value = m * 2^-24 with the implicit leading one made explicit.
  const full = mant | 0x800000; // 24 significant bits, value = full * 2^(e-23)
  const shift = -e - 1; // bits to drop so that the unit is 2^-24: (e - 23) - (-24) = e + 1 → drop -(e+1)
  const m = full >>> shift;
  const rest = full & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  let r = m;
  if (rest > halfway || (rest === halfway && (m & 1) === 1)) r++;
  return sign | r; // r may carry into the exponent field (0x400), which is the correct smallest normal
}

/** bfloat16 bits to a number. */
export function bf16ToFloat(b: number): number {
  u32Scratch[0] = (b & 0xffff) << 16;
  return f32Scratch[0]!;
}

/** float32 to bfloat16 bits, round to nearest even (what PyTorch's .bfloat16() does); NaN stays NaN. */
export function floatToBf16(v: number): number {
  f32Scratch[0] = v;
  const x = u32Scratch[0]!;
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return ((x >>> 16) | 0x40) & 0xffff;
  const lsb = (x >>> 16) & 1;
  return ((x + 0x7fff + lsb) >>> 16) & 0xffff;
}

function fp8ToFloat(b: number, expBits: number, bias: number, e4m3: boolean): number {
  const manBits = 7 - expBits;
  const sign = b & 0x80 ? -1 : 1;
  const exp = (b >> manBits) & ((1 << expBits) - 1);
  const man = b & ((1 << manBits) - 1);
  const expMax = (1 << expBits) - 1;
  if (e4m3) {
    if (exp === expMax && man === (1 << manBits) - 1) return NaN; // E4M3FN: only S.1111.111 is NaN, no inf
  } else if (exp === expMax) {
    return man === 0 ? sign * Infinity : NaN;
  }
  if (exp === 0) return sign * man * 2 ** (1 - bias - manBits);
  return sign * (1 + man / (1 << manBits)) * 2 ** (exp - bias);
}

/**
 * Decode `count` little-endian elements of `dtype` starting at `bytes[0]` into `out[outOffset..]`.
 * `bytes` must hold at least count × size bytes (callers check).
 */
export function decodeInto(
  dtype: StoredDType,
  bytes: Uint8Array,
  count: number,
  out: Float32Array,
  outOffset = 0,
  bigEndian = false,
): void {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const le = !bigEndian;
  switch (dtype) {
    case 'F32':
      if (le && bytes.byteOffset % 4 === 0) {
        out.set(new Float32Array(bytes.buffer, bytes.byteOffset, count), outOffset);
      } else {
        for (let i = 0; i < count; i++) out[outOffset + i] = dv.getFloat32(4 * i, le);
      }
      return;
    case 'F64':
      for (let i = 0; i < count; i++) out[outOffset + i] = dv.getFloat64(8 * i, le);
      return;
    case 'F16':
      for (let i = 0; i < count; i++) out[outOffset + i] = halfToFloat(dv.getUint16(2 * i, le));
      return;
    case 'BF16':
      for (let i = 0; i < count; i++) out[outOffset + i] = bf16ToFloat(dv.getUint16(2 * i, le));
      return;
    case 'F8_E4M3':
      for (let i = 0; i < count; i++) out[outOffset + i] = fp8ToFloat(bytes[i]!, 4, 7, true);
      return;
    case 'F8_E5M2':
      for (let i = 0; i < count; i++) out[outOffset + i] = fp8ToFloat(bytes[i]!, 5, 15, false);
      return;
    case 'I64':
      for (let i = 0; i < count; i++) {
        const lo = dv.getUint32(8 * i + (le ? 0 : 4), le);
        const hi = dv.getInt32(8 * i + (le ? 4 : 0), le);
        out[outOffset + i] = hi * 4294967296 + lo;
      }
      return;
    case 'U64':
      for (let i = 0; i < count; i++) {
        const lo = dv.getUint32(8 * i + (le ? 0 : 4), le);
        const hi = dv.getUint32(8 * i + (le ? 4 : 0), le);
        out[outOffset + i] = hi * 4294967296 + lo;
      }
      return;
    case 'I32':
      for (let i = 0; i < count; i++) out[outOffset + i] = dv.getInt32(4 * i, le);
      return;
    case 'U32':
      for (let i = 0; i < count; i++) out[outOffset + i] = dv.getUint32(4 * i, le);
      return;
    case 'I16':
      for (let i = 0; i < count; i++) out[outOffset + i] = dv.getInt16(2 * i, le);
      return;
    case 'U16':
      for (let i = 0; i < count; i++) out[outOffset + i] = dv.getUint16(2 * i, le);
      return;
    case 'I8':
      for (let i = 0; i < count; i++) out[outOffset + i] = dv.getInt8(i);
      return;
    case 'U8':
      for (let i = 0; i < count; i++) out[outOffset + i] = bytes[i]!;
      return;
    case 'BOOL':
      for (let i = 0; i < count; i++) out[outOffset + i] = bytes[i] !== 0 ? 1 : 0;
      return;
  }
}

/** Product of a shape's dimensions; throws (via `onError`) if it is not a safe integer. */
export function shapeNumel(shape: readonly number[], onError: (msg: string) => never): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) onError(`dimension ${String(d)} is not a non-negative integer`);
    n *= d;
    if (!Number.isSafeInteger(n)) onError(`shape [${shape.join(', ')}] has too many elements`);
  }
  return n;
}
