// Weight initialization with PyTorch's formulas, from a seedable generator so a run is repeatable.

/** A small, fast, seedable generator (mulberry32) with a Box-Muller normal. */
export class InitRandom {
  private state: number;
  private spare: number | null = null;

  constructor(seed = 0) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  normal(): number {
    if (this.spare !== null) {
      const v = this.spare;
      this.spare = null;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.next();
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
}

let generator = new InitRandom(0x5eed);

/** Seeds the generator that new layers draw their initial weights from (torch.manual_seed's role). */
export function manualSeed(seed: number): void {
  generator = new InitRandom(seed);
}

export function uniform(n: number, bound: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (generator.next() * 2 - 1) * bound;
  return out;
}

export function normal(n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = generator.normal() * std;
  return out;
}

/** fan_in and fan_out of a weight shape as torch.nn.init computes them. */
export function fans(shape: readonly number[]): { fanIn: number; fanOut: number } {
  const receptive = shape.slice(2).reduce((a, b) => a * b, 1);
  return { fanIn: shape[1] * receptive, fanOut: shape[0] * receptive };
}

/** kaiming_normal_(mode='fan_out', nonlinearity='relu'): torchvision's ResNet conv init. */
export function kaimingNormalFanOut(shape: readonly number[]): Float32Array {
  const { fanOut } = fans(shape);
  return normal(shape.reduce((a, b) => a * b, 1), Math.sqrt(2 / fanOut));
}

/**
 * PyTorch's default for Conv2d and Linear, kaiming_uniform_(a=sqrt(5)), which works out to
 * U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the default bias uses the same bound.
 */
export function defaultUniform(n: number, fanIn: number): Float32Array {
  return uniform(n, fanIn > 0 ? 1 / Math.sqrt(fanIn) : 0);
}
