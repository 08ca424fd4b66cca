// Charts: the SVG is well-formed XML carrying every series and label (escaped), ticks are nice numbers
// enclosing the data, the PNG has the asked size and real content, and plotRun reads metrics.jsonl
// (and names the file and line when it cannot).
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import sharp from 'sharp';
import { escapeXml, lineChart, logTicks, niceTicks, PALETTE, svgToPng, type ChartSpec } from '../src/report/chart.js';
import { MetricsFileError, plotRun, readMetrics, runCurvesSvg } from '../src/report/runplot.js';
import { run as plotCommand } from '../src/cli/commands/plot.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'residual-report-'));
  dirs.push(d);
  return d;
}

// ---------------------------------------------------------------------------------------------
// A minimal XML reader: enough to prove well-formedness (balanced tags, quoted attributes, no raw
// '<' or stray '&') and to query the tree.

interface El { name: string; attrs: Record<string, string>; children: El[]; text: string }

const ENTITY = /&(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);/g;
function unescape(s: string, where: string): string {
  assert.ok(!s.replace(ENTITY, '').includes('&'), `stray & in ${where}: ${s}`);
  return s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&');
}

function parseXml(xml: string): El {
  const root: El = { name: '#root', attrs: {}, children: [], text: '' };
  const stack: El[] = [root];
  const re = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|([^<]+)|(<)/g;
  let m: RegExpExecArray | null;
  let pos = 0;
  while ((m = re.exec(xml))) {
    assert.equal(m.index, pos, `unparsed text at ${pos}: ${xml.slice(pos, pos + 40)}`);
    pos = re.lastIndex;
    assert.equal(m[6], undefined, `raw '<' at ${m.index}: ${xml.slice(m.index, m.index + 40)}`);
    const top = stack[stack.length - 1];
    if (m[5] !== undefined) {
      if (m[5].trim()) top.text += unescape(m[5], `<${top.name}> text`);
      continue;
    }
    const [, close, name, attrText, selfClose] = m;
    if (close) {
      assert.equal(name, top.name, `</${name}> closes <${top.name}>`);
      stack.pop();
      continue;
    }
    const attrs: Record<string, string> = {};
    for (const a of attrText.matchAll(/([\w:-]+)="([^"]*)"/g)) {
      assert.ok(!(a[1] in attrs), `duplicate attribute ${a[1]} on <${name}>`);
      attrs[a[1]] = unescape(a[2], `${name}@${a[1]}`);
    }
    const el: El = { name, attrs, children: [], text: '' };
    top.children.push(el);
    if (!selfClose) stack.push(el);
  }
  assert.equal(pos, xml.length, 'trailing garbage');
  assert.equal(stack.length, 1, `unclosed <${stack[stack.length - 1].name}>`);
  assert.equal(root.children.length, 1, 'exactly one root element');
  return root.children[0];
}

function all(el: El, name: string): El[] {
  const out: El[] = [];
  const walk = (e: El) => { if (e.name === name) out.push(e); e.children.forEach(walk); };
  walk(el);
  return out;
}
const texts = (svg: El) => all(svg, 'text').map((t) => t.text);

// ---------------------------------------------------------------------------------------------

const epochs = Array.from({ length: 30 }, (_, i) => i + 1);
const twoPanels: ChartSpec = {
  title: 'Plain <vs> residual & friends',
  panels: [
    { title: 'training error', xLabel: 'epoch', yLabel: 'error (%)', xInteger: true, series: [
      { label: 'ResNet-20 train', group: 'r20', dash: 'dashed', x: epochs, y: epochs.map((e) => 40 / e + 5) },
      { label: 'plain-20 train', group: 'p20', dash: 'dashed', x: epochs, y: epochs.map((e) => 45 / e + 8) },
    ] },
    { title: 'test error', xLabel: 'epoch', yLabel: 'error (%)', xInteger: true, series: [
      { label: 'ResNet-20 test', group: 'r20', x: epochs, y: epochs.map((e) => 42 / e + 8) },
      { label: 'plain-20 test', group: 'p20', x: epochs, y: epochs.map((e) => 47 / e + 11) },
      // Shared label: one legend entry for both panels.
      { label: 'ResNet-20 train', group: 'r20', dash: 'dashed', x: epochs, y: epochs.map((e) => 40 / e + 5) },
    ] },
  ],
};

describe('escapeXml', () => {
  it('escapes markup characters and drops characters XML forbids', () => {
    assert.equal(escapeXml(`a<b>&"c'\u0001`), 'a&lt;b&gt;&amp;&quot;c&apos;');
  });
});

describe('niceTicks', () => {
  const isNice = (step: number) => {
    const m = step / 10 ** Math.floor(Math.log10(step) + 1e-9);
    return [1, 2, 5, 10].some((n) => Math.abs(m - n) < 1e-6);
  };
  it('encloses the data with evenly spaced 1-2-5 steps and at most maxCount ticks', () => {
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let t = 0; t < 500; t++) {
      const scale = 10 ** Math.floor(rand() * 12 - 6);
      const a = (rand() - 0.3) * scale;
      const b = a + rand() * scale * (rand() < 0.1 ? 1e-3 : 1);
      const maxCount = 2 + Math.floor(rand() * 9);
      const tk = niceTicks(a, b, maxCount);
      const where = `[${a}, ${b}] max ${maxCount}: ${tk.values.join(', ')}`;
      assert.ok(tk.values.length >= 2 && tk.values.length <= Math.max(maxCount, a < 0 && b > 0 ? 3 : 2), where);
      assert.ok(tk.lo <= Math.min(a, b) && tk.hi >= Math.max(a, b), where);
      const step = tk.values[1] - tk.values[0];
      assert.ok(isNice(step), `step ${step}: ${where}`);
      for (let i = 1; i < tk.values.length; i++) assert.ok(Math.abs(tk.values[i] - tk.values[i - 1] - step) <= step * 1e-9, where);
      assert.equal(new Set(tk.labels).size, tk.labels.length, `labels distinct: ${tk.labels.join(', ')}`);
    }
  });
  it('gives the usual answers on everyday ranges', () => {
    assert.deepEqual(niceTicks(0.013, 0.87, 6).labels, ['0.0', '0.2', '0.4', '0.6', '0.8', '1.0']);
    assert.deepEqual(niceTicks(1, 160, 9, true).values, [0, 20, 40, 60, 80, 100, 120, 140, 160]);
    assert.deepEqual(niceTicks(3.2, 47.5, 6).values, [0, 10, 20, 30, 40, 50]);
  });
  it('keeps whole-number steps on integer axes and survives degenerate input', () => {
    assert.deepEqual(niceTicks(1, 3, 10, true).values, [1, 2, 3]);
    assert.deepEqual(niceTicks(1, 1, 10, true).values, [0, 1, 2]);
    const flat = niceTicks(5, 5);
    assert.ok(flat.lo < 5 && flat.hi > 5);
    assert.deepEqual(niceTicks(NaN, NaN).values, [0, 0.2, 0.4, 0.6, 0.8, 1]);
  });
});

describe('logTicks', () => {
  it('encloses the data with 1-2-5 (or power-of-ten) values', () => {
    for (const [a, b] of [[0.011, 2.4], [0.3, 0.45], [1e-5, 100], [2, 2], [0.9, 1100], [7e3, 9e7]]) {
      const tk = logTicks(a, b, 6);
      const where = `[${a}, ${b}]: ${tk.labels.join(', ')}`;
      assert.ok(tk.lo <= a && tk.hi >= b, where);
      assert.ok(tk.values.length >= 2 && tk.values.length <= 9, where);
      for (const v of tk.values) {
        assert.ok(v >= tk.lo && v <= tk.hi, where);
        const m = v / 10 ** Math.floor(Math.log10(v) + 1e-9);
        assert.ok(Math.abs(m - Math.round(m)) < 1e-9, `${v} is a digit times a power of ten: ${where}`);
      }
    }
    assert.deepEqual(logTicks(0.15, 0.9).values, [0.1, 0.2, 0.5, 1]);
    // Sparse decade labels get unlabelled 2..9 ticks in between, none on a label.
    const sparse = logTicks(0.011, 2.4, 4);
    assert.deepEqual(sparse.values, [0.01, 0.1, 1]);
    assert.deepEqual([sparse.lo, sparse.hi], [0.01, 5]);
    assert.ok(sparse.minor!.includes(0.02) && sparse.minor!.includes(3) && !sparse.minor!.includes(1));
  });
});

describe('lineChart', () => {
  it('is well-formed SVG with the titles, axis labels and legend entries', () => {
    const svg = parseXml(lineChart(twoPanels));
    assert.equal(svg.name, 'svg');
    assert.equal(svg.attrs.xmlns, 'http://www.w3.org/2000/svg');
    assert.equal(svg.attrs.width, '1000');
    const t = texts(svg);
    for (const s of ['Plain <vs> residual & friends', 'training error', 'test error', 'epoch', 'error (%)', 'ResNet-20 train', 'plain-20 test']) {
      assert.ok(t.includes(s), `text "${s}" in ${JSON.stringify(t)}`);
    }
    // The shared label has a single legend entry; the legend holds four.
    assert.equal(t.filter((s) => s === 'ResNet-20 train').length, 1);
    const legend = all(svg, 'g').find((g) => g.attrs.class === 'legend')!;
    assert.equal(all(legend, 'text').length, 4);
  });

  it('escapes markup in every piece of text', () => {
    const raw = lineChart({ title: 'a<b & c', xLabel: 'x <i>', yLabel: 'y&', series: [{ label: '<script>&', x: [0, 1], y: [0, 1] }] });
    assert.ok(!raw.includes('<b') && !raw.includes('<i>') && !raw.includes('<script'));
    assert.ok(raw.includes('a&lt;b &amp; c') && raw.includes('&lt;script&gt;&amp;'));
    const t = texts(parseXml(raw));
    assert.ok(t.includes('a<b & c') && t.includes('<script>&') && t.includes('y&'));
  });

  it('draws one path per series, colours by group, dashes as asked', () => {
    const svg = parseXml(lineChart(twoPanels));
    const paths = all(svg, 'path');
    assert.equal(paths.length, 5);
    const byLabel = (l: string) => paths.filter((p) => p.attrs['data-label'] === l);
    const r20train = byLabel('ResNet-20 train')[0];
    const r20test = byLabel('ResNet-20 test')[0];
    const p20test = byLabel('plain-20 test')[0];
    assert.equal(r20train.attrs.stroke, r20test.attrs.stroke, 'same group, same colour');
    assert.notEqual(r20test.attrs.stroke, p20test.attrs.stroke, 'different groups, different colours');
    assert.ok(PALETTE.includes(r20test.attrs.stroke));
    assert.ok(r20train.attrs['stroke-dasharray'], 'train is dashed');
    assert.equal(r20test.attrs['stroke-dasharray'], undefined, 'test is solid');
    // Every line stays inside its panel's clip rectangle.
    for (const p of paths) assert.match(all(svg, 'g').find((g) => g.children.includes(p))!.attrs['clip-path'], /^url\(#clip\d\)$/);
  });

  it('leaves gaps at NaN, dots lone points, and copes with empty and all-NaN series', () => {
    const raw = lineChart({ series: [
      { label: 'gappy', x: [1, 2, 3, 4, 5, 6], y: [1, 2, NaN, 3, 4, Infinity] },
      { label: 'lonely', x: [1, 2, 3], y: [NaN, 2, NaN] },
      { label: 'empty', x: [], y: [] },
      { label: 'nan', x: [1, 2], y: [NaN, NaN] },
    ] });
    const svg = parseXml(raw);
    assert.ok(!/NaN|Infinity/.test(raw), 'no NaN leaks into coordinates');
    const paths = all(svg, 'path');
    assert.equal(paths.length, 1);
    assert.equal(paths[0].attrs.d.match(/M/g)?.length, 2, 'two segments around the NaN');
    assert.equal(all(svg, 'circle').length, 1, 'the lone point is a dot');
    assert.ok(texts(svg).includes('empty'), 'empty series still has its legend entry');

    const none = parseXml(lineChart({ title: 'nothing', series: [] }));
    assert.ok(texts(none).includes('no data'));
  });

  it('log y skips values <= 0 and puts ticks on 1-2-5 values', () => {
    const raw = lineChart({ logY: true, series: [{ label: 'loss', x: [0, 1, 2, 3], y: [2.3, 0, -1, 0.05] }] });
    const svg = parseXml(raw);
    assert.ok(!/NaN|Infinity/.test(raw));
    const t = texts(svg);
    for (const s of ['0.05', '0.1', '1']) assert.ok(t.includes(s), `${s} in ${t.join(' ')}`);
    assert.equal(all(svg, 'circle').length, 2, 'both ends are cut off from their neighbours by the non-positive values');
  });
});

describe('svgToPng', () => {
  it('writes a PNG of the SVG size with real content, atomically', async () => {
    const dir = tempDir();
    const file = join(dir, 'chart.png');
    await svgToPng(lineChart(twoPanels), file);
    assert.deepEqual(readdirSync(dir), ['chart.png'], 'no temp file left behind');
    const meta = await sharp(file).metadata();
    assert.equal(meta.format, 'png');
    assert.equal(meta.width, 1000);
    assert.equal(meta.height, 420);

    const { data, info } = await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const px = (x: number, y: number) => { const o = (y * info.width + x) * info.channels; return [data[o], data[o + 1], data[o + 2]]; };
    assert.deepEqual(px(2, 2), [255, 255, 255], 'white background');
    let dark = 0;
    let coloured = 0;
    let titleInk = 0;
    for (let y = 0; y < info.height; y++) {
      for (let x = 0; x < info.width; x++) {
        const [r, g, b] = px(x, y);
        if (r + g + b < 300) { dark++; if (y < 30) titleInk++; }
        if (Math.max(r, g, b) - Math.min(r, g, b) > 80) coloured++;
      }
    }
    const n = info.width * info.height;
    assert.ok(dark > n * 0.005 && dark < n * 0.2, `dark pixels ${dark} of ${n}`);
    assert.ok(coloured > 2000, `coloured (line) pixels: ${coloured}`);
    assert.ok(titleInk > 200, `the title's glyphs rendered: ${titleInk} dark pixels`);
  });

  it('names the asked-for file when it cannot write', async () => {
    const file = join(tempDir(), 'missing', 'chart.png');
    await assert.rejects(svgToPng(lineChart({ series: [] }), file), { message: `cannot write ${file}: its folder does not exist` });
  });

  it('scale 2 doubles the pixel size', async () => {
    const file = join(tempDir(), 'x2.png');
    await svgToPng(lineChart({ width: 300, height: 200, series: [{ label: 'a', x: [0, 1], y: [0, 1] }] }), file, { scale: 2 });
    const meta = await sharp(file).metadata();
    assert.deepEqual([meta.width, meta.height], [600, 400]);
  });
});

// ---------------------------------------------------------------------------------------------

function metricsLine(epoch: number, test = true): string {
  return JSON.stringify({
    epoch, iteration: epoch * 100, train_loss: 2 / epoch, train_acc: 1 - 0.5 / epoch, train_top5: 1,
    test_loss: test ? 2.2 / epoch : null, test_acc: test ? 1 - 0.6 / epoch : null, test_top5: test ? 1 : null,
    lr: 0.1, elapsed_s: epoch * 3, epoch_s: 3, images_per_s: 1000,
  });
}

function runDir(lines: string[]): string {
  const dir = tempDir();
  writeFileSync(join(dir, 'metrics.jsonl'), lines.join('\n') + '\n');
  return dir;
}

describe('plotRun', () => {
  it('reads metrics.jsonl, keeping the last line of a repeated epoch, and writes curves.png', async () => {
    const lines = [1, 2, 3, 4, 5, 6].map((e) => metricsLine(e, e !== 3));
    // A resumed run logs epoch 5 again: the later line wins.
    lines.push(JSON.stringify({ ...JSON.parse(metricsLine(5)), train_loss: 0.123 }), '', metricsLine(7));
    const dir = runDir(lines);
    const records = readMetrics(join(dir, 'metrics.jsonl'));
    assert.deepEqual(records.map((r) => r.epoch), [1, 2, 3, 4, 5, 6, 7]);
    assert.equal(records[4].train_loss, 0.123);

    const svg = parseXml(runCurvesSvg(records, { title: 'run' }));
    const t = texts(svg);
    for (const s of ['loss', 'error', 'error (%)', 'epoch', 'train', 'test']) assert.ok(t.includes(s), s);
    const paths = all(svg, 'path');
    assert.equal(paths.length, 4, 'train and test in each panel');
    // Epoch 3 has no test metrics: the test curve skips it rather than breaking.
    for (const p of paths) assert.equal(p.attrs.d.match(/M/g)?.length, 1);

    const out = await plotRun(dir);
    assert.equal(out, join(dir, 'curves.png'));
    const meta = await sharp(out).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', 1000, 420]);
    const stats = await sharp(out).stats();
    assert.ok(stats.channels[0].stdev > 10, 'not blank');
  });

  it('writes SVG for a .svg --out, and the command prints the path', async () => {
    const dir = runDir([metricsLine(1), metricsLine(2)]);
    const out = join(dir, 'c.svg');
    const printed: string[] = [];
    const log = console.log;
    console.log = (s: string) => printed.push(s);
    try {
      assert.equal(await plotCommand([dir, '--out', out]), 0);
    } finally {
      console.log = log;
    }
    assert.deepEqual(printed, [out]);
    const svg = parseXml((await import('node:fs')).readFileSync(out, 'utf8'));
    assert.ok(texts(svg).some((s) => s.includes('2 epochs, best test error 30.00% (epoch 2)')));
  });

  it('a single epoch plots as dots', async () => {
    const svg = parseXml(runCurvesSvg(readMetrics(join(runDir([metricsLine(1)]), 'metrics.jsonl'))));
    assert.equal(all(svg, 'circle').length, 4);
  });

  it('names the file and the line of a malformed line', () => {
    const dir = runDir([metricsLine(1), metricsLine(2), '{"epoch": 3, "train_loss": 0.5', metricsLine(4)]);
    const file = join(dir, 'metrics.jsonl');
    assert.throws(() => readMetrics(file), (e: unknown) => {
      assert.ok(e instanceof MetricsFileError);
      assert.equal(e.line, 3);
      assert.equal(e.file, file);
      assert.match(e.message, /metrics\.jsonl, line 3: malformed line, not JSON/);
      return true;
    });
    const bad = runDir([metricsLine(1), '{"epoch": "two"}']);
    assert.throws(() => readMetrics(join(bad, 'metrics.jsonl')), /line 2: malformed line: "epoch" must be a number/);
    const badField = runDir(['{"epoch": 1, "train_loss": "0.3"}']);
    assert.throws(() => readMetrics(join(badField, 'metrics.jsonl')), /line 1: .*"train_loss" must be a number or null/);
    const arr = runDir(['[1, 2]']);
    assert.throws(() => readMetrics(join(arr, 'metrics.jsonl')), /line 1: malformed line: expected a JSON object/);
  });

  it('names the file when metrics.jsonl is missing or empty', async () => {
    const dir = tempDir();
    const file = join(dir, 'metrics.jsonl');
    await assert.rejects(plotRun(dir), (e: Error) => e instanceof MetricsFileError && e.message.startsWith(file) && /no such file/.test(e.message));
    writeFileSync(file, '\n\n');
    await assert.rejects(plotRun(dir), new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: empty`));
    assert.ok(!existsSync(join(dir, 'curves.png')));
  });
});
