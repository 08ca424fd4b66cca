// `residual experiment` end to end at a tiny scale (a few hundred samples, one epoch, small nets):
// every experiment writes its report with the tables and its PNG plots; the block forms agree
// within 1e-5; the complexity table equals REFERENCE.md's exact figures, parsed from the file.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { cifarResNeXtSpec, traceNet } from '../src/models/index.js';
import { compareToPrinted } from '../src/experiments/complexity.js';
import { equalCostWidths, parseBudget, solveWidth } from '../src/experiments/index.js';
import { judgeLower } from '../src/experiments/markdown.js';
import { makePlan } from '../src/experiments/training.js';
import { tryNativeBackend } from '../src/backend/index.js';
import { repoRoot } from './helpers.js';

const cli = join(repoRoot, 'dist', 'src', 'cli', 'main.js');
const work = mkdtempSync(join(tmpdir(), 'residual-experiments-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** Runs the CLI with --json and returns the final result event. */
function experiment(...args: string[]): Record<string, unknown> {
  const r = spawnSync(process.execPath, [cli, 'experiment', ...args, '--json'], { encoding: 'utf8' });
  assert.equal(r.status, 0, `residual experiment ${args.join(' ')} failed:\n${r.stderr}\n${r.stdout}`);
  const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const end = events.find((e) => e.event === 'end');
  assert.ok(end, `an end event in ${r.stdout}`);
  return end;
}

function assertPng(file: string): void {
  assert.ok(existsSync(file), `${file} exists`);
  assert.deepEqual([...readFileSync(file).subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], `${file} is a PNG`);
}

/** The rows of the markdown table whose header row starts with `firstHeader`, as cells. */
function tableRows(md: string, firstHeader: string): string[][] {
  const lines = md.split('\n');
  const start = lines.findIndex((l) => l.startsWith(`| ${firstHeader} |`));
  assert.ok(start >= 0, `a table headed "${firstHeader}"`);
  const rows: string[][] = [];
  for (let i = start + 2; i < lines.length && lines[i].startsWith('|'); i++) rows.push(lines[i].slice(1, -1).split(' | ').map((c) => c.trim()));
  return rows;
}

const tiny = ['--subset', '256', '--test-subset', '128', '--batch', '32'];

describe('residual experiment degradation', () => {
  const out = join(work, 'degradation');
  let result: Record<string, unknown>;
  it('trains plain and residual nets of depth 8 and 14 and writes report, figure and run folders', () => {
    result = experiment('degradation', '--depths', '8,14', ...tiny, '--budget', '1e', '--evals', '2', '--out', out);
    const report = readFileSync(join(out, 'report.md'), 'utf8');
    assert.match(report, /^# Degradation/m);
    assert.match(report, /fashion-mnist, 256 training samples/);
    assert.match(report, /8 iterations of batch 32 per model \(1\.00 epochs\)/);
    const rows = tableRows(report, 'model');
    assert.deepEqual(rows.map((r) => r[0]), ['plain-8', 'plain-14', 'ResNet-8', 'ResNet-14']);
    for (const r of rows) for (const c of [4, 5]) assert.match(r[c], /^\d+\.\d\d%$/, `error cells of ${r[0]}`);
    // Plain and residual twins have the same parameters (option A shortcuts).
    assert.equal(rows[0][2], rows[2][2]);
    assert.match(report, /^- (HELD|DID NOT HOLD|INCONCLUSIVE): the deeper plain-14/m);
    assert.match(report, /!\[.*\]\(degradation\.png\)/);
    assertPng(join(out, 'degradation.png'));
    // result.json: one entry per claim, the verdict the report states, and its figures.
    // Training error and test error, each per family.
    const claims = (JSON.parse(readFileSync(join(out, 'result.json'), 'utf8')) as { claims: { claim: string; held: unknown; evidence: Record<string, any> }[] }).claims;
    assert.deepEqual(claims.map((c) => c.claim), [
      'the deeper plain-14 trains to a higher training error than plain-8', 'the deeper plain-14 reaches a higher test error than plain-8',
      'the deeper ResNet-14 trains to a lower training error than ResNet-8', 'the deeper ResNet-14 reaches a lower test error than ResNet-8']);
    for (const c of claims) {
      assert.ok([true, false, 'inconclusive'].includes(c.held as boolean | string));
      const said = /^- (HELD|DID NOT HOLD|INCONCLUSIVE): (.*?) \(/m.exec(report.slice(report.indexOf(c.claim) - 20));
      assert.equal(c.held, { HELD: true, 'DID NOT HOLD': false, INCONCLUSIVE: 'inconclusive' }[said![1]!], `${c.claim}: result.json agrees with report.md`);
      assert.equal(c.evidence.iterations, 8);
      if (c.claim.includes('training error')) assert.ok(c.evidence.two_standard_errors > 0);
    }
    // The test-error claims rest on McNemar's test of the saved per-image predictions: recomputed here from the files.
    assert.equal(readFileSync(join(out, 'models', 'plain8', 'predictions.u8')).length, 128, 'one prediction per test image');
    for (const [c, better, worse] of [[claims[1]!, 'plain8', 'plain14'], [claims[3]!, 'resnet14', 'resnet8']] as const) {
      const pb = readFileSync(join(out, 'models', better, 'predictions.u8'));
      const pw = readFileSync(join(out, 'models', worse, 'predictions.u8'));
      assert.equal(c.evidence.test_samples, 128);
      const m = c.evidence.mcnemar as Record<string, number>;
      assert.ok(m.exact_p > 0 && m.exact_p <= 1, `${c.claim}: exact p`);
      // Images the two classify differently bound the discordant counts.
      let differ = 0;
      for (let i = 0; i < pb.length; i++) if (pb[i] !== pw[i]) differ++;
      assert.ok(m[`only_${better}_right`]! + m[`only_${worse}_right`]! <= differ);
    }
    for (const m of ['plain8', 'plain14', 'resnet8', 'resnet14']) {
      const metrics = readFileSync(join(out, 'models', m, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { iteration: number; dtype: string });
      assert.deepEqual(metrics.map((x) => x.iteration), [4, 8], `${m}: a test evaluation every 4 iterations`);
      assert.deepEqual(metrics.map((x) => x.dtype), ['f32', 'f32'], `${m}: each epoch logs its precision`);
      const curve = readFileSync(join(out, 'models', m, 'curve.jsonl'), 'utf8').trim().split('\n');
      assert.equal(curve.length, 8, `${m}: a training-error point per iteration`);
      assertPng(join(out, 'models', m, 'curves.png'));
    }
  });
  it('--resume on a finished run reuses its models instead of training again', () => {
    const again = experiment('degradation', '--depths', '8,14', ...tiny, '--budget', '1e', '--evals', '2', '--out', out, '--resume');
    assert.deepEqual(again.models, result.models);
  });
  it('--models trains only the models named, into a folder another process shares; a name it does not have is refused', () => {
    const shared = join(work, 'degradation-shared');
    const part = experiment('degradation', '--depths', '8,14', ...tiny, '--budget', '1e', '--evals', '2', '--out', shared, '--models', 'plain14');
    assert.deepEqual((part.models as { name: string }[]).map((m) => m.name), ['plain14']);
    assert.ok(existsSync(join(shared, 'models', 'plain14', 'metrics.jsonl')));
    assert.ok(!existsSync(join(shared, 'models', 'resnet8')), 'the other models are left to other processes');
    // The claims whose pairs this process did not train are said to be unmeasured, and why.
    const claims = part.claims as { held: unknown; evidence: { not_measured?: boolean; reason?: string } }[];
    assert.deepEqual(claims.map((c) => c.evidence.reason),
      ['plain-8 not trained in this run', 'plain-8 not trained in this run', 'ResNet-8 and ResNet-14 not trained in this run', 'ResNet-8 and ResNet-14 not trained in this run']);
    assert.ok(claims.every((c) => c.evidence.not_measured === true));
    const report = readFileSync(join(shared, 'report.md'), 'utf8');
    assert.match(report, /^- NOT MEASURED: the deeper ResNet-14 .* \(ResNet-8 and ResNet-14 not trained in this run\)/m);
    assert.match(report, /^This run measured neither half of the paper's claim/m);
    assert.doesNotMatch(report, /within sampling noise/);
    const bad = spawnSync(process.execPath, [cli, 'experiment', 'degradation', '--depths', '8,14', ...tiny, '--models', 'resnet56', '--out', shared], { encoding: 'utf8' });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /--models resnet56: not one of this run's models \(resnet8, resnet14, plain8, plain14\)/);
  });
});

describe('residual experiment --dtype', () => {
  it('bf16: the models train in bf16 (their logs and the report say so); --resume in f32 is refused, naming the fix', async (t) => {
    const native = await tryNativeBackend();
    const isa = native?.info().isa ?? '';
    if (!['avx512_core_bf16', 'avx512_core_amx'].includes(isa)) return t.skip(`bf16 training needs AVX512-BF16; this CPU: ${isa || 'no native backend'}`);
    const out = join(work, 'degradation-bf16');
    const r = experiment('degradation', '--depths', '8,14', ...tiny, '--budget', '1e', '--evals', '2', '--out', out, '--models', 'plain8', '--dtype', 'bf16');
    assert.deepEqual((r.models as { name: string }[]).map((m) => m.name), ['plain8']);
    const metrics = readFileSync(join(out, 'models', 'plain8', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { dtype?: string });
    assert.deepEqual(metrics.map((m) => m.dtype), ['bf16', 'bf16']);
    assert.match(readFileSync(join(out, 'report.md'), 'utf8'), /^- precision: bf16 mixed precision/m);
    const refused = spawnSync(process.execPath, [cli, 'experiment', 'degradation', '--depths', '8,14', ...tiny, '--budget', '1e', '--evals', '2', '--out', out,
      '--models', 'plain8', '--resume'], { encoding: 'utf8' });
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /--resume: plain8 in .* trained in bf16, this run asks for f32; give --dtype bf16 to continue it/);
  });
  it('refuses a precision it does not have, and --dtype on an experiment that trains nothing', () => {
    let r = spawnSync(process.execPath, [cli, 'experiment', 'degradation', '--dtype', 'fp16'], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /--dtype must be f32 or bf16, got "fp16"/);
    r = spawnSync(process.execPath, [cli, 'experiment', 'forms', '--dtype', 'bf16'], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /--dtype is for the training experiments \(degradation, cardinality\); forms trains nothing/);
  });
});

describe('residual experiment cardinality', () => {
  const out = join(work, 'cardinality');
  let result: Record<string, unknown>;
  it('trains Table 3 and Table 4 at two seeds, paired, and writes result.json with the tests, the power and the predictions', () => {
    result = experiment('cardinality', '--cardinalities', '1,2', '--width', '4', '--base', '4', '--depth', '11', ...tiny, '--budget', '1e',
      '--evals', '2', '--seeds', '2', '--out', out);
    const report = readFileSync(join(out, 'report.md'), 'utf8');
    assert.match(report, /## Design and power \(stated before the run\)/);
    const t3 = tableRows(report, 'configuration');
    assert.deepEqual(t3.map((x) => x[0]), ['1x4d', '2x2d']);
    for (const r of t3) assert.match(r[9], /^\d+\.\d\d% ± \d+\.\d\d%$/, `mean ± SE for ${r[0]}`);
    assertPng(join(out, 'cardinality.png'));
    const res = JSON.parse(readFileSync(join(out, 'result.json'), 'utf8')) as {
      claims: { claim: string; held: unknown; evidence: Record<string, any> }[];
      plan: { design: { power: { detectable: number; mcnemar_pooled: number; paired_across_seeds: number }; configs: { name: string }[]; estimated_seconds: number } };
      models: { name: string; seed: number }[];
    };
    assert.deepEqual(res.claims.map((c) => c.claim), ['more cardinality beats the C=1 baseline at equal cost', 'more cardinality beats deeper at 2x cost', 'more cardinality beats wider at 2x cost']);
    for (const c of res.claims) {
      assert.ok([true, false, 'inconclusive'].includes(c.held as boolean | string));
      const e = c.evidence;
      assert.deepEqual(e.seeds, [0, 1]);
      assert.equal(e.better.test_error_per_seed.length, 2);
      assert.ok(Number.isFinite(e.better.test_error_se));
      assert.equal(e.difference.per_seed.length, 2);
      assert.ok(e.difference.p >= 0 && e.difference.p <= 1);
      assert.ok(e.mcnemar_pooled.exact_p >= 0 && e.mcnemar_pooled.exact_p <= 1);
      assert.equal(e.mcnemar_per_seed.length, 2);
      assert.ok(e.detectable_difference_planned > 0);
      // The verdict the report states.
      const word = { true: 'HELD', false: 'DID NOT HOLD', inconclusive: 'INCONCLUSIVE' }[String(c.held)];
      assert.ok(report.includes(`- ${word}: ${c.claim}`), `${c.claim}: report.md says ${word}`);
    }
    assert.deepEqual(res.plan.design.configs.map((c) => c.name), ['c1_d4', 'c2_d2', 'deeper_2-4-2_1x4d', 'wider_1x7d', 'card_2x5d']);
    assert.ok(res.plan.design.power.detectable >= res.plan.design.power.mcnemar_pooled);
    assert.ok(res.plan.design.estimated_seconds > 0);
    assert.equal(res.models.length, 10, '5 configurations x 2 seeds');
    // One byte per test image in each model's folder, and the labels beside them: McNemar recomputes from the files.
    const labels = readFileSync(join(out, 'labels.u8'));
    assert.equal(labels.length, 128);
    const pred = (m: string) => readFileSync(join(out, 'models', m, 'predictions.u8'));
    for (const m of res.models) assert.equal(pred(m.name).length, 128);
    const a = pred('card_2x5d_s0');
    const b = pred('deeper_2-4-2_1x4d_s0');
    let nb = 0;
    let nc = 0;
    for (let i = 0; i < 128; i++) {
      if (a[i] === labels[i] && b[i] !== labels[i]) nb++;
      if (a[i] !== labels[i] && b[i] === labels[i]) nc++;
    }
    assert.deepEqual([nb, nc], [res.claims[1].evidence.mcnemar_per_seed[0].b, res.claims[1].evidence.mcnemar_per_seed[0].c]);
  });
  it('--resume reuses finished models from their logs and predictions alone (no checkpoints), with the same verdicts', () => {
    // What a later session has: the committed logs and predictions, not the checkpoints.
    for (const m of result.models as { name: string }[]) rmSync(join(out, 'models', m.name, 'checkpoints'), { recursive: true, force: true });
    const again = experiment('cardinality', '--cardinalities', '1,2', '--width', '4', '--base', '4', '--depth', '11', ...tiny, '--budget', '1e',
      '--evals', '2', '--seeds', '2', '--out', out, '--resume');
    assert.deepEqual((again.claims as unknown[]), result.claims);
    assert.deepEqual((again.models as { test_error: number }[]).map((m) => m.test_error), (result.models as { test_error: number }[]).map((m) => m.test_error));
    for (const m of result.models as { name: string }[]) assert.ok(!existsSync(join(out, 'models', m.name, 'checkpoints')), `${m.name} was not trained again`);
  });
});

describe('residual experiment forms', () => {
  it('the three block forms agree within 1e-5 and each is timed', () => {
    const out = join(work, 'forms');
    const r = experiment('forms', '--cardinalities', '2,8', '--channels', '32', '--width', '8', '--size', '6', '--batch', '2', '--repeats', '2', '--out', out);
    assert.ok((r.worst_scaled_difference as number) < 1e-5, `worst difference ${r.worst_scaled_difference}`);
    assert.equal(r.held, true);
    const claims = (JSON.parse(readFileSync(join(out, 'result.json'), 'utf8')) as { claims: { claim: string; held: unknown; evidence: { worst_scaled_output_difference: number } }[] }).claims;
    assert.equal(claims.length, 2);
    assert.match(claims[1]!.claim, /depth 2 is a wider dense block/);
    assert.equal(claims[1]!.held, true);
    assert.ok(claims[1]!.evidence.worst_scaled_output_difference < 1e-5);
    const report = readFileSync(join(out, 'report.md'), 'utf8');
    assert.match(report, /^- HELD: a block of depth 2 \(Figure 4\) is no more than a wider dense block/m);
    const diffs = tableRows(report, 'block');
    assert.equal(diffs.length, 4, 'two forms against (c) for two block shapes');
    for (const d of diffs) assert.equal(d[d.length - 1], 'yes');
    const speed = report.slice(report.indexOf('## Speed'));
    const times = tableRows(speed, 'block');
    assert.deepEqual(times.map((t) => t[0]), ['2x5d', '8x2d']);
    for (const t of times) for (const c of t.slice(1, 7)) assert.ok(Number(c) > 0, `time ${c}`);
    assertPng(join(out, 'forms_speed.png'));
  });
});

// REFERENCE.md lives with the project's shared notes; without it, its two tables as they stand there.
const REFERENCE_FALLBACK = `
| resnet18 | 11,689,512 | 1.814 | 69.758 |
| resnet34 | 21,797,672 | 3.664 | 73.314 |
| resnet50 | 25,557,032 | 4.089 | 76.130 |
| resnet101 | 44,549,160 | 7.801 | 77.374 |
| resnet152 | 60,192,808 | 11.514 | 78.312 |
| resnext50_32x4d | 25,028,904 | 4.230 | 77.618 |
| resnext101_32x8d | 88,791,336 | 16.414 | 79.312 |
| resnext101_64x4d | 83,455,272 | 15.460 | 83.246 (V1 of that builder) |
| wide_resnet50_2 | 68,883,240 | 11.398 | 78.468 |
| wide_resnet101_2 | 126,886,696 | 22.753 | 78.848 |
| resnet20 | 269,722 | 40.6 | 8.75% |
| resnet32 | 464,154 | 68.9 | 7.51% |
| resnet44 | 658,586 | 97.2 | 7.17% |
| resnet56 | 853,018 | 125.5 | 6.97% |
| resnet110 | 1,727,962 | 252.9 | 6.43% (best 6.61±0.16 mean of 5) |
| resnet1202 | 19,421,274 | 2829.2 | 7.93% |
`;

function referenceFigures(): Map<string, { params: number; macs: string }> {
  const file = process.env.RESIDUAL_REFERENCE_MD ?? '/work/shared/REFERENCE.md';
  const text = existsSync(file) ? readFileSync(file, 'utf8') : REFERENCE_FALLBACK;
  const out = new Map<string, { params: number; macs: string }>();
  for (const m of text.matchAll(/^\| (\w+) \| ([\d,]+) \| ([\d.]+) \|/gm)) out.set(m[1], { params: Number(m[2].replace(/,/g, '')), macs: m[3] });
  return out;
}

describe('residual experiment complexity', () => {
  it('our params and MACs equal REFERENCE.md\'s exact figures for the ImageNet and CIFAR models', () => {
    const out = join(work, 'complexity');
    const r = experiment('complexity', '--out', out);
    assert.equal(r.held, true);
    assert.deepEqual((JSON.parse(readFileSync(join(out, 'result.json'), 'utf8')) as { claims: { held: unknown }[] }).claims.map((c) => c.held), [true]);
    const ref = referenceFigures();
    assert.equal(ref.size, 16, 'REFERENCE.md lists 10 ImageNet and 6 CIFAR models');
    const report = readFileSync(join(out, 'report.md'), 'utf8');
    const rows = new Map(tableRows(report, 'model').map((x) => [x[0], x]));
    for (const [name, f] of ref) {
      const row = rows.get(name);
      assert.ok(row, `${name} is in the table`);
      assert.equal(Number(row[3].replace(/,/g, '')), f.params, `${name} params`);
      assert.equal(row[4].split(' ')[0], f.macs, `${name} MACs`);
      assert.equal(row[6], 'equal');
      assert.equal(row[8], 'equal');
    }
    // Every registered model has a row.
    assert.ok(rows.has('plain56') && rows.has('resnext29_16x64d') && rows.has('plain34'));
    assert.match(report, /## Against the papers' printed figures/);
    assertPng(join(out, 'complexity.png'));
  });
});

describe('experiment helpers', () => {
  it('--budget parses minutes and epochs', () => {
    assert.deepEqual(parseBudget('30m'), { kind: 'minutes', minutes: 30 });
    assert.deepEqual(parseBudget('2.5'), { kind: 'minutes', minutes: 2.5 });
    assert.deepEqual(parseBudget('3e'), { kind: 'epochs', epochs: 3 });
    assert.deepEqual(parseBudget('500i'), { kind: 'iterations', iterations: 500 });
    assert.throws(() => parseBudget('1.5e'), /whole number/);
    assert.throws(() => parseBudget('soon'), /30m/);
  });
  it('the width solver reproduces ResNeXt Table 2 (d = 64, 40, 24, 14, 4), from eq. 4 and from the whole ResNeXt-29', () => {
    assert.deepEqual(equalCostWidths([1, 2, 4, 8, 32], 64, 256), [64, 40, 24, 14, 4]);
    const cost = (C: number, d: number) => {
      const t = traceNet(cifarResNeXtSpec({ cardinality: C, bottleneckWidth: d }), [3, 32, 32]);
      return { params: t.params, macs: t.macs };
    };
    assert.deepEqual([2, 4, 8, 32].map((C) => solveWidth(cost(1, 64), (d) => cost(C, d)).d), [40, 24, 14, 4]);
  });
  it('a plan splits the run into whole segments of test evaluations', () => {
    const p = makePlan(64_000, 128, 50_000, 64, 'paper');
    assert.equal(p.iterations, 64_000);
    assert.equal(p.segment, 1000);
    assert.equal(p.curveEvery, 320);
    assert.ok(Math.abs(p.epochs - 163.84) < 1e-9);
  });
  it('printed figures compare at their own precision', () => {
    assert.equal(compareToPrinted(269_722, '0.27', 1e6), 'equal');
    assert.equal(compareToPrinted(25_557_032, '25.5', 1e6), 'last digit');
    assert.equal(compareToPrinted(4.089e9, '3.8', 1e9), 'differs');
  });
  it('claims are judged against sampling noise', () => {
    assert.equal(judgeLower(0.05, 0.10, 10_000, 10_000).verdict, 'HELD');
    assert.equal(judgeLower(0.10, 0.05, 10_000, 10_000).verdict, 'DID NOT HOLD');
    assert.equal(judgeLower(0.09, 0.10, 100, 100).verdict, 'INCONCLUSIVE');
  });
});
