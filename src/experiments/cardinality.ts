// The ResNeXt paper's cardinality experiment (Xie et al. 2017, Table 2 and 3) on CIFAR-style nets:
// networks of (nearly) equal parameters and MACs with cardinality C = 1, 2, 4, 8, ..., each with the
// bottleneck width d solved so its cost matches the C = 1 baseline, trained on the same recipe.
// The claim: at the same cost, higher cardinality gives lower error.
import { join } from 'node:path';
import { cifarResNeXtSpec } from '../models/cifar.js';
import { traceNet } from '../models/net.js';
import { lineChart, svgToPng, type Series } from '../report/index.js';
import { errorRange } from './degradation.js';
import { int, judgeLower, macs, overall, pct, table, writeText, heldOf, type ClaimResult } from './markdown.js';
import { describeBudget, logger, type ExperimentOptions } from './options.js';
import {
  XIE2017_CIFAR, XIE2017_EPOCHS, batchFor, contender, openExperimentData, planFor, scaleSection, trainContender,
  type Contender, type ModelRun,
} from './training.js';
import type { ExperimentResult } from './index.js';

export const summary = 'ResNeXt nets of equal cost with cardinality 1, 2, 4, 8: test error per cardinality (ResNeXt paper, Table 2/3)';

export interface Cost {
  params: number;
  macs: number;
}

/**
 * The integer width d whose cost is nearest the target: the smallest mean relative deviation of
 * params and MACs. `cost(d)` grows with d, so the search stops once both exceed twice the target.
 */
export function solveWidth(target: Cost, cost: (d: number) => Cost): { d: number } & Cost {
  let best: ({ d: number; dev: number } & Cost) | null = null;
  for (let d = 1; ; d++) {
    const c = cost(d);
    const dev = (Math.abs(c.params / target.params - 1) + Math.abs(c.macs / target.macs - 1)) / 2;
    if (!best || dev < best.dev) best = { d, dev, ...c };
    if (c.params > 2 * target.params && c.macs > 2 * target.macs) break;
  }
  return { d: best.d, params: best.params, macs: best.macs };
}

/** Equation 4 of the paper, one block's template: C * (in*d + 9*d*d + d*out) parameters. */
export function blockTemplateParams(C: number, d: number, inOut: number): number {
  return C * (inOut * d + 9 * d * d + d * inOut);
}

/** d for each C so that the paper's per-block formula matches C = 1 at width d1 (Table 2: 64, 40, 24, 14, 4 for 256 channels). */
export function equalCostWidths(cardinalities: number[], d1: number, inOut: number): number[] {
  const target = blockTemplateParams(1, d1, inOut);
  return cardinalities.map((C) => solveWidth({ params: target, macs: target }, (d) => {
    const p = blockTemplateParams(C, d, inOut);
    return { params: p, macs: p };
  }).d);
}

export async function run(o: ExperimentOptions): Promise<ExperimentResult> {
  const log = logger(o);
  const started = Date.now();
  const cards = o.cardinalities ?? [1, 2, 4, 8];
  if (!cards.includes(1)) throw new Error('cardinality: --cardinalities must include 1, the baseline whose cost the others match');
  // Without --full, ResNeXt-20 (two blocks per stage) at a quarter of ResNeXt-29's width: a 2-core CPU affords it.
  const depth = o.depth ?? (o.full ? 29 : 20);
  const base = o.base ?? (o.full ? 64 : 16);
  const d1 = o.width ?? (o.full ? 64 : 16);
  const data = await openExperimentData(o, o.full ? undefined : 2000);
  const recipe = XIE2017_CIFAR;
  const batch = batchFor(o, recipe, data.train.length);
  const netOpts = { depth, baseChannels: base, inChannels: data.input[0], numClasses: data.numClasses };
  const cost = (C: number, d: number): Cost => {
    const t = traceNet(cifarResNeXtSpec({ ...netOpts, cardinality: C, bottleneckWidth: d }), data.input);
    return { params: t.params, macs: t.macs };
  };
  const target = cost(1, d1);
  const formula = equalCostWidths(cards, d1, 4 * base);
  const solved = cards.map((C) => ({ C, ...(C === 1 ? { d: d1, ...target } : solveWidth(target, (d) => cost(C, d))) }));
  const models: Contender[] = solved.map((s) => contender(`c${s.C}_d${s.d}`, `${s.C}x${s.d}d`,
    cifarResNeXtSpec({ ...netOpts, cardinality: s.C, bottleneckWidth: s.d }, `resnext${depth}_${s.C}x${s.d}d`), data.input));

  const evals = o.evals ?? (o.full ? 30 : 10);
  const fullIters = XIE2017_EPOCHS * Math.floor(data.train.length / batch);
  const plan = await planFor(o, models, data, batch, { iterations: fullIters, basis: "the paper's 300 epochs" }, evals, log);
  log({ event: 'plan', experiment: 'cardinality', ...plan, models: models.map((m) => m.name) },
    `cardinality: ${models.map((m) => m.label).join(', ')} (ResNeXt-${depth}, base ${base}) on ${data.spec.name}, ${plan.iterations} iterations of batch ${batch} each -> ${o.out}`);

  const runs: ModelRun[] = [];
  for (const m of models) {
    log({ event: 'model', model: m.name, params: m.params, macs: m.macs }, `training ResNeXt-${depth} ${m.label} (${int(m.params)} params, ${macs(m.macs)} MACs)`);
    const r = await trainContender(m, data, plan, recipe, join(o.out, 'models', m.name), { seed: o.seed, resume: o.resume, autoThreads: o.autoThreads, log, progress: o.progress });
    runs.push(r);
    if (r.stopped === 'interrupted') break;
  }

  // Error against epochs (passes over the training samples), one colour per cardinality.
  const perEpoch = (plan.batch) / data.train.length;
  const series = (r: ModelRun, test: boolean): Series => {
    const tested = r.history.filter((h) => h.test_acc !== null);
    return test
      ? { label: r.label, group: r.label, dash: 'solid', width: 2.25, x: tested.map((h) => h.iteration * perEpoch), y: tested.map((h) => 100 * (1 - h.test_acc!)) }
      : { label: r.label, group: r.label, dash: 'dashed', width: 1.5, x: r.curve.map((p) => p.iteration * perEpoch), y: r.curve.map((p) => 100 * p.train_error) };
  };
  const yRange = errorRange(runs, plan.iterations);
  const figure = 'cardinality.png';
  await svgToPng(lineChart({
    title: `${data.spec.name}: ResNeXt-${depth} at equal cost, C x d (${plan.iterations} iterations of batch ${batch})`,
    width: 1100, height: 460,
    panels: [
      { title: 'test error', xLabel: 'epoch', yLabel: 'error (%)', yRange, series: runs.map((r) => series(r, true)) },
      { title: 'training error (running)', xLabel: 'epoch', yLabel: 'error (%)', yRange, series: runs.map((r) => series(r, false)) },
    ],
  }), join(o.out, figure), { scale: 2 });

  const rows = runs.map((r, i) => {
    const s = solved[i];
    return [String(s.C), String(s.d), String(formula[i]), String(s.C * s.d), int(r.params), `${((r.params / target.params - 1) * 100).toFixed(1)}%`,
      macs(r.macs), `${((r.macs / target.macs - 1) * 100).toFixed(1)}%`, pct(r.finalTrainError), pct(r.finalTestError), pct(r.bestTestError),
      `${(r.seconds / 60).toFixed(1)} min`];
  });
  // Each step of cardinality against the one before, and the largest against C=1, judged against
  // the test set's sampling noise (two standard errors).
  const n = data.test.length;
  const done = runs.filter((r) => r.stopped !== 'interrupted');
  const errs = done.map((r) => r.finalTestError);
  const se = errs.length ? Math.sqrt((errs[0] * (1 - errs[0])) / n) : NaN;
  let held: boolean | null = null;
  const claims: string[] = [];
  const claimResults: ClaimResult[] = [];
  const evidence = (a: number, b: number, se: number) => ({
    test_error: { [`C=${cards[a]}`]: errs[a], [`C=${cards[b]}`]: errs[b] }, two_standard_errors: 2 * se, test_samples: n,
    seeds: [o.seed], iterations: plan.iterations, batch: plan.batch, epochs: plan.epochs,
    params: { [`C=${cards[a]}`]: done[a]!.params, [`C=${cards[b]}`]: done[b]!.params }, macs: { [`C=${cards[a]}`]: done[a]!.macs, [`C=${cards[b]}`]: done[b]!.macs },
  });
  if (done.length === cards.length && done.length >= 2) {
    const steps = cards.slice(1).map((C, i) => ({ C, prev: cards[i], j: judgeLower(errs[i + 1], errs[i], n, n) }));
    const last = cards.length - 1;
    const ends = judgeLower(errs[last], errs[0], n, n);
    for (const s of steps) {
      claims.push(`${s.j.verdict}: C=${s.C} has lower test error than C=${s.prev} (${pct(errs[cards.indexOf(s.C)])} vs ${pct(errs[cards.indexOf(s.prev)])}, two standard errors ${pct(2 * s.j.se)})`);
      claimResults.push({ claim: `at equal cost, C=${s.C} has lower test error than C=${s.prev}`, held: heldOf(s.j.verdict), evidence: evidence(cards.indexOf(s.C), cards.indexOf(s.prev), s.j.se) });
    }
    if (cards.length > 2) {
      claims.push(`${ends.verdict}: C=${cards[last]} has lower test error than C=${cards[0]} (${pct(errs[last])} vs ${pct(errs[0])}, two standard errors ${pct(2 * ends.se)})`);
      claimResults.push({ claim: `at equal cost, C=${cards[last]} has lower test error than C=${cards[0]}`, held: heldOf(ends.verdict), evidence: evidence(last, 0, ends.se) });
    }
    held = overall([...steps.map((s) => s.j.verdict), ends.verdict]);
    // A step that is only noise does not refute the trend when the ends differ clearly.
    if (held === null && ends.verdict === 'HELD' && !steps.some((s) => s.j.verdict === 'DID NOT HOLD')) held = true;
  } else {
    claims.push('NOT MEASURED: the run is incomplete');
    claimResults.push({ claim: 'at equal cost, higher cardinality gives lower test error', held: 'inconclusive', evidence: { incomplete: true } });
  }
  const wall = (Date.now() - started) / 1000;
  const report = [
    `# Cardinality at equal cost (Xie et al. 2017, Table 2 and 3)`,
    '',
    `ResNeXt-${depth} (CIFAR layout: 3x3 stem of ${base}, three stages of ${(depth - 2) / 9} bottleneck blocks with outputs ${4 * base}/${8 * base}/${16 * base}, ` +
      `grouped 3x3 of width C x d doubling per stage, projection shortcuts) with cardinality ${cards.join(', ')}. ` +
      `The C=1 baseline has bottleneck width d=${d1}; for every other C, d is the integer whose params and MACs (whole network, at ${data.input.join('x')}) are nearest the baseline's.`,
    '',
    '## Scale',
    '',
    scaleSection(data, plan, recipe, o, wall, runs),
    `- budget: ${o.full ? "--full (the paper's recipe)" : describeBudget(o.budget)}`,
    '',
    '## Results',
    '',
    table(['C', 'd', 'd by eq. 4', 'group conv width', 'params', 'vs C=1', 'MACs', 'vs C=1', 'final train error', 'final test error', 'best test error', 'time'], rows,
      [true, true, true, true, true, true, true, true, true, true, true, true]),
    '',
    `"d by eq. 4": the width the paper's per-block formula C(${4 * base}d + 9d² + d·${4 * base}) gives (Table 2's method; for 256 channels and d=64 it gives 64, 40, 24, 14, 4 at C = 1, 2, 4, 8, 32). ` +
      `Test error is measured on ${n} samples: one standard error is about ${pct(se)}, so differences under ~${pct(2 * se)} are noise.`,
    '',
    ...(() => {
      const off = solved.filter((x) => Math.abs(x.params / target.params - 1) > 0.05 || Math.abs(x.macs / target.macs - 1) > 0.05);
      return off.length
        ? [`NOTE: ${off.map((x) => `${x.C}x${x.d}d`).join(', ')} could not match the baseline's cost within 5% (d is a whole number of channels; ` +
          'a wider baseline, --width and --base, gives finer steps). Compare those rows with care.', '']
        : [];
    })(),
    `![test error (left) and training error (right) against epochs](${figure})`,
    '',
    '## The claim at this scale',
    '',
    ...claims.map((c) => `- ${c}`),
    '',
    held === true ? 'Overall: at equal cost, higher cardinality gave lower test error at this scale.'
      : held === false ? 'Overall: the claim did not hold at this scale.' : 'Overall: this run could not decide the claim; the differences are within sampling noise.',
    '',
    'Paper (ImageNet-1K, ResNeXt-50 at ~4.1 GFLOPs): top-1 error 23.9 (1x64d), 23.0 (2x40d), 22.6 (4x24d), 22.3 (8x14d), 22.2 (32x4d); ' +
      'on CIFAR-10 ResNeXt-29 8x64d reaches 3.65%, 16x64d 3.58% (Table 7). The gains are a few tenths of a percent per doubling on ImageNet after 100 epochs; ' +
      'a short run on a small dataset may not resolve them.',
    '',
  ].join('\n');
  writeText(join(o.out, 'report.md'), report);
  return {
    experiment: 'cardinality', out: o.out, report: join(o.out, 'report.md'), figures: [join(o.out, figure)], held, seconds: wall, plan, claims: claimResults,
    models: runs.map((r, i) => ({ name: r.name, cardinality: solved[i].C, width: solved[i].d, params: r.params, macs: r.macs,
      final_train_error: r.finalTrainError, final_test_error: r.finalTestError, best_test_error: r.bestTestError, seconds: r.seconds, stopped: r.stopped })),
  };
}
