// Side-by-side inference benchmark: our compiled plan (`residual bench --mode infer`) against
// PyTorch 1.13 eval (bench/torch_infer.py) and onnxruntime-node 1.30 running the ONNX file our
// exporter writes, for ResNet-50 and ResNeXt-50 32x4d at batch 1 and 16, in ms per image.
//
//   node dist/bench/infer.js [--threads 2] [--rounds 2] [--runs 10] [--models resnet50,resnext50_32x4d] [--batches 1,16]
//                            [--no-bf16] [--no-int8] [--no-torch] [--torch-layout nchw|nhwc]
//
// Our bf16 plan is timed too (ours_bf16_ms_per_image) unless --no-bf16, and unless --no-int8 our int8
// plan (ours_int8_ms_per_image, calibrated on the benchmark's input) beside ONNX Runtime on our QDQ
// export of the same network (ort_int8_ms_per_image: `exportOnnx(..., { dtype: 'int8' })`, which ONNX
// Runtime fuses into its own QLinearConv/QLinearAdd int8 kernels): the fair int8 comparison.
// Every measurement runs in a fresh child process pinned to the same thread count (OMP_NUM_THREADS
// for us and PyTorch, intraOpNumThreads for ONNX Runtime), and the engines alternate (ours, PyTorch,
// ORT, ours, ...) because this machine is shared; each engine keeps its fastest median across
// rounds. Prints one JSON object with the ratios ours / engine (below 1.0: we are faster), the host
// (CPU generation, load) and, where g++ can build bench/peak/peak.cc, each time as a fraction of the
// measured peak of its precision on this host (`peak_fraction`: GFLOP/s achieved / (threads x one
// core's peak); f32 engines against the f32 FMA peak, bf16 against vdpbf16ps, int8 against vpdpbusd).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { hostInfo } from '../src/benchmark/host.js';
import { traceModel } from '../src/models/registry.js';
import { lastJson, runChild } from './child.js';
import { measurePeaks, type Peaks } from './peak.js';

interface Case {
  model: string;
  batch: number;
  input: [number, number, number];
  threads: number;
  warmup: number;
  runs: number;
}

interface EngineResult {
  engine: string;
  threads: number;
  ms_per_image: number;
}

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');

/** ONNX Runtime side, in a child: export with our exporter (f32, or the int8 QDQ model), run with the same thread count. */
async function runOrt(c: Case, dir: string, dtype: 'f32' | 'int8'): Promise<EngineResult> {
  const ort = await import('onnxruntime-node');
  const { initBackend } = await import('../src/backend/index.js');
  const { createModel } = await import('../src/models/index.js');
  const { manualSeed } = await import('../src/nn/index.js');
  const { exportOnnx } = await import('../src/onnx/index.js');
  const { calibrate } = await import('../src/infer/index.js');
  await initBackend();
  manualSeed(0);
  const model = createModel(c.model);
  model.eval();
  const file = join(dir, `${c.model}-${dtype}.onnx`);
  // int8: calibrated on random images, as our int8 bench is (random weights: the timing does not depend on the scales)
  const per = c.input[0] * c.input[1] * c.input[2];
  const calibration = dtype === 'int8'
    ? calibrate(model, Float32Array.from({ length: 2 * per }, () => Math.random()), 2, { input: c.input, values: true })
    : undefined;
  exportOnnx(model, { file, input: c.input, dtype, calibration });
  model.dispose();
  const session = await ort.InferenceSession.create(file, {
    intraOpNumThreads: c.threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
  });
  const n = c.batch * c.input[0] * c.input[1] * c.input[2];
  const x = new ort.Tensor('float32', Float32Array.from({ length: n }, () => Math.random()), [c.batch, ...c.input]);
  const times: number[] = [];
  for (let i = 0; i < c.warmup + c.runs; i++) {
    const t0 = performance.now();
    await session.run({ input: x });
    if (i >= c.warmup) times.push(performance.now() - t0);
  }
  await session.release();
  times.sort((a, b) => a - b);
  const m = times.length >> 1;
  const ms = times.length % 2 ? times[m]! : (times[m - 1]! + times[m]!) / 2;
  const what = dtype === 'int8' ? 'our int8 QDQ export, fused into QLinearConv/QLinearAdd' : 'our ONNX export, BN folded';
  return { engine: `onnxruntime-node ${ort.env.versions.common} (${what})`, threads: c.threads, ms_per_image: ms / c.batch };
}

function ours(c: Case, env: NodeJS.ProcessEnv, dtype: 'f32' | 'bf16' | 'int8'): EngineResult {
  const cli = join(root, 'dist', 'src', 'cli', 'main.js');
  const out = runChild([process.execPath, cli, 'bench', '--model', c.model, '--batch', String(c.batch), '--mode', 'infer',
    '--input', c.input.join('x'), '--threads', String(c.threads), '--warmup', String(c.warmup), '--runs', String(c.runs), '--dtype', dtype, '--json'], env, 'residual bench');
  const r = lastJson<{ ms_per_image: number; threads: number }>(out);
  return { engine: `residual compiled plan (native, ${dtype})`, threads: r.threads, ms_per_image: r.ms_per_image };
}

function torch(c: Case, env: NodeJS.ProcessEnv, dir: string, layout: string): EngineResult {
  const spec = join(dir, `torch-${c.model}-${c.batch}.json`);
  writeFileSync(spec, JSON.stringify({ ...c, layout }));
  return lastJson<EngineResult>(runChild(['/usr/bin/python3', join(root, 'bench', 'torch_infer.py'), spec], env, 'PyTorch'));
}

function ortChild(c: Case, env: NodeJS.ProcessEnv, dir: string, dtype: 'f32' | 'int8' = 'f32'): EngineResult {
  const spec = join(dir, `ort-${c.model}-${c.batch}-${dtype}.json`);
  writeFileSync(spec, JSON.stringify({ case: c, dir, dtype }));
  return lastJson<EngineResult>(runChild([process.execPath, join(here, 'infer.js'), '--ort-only', spec], env, 'onnxruntime'));
}

/** Each engine's GFLOP/s as a share of `threads` cores' peak in the precision it computes in. */
function peakFractions(model: string, input: [number, number, number], threads: number, peaks: Peaks,
  best: Record<string, number>): Record<string, number> {
  const gflop = (2 * traceModel(model, input).macs) / 1e9; // per image
  const precision: Record<string, keyof Omit<Peaks, 'method'>> = { ours: 'f32', torch: 'f32', ort: 'f32', ours_bf16: 'bf16', ours_int8: 'int8', ort_int8: 'int8' };
  const out: Record<string, number> = {};
  for (const [engine, ms] of Object.entries(best)) {
    if (!Number.isFinite(ms)) continue;
    out[engine] = +(gflop / (ms / 1000) / (threads * peaks[precision[engine]!])).toFixed(3);
  }
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      threads: { type: 'string', default: '2' }, rounds: { type: 'string', default: '2' }, runs: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '3' }, models: { type: 'string', default: 'resnet50,resnext50_32x4d' },
      batches: { type: 'string', default: '1,16' }, input: { type: 'string', default: '3x224x224' },
      'torch-layout': { type: 'string', default: 'nchw' }, 'ort-only': { type: 'string' }, 'no-bf16': { type: 'boolean' },
      'no-int8': { type: 'boolean' }, 'no-torch': { type: 'boolean' },
    },
  });
  if (values['ort-only']) {
    const { case: c, dir, dtype } = JSON.parse(readFileSync(values['ort-only'], 'utf8')) as { case: Case; dir: string; dtype: 'f32' | 'int8' };
    console.log(JSON.stringify(await runOrt(c, dir, dtype)));
    return;
  }
  const bf16 = !values['no-bf16'], int8 = !values['no-int8'], withTorch = !values['no-torch'];
  const threads = Number(values.threads);
  const input = values.input!.split('x').map(Number) as [number, number, number];
  const env = { ...process.env, OMP_NUM_THREADS: String(threads) };
  const peaks = measurePeaks(); // before the engines run, while this process is the only one of ours
  const tmp = mkdtempSync(join(tmpdir(), 'residual-bench-infer-'));
  const rows: Record<string, unknown>[] = [];
  const engines: Record<string, string> = {};
  try {
    for (const model of values.models!.split(',')) {
      for (const batch of values.batches!.split(',').map(Number)) {
        const c: Case = { model, batch, input, threads, warmup: Number(values.warmup), runs: Number(values.runs) };
        const best = { ours: Infinity, ours_bf16: Infinity, ours_int8: Infinity, torch: Infinity, ort: Infinity, ort_int8: Infinity };
        const loadBefore = loadavg()[0]!;
        for (let round = 0; round < Number(values.rounds); round++) {
          const results: Partial<Record<keyof typeof best, EngineResult>> = { ours: ours(c, env, 'f32') };
          if (withTorch) results.torch = torch(c, env, tmp, values['torch-layout']!);
          results.ort = ortChild(c, env, tmp);
          if (bf16) results.ours_bf16 = ours(c, env, 'bf16');
          if (int8) {
            results.ours_int8 = ours(c, env, 'int8');
            results.ort_int8 = ortChild(c, env, tmp, 'int8');
          }
          for (const [k, r] of Object.entries(results) as [keyof typeof best, EngineResult][]) {
            engines[k] = `${r.engine}, ${r.threads} threads`;
            best[k] = Math.min(best[k], r.ms_per_image);
          }
        }
        rows.push({
          model, batch, ours_ms_per_image: +best.ours.toFixed(2),
          ort_ms_per_image: +best.ort.toFixed(2), ratio_vs_ort: +(best.ours / best.ort).toFixed(3),
          ...(withTorch ? { torch_ms_per_image: +best.torch.toFixed(2), ratio_vs_torch: +(best.ours / best.torch).toFixed(3) } : {}),
          ...(bf16 ? { ours_bf16_ms_per_image: +best.ours_bf16.toFixed(2), ratio_bf16_vs_ort: +(best.ours_bf16 / best.ort).toFixed(3) } : {}),
          ...(int8 ? {
            ours_int8_ms_per_image: +best.ours_int8.toFixed(2), ratio_int8_vs_ort: +(best.ours_int8 / best.ort).toFixed(3),
            ort_int8_ms_per_image: +best.ort_int8.toFixed(2), ratio_int8_vs_ort_int8: +(best.ours_int8 / best.ort_int8).toFixed(3),
          } : {}),
          load_1min: [+loadBefore.toFixed(2), +loadavg()[0]!.toFixed(2)], // before and after this case: other work on the machine
          ...(peaks ? { peak_fraction: peakFractions(model, input, threads, peaks, best) } : {}),
        });
        console.error(JSON.stringify(rows[rows.length - 1]));
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  const report = {
    date: new Date().toISOString(), threads, input, rounds: Number(values.rounds), runs: Number(values.runs),
    warmup: Number(values.warmup), statistic: 'per engine, the fastest of the rounds\' medians', host: hostInfo(),
    peaks_per_core_gflops: peaks, engines, results: rows,
  };
  console.log(JSON.stringify(report, null, 1));
}

await main();
