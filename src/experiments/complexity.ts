// Params and MACs of every registered model, recomputed from our builders by the analytic walk,
// next to REFERENCE.md's exact figures (counted with PyTorch) and the papers' printed ones.
// FLOPs as the papers count them are multiply-adds: conv and linear layers, batch 1.
import { join } from 'node:path';
import { listModels, traceModel } from '../models/registry.js';
import { lineChart, svgToPng } from '../report/index.js';
import { int, table, writeText } from './markdown.js';
import type { ExperimentOptions } from './options.js';
import type { ExperimentResult } from './index.js';

export const summary = 'params and MACs of every model against REFERENCE.md and the papers\' printed figures (no training)';

/** REFERENCE.md's exact figures: params, and MACs as printed there (GMACs at 224, MMACs at 32). */
export const REFERENCE_EXACT: Record<string, { params: number; macs: string; unit: 'G' | 'M' }> = {
  resnet18: { params: 11_689_512, macs: '1.814', unit: 'G' },
  resnet34: { params: 21_797_672, macs: '3.664', unit: 'G' },
  resnet50: { params: 25_557_032, macs: '4.089', unit: 'G' },
  resnet101: { params: 44_549_160, macs: '7.801', unit: 'G' },
  resnet152: { params: 60_192_808, macs: '11.514', unit: 'G' },
  resnext50_32x4d: { params: 25_028_904, macs: '4.230', unit: 'G' },
  resnext101_32x8d: { params: 88_791_336, macs: '16.414', unit: 'G' },
  resnext101_64x4d: { params: 83_455_272, macs: '15.460', unit: 'G' },
  wide_resnet50_2: { params: 68_883_240, macs: '11.398', unit: 'G' },
  wide_resnet101_2: { params: 126_886_696, macs: '22.753', unit: 'G' },
  resnet20: { params: 269_722, macs: '40.6', unit: 'M' },
  resnet32: { params: 464_154, macs: '68.9', unit: 'M' },
  resnet44: { params: 658_586, macs: '97.2', unit: 'M' },
  resnet56: { params: 853_018, macs: '125.5', unit: 'M' },
  resnet110: { params: 1_727_962, macs: '252.9', unit: 'M' },
  resnet1202: { params: 19_421_274, macs: '2829.2', unit: 'M' },
};

/**
 * Models whose exact count follows from one in REFERENCE.md: a plain net has exactly the layers of
 * its ResNet twin (option A shortcuts have no parameters; ImageNet plain18/34 drop the projections).
 */
const TWIN: Record<string, string> = { plain20: 'resnet20', plain32: 'resnet32', plain44: 'resnet44', plain56: 'resnet56', plain110: 'resnet110' };

/** A figure as a paper prints it: params in millions, FLOPs (multiply-adds) in billions. */
export interface PrintedFigure {
  model: string;
  source: string;
  params?: string;
  flops?: string;
  /** The paper gives it as "about" (~). */
  approx?: boolean;
  note?: string;
}

export const PRINTED: PrintedFigure[] = [
  { model: 'resnet18', source: 'ResNet Table 1', flops: '1.8' },
  { model: 'plain18', source: 'ResNet Table 1 (plain-18)', flops: '1.8' },
  { model: 'resnet34', source: 'ResNet Table 1', flops: '3.6' },
  { model: 'plain34', source: 'ResNet Table 1 (plain-34)', flops: '3.6' },
  { model: 'resnet50', source: 'ResNet Table 1', flops: '3.8', note: 'the paper strides the first 1x1 of a stage; torchvision ("V1.5") the 3x3, which costs more' },
  { model: 'resnet101', source: 'ResNet Table 1', flops: '7.6', note: 'stride placement, as resnet50' },
  { model: 'resnet152', source: 'ResNet Table 1', flops: '11.3', note: 'stride placement, as resnet50' },
  { model: 'resnet50', source: 'ResNeXt Table 1', params: '25.5', flops: '4.1' },
  { model: 'resnext50_32x4d', source: 'ResNeXt Table 1', params: '25.0', flops: '4.2' },
  { model: 'resnet101', source: 'ResNeXt Table 3', params: '44', flops: '7.8', approx: true },
  { model: 'resnext101_64x4d', source: 'ResNeXt Table 4 (2x ResNet-101)', flops: '15', approx: true },
  { model: 'resnet20', source: 'ResNet Table 6', params: '0.27' },
  { model: 'resnet32', source: 'ResNet Table 6', params: '0.46' },
  { model: 'resnet44', source: 'ResNet Table 6', params: '0.66' },
  { model: 'resnet56', source: 'ResNet Table 6', params: '0.85' },
  { model: 'resnet110', source: 'ResNet Table 6', params: '1.7' },
  { model: 'resnet1202', source: 'ResNet Table 6', params: '19.4' },
  { model: 'resnext29_8x64d', source: 'ResNeXt Table 7', params: '34.4' },
  { model: 'resnext29_16x64d', source: 'ResNeXt Table 7', params: '68.1' },
];

export type Agreement = 'equal' | 'last digit' | 'differs';

/** Whether `value` (in `unit`s) is what a paper printed: equal when rounded to its digits, or within one unit of its last digit. */
export function compareToPrinted(value: number, printed: string, unit: number, approx = false): Agreement {
  const decimals = printed.includes('.') ? printed.split('.')[1].length : 0;
  const v = value / unit;
  if (v.toFixed(decimals) === Number(printed).toFixed(decimals)) return 'equal';
  const step = 10 ** -decimals;
  if (Math.abs(v - Number(printed)) <= step + 1e-12 || (approx && Math.abs(v / Number(printed) - 1) <= 0.05)) return 'last digit';
  return 'differs';
}

export async function run(o: ExperimentOptions): Promise<ExperimentResult> {
  const started = Date.now();
  const models = listModels().map((e) => {
    const t = traceModel(e.name);
    return { name: e.name, family: e.family, input: e.defaultInput, params: t.params, macs: t.macs };
  });
  const figures = new Map(models.map((m) => [m.name, m]));
  // One extra row REFERENCE.md has: the Fashion-MNIST ResNet-20 (one input channel).
  const fm = traceModel('resnet20', [1, 28, 28], { inChannels: 1 });

  let mismatches = 0;
  const exactRows = models.map((m) => {
    const ref = REFERENCE_EXACT[m.name] ?? (TWIN[m.name] ? REFERENCE_EXACT[TWIN[m.name]] : undefined);
    const ours = m.family === 'imagenet' ? (m.macs / 1e9).toFixed(3) : (m.macs / 1e6).toFixed(1);
    const unit = m.family === 'imagenet' ? 'G' : 'M';
    let pEq = '-';
    let mEq = '-';
    if (ref) {
      pEq = ref.params === m.params ? 'equal' : 'DIFFERS';
      mEq = ref.macs === ours ? 'equal' : 'DIFFERS';
      if (pEq !== 'equal' || mEq !== 'equal') mismatches++;
    }
    const via = ref && !REFERENCE_EXACT[m.name] ? ` (as ${TWIN[m.name]})` : '';
    return [m.name, m.family, m.input.join('x'), int(m.params), `${ours} ${unit}`, ref ? int(ref.params) + via : '-', pEq, ref ? `${ref.macs} ${ref.unit}` : '-', mEq];
  });
  exactRows.push(['resnet20 (Fashion-MNIST)', 'cifar', '1x28x28', int(fm.params), `${(fm.macs / 1e6).toFixed(1)} M`, int(269_434), fm.params === 269_434 ? 'equal' : 'DIFFERS', '-', '-']);
  if (fm.params !== 269_434) mismatches++;

  const printedRows = PRINTED.filter((p) => figures.has(p.model)).map((p) => {
    const m = figures.get(p.model)!;
    const cells: string[] = [p.model, p.source];
    const verdicts: Agreement[] = [];
    if (p.params) {
      const a = compareToPrinted(m.params, p.params, 1e6, p.approx);
      verdicts.push(a);
      cells.push(`${p.approx ? '~' : ''}${p.params}M`, `${(m.params / 1e6).toFixed(3)}M`);
    } else cells.push('-', `${(m.params / 1e6).toFixed(3)}M`);
    if (p.flops) {
      const a = compareToPrinted(m.macs, p.flops, 1e9, p.approx);
      verdicts.push(a);
      cells.push(`${p.approx ? '~' : ''}${p.flops}G`, `${(m.macs / 1e9).toFixed(3)}G`);
    } else cells.push('-', m.family === 'imagenet' ? `${(m.macs / 1e9).toFixed(3)}G` : `${(m.macs / 1e6).toFixed(1)}M`);
    const worst = verdicts.includes('differs') ? 'differs' : verdicts.includes('last digit') ? 'within the last digit' : 'equal';
    cells.push(worst + (p.note && worst === 'differs' ? `: ${p.note}` : ''));
    return cells;
  });

  // One line per family of ImageNet models, in order of cost: where each sits in params and MACs.
  const figure = 'complexity.png';
  const family = (n: string) => (n.startsWith('resnext') ? 'ResNeXt' : n.startsWith('wide') ? 'Wide ResNet' : n.startsWith('plain') ? 'plain' : 'ResNet');
  const imagenet = models.filter((m) => m.family === 'imagenet' && !m.name.startsWith('plain')).sort((a, b) => a.macs - b.macs);
  const families = [...new Set(imagenet.map((m) => family(m.name)))];
  await svgToPng(lineChart({
    title: 'ImageNet families at 224x224: params against MACs, from our builders',
    width: 1000, height: 440,
    panels: [{
      xLabel: 'GMACs (multiply-adds, batch 1)', yLabel: 'params (M)', xRange: [0, undefined], yRange: [0, undefined],
      series: families.map((f) => {
        const ms = imagenet.filter((m) => family(m.name) === f);
        return { label: `${f}: ${ms.map((m) => m.name).join(', ')}`, x: ms.map((m) => m.macs / 1e9), y: ms.map((m) => m.params / 1e6), width: 2.5 };
      }),
    }],
  }), join(o.out, figure), { scale: 2 });

  const differing = printedRows.filter((r) => r[r.length - 1].startsWith('differs'));
  const wall = (Date.now() - started) / 1000;
  const report = [
    '# Model complexity: params and MACs',
    '',
    `Every model in the registry (${models.length}), counted by the analytic walk of its builder (\`traceModel\`): parameters ` +
      '(conv, BN affine, linear), and multiply-accumulates of the conv and linear layers at the model\'s default input, batch 1 ' +
      '(what the papers call FLOPs and torchvision "GFLOPS"). No training; no weights are allocated.',
    '',
    '## Against REFERENCE.md (exact, counted with PyTorch 1.13 / torchvision 0.14)',
    '',
    table(['model', 'family', 'input', 'params', 'MACs', 'REFERENCE.md params', 'params', 'REFERENCE.md MACs', 'MACs'], exactRows,
      [false, false, false, true, true, true, false, true, false]),
    '',
    'Plain CIFAR nets are compared with their ResNet twins: option A shortcuts have no parameters, so the counts must be the same.',
    '',
    '## Against the papers\' printed figures',
    '',
    table(['model', 'source', 'paper params', 'ours', 'paper FLOPs', 'ours', 'agreement'], printedRows, [false, false, true, true, true, true, false]),
    '',
    '"within the last digit": the paper\'s figure is one unit of its last printed digit away (truncated rather than rounded, or "~").',
    '',
    `![params against MACs of the ImageNet models](${figure})`,
    '',
    '## The claim at this scale',
    '',
    mismatches === 0
      ? `- HELD: every model REFERENCE.md lists (and the plain twins) has exactly its params and MACs.`
      : `- DID NOT HOLD: ${mismatches} model(s) differ from REFERENCE.md (marked DIFFERS above).`,
    differing.length === 0
      ? '- The papers\' printed figures all agree with ours to their printed digits.'
      : `- The papers' printed figures agree to their printed digits except ${differing.map((r) => `${r[0]} (${r[1]})`).join(', ')}: see the notes in the table.`,
    '',
  ].join('\n');
  writeText(join(o.out, 'report.md'), report);
  return {
    experiment: 'complexity', out: o.out, report: join(o.out, 'report.md'), figures: [join(o.out, figure)], held: mismatches === 0, seconds: wall,
    claims: [{ claim: "every builder's params and MACs equal REFERENCE.md (PyTorch 1.13 / torchvision 0.14 counts)", held: mismatches === 0, evidence: { models: exactRows.length, mismatches } }],
    models,
  };
}
