// A/B of compiled-plan variants (activation layout, Winograd, ...) in ONE process, interleaved:
// every variant is compiled from the same model, then the rounds alternate A x k, B x k, ... so that
// a co-tenant slows all variants alike. A variant is a set of plan switches (the engine
// configuration's `plan`, src/backend/config.ts), applied with initBackend before its compile:
//
//   node dist/bench/plan_ab.js --model resnet50 --batch 1 [--dtype f32|bf16] [--input 3x224x224]
//        [--rounds 10] [--per 3] [--variants nhwc,default]
//
// Variant names: "default" (no switch: Plan::Choose decides), or a layout (nhwc, blocked, any)
// followed by +wino / +nowino, +sn (strided 3x3s NHWC), +gonednn (narrow grouped convs on oneDNN's
// kernels, not ours), e.g. "blocked+wino" or "default+gonednn". Thread count:
// OMP_NUM_THREADS. Prints one JSON line: per variant the median and the fastest ms/image, the
// largest deviation of its logits from the first variant's, the plan's bytes, and the load.
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { initBackend } from '../src/backend/index.js';
import type { PlanConfig } from '../src/backend/config.js';
import { compileForInference, type CompiledModel } from '../src/infer/index.js';
import { getModel } from '../src/models/index.js';
import { manualSeed } from '../src/nn/index.js';

function variantConfig(v: string): Partial<PlanConfig> {
  const [layout, ...opts] = v.split('+');
  return {
    layout: layout === 'default' ? '' : (layout as PlanConfig['layout']),
    winograd: opts.includes('wino') ? 'on' : opts.includes('nowino') ? 'off' : 'auto',
    strided: opts.includes('sn') ? 'nhwc' : '',
    grouped: opts.includes('gonednn') ? 'onednn' : '',
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      model: { type: 'string', default: 'resnet50' }, batch: { type: 'string', default: '1' }, dtype: { type: 'string', default: 'f32' },
      input: { type: 'string', default: '3x224x224' }, rounds: { type: 'string', default: '10' }, per: { type: 'string', default: '3' },
      variants: { type: 'string', default: 'nhwc,default' },
    },
  });
  const batch = Number(values.batch);
  const input = values.input!.split('x').map(Number) as [number, number, number];
  const dtype = values.dtype as 'f32' | 'bf16';
  const variants = values.variants!.split(',');
  await initBackend('native');
  manualSeed(0);
  const model = getModel(values.model!).build({ inChannels: input[0] });
  model.eval();
  let s = 1;
  const x = Float32Array.from({ length: batch * input[0] * input[1] * input[2] }, () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const plans: CompiledModel[] = [];
  try {
    for (const v of variants) {
      await initBackend('native', { plan: variantConfig(v) });
      plans.push(compileForInference(model, { input, maxBatch: batch, dtype }));
    }
    const outs = plans.map((p) => p.run(x, batch)); // also the warm-up run
    const ref = outs[0]!;
    const scale = ref.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    const times: number[][] = variants.map(() => []);
    for (let r = 0; r < Number(values.rounds); r++) {
      plans.forEach((p, i) => {
        for (let k = 0; k < Number(values.per); k++) {
          const t0 = performance.now();
          p.run(x, batch);
          times[i]!.push((performance.now() - t0) / batch);
        }
      });
    }
    const result: Record<string, unknown> = {
      date: new Date().toISOString(), model: values.model, batch, dtype, input, threads: Number(process.env.OMP_NUM_THREADS ?? 0) || null,
      rounds: Number(values.rounds), per: Number(values.per), load_1_5_15: loadavg().map((l) => +l.toFixed(2)), variants: {},
    };
    variants.forEach((v, i) => {
      const dev = outs[i]!.reduce((m, y, j) => Math.max(m, Math.abs(y - ref[j]!)), 0);
      (result.variants as Record<string, unknown>)[v] = {
        median_ms_per_image: +median(times[i]!).toFixed(2), min_ms_per_image: +Math.min(...times[i]!).toFixed(2),
        max_dev_vs_first: +(dev / scale).toExponential(2), bytes: plans[i]!.bytes,
      };
    });
    console.log(JSON.stringify(result));
  } finally {
    for (const p of plans) p.dispose();
    model.dispose();
  }
}

await main();
