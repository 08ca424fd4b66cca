// Line charts as self-contained SVG (no dependency), and their PNG rendering through sharp.
// Only what training curves need: nice 1-2-5 ticks, optional log y, a colour-blind-safe palette,
// dash styles, a shared legend and side-by-side panels (small multiples).
import { writeAtomic } from '../io/file.js';

export { writeAtomic };

export type Dash = 'solid' | 'dashed' | 'dotted';

export interface Series {
  /** Legend text; series with the same label in several panels share one legend entry. */
  label: string;
  x: ArrayLike<number>;
  /** Non-finite values (NaN, ±Infinity; and values <= 0 on a log axis) leave a gap in the line. */
  y: ArrayLike<number>;
  /** A CSS colour, or an index into PALETTE. Default: by the order of first appearance of `group`. */
  color?: string | number;
  /** Series with the same group get the same colour (e.g. "ResNet-20" for its train and test curves). Default: label. */
  group?: string;
  dash?: Dash;
  /** Stroke width in px (default 2). */
  width?: number;
}

export interface Panel {
  title?: string;
  xLabel?: string;
  yLabel?: string;
  logY?: boolean;
  /** Ticks on whole numbers only (epochs, iterations). */
  xInteger?: boolean;
  /** Fixed axis ends; a missing end follows the data. */
  xRange?: [number | undefined, number | undefined];
  yRange?: [number | undefined, number | undefined];
  series: Series[];
}

export interface ChartSpec {
  title?: string;
  /** Total size in px. Default 640x420 for one panel, 1000x420 for two. */
  width?: number;
  height?: number;
  /** Side-by-side panels sharing one legend. Without it the spec's own series/labels make one panel. */
  panels?: Panel[];
  series?: Series[];
  xLabel?: string;
  yLabel?: string;
  logY?: boolean;
  xInteger?: boolean;
  xRange?: [number | undefined, number | undefined];
  yRange?: [number | undefined, number | undefined];
}

/** Okabe & Ito (2008), ordered so the first few are the most distinct; yellow is last (faint on white). */
export const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#F0E442'];

export const FONT_FAMILY = 'DejaVu Sans, sans-serif';

const DASHES: Record<Dash, string | null> = { solid: null, dashed: '7 4', dotted: '1.5 3.5' };

// ---------------------------------------------------------------------------------------------
// Text

/** Escapes text for XML content and attribute values; drops characters XML 1.0 forbids. */
export function escapeXml(s: string): string {
  return s
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/g, '')
    .replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** Approximate advance width of DejaVu Sans text in px (layout only needs to be close). */
export function textWidth(s: string, fontSize: number): number {
  let em = 0;
  for (const ch of s) {
    if (ch >= '0' && ch <= '9') em += 0.636;
    else if (' .,:;\'|!ijl()[]'.includes(ch)) em += 0.32;
    else if ('mwMW%'.includes(ch)) em += 0.95;
    else if (ch >= 'A' && ch <= 'Z') em += 0.72;
    else em += 0.6;
  }
  return em * fontSize;
}

// ---------------------------------------------------------------------------------------------
// Ticks

export interface Ticks {
  /** Axis ends (the first and last tick on linear axes). */
  lo: number;
  hi: number;
  values: number[];
  labels: string[];
  /** Unlabelled ticks between sparse log-axis labels (2..9 times each power of ten). */
  minor?: number[];
}

const snap = (v: number): number => Number.parseFloat(v.toPrecision(12));

function niceStep(raw: number, integer: boolean): number {
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
  return integer ? Math.max(1, Math.round(step)) : step;
}

function nextNice(step: number): number {
  const mag = 10 ** Math.floor(Math.log10(step) + 1e-9);
  const norm = Math.round(step / mag);
  return snap((norm < 2 ? 2 : norm < 5 ? 5 : 10) * mag);
}

function formatNumber(v: number, decimals: number, exponent = false): string {
  const a = Math.abs(v);
  if (v === 0 && (exponent || decimals > 4)) return '0';
  if (v !== 0 && (exponent || a >= 1e6 || a < 1e-4)) {
    const e = Math.floor(Math.log10(a) + 1e-9);
    const m = snap(v / 10 ** e);
    return `${m}e${e}`;
  }
  return v.toFixed(Math.min(20, Math.max(0, decimals)));
}

/**
 * Linear ticks on 1-2-5 steps whose ends enclose [min, max], at most `maxCount` of them (at least 3
 * when the range spans zero).
 * A degenerate range is widened around its value so there is always something to draw.
 */
export function niceTicks(min: number, max: number, maxCount = 6, integer = false): Ticks {
  if (!Number.isFinite(min) || !Number.isFinite(max)) { min = 0; max = 1; }
  if (min > max) [min, max] = [max, min];
  if (min === max) {
    const pad = integer ? 1 : min === 0 ? 1 : Math.abs(min) * 0.1;
    min -= pad;
    max += pad;
  }
  // Ticks on multiples of the step always include 0 when the range spans it: two cannot do.
  maxCount = Math.max(min < 0 && max > 0 ? 3 : 2, Math.floor(maxCount));
  const ends = (): Ticks => ({ lo: min, hi: max, values: [min, max], labels: [formatNumber(min, 0, true), formatNumber(max, 0, true)] });
  if (!Number.isFinite(max - min)) return ends();
  let step = niceStep((max - min) / Math.max(1, maxCount - 1), integer);
  for (;;) {
    const k0 = Math.floor(snap(min / step));
    const k1 = Math.ceil(snap(max / step));
    if (k1 - k0 + 1 <= maxCount) {
      const values: number[] = [];
      for (let k = k0; k <= k1; k++) values.push(snap(k * step));
      const decimals = -Math.floor(Math.log10(step) + 1e-9);
      const exp = values.some((v) => v !== 0 && (Math.abs(v) >= 1e6 || Math.abs(v) < 1e-4));
      return { lo: values[0], hi: values[values.length - 1], values, labels: values.map((v) => formatNumber(v, decimals, exp)) };
    }
    step = nextNice(step);
    // Only reachable for ranges near the float limits: two plain ends rather than a hang.
    if (!Number.isFinite(step)) return ends();
  }
}

/**
 * Log-axis ticks: 1-2-5 multiples of powers of ten when they fit, else powers of ten only
 * (every n-th decade on wide ranges). Inputs must be positive.
 */
export function logTicks(min: number, max: number, maxCount = 6): Ticks {
  if (!(min > 0) || !(max > 0) || !Number.isFinite(min) || !Number.isFinite(max)) { min = 1; max = 10; }
  if (min > max) [min, max] = [max, min];
  if (min === max) { min /= 2; max *= 2; }
  const e0 = Math.floor(Math.log10(min) + 1e-9);
  const e1 = Math.ceil(Math.log10(max) - 1e-9);
  const build = (mults: number[]): number[] => {
    const all: number[] = [];
    for (let e = e0; e <= e1; e++) for (const m of mults) all.push(snap(m * 10 ** e));
    const lo = Math.max(...all.filter((v) => v <= min * (1 + 1e-12)));
    const hi = Math.min(...all.filter((v) => v >= max * (1 - 1e-12)));
    return all.filter((v) => v >= lo && v <= hi);
  };
  let values = build([1, 2, 5]);
  // A range inside one 1-2-5 interval (say 0.25..0.45) gets the in-between integers too.
  if (values.length < 3) values = build([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const lo = values[0];
  const hi = values[values.length - 1];
  let minor: number[] | undefined;
  if (values.length > maxCount) {
    minor = build([1, 2, 3, 4, 5, 6, 7, 8, 9]).filter((v) => v >= lo && v <= hi);
    // Too many: label powers of ten only (every stride-th), but keep the tighter 1-2-5 axis ends.
    const stride = Math.ceil((e1 - e0 + 1) / maxCount);
    values = [];
    for (let e = Math.ceil(Math.log10(lo) - 1e-9); 10 ** e <= hi * (1 + 1e-12); e++) if (e % stride === 0) values.push(snap(10 ** e));
    if (values.length < 2) values = [lo, hi];
    minor = minor.filter((v) => !values.includes(v));
  }
  // One exponent label makes them all exponents, so the column reads consistently.
  const exp = values.some((v) => v >= 1e6 || v < 1e-4);
  const labels = values.map((v) => formatNumber(v, -Math.floor(Math.log10(v) + 1e-9), exp));
  return { lo, hi, values, labels, minor };
}

// ---------------------------------------------------------------------------------------------
// Layout and drawing

const FS = { title: 16, panelTitle: 13, axis: 12, tick: 11, legend: 12 };
const TICK_LEN = 4;
const LEGEND_SAMPLE = 30;

interface Resolved {
  label: string;
  color: string;
  dash: Dash;
  width: number;
}

function resolveStyles(panels: Panel[]): Map<Series, Resolved> {
  const groups = new Map<string, number>();
  const out = new Map<Series, Resolved>();
  for (const p of panels) {
    for (const s of p.series) {
      const g = s.group ?? s.label;
      if (!groups.has(g)) groups.set(g, groups.size);
      const c = s.color;
      const color = typeof c === 'string' ? c : PALETTE[(c ?? groups.get(g)!) % PALETTE.length];
      out.set(s, { label: s.label, color, dash: s.dash ?? 'solid', width: s.width ?? 2 });
    }
  }
  return out;
}

function fmt(v: number): string {
  return String(Math.round(v * 10) / 10);
}

function text(x: number, y: number, s: string, size: number, attrs = ''): string {
  return `<text x="${fmt(x)}" y="${fmt(y)}" font-size="${size}"${attrs ? ' ' + attrs : ''}>${escapeXml(s)}</text>`;
}

/** Font size no larger than `size` at which `s` fits in `room` px. */
function fitSize(s: string, size: number, room: number): number {
  const w = textWidth(s, size);
  return w <= room ? size : Math.max(7, Math.floor((size * room) / w * 10) / 10);
}

function strokeAttrs(r: Resolved): string {
  const d = DASHES[r.dash];
  return `stroke="${escapeXml(r.color)}" stroke-width="${r.width}" fill="none" stroke-linejoin="round" stroke-linecap="${r.dash === 'dotted' ? 'round' : 'butt'}"${d ? ` stroke-dasharray="${d}"` : ''}`;
}

function extent(values: number[]): [number, number] | null {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  return lo <= hi ? [lo, hi] : null;
}

/** Plottable points of a series: finite, positive on log y, within the shorter of x and y. */
function finitePoints(s: Series, logY: boolean): { xs: number[]; ys: number[] } {
  const xs: number[] = [];
  const ys: number[] = [];
  const n = Math.min(s.x.length, s.y.length);
  for (let i = 0; i < n; i++) {
    const x = s.x[i];
    const y = s.y[i];
    if (Number.isFinite(x) && Number.isFinite(y) && (!logY || y > 0)) { xs.push(x); ys.push(y); }
  }
  return { xs, ys };
}

function axisTicks(lo: number | undefined, hi: number | undefined, data: [number, number] | null, log: boolean, count: number, integer: boolean): Ticks {
  const dlo = lo ?? data?.[0] ?? (log ? 1 : 0);
  const dhi = hi ?? data?.[1] ?? (log ? 10 : 1);
  const t = log ? logTicks(dlo, dhi, count) : niceTicks(dlo, dhi, count, integer);
  // A fixed end is the axis end even when it is not a tick.
  const keep = (v: number) => v >= (lo ?? -Infinity) - 1e-12 && v <= (hi ?? Infinity) + 1e-12;
  const idx = t.values.map((v, i) => (keep(v) ? i : -1)).filter((i) => i >= 0);
  return { lo: lo ?? t.lo, hi: hi ?? t.hi, values: idx.map((i) => t.values[i]), labels: idx.map((i) => t.labels[i]), minor: t.minor?.filter(keep) };
}

/**
 * Drops points that land in the same pixel column except that column's first, lowest, highest and
 * last, so long per-iteration series stay small without changing what is drawn.
 */
function decimate(px: number[], py: number[]): [number[], number[]] {
  if (px.length < 2000) return [px, py];
  const ox: number[] = [];
  const oy: number[] = [];
  let i = 0;
  while (i < px.length) {
    const col = Math.round(px[i]);
    let j = i;
    let mn = i;
    let mx = i;
    while (j + 1 < px.length && Math.round(px[j + 1]) === col) {
      j++;
      if (py[j] < py[mn]) mn = j;
      if (py[j] > py[mx]) mx = j;
    }
    for (const k of [...new Set([i, Math.min(mn, mx), Math.max(mn, mx), j])]) { ox.push(px[k]); oy.push(py[k]); }
    i = j + 1;
  }
  return [ox, oy];
}

interface Box { x: number; y: number; w: number; h: number }

function drawPanel(p: Panel, box: Box, styles: Map<Series, Resolved>, id: string): string {
  const out: string[] = [];
  const logY = !!p.logY;
  const pts = p.series.map((s) => finitePoints(s, logY));
  const xData = extent(pts.flatMap((q) => q.xs));
  const yData = extent(pts.flatMap((q) => q.ys));

  let top = box.y;
  if (p.title) {
    const size = fitSize(p.title, FS.panelTitle, box.w - 10);
    out.push(text(box.x + box.w / 2, top + FS.panelTitle + 2, p.title, size, 'text-anchor="middle" font-weight="bold" fill="#222"'));
    top += FS.panelTitle + 12;
  }
  const bottomSpace = TICK_LEN + 4 + FS.tick + (p.xLabel ? 8 + FS.axis : 0) + 6;
  const plotH = Math.max(20, box.y + box.h - bottomSpace - top);
  const yt = axisTicks(p.yRange?.[0], p.yRange?.[1], yData, logY, Math.min(10, Math.max(2, Math.floor(plotH / 40) + 1)), false);
  const yLabelW = Math.max(...yt.labels.map((l) => textWidth(l, FS.tick)), 0);
  const left = box.x + 8 + (p.yLabel ? FS.axis + 10 : 0) + yLabelW + TICK_LEN + 4;
  let plotW = Math.max(20, box.x + box.w - 16 - left);
  // As many x ticks as fit without their labels touching.
  let xt = axisTicks(p.xRange?.[0], p.xRange?.[1], xData, false, 10, !!p.xInteger);
  for (let n = 10; n > 2; n--) {
    xt = axisTicks(p.xRange?.[0], p.xRange?.[1], xData, false, n, !!p.xInteger);
    const widest = Math.max(...xt.labels.map((l) => textWidth(l, FS.tick)));
    if ((plotW / Math.max(1, xt.values.length - 1)) >= widest + 14) break;
  }
  // The last x label is centred on the right edge: leave room for its right half.
  const lastHalf = textWidth(xt.labels[xt.labels.length - 1] ?? '', FS.tick) / 2 + 4;
  if (lastHalf > 16) plotW = Math.max(20, plotW - (lastHalf - 16));

  const tx = (v: number) => left + ((v - xt.lo) / (xt.hi - xt.lo || 1)) * plotW;
  const ly = (v: number) => (logY ? Math.log10(v) : v);
  const ty = (v: number) => top + plotH - ((ly(v) - ly(yt.lo)) / (ly(yt.hi) - ly(yt.lo) || 1)) * plotH;

  // Grid and ticks.
  if (yt.minor?.length) {
    out.push(`<g stroke="#f3f3f3" stroke-width="1">`);
    for (const v of yt.minor) out.push(`<line x1="${fmt(left)}" y1="${fmt(ty(v))}" x2="${fmt(left + plotW)}" y2="${fmt(ty(v))}"/>`);
    out.push('</g>');
    out.push(`<g stroke="#666" stroke-width="1">`);
    for (const v of yt.minor) out.push(`<line x1="${fmt(left - TICK_LEN / 2)}" y1="${fmt(ty(v))}" x2="${fmt(left)}" y2="${fmt(ty(v))}"/>`);
    out.push('</g>');
  }
  out.push(`<g stroke="#e6e6e6" stroke-width="1">`);
  for (const v of xt.values) out.push(`<line x1="${fmt(tx(v))}" y1="${fmt(top)}" x2="${fmt(tx(v))}" y2="${fmt(top + plotH)}"/>`);
  for (const v of yt.values) out.push(`<line x1="${fmt(left)}" y1="${fmt(ty(v))}" x2="${fmt(left + plotW)}" y2="${fmt(ty(v))}"/>`);
  out.push('</g>');
  out.push(`<g stroke="#444" stroke-width="1">`);
  for (const v of xt.values) out.push(`<line x1="${fmt(tx(v))}" y1="${fmt(top + plotH)}" x2="${fmt(tx(v))}" y2="${fmt(top + plotH + TICK_LEN)}"/>`);
  for (const v of yt.values) out.push(`<line x1="${fmt(left - TICK_LEN)}" y1="${fmt(ty(v))}" x2="${fmt(left)}" y2="${fmt(ty(v))}"/>`);
  out.push('</g>');
  out.push(`<g fill="#333">`);
  xt.values.forEach((v, i) => out.push(text(tx(v), top + plotH + TICK_LEN + 3 + FS.tick, xt.labels[i], FS.tick, 'text-anchor="middle"')));
  yt.values.forEach((v, i) => out.push(text(left - TICK_LEN - 3, ty(v) + FS.tick * 0.36, yt.labels[i], FS.tick, 'text-anchor="end"')));
  out.push('</g>');

  // Axis labels.
  if (p.xLabel) {
    out.push(text(left + plotW / 2, top + plotH + TICK_LEN + 4 + FS.tick + 8 + FS.axis, p.xLabel, fitSize(p.xLabel, FS.axis, plotW), 'text-anchor="middle" fill="#222"'));
  }
  if (p.yLabel) {
    const cx = box.x + 8 + FS.axis * 0.8;
    const cy = top + plotH / 2;
    out.push(text(cx, cy, p.yLabel, fitSize(p.yLabel, FS.axis, plotH), `text-anchor="middle" fill="#222" transform="rotate(-90 ${fmt(cx)} ${fmt(cy)})"`));
  }

  // Lines, clipped to the plot area (with room for the stroke at its edges).
  out.push(`<clipPath id="${id}"><rect x="${fmt(left - 3)}" y="${fmt(top - 3)}" width="${fmt(plotW + 6)}" height="${fmt(plotH + 6)}"/></clipPath>`);
  out.push(`<g clip-path="url(#${id})">`);
  p.series.forEach((s, si) => {
    const st = styles.get(s)!;
    const n = Math.min(s.x.length, s.y.length);
    // Split at unplottable points: a gap, not a jump to zero.
    const segments: [number[], number[]][] = [];
    let cx: number[] = [];
    let cy: number[] = [];
    for (let i = 0; i <= n; i++) {
      const ok = i < n && Number.isFinite(s.x[i]) && Number.isFinite(s.y[i]) && (!logY || s.y[i] > 0);
      if (ok) { cx.push(tx(s.x[i])); cy.push(ty(s.y[i])); } else if (cx.length) { segments.push([cx, cy]); cx = []; cy = []; }
    }
    const d: string[] = [];
    const dots: string[] = [];
    for (const [sx, sy] of segments) {
      if (sx.length === 1) { dots.push(`<circle cx="${fmt(sx[0])}" cy="${fmt(sy[0])}" r="${fmt(Math.max(2.5, st.width * 1.2))}" fill="${escapeXml(st.color)}"/>`); continue; }
      const [dx, dy] = decimate(sx, sy);
      d.push(dx.map((x, k) => `${k ? 'L' : 'M'}${fmt(x)} ${fmt(dy[k])}`).join(''));
    }
    if (d.length) out.push(`<path data-series="${si}" data-label="${escapeXml(s.label)}" d="${d.join('')}" ${strokeAttrs(st)}/>`);
    out.push(...dots);
  });
  out.push('</g>');
  if (!xData || !yData) out.push(text(left + plotW / 2, top + plotH / 2, 'no data', FS.axis, 'text-anchor="middle" fill="#888"'));
  out.push(`<rect x="${fmt(left)}" y="${fmt(top)}" width="${fmt(plotW)}" height="${fmt(plotH)}" fill="none" stroke="#444" stroke-width="1"/>`);
  return out.join('\n');
}

interface LegendItem { label: string; style: Resolved }

interface Placed { item: LegendItem; x: number; row: number; size: number }

/**
 * Legend layout: one centred row when everything fits, else a centred grid of equal columns so
 * the entries line up; labels wider than the whole chart shrink to fit.
 */
function layoutLegend(items: LegendItem[], width: number): { placed: Placed[]; rows: number } {
  if (!items.length) return { placed: [], rows: 0 };
  const gap = 22;
  const room = width - 20;
  const sizes = items.map((it) => fitSize(it.label, FS.legend, room - LEGEND_SAMPLE - 6));
  const widths = items.map((it, i) => LEGEND_SAMPLE + 6 + textWidth(it.label, sizes[i]));
  const total = widths.reduce((a, b) => a + b, 0) + gap * (items.length - 1);
  const placed: Placed[] = [];
  if (total <= room) {
    let x = (width - total) / 2;
    items.forEach((item, i) => { placed.push({ item, x, row: 0, size: sizes[i] }); x += widths[i] + gap; });
    return { placed, rows: 1 };
  }
  const colW = Math.max(...widths) + gap;
  const cols = Math.max(1, Math.floor((room + gap) / colW));
  const left = (width - (cols * colW - gap)) / 2;
  items.forEach((item, i) => placed.push({ item, x: left + (i % cols) * colW, row: Math.floor(i / cols), size: sizes[i] }));
  return { placed, rows: Math.ceil(items.length / cols) };
}

function drawLegend(placed: Placed[], y0: number): string {
  const out: string[] = [];
  for (const { item, x, row, size } of placed) {
    const y = y0 + row * 20 + 10;
    out.push(`<line x1="${fmt(x)}" y1="${fmt(y)}" x2="${fmt(x + LEGEND_SAMPLE)}" y2="${fmt(y)}" ${strokeAttrs(item.style)}/>`);
    out.push(text(x + LEGEND_SAMPLE + 6, y + FS.legend * 0.36, item.label, size, 'fill="#222"'));
  }
  return `<g class="legend">\n${out.join('\n')}\n</g>`;
}

/** Renders a line chart (one panel, or several side by side with a shared legend) to an SVG string. */
export function lineChart(spec: ChartSpec): string {
  const panels: Panel[] = spec.panels?.length ? spec.panels : [{
    series: spec.series ?? [], xLabel: spec.xLabel, yLabel: spec.yLabel, logY: spec.logY,
    xInteger: spec.xInteger, xRange: spec.xRange, yRange: spec.yRange,
  }];
  const W = Math.max(200, Math.round(spec.width ?? (panels.length === 1 ? 640 : 500 * panels.length)));
  const H = Math.max(150, Math.round(spec.height ?? 420));
  const styles = resolveStyles(panels);

  const seen = new Set<string>();
  const items: LegendItem[] = [];
  for (const p of panels) for (const s of p.series) {
    if (seen.has(s.label)) continue;
    seen.add(s.label);
    items.push({ label: s.label, style: styles.get(s)! });
  }
  const legend = layoutLegend(items, W);
  const legendH = legend.rows ? legend.rows * 20 + 8 : 0;

  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${FONT_FAMILY}">`);
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  let top = 8;
  if (spec.title) {
    out.push(text(W / 2, top + FS.title + 2, spec.title, fitSize(spec.title, FS.title, W - 20), 'text-anchor="middle" font-weight="bold" fill="#111"'));
    top += FS.title + 14;
  }
  const panelW = W / panels.length;
  const panelH = H - top - legendH - 6;
  panels.forEach((p, i) => out.push(drawPanel(p, { x: i * panelW, y: top, w: panelW, h: panelH }, styles, `clip${i}`)));
  if (legend.rows) out.push(drawLegend(legend.placed, H - legendH - 2));
  out.push('</svg>');
  return out.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// PNG

/**
 * Rasterizes an SVG to PNG and writes it atomically (temp file in the same folder, fsync, rename),
 * so a reader never sees half a picture. `scale` 2 gives a sharper image for high-density screens.
 */
export async function svgToPng(svg: string, file: string, opts: { scale?: number } = {}): Promise<void> {
  // Loaded lazily: sharp is a native module, and the SVG half of this file must not need it.
  const { default: sharp } = await import('sharp');
  const scale = opts.scale ?? 1;
  const png = await sharp(Buffer.from(svg), { density: 72 * scale }).png({ compressionLevel: 9 }).toBuffer();
  writeAtomic(file, png);
}

