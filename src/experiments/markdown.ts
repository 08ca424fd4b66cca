// The little markdown the reports need: tables, numbers, durations.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { defaultBackend } from '../backend/index.js';

/** A GitHub-style table; `right` marks numeric columns to right-align. */
export function table(headers: string[], rows: (string | number)[][], right: boolean[] = []): string {
  const esc = (c: string | number) => String(c).replace(/\|/g, '\\|');
  const lines = [`| ${headers.map(esc).join(' | ')} |`, `|${headers.map((_, i) => (right[i] ? '---:' : '---')).join('|')}|`];
  for (const r of rows) lines.push(`| ${r.map(esc).join(' | ')} |`);
  return lines.join('\n');
}

export const int = (n: number): string => Math.round(n).toLocaleString('en-US');
export const pct = (fraction: number | null | undefined, digits = 2): string =>
  fraction === null || fraction === undefined || !Number.isFinite(fraction) ? '-' : `${(100 * fraction).toFixed(digits)}%`;

/** 12,345,678 MACs as "12.35 M", 4.1e9 as "4.100 G". */
export function macs(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(3)} G` : `${(n / 1e6).toFixed(2)} M`;
}

export function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '-';
  if (seconds < 90) return `${seconds.toFixed(1)} s`;
  if (seconds < 5400) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(2)} h`;
}

export function writeText(file: string, text: string): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, text.endsWith('\n') ? text : text + '\n');
}

/** "native backend (oneDNN 2.6.3), 2 threads": timings mean little without it. */
export function backendLine(): string {
  const b = defaultBackend();
  const info = b.info() as { threads?: number; onednnVersion?: string };
  return `${b.name} backend${info.onednnVersion ? ` (oneDNN ${info.onednnVersion})` : ''}, ${info.threads ?? 1} thread${info.threads === 1 ? '' : 's'}`;
}

export type Verdict = 'HELD' | 'DID NOT HOLD' | 'INCONCLUSIVE';

/** One claim of a paper as an experiment settled it: the entries of result.json. */
export interface ClaimResult {
  claim: string;
  held: true | false | 'inconclusive';
  /** The figures the verdict rests on. */
  evidence: Record<string, unknown>;
}

/** A report's verdict as result.json spells it; an unmeasured claim is inconclusive. */
export function heldOf(v: Verdict | 'NOT MEASURED'): ClaimResult['held'] {
  return v === 'HELD' ? true : v === 'DID NOT HOLD' ? false : 'inconclusive';
}

/**
 * A claim that `a` is below `b` (error rates measured on `na` and `nb` samples), judged against
 * sampling noise: it held or failed only when the difference exceeds two standard errors.
 */
export function judgeLower(a: number, b: number, na: number, nb: number): { verdict: Verdict; se: number } {
  const se = Math.sqrt((a * (1 - a)) / Math.max(1, na) + (b * (1 - b)) / Math.max(1, nb));
  if (!Number.isFinite(a) || !Number.isFinite(b)) return { verdict: 'INCONCLUSIVE', se };
  const d = b - a;
  return { verdict: d > 2 * se ? 'HELD' : d < -2 * se ? 'DID NOT HOLD' : 'INCONCLUSIVE', se };
}

/** HELD if all held, DID NOT HOLD if any failed, else INCONCLUSIVE; as held: true / false / null. */
export function overall(vs: Verdict[]): boolean | null {
  if (vs.length && vs.every((v) => v === 'HELD')) return true;
  return vs.includes('DID NOT HOLD') ? false : null;
}
