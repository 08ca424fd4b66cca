// A small seedable PRNG: xoshiro128** (Blackman & Vigna), seeded through splitmix32.
//
// The state is four uint32 words; `getState()` / `setState()` / `Rng.fromState()` save and restore
// it exactly (plain numbers, JSON-friendly), so a trainer can checkpoint it.
//
// The data loader does not keep a running RNG across epochs: it derives a fresh generator from
// (seed, epoch, purpose, index) with `deriveSeed`, so the order and augmentation of epoch e depend
// only on the seed and e. Resuming a run therefore needs only the seed and the epoch number.

/** A JSON-friendly snapshot of an Rng: four uint32 words. */
export type RngState = [number, number, number, number];

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** One splitmix32 step: advances `state` (returned as [next state, output]). */
function splitmix32(state: number): [number, number] {
  const s = (state + 0x9e3779b9) | 0;
  let z = s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  z ^= z >>> 16;
  return [s, z >>> 0];
}

/** The murmur3 finalizer: a bijective 32-bit mix. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function checkSeedPart(x: number, what: string): void {
  if (!Number.isSafeInteger(x) || x < 0) {
    throw new Error(`${what} must be a non-negative safe integer, got ${x}`);
  }
}

/**
 * Mixes a seed and any number of non-negative integers (epoch, sample index, a purpose tag...)
 * into one uint32 seed. Different argument lists give unrelated seeds.
 */
export function deriveSeed(seed: number, ...parts: number[]): number {
  checkSeedPart(seed, 'seed');
  let h = fmix32((seed >>> 0) ^ 0x5bd1e995);
  h = fmix32(h ^ Math.floor(seed / 0x100000000));
  for (const p of parts) {
    checkSeedPart(p, 'seed component');
    h = fmix32((Math.imul(h, 31) + (p >>> 0)) | 0);
    h = fmix32(h ^ Math.floor(p / 0x100000000) ^ 0x27d4eb2f);
  }
  return h;
}

export class Rng {
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;

  /** `seed`: any non-negative safe integer. */
  constructor(seed = 0) {
    checkSeedPart(seed, 'seed');
    let st = (seed >>> 0) ^ Math.imul(Math.floor(seed / 0x100000000), 0x9e3779b1);
    const words: number[] = [];
    for (let i = 0; i < 4; i++) {
      const [next, out] = splitmix32(st);
      st = next;
      words.push(out);
    }
    this.setState(words as RngState);
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1; // never all-zero
  }

  static fromState(state: RngState): Rng {
    const r = new Rng(0);
    r.setState(state);
    return r;
  }

  getState(): RngState {
    return [this.s0 >>> 0, this.s1 >>> 0, this.s2 >>> 0, this.s3 >>> 0];
  }

  setState(state: readonly number[]): void {
    if (!Array.isArray(state) || state.length !== 4 || !state.every((w) => Number.isInteger(w) && w >= 0 && w <= 0xffffffff)) {
      throw new Error(`Rng state must be an array of four uint32 words, got ${JSON.stringify(state)}`);
    }
    if (state.every((w) => w === 0)) throw new Error('Rng state must not be all zeros (xoshiro128** would only output zeros)');
    this.s0 = state[0]! | 0;
    this.s1 = state[1]! | 0;
    this.s2 = state[2]! | 0;
    this.s3 = state[3]! | 0;
  }

  /** A uniform uint32. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9);
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result >>> 0;
  }

  /** A uniform float in [0, 1) (32 random bits). */
  next(): number {
    return this.nextU32() / 0x100000000;
  }

  /** A uniform integer in [0, n), unbiased (rejection sampling); 1 <= n <= 2^32. */
  int(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > 0x100000000) throw new Error(`Rng.int: n must be an integer in [1, 2^32], got ${n}`);
    if (n === 1) return 0;
    // Largest multiple of n that fits below 2^32: reject draws at or above it.
    const limit = 0x100000000 - (0x100000000 % n);
    for (;;) {
      const x = this.nextU32();
      if (x < limit) return x % n;
    }
  }

  /** A uniform integer in [lo, hi] (inclusive). */
  intBetween(lo: number, hi: number): number {
    if (hi < lo) throw new Error(`Rng.intBetween: hi (${hi}) < lo (${lo})`);
    return lo + this.int(hi - lo + 1);
  }

  /** Shuffles `a` in place (Fisher-Yates) and returns it. */
  shuffle<T extends { length: number; [i: number]: any }>(a: T): T {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = a[i];
      a[i] = a[j];
      a[j] = t;
    }
    return a;
  }

  /** A permutation of 0..n-1. */
  permutation(n: number): Int32Array {
    const p = new Int32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    return this.shuffle(p);
  }
}
