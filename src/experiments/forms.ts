// The ResNeXt paper's three equivalent block forms (Xie et al. 2017, Figure 3), run: (a) C paths
// summed, (b) paths concatenated before one 1x1, (c) a grouped 3x3. Form (c) gets random weights
// and BN statistics, (a) and (b) get the same numbers rearranged; all three run the same input.
// The claim: they compute the same function (our bound: 1e-5 of the output's scale) and (c), the
// one the paper implements, is the fastest.
import { join } from 'node:path';
import { convertDepthTwoState, convertResNeXtBlockState, depthTwoBlock, resnextBlock, type ResNeXtBlockConfig, type ResNeXtForm } from '../models/resnext_forms.js';
import { InitRandom, type Module, type StateDict } from '../nn/index.js';
import { Tensor, noGrad, tidy } from '../tensor/index.js';
import { lineChart, svgToPng } from '../report/index.js';
import { equalCostWidths } from './cardinality.js';
import { backendLine, int, table, writeText } from './markdown.js';
import type { ExperimentOptions } from './options.js';
import type { ExperimentResult } from './index.js';

export const summary = 'the three ResNeXt block forms on converted weights: output difference and speed (ResNeXt paper, Figure 3)';

const FORMS: ResNeXtForm[] = ['a', 'b', 'c'];
export const TOLERANCE = 1e-5;

/** Random conv weights (He scale), non-trivial BN affine and running statistics. */
function randomize(sd: StateDict, rng: InitRandom): StateDict {
  const out: StateDict = new Map();
  for (const [k, e] of sd) {
    const data = new Float32Array(e.data.length);
    for (let i = 0; i < data.length; i++) {
      if (k.endsWith('num_batches_tracked')) data[i] = 1;
      else if (k.endsWith('running_var')) data[i] = 0.5 + rng.next();
      else if (k.endsWith('running_mean') || k.endsWith('bias')) data[i] = 0.2 * rng.normal();
      else if (e.shape.length === 1) data[i] = 0.5 + rng.next();
      else data[i] = rng.normal() * Math.sqrt(2 / (e.shape[1] * (e.shape[2] ?? 1) * (e.shape[3] ?? 1)));
    }
    out.set(k, { ...e, data });
  }
  return out;
}

/** max |a - b| and that over max(1, max |b|). */
interface Difference {
  abs: number;
  scaled: number;
  /** ||a - b|| / ||b|| (Euclidean norms over all entries). */
  rel: number;
}

function difference(a: Float32Array, b: Float32Array): Difference {
  let abs = 0;
  let scale = 1;
  for (let i = 0; i < b.length; i++) {
    abs = Math.max(abs, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  let dd = 0, bb = 0;
  for (let i = 0; i < b.length; i++) {
    dd += (a[i] - b[i]) ** 2;
    bb += b[i] ** 2;
  }
  return { abs, scaled: abs / scale, rel: Math.sqrt(dd / Math.max(bb, 1e-30)) };
}

/**
 * Input gradients are compared by their relative Euclidean difference, not entry by entry: a ReLU
 * network's gradient jumps where a ReLU's input crosses 0, and where that input is within float32
 * rounding of 0 the forms' different summation orders may put it on different sides (seen: a true
 * value of -9e-7 came out +3e-7 in form (a) and below 0 in (c), with every native op matching the
 * reference backend). Such a flip changes one entry by the whole incoming gradient and, through
 * train-mode BN's batch statistics, every entry of its channel a little: relative differences of
 * 1e-3 to 6e-3 measured for one flip. A wrong rearrangement of the weights moves the gradient by
 * the order of its size.
 */
export const GRADIENT_TOLERANCE = 5e-2;

function gradientsAgree(d: Difference): boolean {
  return d.rel <= GRADIENT_TOLERANCE;
}

const median = (v: number[]) => (v.length ? [...v].sort((x, y) => x - y)[Math.floor(v.length / 2)] : NaN);

interface ConfigResult {
  C: number;
  d: number;
  params: Record<ResNeXtForm, number>;
  /** Differences from form (c): eval-mode output, train-mode output, train-mode input gradient. */
  diff: Record<'a' | 'b', { evalOut: Difference; trainOut: Difference; grad: Difference }>;
  forwardMs: Record<ResNeXtForm, number>;
  trainMs: Record<ResNeXtForm, number>;
  /** Forms that could not run, with the error. */
  failed: Partial<Record<ResNeXtForm, string>>;
}

function measure(config: ResNeXtBlockConfig, shape: number[], repeats: number, seed: number): ConfigResult {
  const rng = new InitRandom(seed);
  const blocks = {} as Record<ResNeXtForm, Module>;
  blocks.c = resnextBlock('c', config);
  const grouped = randomize(blocks.c.stateDict(), rng);
  blocks.c.loadStateDict(grouped);
  for (const f of ['a', 'b'] as const) {
    blocks[f] = resnextBlock(f, config);
    blocks[f].loadStateDict(convertResNeXtBlockState(grouped, 'c', f, config.cardinality));
  }
  const x = Tensor.fromArray(Float32Array.from({ length: shape.reduce((a, b) => a * b) }, () => rng.normal()), shape, { requiresGrad: true });
  // A fixed cotangent for backward; the blocks keep the input's shape (stride 1, in = out channels).
  const cotangent = Tensor.fromArray(Float32Array.from({ length: x.size }, (_, i) => Math.sin(i * 1.7)), shape);

  // A form the engine cannot run (e.g. a backend limit) is reported as failed, not fatal.
  const failed: Partial<Record<ResNeXtForm, string>> = {};
  const attempt = (f: ResNeXtForm, fn: () => void) => {
    if (failed[f]) return;
    try {
      fn();
    } catch (e) {
      failed[f] = (e as Error).message;
      if (x.grad && !x.grad.isDisposed) x.grad.dispose();
      x.grad = null;
      blocks[f].zeroGrad();
    }
  };
  const evalOut = {} as Record<ResNeXtForm, Float32Array>;
  const trainOut = {} as Record<ResNeXtForm, Float32Array>;
  const grads = {} as Record<ResNeXtForm, Float32Array>;
  for (const f of FORMS) {
    attempt(f, () => {
      blocks[f].eval();
      evalOut[f] = noGrad(() => tidy(() => blocks[f].forward(x).toArray()) as never) as Float32Array;
    });
  }
  // Training mode: batch statistics, and the gradient of <y, g> for a fixed g. Each form starts
  // from the same running statistics (the step updates them identically in every form).
  for (const f of FORMS) {
    attempt(f, () => {
      blocks[f].train();
      const r = tidy(() => {
        const y = blocks[f].forward(x);
        const values = y.toArray();
        y.backward(cotangent);
        const dx = x.grad!.toArray();
        x.grad!.dispose();
        x.grad = null;
        return { y: values, dx } as never;
      }) as { y: Float32Array; dx: Float32Array };
      trainOut[f] = r.y;
      grads[f] = r.dx;
      blocks[f].zeroGrad();
    });
  }

  // Timing, interleaved (a b c a b c ...) so a noisy neighbour hurts every form alike; the first
  // round creates the kernels and is not counted.
  const fwd: Record<ResNeXtForm, number[]> = { a: [], b: [], c: [] };
  const step: Record<ResNeXtForm, number[]> = { a: [], b: [], c: [] };
  for (let r = 0; r <= repeats; r++) {
    for (const f of FORMS) {
      attempt(f, () => {
        blocks[f].eval();
        let t = performance.now();
        noGrad(() => tidy(() => { blocks[f].forward(x).toArray(); }));
        if (r > 0) fwd[f].push(performance.now() - t);
        blocks[f].train();
        t = performance.now();
        tidy(() => {
          const y = blocks[f].forward(x);
          y.backward(cotangent);
          x.grad!.toArray();
          x.grad!.dispose();
          x.grad = null;
        });
        if (r > 0) step[f].push(performance.now() - t);
        blocks[f].zeroGrad();
      });
    }
  }
  const params = Object.fromEntries(FORMS.map((f) => [f, blocks[f].parameterCount()])) as Record<ResNeXtForm, number>;
  for (const f of FORMS) blocks[f].dispose();
  x.dispose();
  cotangent.dispose();
  const diff = {} as ConfigResult['diff'];
  const none = { abs: NaN, scaled: NaN, rel: NaN };
  for (const f of ['a', 'b'] as const) {
    diff[f] = failed[f] || failed.c ? { evalOut: none, trainOut: none, grad: none }
      : { evalOut: difference(evalOut[f], evalOut.c), trainOut: difference(trainOut[f], trainOut.c), grad: difference(grads[f], grads.c) };
  }
  return {
    C: config.cardinality, d: config.pathWidth, params, diff, failed,
    forwardMs: { a: median(fwd.a), b: median(fwd.b), c: median(fwd.c) },
    trainMs: { a: median(step.a), b: median(step.b), c: median(step.c) },
  };
}

const e = (v: number) => (Number.isNaN(v) ? '-' : v.toExponential(1));

export async function run(o: ExperimentOptions): Promise<ExperimentResult> {
  const log = o.log ?? (() => {});
  const started = Date.now();
  const channels = o.channels ?? 256;
  const d1 = o.width ?? 64;
  const cards = o.cardinalities ?? [2, 4, 8, 32];
  const widths = equalCostWidths(cards, d1, channels);
  const size = o.size ?? 28;
  const batch = o.batch ?? 8;
  const repeats = o.repeats ?? 10;
  const shape = [batch, channels, size, size];
  const results: ConfigResult[] = [];
  for (let i = 0; i < cards.length; i++) {
    const config: ResNeXtBlockConfig = { inChannels: channels, outChannels: channels, cardinality: cards[i], pathWidth: widths[i] };
    log({ event: 'config', cardinality: cards[i], width: widths[i] }, `forms: ${cards[i]}x${widths[i]}d block, input ${shape.join('x')}, ${repeats} timed repeats`);
    const r = measure(config, shape, repeats, o.seed + i);
    results.push(r);
    log({ event: 'measured', ...r }, `  max difference from (c): (a) ${e(Math.max(r.diff.a.evalOut.abs, r.diff.a.trainOut.abs))}, (b) ${e(Math.max(r.diff.b.evalOut.abs, r.diff.b.trainOut.abs))}; ` +
      `forward ms a/b/c ${FORMS.map((f) => r.forwardMs[f].toFixed(1)).join('/')}, forward+backward ${FORMS.map((f) => r.trainMs[f].toFixed(1)).join('/')}`);
  }
  const outputs = results.flatMap((r) => (['a', 'b'] as const).flatMap((f) => [r.diff[f].evalOut.scaled, r.diff[f].trainOut.scaled])).filter((v) => !Number.isNaN(v));
  const worst = outputs.length ? Math.max(...outputs) : NaN;
  const rowEqual = (r: ConfigResult, f: 'a' | 'b') =>
    Math.max(r.diff[f].evalOut.scaled, r.diff[f].trainOut.scaled) <= TOLERANCE && gradientsAgree(r.diff[f].grad);
  const gradRel = results.flatMap((r) => (['a', 'b'] as const).map((f) => r.diff[f].grad.rel)).filter((v) => !Number.isNaN(v));
  const failures = results.flatMap((r) => FORMS.filter((f) => r.failed[f]).map((f) => `${r.C}x${r.d}d form (${f}): ${r.failed[f]}`));
  const equal = worst <= TOLERANCE && results.every((r) => (['a', 'b'] as const).every((f) => r.failed[f] || r.failed.c || rowEqual(r, f)));
  const held = !equal ? false : failures.length ? null : true;
  const timed = results.filter((r) => FORMS.every((f) => !r.failed[f]));
  const fastestC = timed.filter((r) => r.forwardMs.c <= Math.min(r.forwardMs.a, r.forwardMs.b) && r.trainMs.c <= Math.min(r.trainMs.a, r.trainMs.b)).length;

  const diffRows = results.flatMap((r) => (['a', 'b'] as const).map((f) => [`${r.C}x${r.d}d`, `(${f}) vs (c)`, int(r.params[f]), e(r.diff[f].evalOut.abs),
    e(r.diff[f].trainOut.abs), e(Math.max(r.diff[f].evalOut.scaled, r.diff[f].trainOut.scaled)), e(r.diff[f].grad.abs), e(r.diff[f].grad.rel),
    r.failed[f] || r.failed.c ? `not measured: form (${r.failed[f] ? f : 'c'}) failed` : rowEqual(r, f) ? 'yes' : 'NO']));
  const ratio = (a: number, c: number) => (Number.isNaN(a / c) ? '-' : `${(a / c).toFixed(1)}x`);
  const ms = (v: number) => (Number.isNaN(v) ? 'failed' : v.toFixed(2));
  const speedRows = results.map((r) => [`${r.C}x${r.d}d`, ...FORMS.map((f) => ms(r.forwardMs[f])), ...FORMS.map((f) => ms(r.trainMs[f])),
    `${ratio(r.forwardMs.a, r.forwardMs.c)} / ${ratio(r.forwardMs.b, r.forwardMs.c)}`]);

  const figure = 'forms_speed.png';
  const xs = results.map((r) => r.C);
  await svgToPng(lineChart({
    title: `ResNeXt block forms, ${channels} channels, input ${shape.join('x')}: median time against cardinality (equal cost)`,
    width: 1100, height: 440,
    panels: [
      { title: 'forward (eval)', xLabel: 'cardinality C', yLabel: 'ms', logY: true, series: FORMS.map((f) => ({ label: `form (${f})`, x: xs, y: results.map((r) => r.forwardMs[f]) })) },
      { title: 'forward + backward (train)', xLabel: 'cardinality C', yLabel: 'ms', logY: true, series: FORMS.map((f) => ({ label: `form (${f})`, x: xs, y: results.map((r) => r.trainMs[f]) })) },
    ],
  }), join(o.out, figure), { scale: 2 });

  // Figure 4: at depth 2 the aggregated paths are one wider basic block; grouping starts to matter at depth 3.
  const depthTwo = results.map((r, i) => {
    const rng = new InitRandom(o.seed + 1000 + i);
    const config: ResNeXtBlockConfig = { inChannels: channels, outChannels: channels, cardinality: r.C, pathWidth: r.d };
    const wide = depthTwoBlock('wide', config);
    const paths = depthTwoBlock('paths', config);
    try {
      const weights = randomize(wide.stateDict(), rng);
      wide.loadStateDict(weights);
      paths.loadStateDict(convertDepthTwoState(weights, 'wide', 'paths', r.C));
      const x = Tensor.fromArray(Float32Array.from({ length: shape.reduce((a, b) => a * b) }, () => rng.normal()), shape);
      const out = (m: Module, train: boolean) => { m.train(train); return noGrad(() => tidy(() => m.forward(x).toArray() as never)) as Float32Array; };
      const evalDiff = difference(out(paths, false), out(wide, false)).scaled;
      const trainDiff = difference(out(paths, true), out(wide, true)).scaled;
      x.dispose();
      return { block: `${r.C}x${r.d}d`, width: r.C * r.d, params: paths.parameterCount(), evalDiff, trainDiff };
    } finally {
      wide.dispose();
      paths.dispose();
    }
  });
  const depthTwoWorst = Math.max(...depthTwo.map((d) => Math.max(d.evalDiff, d.trainDiff)));
  const depthTwoHeld = depthTwoWorst <= TOLERANCE;

  const wall = (Date.now() - started) / 1000;
  const report = [
    '# ResNeXt block forms (a), (b), (c) (Xie et al. 2017, Figure 3)',
    '',
    `One ResNeXt block with ${channels} input and output channels in each form: (a) C paths of 1x1, 3x3, 1x1 summed, then BN; (b) C paths of 1x1, 3x3 ` +
      'concatenated, then one 1x1 and BN; (c) 1x1, grouped 3x3, 1x1 (a torchvision Bottleneck). Form (c) gets random weights and BN statistics; ' +
      '(a) and (b) get the same numbers rearranged by `convertResNeXtBlockState`. No training.',
    '',
    '## Scale',
    '',
    `- blocks: C x d = ${results.map((r) => `${r.C}x${r.d}d`).join(', ')} (d by equation 4 for a C=1 width of ${d1}, as Table 2)`,
    `- input: ${shape.join('x')} (batch x channels x height x width), normal random values, seed ${o.seed}`,
    `- timing: median of ${repeats} runs after one warm-up, forms interleaved, ${backendLine()}; ${wall.toFixed(1)} s in all`,
    '',
    '## Equal outputs',
    '',
    table(['block', 'forms', 'params', 'max |diff| eval output', 'max |diff| train output', 'outputs, scaled', 'max |diff| input gradient', 'gradient, relative', 'equal'], diffRows,
      [false, false, true, true, true, true, true, true, false]),
    '',
    `"scaled": the difference over max(1, max |value of form (c)|); outputs must agree within 1e-5 scaled. Train mode normalizes with batch statistics; the gradient is that of <y, g> for a fixed g. ` +
      `"gradient, relative": ||dx - dx(c)|| / ||dx(c)||, bound ${GRADIENT_TOLERANCE}: a ReLU's input within float32 rounding of 0 may fall on different sides in different forms, ` +
      'and the gradient jumps there (and, through the batch statistics, moves its whole channel a little); a wrong rearrangement moves it by the order of its size.',
    '',
    '## Speed (median ms)',
    '',
    table(['block', 'fwd (a)', 'fwd (b)', 'fwd (c)', 'fwd+bwd (a)', 'fwd+bwd (b)', 'fwd+bwd (c)', 'fwd (a)/(c), (b)/(c)'], speedRows,
      [false, true, true, true, true, true, true, true]),
    '',
    `![median time of each form against cardinality](${figure})`,
    '',
    '## The claim at this scale',
    '',
    `- ${held === true ? 'HELD' : held === false ? 'DID NOT HOLD' : 'HELD WHERE MEASURED'}: the three forms compute the same function (outputs: worst scaled difference ${e(worst)}, bound 1e-5; ` +
      `input gradients: worst relative difference ${gradRel.length ? e(Math.max(...gradRel)) : '-'}, bound ${GRADIENT_TOLERANCE}).`,
    ...failures.map((f) => `- FAILED TO RUN: ${f}`),
    `- ${depthTwoHeld ? 'HELD' : 'DID NOT HOLD'}: a block of depth 2 (Figure 4) is no more than a wider dense block: C paths of 3x3 in->d, BN, ReLU, 3x3 d->out, summed, ` +
      `compute what one basic block of inner width C*d computes, on weights converted by \`convertDepthTwoState\` (worst scaled output difference ${e(depthTwoWorst)}, ` +
      `eval and train mode, over ${depthTwo.map((d) => `${d.block} = width ${d.width}`).join(', ')}). Grouping only changes the function from depth 3 on.`,
    `- Form (c) was the fastest, forward and forward+backward, for ${fastestC} of ${timed.length} block shapes timed in all three forms. ` +
      'The paper chose (c) as "more succinct and faster"; (a) and (b) run C small convolutions where (c) runs one grouped convolution.',
    '',
  ].join('\n');
  writeText(join(o.out, 'report.md'), report);
  return {
    experiment: 'forms', out: o.out, report: join(o.out, 'report.md'), figures: [join(o.out, figure)], held, seconds: wall, failures,
    claims: [{
      claim: 'the three ResNeXt block forms (a) split-transform-merge, (b) concatenate then 1x1, (c) grouped convolution compute the same function',
      held: held === null ? 'inconclusive' : held,
      evidence: { configurations: results.map((r) => `${r.C}x${r.d}d`), worst_scaled_output_difference: worst, bound: TOLERANCE, worst_gradient_relative_difference: gradRel.length ? Math.max(...gradRel) : null, failures },
    }, {
      claim: 'a ResNeXt block of depth 2 is a wider dense block (Figure 4): C aggregated paths equal one basic block of inner width C*d',
      held: depthTwoHeld,
      evidence: { blocks: depthTwo, worst_scaled_output_difference: depthTwoWorst, bound: TOLERANCE },
    }],
    worst_scaled_difference: worst, configs: results,
  };
}
