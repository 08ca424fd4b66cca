// The ResNet paper's degradation experiment (He et al. 2015, section 4.2, Figure 6): plain nets and
// ResNets of two depths, trained on the same recipe for the same iterations. The claim: the deeper
// plain net trains to a higher training error than the shallower one, the deeper ResNet to a lower;
// and the same in test error (the paper's Table 6), judged on paired per-image predictions.
import { join } from 'node:path';
import { cifarResNetSpec } from '../models/cifar.js';
import { lineChart, svgToPng, type Series } from '../report/index.js';
import { heldOf, int, macs, overall, judgeLower, pct, table, writeText, type Verdict } from './markdown.js';
import { describeBudget, logger, type ExperimentOptions } from './options.js';
import { ALPHA, discordant, errorOf, judgeMcNemar, mcnemar } from './stats.js';
import {
  HE2015_CIFAR, HE2015_ITERATIONS, batchFor, contender, openExperimentData, planFor, scaleSection, trainContender,
  type Contender, type ModelRun,
} from './training.js';
import type { ExperimentResult } from './index.js';

/** One claim as judged: in training error or in test error. */
interface Judged {
  kind: 'train' | 'test';
  claim: string;
  verdict: Verdict | 'NOT MEASURED';
  detail: string;
  evidence: Record<string, unknown>;
}

export const summary = 'plain vs residual nets of two depths: training and test error against iterations (ResNet paper, Figure 6)';

/** Error in % along the run, for the chart: dashed training error, solid test error. */
function errorSeries(r: ModelRun, group: string): Series[] {
  const tested = r.history.filter((h) => h.test_acc !== null);
  return [
    { label: `${group}, train`, group, dash: 'dashed', width: 1.5, x: r.curve.map((p) => p.iteration), y: r.curve.map((p) => 100 * p.train_error) },
    { label: `${group}, test`, group, dash: 'solid', width: 2.25, x: tested.map((h) => h.iteration), y: tested.map((h) => 100 * (1 - h.test_acc!)) },
  ];
}

/** A y range that shows the end of the runs rather than the first few iterations' near-chance error. */
export function errorRange(runs: ModelRun[], iterations: number): [number, number] {
  let hi = 0;
  for (const r of runs) {
    for (const p of r.curve) if (p.iteration >= iterations * 0.1) hi = Math.max(hi, 100 * p.train_error);
    for (const h of r.history) if (h.test_acc !== null && h.iteration >= iterations * 0.1) hi = Math.max(hi, 100 * (1 - h.test_acc));
  }
  if (!(hi > 0)) hi = 100;
  return [0, Math.min(100, Math.ceil((hi * 1.1) / 5) * 5)];
}

export async function run(o: ExperimentOptions): Promise<ExperimentResult> {
  const log = logger(o);
  const started = Date.now();
  const depths = o.depths ?? [20, 56];
  if (depths.length < 2) throw new Error('degradation: --depths needs at least two depths, e.g. 20,56');
  const data = await openExperimentData(o, o.full ? undefined : 2000);
  const recipe = HE2015_CIFAR;
  const batch = batchFor(o, recipe, data.train.length);
  const opts = { inChannels: data.input[0], numClasses: data.numClasses };
  const models: Contender[] = [];
  // The ResNets train first: their ordering is the half of the claim that needs the longest runs, so a
  // run cut short (or resumed across sessions) answers it first.
  for (const residual of [true, false]) {
    for (const d of depths) {
      const name = `${residual ? 'resnet' : 'plain'}${d}`;
      models.push(contender(name, `${residual ? 'ResNet' : 'plain'}-${d}`, cifarResNetSpec(d, opts, residual), data.input));
    }
  }
  const chosen = o.models ?? models.map((m) => m.name);
  const unknown = chosen.filter((n) => !models.some((m) => m.name === n));
  if (unknown.length) throw new Error(`degradation: --models ${unknown.join(',')}: not one of this run's models (${models.map((m) => m.name).join(', ')})`);
  const evals = o.evals ?? (o.full ? 64 : 10);
  const plan = await planFor(o, models, data, batch, { iterations: HE2015_ITERATIONS, basis: "the paper's 64k iterations" }, evals, log);
  log({ event: 'plan', experiment: 'degradation', ...plan, models: models.map((m) => m.name) },
    `degradation: ${models.map((m) => m.name).join(', ')} on ${data.spec.name}, ${plan.iterations} iterations of batch ${batch} each -> ${o.out}`);

  const runs: ModelRun[] = [];
  for (const m of models.filter((c) => chosen.includes(c.name))) {
    log({ event: 'model', model: m.name, params: m.params, macs: m.macs }, `training ${m.label} (${int(m.params)} params)`);
    const r = await trainContender(m, data, plan, recipe, join(o.out, 'models', m.name),
      { seed: o.seed, resume: o.resume, autoThreads: o.autoThreads, predictions: true, dtype: o.dtype, log, progress: o.progress });
    runs.push(r);
    if (r.stopped === 'interrupted') break;
  }

  // Figure 6: plain nets on the left, ResNets on the right, one colour per depth.
  const yRange = errorRange(runs, plan.iterations);
  const panel = (residual: boolean) => ({
    title: residual ? 'ResNets' : 'plain nets', xLabel: 'iteration', yLabel: 'error (%)', xInteger: true, yRange,
    xRange: [0, plan.iterations] as [number, number],
    series: runs.filter((r) => r.name.startsWith(residual ? 'resnet' : 'plain')).flatMap((r) => errorSeries(r, `${r.name.replace(/\D+/, '')}-layer`)),
  });
  const figure = 'degradation.png';
  await svgToPng(lineChart({
    title: `${data.spec.name}: training error (dashed) and test error (solid), ${plan.iterations} iterations of batch ${batch}`,
    width: 1100, height: 460, panels: [panel(false), panel(true)],
  }), join(o.out, figure), { scale: 2 });

  const byName = new Map(runs.map((r) => [r.name, r]));
  // Shown as the paper does: plain nets first, then ResNets, each by depth.
  const shown = [...runs].sort((a, b) => Number(a.name.startsWith('resnet')) - Number(b.name.startsWith('resnet')));
  const rows = shown.map((r) => [r.label, String(r.name.replace(/\D+/, '')), int(r.params), macs(r.macs), pct(r.finalTrainError), pct(r.finalTestError),
    pct(r.bestTestError), `${(r.seconds / 60).toFixed(1)} min`, `[log](models/${r.name}/metrics.jsonl)`]);

  // The claims, checked pairwise between the shallowest and the deepest of each family, in training
  // error (the figure the paper plots) and in test error (the paper's Table 6).
  const [lo, hi] = [Math.min(...depths), Math.max(...depths)];
  // Training errors are over the last segment's samples; a difference under two standard errors is noise.
  const nTrain = plan.segment * plan.batch;
  const common = { iterations: plan.iterations, batch: plan.batch, epochs: plan.epochs, dtype: o.dtype ?? 'f32' };
  const judged: Judged[] = [];
  for (const residual of [false, true]) {
    const a = byName.get(`${residual ? 'resnet' : 'plain'}${lo}`);
    const b = byName.get(`${residual ? 'resnet' : 'plain'}${hi}`);
    const family = residual ? 'ResNet' : 'plain';
    const direction = residual ? 'lower' : 'higher';
    const trainClaim = `the deeper ${family}-${hi} trains to a ${direction} training error than ${family}-${lo}`;
    const testClaim = `the deeper ${family}-${hi} reaches a ${direction} test error than ${family}-${lo}`;
    // A model has predictions only when it finished its iterations.
    if (!a?.predictions || !b?.predictions) {
      // Not part of this run (--models), or cut short: said so, not passed off as an inconclusive measurement.
      const absent = [a ? null : `${family}-${lo}`, b ? null : `${family}-${hi}`].filter((x) => x !== null);
      const detail = absent.length ? `${absent.join(' and ')} not trained in this run` : 'run stopped before both finished';
      for (const [kind, claim] of [['train', trainClaim], ['test', testClaim]] as const) {
        judged.push({ kind, claim, verdict: 'NOT MEASURED', detail, evidence: { not_measured: true, reason: detail } });
      }
      continue;
    }
    // The claimed-better model of the pair: the shallower plain net, the deeper ResNet.
    const [better, worse] = residual ? [b, a] : [a, b];
    const j = judgeLower(better.finalTrainError, worse.finalTrainError, nTrain, nTrain);
    judged.push({ kind: 'train', claim: trainClaim, verdict: j.verdict,
      detail: `${family}-${lo} ${pct(a.finalTrainError)} vs ${family}-${hi} ${pct(b.finalTrainError)} training error, two standard errors ${pct(2 * j.se)}`,
      evidence: {
        [`${a.name}_final_train_error`]: a.finalTrainError, [`${b.name}_final_train_error`]: b.finalTrainError, two_standard_errors: 2 * j.se,
        train_samples_per_figure: nTrain, ...common,
      } });
    // Test error: both models classify the same images, so the paired test (McNemar) is the sharp one.
    const d = discordant(better.predictions!, worse.predictions!, better.labels!);
    const m = mcnemar(d.b, d.c);
    const [ea, eb] = [errorOf(a.predictions!, a.labels!), errorOf(b.predictions!, b.labels!)];
    judged.push({ kind: 'test', claim: testClaim, verdict: judgeMcNemar(m),
      detail: `${family}-${lo} ${pct(ea)} vs ${family}-${hi} ${pct(eb)} test error on ${int(a.labels!.length)} images; ` +
        `${m.b} images only ${better.label} classifies right, ${m.c} only ${worse.label}, McNemar exact p = ${m.exactP.toPrecision(2)}`,
      evidence: {
        [`${a.name}_test_error`]: ea, [`${b.name}_test_error`]: eb, test_samples: a.labels!.length,
        mcnemar: { [`only_${better.name}_right`]: m.b, [`only_${worse.name}_right`]: m.c, exact_p: m.exactP }, alpha: ALPHA, ...common,
      } });
  }
  const held = overall(judged.map((v) => (v.verdict === 'NOT MEASURED' ? 'INCONCLUSIVE' : v.verdict)));
  // A pair missing from the run makes both of its claims unmeasured; name each pair once.
  const unmeasured = judged.filter((v) => v.verdict === 'NOT MEASURED' && v.kind === 'train');
  const conclusion = (kind: Judged['kind'], what: string): string => {
    const vs = judged.filter((v) => v.kind === kind).map((v) => v.verdict as Verdict);
    const h = overall(vs);
    return h === true ? `In ${what}, both halves of the paper's claim held at this scale.`
      : h === false ? `In ${what}, the paper's claim did not hold at this scale.`
      : `In ${what}, this run could not decide the whole claim: ${vs.filter((v) => v === 'HELD').length} of ${vs.length} halves held, the rest within sampling noise.`;
  };
  const wall = (Date.now() - started) / 1000;
  const report = [
    '# Degradation: plain vs residual nets (He et al. 2015, Figure 6)',
    '',
    `Plain nets and ResNets of depth ${depths.join(' and ')} (CIFAR layout, 6n+2 layers, option A shortcuts; ` +
      'the plain twins have the same layers without shortcuts) trained with the same recipe, seed and iterations.',
    '',
    '## Scale',
    '',
    scaleSection(data, plan, recipe, o, wall, runs),
    `- budget: ${o.full ? "--full (the paper's recipe)" : describeBudget(o.budget)}`,
    '',
    '## Results',
    '',
    table(['model', 'depth', 'params', 'MACs', 'final train error', 'final test error', 'best test error', 'time', 'log'], rows,
      [false, true, true, true, true, true, true, true, false]),
    '',
    'Final train error: the running training error over the last evaluation interval (train mode, augmented data), as the paper plots it. ' +
      'Final test error: at the end of the run.',
    '',
    `![training error (dashed) and test error (solid) against iterations](${figure})`,
    '',
    '## The claim at this scale',
    '',
    ...judged.map((v) => `- ${v.verdict}: ${v.claim} (${v.detail})`),
    '',
    'Training error is judged against two standard errors of the last interval\'s samples; test error by McNemar\'s exact test on the two models\' ' +
      `predictions for the same images (b: images only the claimed-better model classifies right; c: the reverse), significant at ${ALPHA}.`,
    '',
    unmeasured.length
      ? `This run measured ${unmeasured.length === judged.length / 2 ? 'neither half' : 'only part'} of the paper's claim (${unmeasured.map((v) => v.detail).join('; ')}): ` +
        'the rest needs the missing models trained into this folder (another process with --models) or the interrupted ones continued (--resume), then a --resume run without --models.'
      : [conclusion('train', 'training error'), conclusion('test', 'test error'), held === true ? ''
        : `The paper trains ${HE2015_ITERATIONS.toLocaleString('en-US')} iterations on CIFAR-10; the gap between plain-20 and plain-56 is visible there from early on, while ` +
          'the ResNets\' ordering settles only after the learning-rate drops. A short run, a small subset or an easy dataset can hide either effect.'].filter(Boolean).join(' '),
    '',
    `Paper (CIFAR-10, 64k iterations): plain-56 has higher training and test error than plain-20; ResNet-56 lower than ResNet-20 ` +
      '(test error 8.75% for ResNet-20, 6.97% for ResNet-56, Table 6).',
    '',
  ].join('\n');
  writeText(join(o.out, 'report.md'), report);
  return {
    experiment: 'degradation', out: o.out, report: join(o.out, 'report.md'), figures: [join(o.out, figure)], held,
    seconds: wall, plan,
    models: runs.map((r) => ({ name: r.name, params: r.params, macs: r.macs, final_train_error: r.finalTrainError, final_test_error: r.finalTestError, best_test_error: r.bestTestError, seconds: r.seconds, stopped: r.stopped })),
    verdicts: judged.map(({ kind: _kind, ...v }) => v),
    claims: judged.map((v) => ({ claim: v.claim, held: heldOf(v.verdict), evidence: v.evidence })),
  };
}
