// Training curves of one run: <runDir>/metrics.jsonl (written by the trainer, one line per epoch)
// becomes <runDir>/curves.png, loss on the left and error % on the right, train dashed, test solid.
import { existsSync, readFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { lineChart, svgToPng, writeAtomic, type Series } from './chart.js';

/** One epoch as the trainer logs it; metric values are null when not measured or not finite. */
export interface MetricsRecord {
  epoch: number;
  iteration?: number;
  train_loss: number | null;
  train_acc: number | null;
  test_loss: number | null;
  test_acc: number | null;
  lr?: number;
  elapsed_s?: number;
  [key: string]: unknown;
}

/** A metrics file that cannot be plotted; `line` is 1-based when one line is to blame. */
export class MetricsFileError extends Error {
  readonly file: string;
  readonly line?: number;
  constructor(file: string, problem: string, line?: number) {
    super(line === undefined ? `${file}: ${problem}` : `${file}, line ${line}: ${problem}`);
    this.name = 'MetricsFileError';
    this.file = file;
    this.line = line;
  }
}

// JSON has no NaN: the trainer's JSON.stringify turns a diverged (NaN) loss into null.
const NULLABLE = ['train_loss', 'train_acc', 'test_loss', 'test_acc'] as const;

/**
 * Reads a metrics.jsonl file. Blank lines are skipped; a repeated epoch keeps its last line
 * (a run resumed from an older checkpoint logs those epochs again). Sorted by epoch.
 */
export function readMetrics(file: string): MetricsRecord[] {
  if (!existsSync(file)) throw new MetricsFileError(file, 'no such file (has the run finished an epoch yet?)');
  const lines = readFileSync(file, 'utf8').split('\n');
  const byEpoch = new Map<number, MetricsRecord>();
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (!line) return;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (e) {
      const shown = line.length > 60 ? line.slice(0, 57) + '...' : line;
      throw new MetricsFileError(file, `malformed line, not JSON (${(e as Error).message}): ${shown}`, i + 1);
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new MetricsFileError(file, 'malformed line: expected a JSON object', i + 1);
    const r = v as Record<string, unknown>;
    if (typeof r.epoch !== 'number' || !Number.isFinite(r.epoch)) throw new MetricsFileError(file, 'malformed line: "epoch" must be a number', i + 1);
    for (const k of NULLABLE) {
      if (r[k] === undefined) r[k] = null;
      else if (r[k] !== null && typeof r[k] !== 'number') throw new MetricsFileError(file, `malformed line: "${k}" must be a number or null`, i + 1);
    }
    byEpoch.set(r.epoch, r as MetricsRecord);
  });
  if (byEpoch.size === 0) throw new MetricsFileError(file, 'empty: no epochs recorded yet');
  return [...byEpoch.values()].sort((a, b) => a.epoch - b.epoch);
}

const nan = (v: number | null): number => (v === null ? NaN : v);
const errorPct = (acc: number | null): number => (acc === null ? NaN : 100 * (1 - acc));

/** The two-panel chart (loss, error %) of a run's records, as SVG. */
export function runCurvesSvg(records: MetricsRecord[], opts: { title?: string; width?: number; height?: number } = {}): string {
  const epochs = records.map((r) => r.epoch);
  // Test metrics may be measured on some epochs only: connect the measured ones, skip the rest.
  const tested = records.filter((r) => r.test_loss !== null || r.test_acc !== null);
  const train = { label: 'train', color: 0, dash: 'dashed' as const, width: 1.75 };
  const test = { label: 'test', color: 1, dash: 'solid' as const, width: 2.25 };
  const lossSeries: Series[] = [{ ...train, x: epochs, y: records.map((r) => nan(r.train_loss)) }];
  const errSeries: Series[] = [{ ...train, x: epochs, y: records.map((r) => errorPct(r.train_acc)) }];
  if (tested.length) {
    lossSeries.push({ ...test, x: tested.map((r) => r.epoch), y: tested.map((r) => nan(r.test_loss)) });
    errSeries.push({ ...test, x: tested.map((r) => r.epoch), y: tested.map((r) => errorPct(r.test_acc)) });
  }
  return lineChart({
    title: opts.title,
    width: opts.width ?? 1000,
    height: opts.height ?? 420,
    panels: [
      { title: 'loss', xLabel: 'epoch', yLabel: 'cross-entropy loss', xInteger: true, series: lossSeries },
      { title: 'error', xLabel: 'epoch', yLabel: 'error (%)', xInteger: true, series: errSeries },
    ],
  });
}

/** "run-7: 30 epochs, best test error 7.21% (epoch 28)". */
export function runTitle(name: string, records: MetricsRecord[]): string {
  const last = records[records.length - 1];
  let title = `${name}: ${last.epoch} epoch${last.epoch === 1 ? '' : 's'}`;
  let best: MetricsRecord | undefined;
  for (const r of records) if (r.test_acc !== null && (!best || r.test_acc > best.test_acc!)) best = r;
  if (best) title += `, best test error ${errorPct(best.test_acc).toFixed(2)}% (epoch ${best.epoch})`;
  return title;
}

/**
 * Plots <runDir>/metrics.jsonl to `opts.out` (default <runDir>/curves.png; a .svg name writes the SVG)
 * and returns the path written.
 * Throws MetricsFileError naming the file (and line) when the metrics cannot be read.
 */
export async function plotRun(runDir: string, opts: { out?: string; title?: string; scale?: number } = {}): Promise<string> {
  const records = readMetrics(join(runDir, 'metrics.jsonl'));
  const out = opts.out ?? join(runDir, 'curves.png');
  const svg = runCurvesSvg(records, { title: opts.title ?? runTitle(basename(resolve(runDir)), records) });
  if (out.toLowerCase().endsWith('.svg')) writeAtomic(out, svg);
  else await svgToPng(svg, out, { scale: opts.scale });
  return out;
}
