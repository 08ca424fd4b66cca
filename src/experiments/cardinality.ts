// The ResNeXt paper's cardinality experiments (Xie et al. 2017) on CIFAR-style nets, with error bars:
// - Table 3: networks of (nearly) equal parameters and MACs with cardinality C = 1, 2, 4, 8, each
//   with the bottleneck width d solved so its cost matches the C = 1 baseline;
// - Table 4: at about twice the baseline's cost, deeper (more blocks) vs wider (larger d) vs more
//   cardinality (C = 2, d solved), each against the others and against the 1x baseline.
// Every configuration trains at several seeds (the same seeds, so the same initial draws and data
// order, across configurations: the comparisons are paired), each (configuration, seed) its own
// resumable model run, and is evaluated on the whole test set. The finished models' per-image
// predictions give McNemar's test; the per-seed errors give the paired t-test; the smallest
// difference the design can detect is stated before anything trains.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeAtomic } from '../io/index.js';
import { cifarResNeXtSpec, type CifarResNeXtOptions } from '../models/cifar.js';
import { traceNet, type NetSpec } from '../models/net.js';
import { lineChart, svgToPng, type Series } from '../report/index.js';
import { duration, int, macs, overall, pct, table, writeText, heldOf, type ClaimResult, type Verdict } from './markdown.js';
import { describeBudget, logger, type ExperimentOptions } from './options.js';
import { ALPHA, discordant, errorOf, judgeMcNemar, mcnemar, mcnemarDetectable, meanSE, pairedDetectable, pairedT, type McNemar, type MeanSE, type PairedT } from './stats.js';
import {
  XIE2017_CIFAR, XIE2017_EPOCHS, batchFor, calibrate, contender, openExperimentData, planFor, scaleSection, trainContender,
  type Contender, type ModelRun, type Plan,
} from './training.js';
import type { ExperimentResult } from './index.js';

export const summary = 'ResNeXt Table 3 (C = 1, 2, 4, 8 at equal cost) and Table 4 (deeper vs wider vs cardinality at 2x cost), several seeds, paired tests';

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


/** The network with `blocks[i]` bottleneck blocks in stage i (the first of each stage projects; the rest are identities). */
export function stagedResNeXtSpec(opts: CifarResNeXtOptions, blocks: number[], name?: string): NetSpec {
  if (blocks.length !== 3 || blocks.some((b) => !Number.isInteger(b) || b < 1)) throw new Error(`stagedResNeXtSpec: three positive block counts, got ${blocks.join(',')}`);
  const full = cifarResNeXtSpec({ ...opts, depth: 9 * Math.max(...blocks) + 2 }, name);
  return { ...full, stages: full.stages.map((s, i) => s.slice(0, blocks[i])) };
}

/** Mean relative deviation of a cost from a target (params and MACs weigh the same). */
export function costDeviation(c: Cost, target: Cost): number {
  return (Math.abs(c.params / target.params - 1) + Math.abs(c.macs / target.macs - 1)) / 2;
}

/** A configuration of the experiment: which table, its shape, and its cost. */
export interface Config extends Contender {
  table: 3 | 4;
  /** What it is in its table: "C=4", "1x baseline", "deeper", "wider", "cardinality". */
  role: string;
  C: number;
  d: number;
  blocks: number[];
  /** Layers, 3·(blocks) + 2. */
  depth: number;
}

export interface NetShape {
  depth: number;
  base: number;
  inChannels: number;
  numClasses: number;
  input: [number, number, number];
}

function configOf(shape: NetShape, table: 3 | 4, role: string, name: string, C: number, d: number, blocks: number[]): Config {
  const depth = 3 * blocks.reduce((a, b) => a + b, 0) + 2;
  const label = table === 3 ? `${C}x${d}d` : role === 'deeper' ? `deeper ${blocks.join('-')} 1x${d}d` : `${role} ${C}x${d}d`;
  const spec = stagedResNeXtSpec({ baseChannels: shape.base, inChannels: shape.inChannels, numClasses: shape.numClasses, cardinality: C, bottleneckWidth: d },
    blocks, `resnext${depth}_${C}x${d}d`);
  return { ...contender(name, label, spec, shape.input), table, role, C, d, blocks, depth };
}

/** Table 3: the baseline (C = 1 at width d1) and each other C at the d whose cost is nearest it. */
export function tableThreeConfigs(shape: NetShape, cards: number[], d1: number): Config[] {
  const n = (shape.depth - 2) / 9;
  const blocks = [n, n, n];
  const cost = (C: number, d: number): Cost => {
    const t = traceNet(stagedResNeXtSpec({ baseChannels: shape.base, inChannels: shape.inChannels, numClasses: shape.numClasses, cardinality: C, bottleneckWidth: d }, blocks), shape.input);
    return { params: t.params, macs: t.macs };
  };
  const target = cost(1, d1);
  return cards.map((C) => {
    const d = C === 1 ? d1 : solveWidth(target, (w) => cost(C, w)).d;
    return configOf(shape, 3, C === 1 ? '1x baseline' : `C=${C}`, `c${C}_d${d}`, C, d, blocks);
  });
}

/**
 * Table 4: about `factor` times the baseline's params and MACs three ways, as the paper's Table 4
 * does at ResNet-101 size (ResNet-200 / wider 1x100d / 2x64d): deeper (the blocks per stage nearest
 * the target, width d1), wider (C = 1, d solved), and more cardinality (C = 2, d solved).
 */
export function tableFourConfigs(shape: NetShape, d1: number, factor = 2): Config[] {
  const n = (shape.depth - 2) / 9;
  const costOf = (C: number, d: number, blocks: number[]): Cost => {
    const t = traceNet(stagedResNeXtSpec({ baseChannels: shape.base, inChannels: shape.inChannels, numClasses: shape.numClasses, cardinality: C, bottleneckWidth: d }, blocks), shape.input);
    return { params: t.params, macs: t.macs };
  };
  const base = costOf(1, d1, [n, n, n]);
  const target = { params: factor * base.params, macs: factor * base.macs };
  // Deeper: every split of blocks over the stages up to 4x the baseline's; the nearest cost, then the fewest blocks.
  let best: { blocks: number[]; dev: number } | null = null;
  const max = 4 * n;
  for (let a = n; a <= max; a++) for (let b = n; b <= max; b++) for (let c = n; c <= max; c++) {
    const blocks = [a, b, c];
    const dev = costDeviation(costOf(1, d1, blocks), target);
    const sum = a + b + c;
    if (!best || dev < best.dev - 1e-9 || (Math.abs(dev - best.dev) <= 1e-9 && sum < best.blocks.reduce((x, y) => x + y, 0))) best = { blocks, dev };
  }
  const wider = solveWidth(target, (d) => costOf(1, d, [n, n, n])).d;
  const card = solveWidth(target, (d) => costOf(2, d, [n, n, n])).d;
  return [
    configOf(shape, 4, 'deeper', `deeper_${best!.blocks.join('-')}_1x${d1}d`, 1, d1, best!.blocks),
    configOf(shape, 4, 'wider', `wider_1x${wider}d`, 1, wider, [n, n, n]),
    configOf(shape, 4, 'cardinality', `card_2x${card}d`, 2, card, [n, n, n]),
  ];
}

/**
 * Before anything trains, what the design can resolve. The discordance (images one model gets right
 * and the other wrong) and the seed-to-seed spread of one model's error are not known before the
 * run; these are the assumptions, stated as such: at ~9-10% error (the earlier single-seed runs:
 * 9.1-10.5% on 2,000 images), two nets of similar accuracy typically disagree on a few percent of
 * the images, and short runs vary by a few tenths of a point from seed to seed.
 */
export const ASSUMED_DISCORDANCE = 0.06;
export const ASSUMED_SEED_SD = 0.002;
export const POWER = 0.8;

export interface Power {
  alpha: number;
  power: number;
  test_images: number;
  seeds: number;
  discordance: number;
  seed_sd: number;
  /** SD of one seed's paired difference: test-set sampling (discordance / n) and two models' seed spread. */
  difference_sd: number;
  /** Smallest error difference McNemar's test detects on one seed's n images, and on the seeds' pooled images. */
  mcnemar_per_seed: number;
  mcnemar_pooled: number;
  /** Smallest mean difference the paired t-test across seeds detects. */
  paired_across_seeds: number;
  /** A claim holds only when both tests agree: the larger of the two is what the design resolves. */
  detectable: number;
  basis: string;
}

export function powerOf(testImages: number, seeds: number, discordance: number, seedSd: number, basis: string): Power {
  const differenceSd = Math.sqrt(discordance / testImages + 2 * seedSd * seedSd);
  const mcPooled = mcnemarDetectable(seeds * testImages, discordance, ALPHA, POWER);
  const paired = pairedDetectable(seeds, differenceSd, ALPHA, POWER);
  return {
    alpha: ALPHA, power: POWER, test_images: testImages, seeds, discordance, seed_sd: seedSd, difference_sd: differenceSd,
    mcnemar_per_seed: mcnemarDetectable(testImages, discordance, ALPHA, POWER), mcnemar_pooled: mcPooled,
    paired_across_seeds: paired, detectable: Math.max(mcPooled, Number.isFinite(paired) ? paired : Infinity), basis,
  };
}

export function powerText(p: Power): string {
  return `at alpha ${p.alpha} (two-sided) and power ${p.power}, with ${int(p.test_images)} paired test images and ${p.seeds} seeds ` +
    `(${p.basis}: discordance ${pct(p.discordance, 1)}, seed-to-seed SD of one model's error ${pct(p.seed_sd)}, so SD of one seed's difference ${pct(p.difference_sd)}), ` +
    `the smallest difference in test error the design detects is ${pct(p.mcnemar_per_seed)} by McNemar's test on one seed, ${pct(p.mcnemar_pooled)} on the ${p.seeds} seeds' pooled predictions, ` +
    `and ${pct(p.paired_across_seeds)} by the paired t-test across seeds. A claim is judged held only when both tests agree, so differences below about ${pct(p.detectable)} are unlikely to be resolved.`;
}

/** One configuration's measured test error over its finished seeds. */
export interface ConfigResult {
  config: Config;
  seeds: number[];
  errors: number[];
  stats: MeanSE;
  runs: ModelRun[];
}

export interface Comparison {
  /** The configuration claimed better (lower error), and the one it is compared with. */
  better: string;
  worse: string;
  seeds: number[];
  /** Per seed: error(worse) - error(better); positive supports the claim. */
  differences: number[];
  paired: PairedT;
  /** McNemar's test per seed, and on the discordant counts summed over the seeds. */
  mcnemarPerSeed: McNemar[];
  mcnemarPooled: McNemar;
  /** Fraction of image-seed pairs on which the two disagree in correctness. */
  discordance: number;
  verdict: Verdict;
}

/**
 * Judges "better has lower test error than worse" from the paired t-test across seeds and McNemar's
 * exact test on the seeds' pooled predictions: HELD when both are significant at ALPHA in the
 * claimed direction, DID NOT HOLD when both are in the opposite one, else INCONCLUSIVE.
 */
export function judgePaired(paired: PairedT, pooled: McNemar, alpha = ALPHA): Verdict {
  if (!(paired.n >= 2) || !(paired.p < alpha)) return 'INCONCLUSIVE';
  // Both tests significant, and the t-test's direction the same as McNemar's.
  const mcnemarSays = judgeMcNemar(pooled, alpha);
  const tSays: Verdict = paired.mean > 0 ? 'HELD' : paired.mean < 0 ? 'DID NOT HOLD' : 'INCONCLUSIVE';
  return mcnemarSays === tSays ? mcnemarSays : 'INCONCLUSIVE';
}

export function compare(a: ConfigResult, b: ConfigResult, labels: Uint8Array): Comparison {
  const seeds = a.seeds.filter((s) => b.seeds.includes(s));
  const diffs: number[] = [];
  const per: McNemar[] = [];
  let sb = 0;
  let sc = 0;
  for (const s of seeds) {
    const ra = a.runs[a.seeds.indexOf(s)];
    const rb = b.runs[b.seeds.indexOf(s)];
    const d = discordant(ra.predictions!, rb.predictions!, labels);
    per.push(mcnemar(d.b, d.c));
    sb += d.b;
    sc += d.c;
    diffs.push(b.errors[b.seeds.indexOf(s)] - a.errors[a.seeds.indexOf(s)]);
  }
  const paired = pairedT(diffs);
  const pooled = mcnemar(sb, sc);
  return {
    better: a.config.name, worse: b.config.name, seeds, differences: diffs, paired, mcnemarPerSeed: per, mcnemarPooled: pooled,
    discordance: seeds.length ? (sb + sc) / (seeds.length * labels.length) : NaN, verdict: judgePaired(paired, pooled),
  };
}

function comparisonEvidence(c: Comparison, results: Map<string, ConfigResult>): Record<string, unknown> {
  const a = results.get(c.better)!;
  const b = results.get(c.worse)!;
  const side = (r: ConfigResult) => ({ name: r.config.name, label: r.config.label, params: r.config.params, macs: r.config.macs,
    test_error_mean: r.stats.mean, test_error_se: r.stats.se, test_error_per_seed: r.errors, seeds: r.seeds });
  return {
    better: side(a), worse: side(b), seeds: c.seeds,
    difference: { per_seed: c.differences, mean: c.paired.mean, se: c.paired.se, t: c.paired.t, df: c.paired.df, p: c.paired.p, ci95: c.paired.ci95 },
    mcnemar_pooled: { b: c.mcnemarPooled.b, c: c.mcnemarPooled.c, exact_p: c.mcnemarPooled.exactP, chi2_cc: c.mcnemarPooled.chi2, chi2_cc_p: c.mcnemarPooled.chi2P },
    mcnemar_per_seed: c.mcnemarPerSeed.map((m, i) => ({ seed: c.seeds[i], b: m.b, c: m.c, exact_p: m.exactP })),
    discordance: c.discordance, verdict: c.verdict,
  };
}

/** Error bars: for each configuration the mean ± one standard error, a tick at the mean, and a dot per seed. */
function errorBarSeries(rs: ConfigResult[]): Series[] {
  return rs.map((r, i) => {
    const x = i + 1;
    const m = 100 * r.stats.mean;
    const se = Number.isFinite(r.stats.se) ? 100 * r.stats.se : 0;
    const xs: number[] = [x, x, NaN, x - 0.18, x + 0.18, NaN];
    const ys: number[] = [m - se, m + se, NaN, m, m, NaN];
    for (const e of r.errors) xs.push(x + 0.25, x + 0.33, NaN), ys.push(100 * e, 100 * e, NaN);
    return { label: `${r.config.label} (${r.errors.length} seed${r.errors.length === 1 ? '' : 's'})`, x: xs, y: ys, width: 3 };
  });
}

export async function run(o: ExperimentOptions): Promise<ExperimentResult> {
  const log = logger(o);
  const started = Date.now();
  const cards = o.cardinalities ?? [1, 2, 4, 8];
  if (!cards.includes(1)) throw new Error('cardinality: --cardinalities must include 1, the baseline whose cost the others match');
  if (cards.length < 2) throw new Error('cardinality: --cardinalities needs 1 and at least one more');
  const seedCount = o.seeds ?? 3;
  const seeds = Array.from({ length: seedCount }, (_, k) => o.seed + k);
  // Without --full, ResNeXt-20 (two blocks per stage) at a quarter of ResNeXt-29's width: a 2-core CPU affords it.
  const depth = o.depth ?? (o.full ? 29 : 20);
  const base = o.base ?? (o.full ? 64 : 16);
  const d1 = o.width ?? (o.full ? 64 : 16);
  // The whole test set unless --test-subset cuts it (tests and CI do).
  const data = await openExperimentData(o);
  const recipe = XIE2017_CIFAR;
  const batch = batchFor(o, recipe, data.train.length);
  const shape: NetShape = { depth, base, inChannels: data.input[0], numClasses: data.numClasses, input: data.input };
  const t3 = tableThreeConfigs(shape, cards, d1);
  const baseline = t3.find((c) => c.C === 1)!;
  const t4 = o.tableFour === false ? [] : tableFourConfigs(shape, d1);
  const configs = [...t3, ...t4];

  // The budget is per model; a minutes budget is shared by every (configuration, seed).
  const evals = o.evals ?? (o.full ? 30 : 4);
  const fullIters = XIE2017_EPOCHS * Math.floor(data.train.length / batch);
  const po = o.budget.kind === 'minutes' ? { ...o, budget: { kind: 'minutes' as const, minutes: o.budget.minutes / seedCount } } : o;
  const plan: Plan = await planFor(po, configs, data, batch, { iterations: fullIters, basis: "the paper's 300 epochs" }, evals, log);
  // The time it will take at this machine's measured speed (a few steps of each configuration).
  const secs = await calibrate(configs, data, batch, 3, o.dtype);
  const evalIters = ((evals + 1) * data.test.length) / (3 * batch); // the evaluations and the predictions pass, a test image ~1/3 of a training one
  const estimate = seedCount * configs.reduce((a, _, i) => a + secs[i] * (plan.iterations + evalIters), 0);
  const power = powerOf(data.test.length, seedCount, ASSUMED_DISCORDANCE, ASSUMED_SEED_SD, 'assumed before the run');
  const design = {
    seeds, table3: t3.map((c) => c.name), table4: t4.map((c) => c.name), baseline: baseline.name,
    configs: configs.map((c) => ({ name: c.name, label: c.label, table: c.table, role: c.role, C: c.C, d: c.d, blocks: c.blocks, depth: c.depth, params: c.params, macs: c.macs,
      params_vs_baseline: c.params / baseline.params, macs_vs_baseline: c.macs / baseline.macs, seconds_per_iteration: secs[configs.indexOf(c)] })),
    power, estimated_seconds: estimate, dtype: o.dtype ?? 'f32',
    tests: 'McNemar exact test on the per-image predictions, discordant counts pooled over the seeds (per-seed p also given); paired t-test on the per-seed error differences; a claim holds when both are significant at alpha 0.05',
  };
  const planOut = { ...plan, design };
  log({ event: 'plan', experiment: 'cardinality', ...planOut, models: configs.flatMap((c) => seeds.map((s) => `${c.name}_s${s}`)) },
    `cardinality: ${configs.map((m) => `${m.label} (${int(m.params)} params, ${macs(m.macs)} MACs)`).join(', ')} at seeds ${seeds.join(', ')}; ` +
    `${plan.iterations} iterations of batch ${batch} each on ${data.spec.name}, tested on ${data.test.length} images; estimated ${duration(estimate)} at this machine's measured speed -> ${o.out}\n` +
    `power: ${powerText(power)}`);
  // The design and its power are on disk before anything trains.
  const claimsText = ['more cardinality beats the C=1 baseline at equal cost', 'more cardinality beats deeper at 2x cost', 'more cardinality beats wider at 2x cost'];
  writeAtomic(join(o.out, 'result.json'), JSON.stringify({
    experiment: 'cardinality', held: null, seconds: 0, status: 'planned: nothing trained yet',
    claims: claimsText.map((claim) => ({ claim, held: 'inconclusive', evidence: { not_yet_measured: true, detectable_difference: power.detectable } })), plan: planOut,
  }, null, 1) + '\n');
  writeText(join(o.out, 'report.md'), `# Cardinality with error bars (planned)\n\nNothing has trained yet. Design: ${configs.map((c) => `${c.label} (${int(c.params)} params, ${macs(c.macs)} MACs)`).join(', ')}; seeds ${seeds.join(', ')}; ${plan.iterations} iterations of batch ${batch} per model; estimated ${duration(estimate)}.\n\nPower: ${powerText(power)}\n`);

  // Seed by seed, so that an interrupted run already holds complete paired sets of the first seeds.
  const runs = new Map<string, ModelRun>();
  let interrupted = false;
  for (const s of seeds) {
    for (const m of configs) {
      const name = `${m.name}_s${s}`;
      log({ event: 'model', model: name, seed: s, params: m.params, macs: m.macs }, `training ResNeXt ${m.label}, seed ${s} (${int(m.params)} params, ${macs(m.macs)} MACs)`);
      const r = await trainContender({ ...m, name }, data, plan, recipe, join(o.out, 'models', name),
        { seed: s, resume: o.resume, autoThreads: o.autoThreads, predictions: true, dtype: o.dtype, log, progress: o.progress });
      if (r.stopped === 'interrupted') { interrupted = true; break; }
      runs.set(name, r);
      log({ event: 'model_done', model: name, seed: s, test_error: r.predictions ? errorOf(r.predictions, r.labels!) : null, seconds: r.seconds },
        `  ${name}: test error ${r.predictions ? pct(errorOf(r.predictions, r.labels!)) : '-'} on ${data.test.length} images (${duration(r.seconds)})`);
    }
    if (interrupted) break;
  }

  const labels = [...runs.values()].find((r) => r.labels)?.labels;
  // The test labels beside the models' predictions: with them every test here can be recomputed from the files.
  if (labels) writeFileSync(join(o.out, 'labels.u8'), labels);
  const results = new Map<string, ConfigResult>();
  for (const c of configs) {
    const done = seeds.filter((s) => runs.get(`${c.name}_s${s}`)?.predictions);
    const rs = done.map((s) => runs.get(`${c.name}_s${s}`)!);
    const errors = rs.map((r) => errorOf(r.predictions!, r.labels!));
    results.set(c.name, { config: c, seeds: done, errors, stats: meanSE(errors), runs: rs });
  }
  const cmp = (a: Config, b: Config) => (labels ? compare(results.get(a.name)!, results.get(b.name)!, labels) : null);
  // Claim 1: the largest cardinality whose cost is within 5% of the baseline's (decided from the costs, before the run), against C=1.
  const matched = t3.filter((c) => c.C > 1 && costDeviation(c, baseline) <= 0.05);
  const primary3 = matched.length ? matched[matched.length - 1] : t3.filter((c) => c.C > 1).pop()!;
  const t3cmps = t3.filter((c) => c.C > 1).map((c) => cmp(c, baseline));
  const steps = t3.slice(1).map((c, i) => cmp(c, t3[i]));
  const card4 = t4.find((c) => c.role === 'cardinality');
  const deeper4 = t4.find((c) => c.role === 'deeper');
  const wider4 = t4.find((c) => c.role === 'wider');
  const t4cmps = card4 && deeper4 && wider4 ? [cmp(card4, deeper4), cmp(card4, wider4)] : [];
  const t4vsBase = t4.map((c) => cmp(c, baseline));

  const enough = (c: Comparison | null): c is Comparison => !!c && c.seeds.length >= 2;
  const claimOf = (claim: string, c: Comparison | null, extra: Record<string, unknown>): ClaimResult => enough(c)
    ? { claim, held: heldOf(c.verdict), evidence: { ...comparisonEvidence(c, results), detectable_difference_planned: power.detectable, ...extra } }
    : { claim, held: 'inconclusive', evidence: { incomplete: true, seeds_finished: (c as Comparison | null)?.seeds.length ?? 0, detectable_difference_planned: power.detectable, ...extra } };
  const primaryCmp = t3cmps[t3.filter((c) => c.C > 1).indexOf(primary3)];
  const claimResults: ClaimResult[] = [
    claimOf(claimsText[0], primaryCmp, {
      compared: `${primary3.label} vs ${baseline.label}: the largest C whose params and MACs are within 5% of the baseline's (chosen from the costs before the run)`,
      other_cardinalities_vs_baseline: t3cmps.filter((c) => c && c !== primaryCmp && enough(c)).map((c) => comparisonEvidence(c!, results)),
      adjacent_steps: steps.filter(enough).map((c) => comparisonEvidence(c!, results)),
    }),
  ];
  if (t4.length) {
    claimResults.push(claimOf(claimsText[1], t4cmps[0] ?? null, {}));
    claimResults.push(claimOf(claimsText[2], t4cmps[1] ?? null, { twice_the_cost_vs_baseline: t4vsBase.filter(enough).map((c) => comparisonEvidence(c!, results)) }));
  }
  const verdicts = claimResults.map((c) => (c.held === true ? 'HELD' : c.held === false ? 'DID NOT HOLD' : 'INCONCLUSIVE') as Verdict);
  const held = overall(verdicts);

  // Observed discordance and seed spread, and the detectable difference they imply.
  const all = [...t3cmps, ...steps, ...t4cmps, ...t4vsBase].filter(enough);
  const observed = all.length
    ? powerOf(data.test.length, seedCount, meanOf(all.map((c) => c.discordance)),
      Math.sqrt(Math.max(0, meanOf(all.map((c) => c.paired.sd ** 2)) - meanOf(all.map((c) => c.discordance)) / data.test.length) / 2),
      'as observed in this run (mean over the comparisons)')
    : null;

  // Figures: error bars per table.
  const figure = 'cardinality.png';
  const finished = configs.filter((c) => results.get(c.name)!.errors.length);
  if (finished.length) {
    const t3r = t3.map((c) => results.get(c.name)!).filter((r) => r.errors.length);
    const t4r = [baseline, ...t4].map((c) => results.get(c.name)!).filter((r) => r.errors.length);
    const ys = finished.flatMap((c) => results.get(c.name)!.errors.map((e) => 100 * e));
    const lo = Math.min(...ys);
    const hi = Math.max(...ys);
    const pad = Math.max(0.2, (hi - lo) * 0.3);
    const yRange: [number, number] = [Math.max(0, lo - pad), hi + pad];
    await svgToPng(lineChart({
      title: `${data.spec.name}: test error on ${data.test.length} images, mean ± 1 SE over seeds (dots: each seed), ${plan.iterations} iterations of batch ${batch}`,
      width: 1100, height: 460,
      panels: [
        { title: 'Table 3: equal cost', xLabel: 'configuration', yLabel: 'test error (%)', xInteger: true, xRange: [0.5, t3.length + 0.5], yRange, series: errorBarSeries(t3r) },
        ...(t4.length ? [{ title: 'Table 4: 1x baseline and 2x cost', xLabel: 'configuration', yLabel: 'test error (%)', xInteger: true, xRange: [0.5, t4.length + 1.5] as [number, number], yRange, series: errorBarSeries(t4r) }] : []),
      ],
    }), join(o.out, figure), { scale: 2 });
  }

  const wall = (Date.now() - started) / 1000;
  const rel = (x: number, b: number) => `${x >= b ? '+' : ''}${((x / b - 1) * 100).toFixed(1)}%`;
  const configRows = (cs: Config[]) => cs.map((c) => {
    const r = results.get(c.name)!;
    return [c.label, String(c.C), String(c.d), c.blocks.join('-'), String(c.depth), int(c.params), rel(c.params, baseline.params), macs(c.macs), rel(c.macs, baseline.macs),
      r.errors.length ? `${pct(r.stats.mean)} ± ${Number.isFinite(r.stats.se) ? pct(r.stats.se) : '-'}` : '-', r.errors.map((e) => pct(e)).join(', ') || '-',
      r.runs.length ? duration(meanOf(r.runs.map((x) => x.seconds))) : '-'];
  });
  const headers = ['configuration', 'C', 'd', 'blocks', 'layers', 'params', 'vs 1x', 'MACs', 'vs 1x', 'test error (mean ± SE)', 'per seed', 'time per model'];
  const right = headers.map((_, i) => i > 0);
  const label = (n: string) => configs.find((c) => c.name === n)!.label;
  // Each pair once (with two cardinalities the step and the comparison with C=1 are the same).
  const cmpRows = (cs: (Comparison | null)[]) => cs.filter(enough).filter((c, i, a) => a.findIndex((x) => x.better === c.better && x.worse === c.worse) === i).map((c) => [
    `${label(c.better)} < ${label(c.worse)}`, String(c.seeds.length), `${pct(c.paired.mean)} ± ${pct(c.paired.se)}`, Number.isFinite(c.paired.t) ? c.paired.t.toFixed(2) : '-',
    Number.isFinite(c.paired.p) ? c.paired.p.toPrecision(2) : '-', `${pct(c.paired.ci95[0])} to ${pct(c.paired.ci95[1])}`,
    `${c.mcnemarPooled.b} / ${c.mcnemarPooled.c}`, c.mcnemarPooled.exactP.toPrecision(2), c.mcnemarPerSeed.map((m) => m.exactP.toPrecision(2)).join(', '), c.verdict]);
  const cmpHeaders = ['claim: lower error', 'seeds', 'difference (mean ± SE)', 't', 'p (t)', '95% CI', 'McNemar b / c (pooled)', 'p (McNemar, pooled)', 'p (McNemar, per seed)', 'verdict'];
  const cmpRight = cmpHeaders.map((_, i) => i > 0 && i < 9);
  const verdictLine = (c: ClaimResult) => {
    const e = c.evidence as { difference?: { mean: number; se: number; p: number }; mcnemar_pooled?: { exact_p: number } };
    const word = c.held === true ? 'HELD' : c.held === false ? 'DID NOT HOLD' : 'INCONCLUSIVE';
    return e.difference
      ? `${word}: ${c.claim} (difference ${pct(e.difference.mean)} ± ${pct(e.difference.se)} in favour of more cardinality, paired t p = ${e.difference.p.toPrecision(2)}, McNemar p = ${e.mcnemar_pooled!.exact_p.toPrecision(2)}; detectable about ${pct(power.detectable)})`
      : `${word}: ${c.claim} (not measured: fewer than 2 seeds of both configurations finished)`;
  };
  const done = [...runs.keys()].length;
  const total = configs.length * seeds.length;
  const report = [
    `# Cardinality with error bars (Xie et al. 2017, Tables 3 and 4)`,
    '',
    ...(done < total ? [`**Status: ${done} of ${total} models finished; the figures below cover those. Continue with the same arguments plus --resume.**`, ''] : []),
    `ResNeXt-${depth} (CIFAR layout: 3x3 stem of ${base}, three stages of bottleneck blocks with outputs ${4 * base}/${8 * base}/${16 * base}, ` +
      `grouped 3x3 of width C x d doubling per stage, projection shortcuts). **Table 3**: cardinality ${cards.join(', ')} at equal cost; the C=1 baseline has d=${d1}, ` +
      `and for every other C, d is the integer whose params and MACs (whole network, at ${data.input.join('x')}) are nearest the baseline's. ` +
      (t4.length ? `**Table 4**: about twice the baseline's cost three ways (the paper's ResNet-200 / 1x100d / 2x64d at ResNet-101 size): deeper (the blocks per stage nearest 2x, d=${d1}), ` +
        `wider (C=1, d solved for 2x), more cardinality (C=2, d solved for 2x). ` : '') +
      `Every configuration trains at seeds ${seeds.join(', ')}: the same seed gives every configuration the same data order (and initial random stream), so the comparisons are paired.`,
    '',
    '## Design and power (stated before the run)',
    '',
    `- ${powerText(power)}`,
    `- tests: McNemar's exact test on the per-image predictions, with the discordant counts (b: images the claimed-better model gets right and the other wrong; c: the reverse) pooled over the seeds (per-seed p also given); ` +
      `the paired t-test on the per-seed differences of test error (${seedCount - 1} degrees of freedom). A claim is HELD when both are significant at ${ALPHA} in its direction, DID NOT HOLD when both are significant the other way, and INCONCLUSIVE otherwise. ` +
      `Pooling counts the same image once per seed: it resolves test-set sampling, not seed-to-seed variation, which is why the t-test must agree.`,
    `- claim 1 compares ${primary3.label} with ${baseline.label}: the largest C whose params and MACs are within 5% of the baseline's (every C's comparison is in the table).`,
    `- estimated time: ${duration(estimate)} for ${total} models at the measured speed (${configs.map((c, i) => `${c.name} ${secs[i].toFixed(3)} s`).join(', ')} per iteration)`,
    ...(observed ? [`- afterwards, with the discordance and spread this run observed: ${powerText(observed)}`] : []),
    '',
    '## Scale',
    '',
    scaleSection(data, plan, recipe, o, wall, [...runs.values()]),
    `- budget: ${o.full ? "--full (the paper's recipe)" : describeBudget(o.budget)}${o.budget.kind === 'minutes' ? ' (all seeds)' : ''}; seeds ${seeds.join(', ')}`,
    '',
    '## Table 3: equal cost',
    '',
    table(headers, configRows(t3), right),
    '',
    table(cmpHeaders, cmpRows([...t3cmps, ...steps]), cmpRight),
    '',
    ...(t4.length ? ['## Table 4: twice the cost', '', table(headers, configRows([baseline, ...t4]), right), '', table(cmpHeaders, cmpRows([...t4cmps, ...t4vsBase]), cmpRight), ''] : []),
    ...(() => {
      const off = configs.filter((c) => c.table === 3 && costDeviation(c, baseline) > 0.05);
      return off.length
        ? [`NOTE: ${off.map((x) => x.label).join(', ')} could not match the baseline's cost within 5% (d is a whole number of channels; a wider baseline, --width and --base, gives finer steps). Compare those rows with care.`, '']
        : [];
    })(),
    ...(finished.length ? [`![test error per configuration, mean ± 1 SE over seeds, each seed a dot](${figure})`, ''] : []),
    '## The claims at this scale',
    '',
    ...claimResults.map((c) => `- ${verdictLine(c)}`),
    '',
    held === true ? 'Overall: every claim held at this scale.' : held === false ? 'Overall: at least one claim did not hold at this scale.'
      : 'Overall: not every claim could be decided; differences below the detectable difference are not resolved by this design.',
    '',
    'Paper (ImageNet-1K, ResNeXt-50 at ~4.1 GFLOPs, Table 3): top-1 error 23.9 (1x64d), 23.0 (2x40d), 22.6 (4x24d), 22.3 (8x14d), 22.2 (32x4d). ' +
      'Table 4 (ResNet-101 size, 2x complexity): ResNet-200 21.7, wider 1x100d 21.3, ResNeXt 2x64d 20.7, 64x4d 20.4 (baseline 22.0). ' +
      'The gains are a few tenths of a point to a point on ImageNet after 100 epochs; a short run on a small dataset may not resolve them.',
    '',
  ].join('\n');
  writeText(join(o.out, 'report.md'), report);
  return {
    experiment: 'cardinality', out: o.out, report: join(o.out, 'report.md'), figures: finished.length ? [join(o.out, figure)] : [], held, seconds: wall,
    plan: { ...planOut, ...(observed ? { observed_power: observed } : {}) }, claims: claimResults,
    models: configs.flatMap((c) => seeds.filter((s) => runs.has(`${c.name}_s${s}`)).map((s) => {
      const r = runs.get(`${c.name}_s${s}`)!;
      return { name: r.name, config: c.name, seed: s, cardinality: c.C, width: c.d, blocks: c.blocks, params: r.params, macs: r.macs,
        final_train_error: r.finalTrainError, final_test_error: r.finalTestError, test_error: r.predictions ? errorOf(r.predictions, r.labels!) : null,
        best_test_error: r.bestTestError, seconds: r.seconds, stopped: r.stopped };
    })),
    ...(interrupted ? { interrupted: true } : {}),
  };
}

function meanOf(xs: number[]): number {
  return xs.reduce((a, x) => a + x, 0) / xs.length;
}

/** Reads a model folder's saved predictions (one byte per test image), for recomputing the tests. */
export function readPredictions(dir: string): Uint8Array | null {
  const f = join(dir, 'predictions.u8');
  return existsSync(f) ? new Uint8Array(readFileSync(f)) : null;
}
