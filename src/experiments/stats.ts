// The statistics the seeded experiments judge claims with: McNemar's test on paired per-image
// predictions, the paired t-test across seeds, and the smallest difference a design can detect.
// Small and dependency-free: log-gamma (Lanczos), the regularized incomplete beta (continued
// fraction, Numerical Recipes 6.4) for Student's t, and the normal quantile (Acklam).
import type { Verdict } from './markdown.js';

/** The significance level every experiment's verdicts use. */
export const ALPHA = 0.05;

/** ln Γ(x) for x > 0 (Lanczos, g = 7; about 15 significant digits). */
export function logGamma(x: number): number {
  const c = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
    12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7];
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - logGamma(1 - x);
  x -= 1;
  let a = c[0];
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Φ(x), the standard normal CDF (erfc by its Chebyshev fit, relative error < 1.2e-7). */
export function normalCdf(x: number): number {
  const z = Math.abs(x) / Math.SQRT2;
  const t = 1 / (1 + 0.5 * z);
  const erfc = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
    t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return x >= 0 ? 1 - erfc / 2 : erfc / 2;
}

/** Φ⁻¹(p) (Acklam's rational approximation, relative error < 1.2e-9). */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) throw new Error(`normalQuantile: p must be in (0, 1), got ${p}`);
  const a = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.38357751867269e2, -3.066479806614716e1, 2.506628277459239];
  const b = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
  const c = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
  const lo = 0.02425;
  let x: number;
  if (p < lo) {
    const q = Math.sqrt(-2 * Math.log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else if (p > 1 - lo) {
    const q = Math.sqrt(-2 * Math.log(1 - p));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else {
    const q = p - 0.5;
    const r = q * q;
    x = ((((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q) / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  }
  return x;
}

/** The regularized incomplete beta I_x(a, b). */
export function incompleteBeta(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const front = Math.exp(logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log(1 - x));
  // The continued fraction converges fast for x < (a+1)/(a+b+2); else use the symmetry.
  if (x > (a + 1) / (a + b + 2)) return 1 - incompleteBeta(1 - x, b, a);
  const tiny = 1e-300;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < tiny) d = tiny;
  d = 1 / d;
  let f = d;
  for (let m = 1; m <= 300; m++) {
    const m2 = 2 * m;
    let aa = (m * (b - m) * x) / ((a + m2 - 1) * (a + m2));
    d = 1 + aa * d; if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c; if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d; f *= d * c;
    aa = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + m2 + 1));
    d = 1 + aa * d; if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c; if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const del = d * c;
    f *= del;
    if (Math.abs(del - 1) < 1e-15) break;
  }
  return (front * f) / a;
}

/** P(T <= t) for Student's t with `df` degrees of freedom. */
export function studentCdf(t: number, df: number): number {
  const tail = 0.5 * incompleteBeta(df / (df + t * t), df / 2, 0.5);
  return t >= 0 ? 1 - tail : tail;
}

/** The t with P(T <= t) = p, by bisection on studentCdf. */
export function studentQuantile(p: number, df: number): number {
  if (!(p > 0 && p < 1)) throw new Error(`studentQuantile: p must be in (0, 1), got ${p}`);
  let lo = -1e3;
  let hi = 1e3;
  for (let i = 0; i < 200; i++) {
    const mid = (lo + hi) / 2;
    if (studentCdf(mid, df) < p) lo = mid; else hi = mid;
  }
  return (lo + hi) / 2;
}

export interface McNemar {
  /** Images the first classifier got right and the second wrong. */
  b: number;
  /** Images the first got wrong and the second right. */
  c: number;
  /** Two-sided exact p: the binomial test of b against b + c trials at 1/2. */
  exactP: number;
  /** (|b - c| - 1)² / (b + c), and its two-sided p against χ² with 1 degree of freedom. */
  chi2: number;
  chi2P: number;
}

/** McNemar's test from the discordant counts. */
export function mcnemar(b: number, c: number): McNemar {
  const n = b + c;
  if (n === 0) return { b, c, exactP: 1, chi2: 0, chi2P: 1 };
  const k = Math.min(b, c);
  // Σ_{i<=k} C(n,i) / 2^n in log space (n may be tens of thousands).
  const logTerm = (i: number) => logGamma(n + 1) - logGamma(i + 1) - logGamma(n - i + 1) - n * Math.LN2;
  const top = logTerm(k);
  let sum = 0;
  for (let i = k; i >= 0; i--) {
    const r = Math.exp(logTerm(i) - top);
    sum += r;
    if (r < 1e-17 * sum) break;
  }
  const exactP = Math.min(1, 2 * Math.exp(top) * sum);
  const chi2 = Math.max(0, Math.abs(b - c) - 1) ** 2 / n;
  // χ²(1) tail = 2(1 - Φ(√x)).
  const chi2P = Math.min(1, 2 * (1 - normalCdf(Math.sqrt(chi2))));
  return { b, c, exactP, chi2, chi2P };
}

/** Discordant counts of two classifiers' predictions against the labels (one byte per image). */
export function discordant(a: ArrayLike<number>, b: ArrayLike<number>, labels: ArrayLike<number>): { b: number; c: number } {
  if (a.length !== labels.length || b.length !== labels.length) throw new Error(`discordant: ${a.length} and ${b.length} predictions for ${labels.length} labels`);
  let nb = 0;
  let nc = 0;
  for (let i = 0; i < labels.length; i++) {
    const ra = a[i] === labels[i];
    const rb = b[i] === labels[i];
    if (ra && !rb) nb++;
    else if (!ra && rb) nc++;
  }
  return { b: nb, c: nc };
}

/**
 * Judges "the first classifier errs less than the second" from McNemar's test on their paired
 * predictions (b: images only the first gets right; c: only the second): HELD when the exact test
 * is significant at `alpha` and b > c, DID NOT HOLD when it is significant the other way.
 */
export function judgeMcNemar(m: McNemar, alpha = ALPHA): Verdict {
  if (!(m.exactP < alpha)) return 'INCONCLUSIVE';
  return m.b > m.c ? 'HELD' : m.b < m.c ? 'DID NOT HOLD' : 'INCONCLUSIVE';
}

/** The fraction of images whose prediction (one byte per image) is not its label. */
export function errorOf(predictions: Uint8Array, labels: Uint8Array): number {
  if (predictions.length !== labels.length) throw new Error(`errorOf: ${predictions.length} predictions for ${labels.length} labels`);
  let wrong = 0;
  for (let i = 0; i < labels.length; i++) if (predictions[i] !== labels[i]) wrong++;
  return wrong / labels.length;
}

export interface MeanSE {
  n: number;
  mean: number;
  /** Sample standard deviation (n - 1). */
  sd: number;
  /** sd / √n. */
  se: number;
}

export function meanSE(xs: number[]): MeanSE {
  const n = xs.length;
  const mean = xs.reduce((a, x) => a + x, 0) / n;
  const sd = n > 1 ? Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (n - 1)) : NaN;
  return { n, mean, sd, se: sd / Math.sqrt(n) };
}

export interface PairedT extends MeanSE {
  t: number;
  df: number;
  /** Two-sided p. */
  p: number;
  /** The 95% confidence interval of the mean difference. */
  ci95: [number, number];
}

/** The paired t-test of differences (one per seed) against zero. */
export function pairedT(diffs: number[]): PairedT {
  const m = meanSE(diffs);
  const df = m.n - 1;
  if (df < 1 || !(m.se > 0)) {
    const t = m.se === 0 && m.mean !== 0 ? Math.sign(m.mean) * Infinity : NaN;
    return { ...m, t, df, p: Number.isNaN(t) ? NaN : 0, ci95: [m.mean, m.mean] };
  }
  const t = m.mean / m.se;
  const p = 2 * (1 - studentCdf(Math.abs(t), df));
  const q = studentQuantile(0.975, df);
  return { ...m, t, df, p, ci95: [m.mean - q * m.se, m.mean + q * m.se] };
}

/**
 * The smallest difference in error rate McNemar's test detects with the given power: n paired
 * images, a fraction `discordance` of them classified right by one model and wrong by the other.
 * Connor (1987): √n·δ = z(1-α/2)·√p_d + z(power)·√(p_d - δ²), solved for δ.
 */
export function mcnemarDetectable(n: number, discordance: number, alpha = 0.05, power = 0.8): number {
  const za = normalQuantile(1 - alpha / 2);
  const zb = normalQuantile(power);
  const gap = (d: number) => Math.sqrt(n) * d - za * Math.sqrt(discordance) - zb * Math.sqrt(Math.max(0, discordance - d * d));
  let lo = 0;
  let hi = discordance;
  if (gap(hi) < 0) return NaN; // the discordance itself is below what n images resolve
  for (let i = 0; i < 100; i++) {
    const mid = (lo + hi) / 2;
    if (gap(mid) < 0) lo = mid; else hi = mid;
  }
  return (lo + hi) / 2;
}

/**
 * The smallest mean paired difference a two-sided paired t-test over `k` seeds detects with the
 * given power, when the per-seed differences have standard deviation `sd`:
 * (t(1-α/2, k-1) + t(power, k-1)) · sd / √k (the usual approximation to the noncentral t).
 */
export function pairedDetectable(k: number, sd: number, alpha = 0.05, power = 0.8): number {
  if (k < 2) return NaN;
  const df = k - 1;
  return ((studentQuantile(1 - alpha / 2, df) + studentQuantile(power, df)) * sd) / Math.sqrt(k);
}
