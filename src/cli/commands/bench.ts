// `residual bench`: times a model on this machine, inference through the compiled plan or a full
// training step, and prints the median; --json makes the last line one JSON object for scripts.
import { initBackend } from '../../backend/index.js';
import { benchmark, hostInfo, type BenchMode } from '../../benchmark/index.js';
import { getModel } from '../../models/index.js';
import { PLAN_DTYPES, dtypeOption, intOption, parse, shapeOption } from '../args.js';

export const summary = 'time a model: compiled inference or a training step (median of several runs)';

const usage = `usage: residual bench --model M --batch B [--mode infer|train] [--dtype f32|bf16|int8] [--input CxHxW]
                      [--threads N] [--warmup N] [--runs N] [--json]

  --model M      a name from \`residual models\` (random weights: timing does not depend on them)
  --batch B      images per run
  --mode         infer (default): the compiled inference plan (BN folded, fused ReLU and sums);
                 train: one SGD step (forward, backward, optimizer) through the tensor API
  --dtype        f32 (default) or bf16: infer runs bfloat16 activations and weights with f32 accumulation;
                 train runs the step in mixed precision as \`residual train --dtype bf16\` (convolutions in
                 bf16 with f32 accumulation, f32 master weights, BatchNorm and loss; no loss scaling needed).
                 Needs AVX512-BF16 or AMX, refused elsewhere.
                 int8 (infer only): the convs in u8/s8 x s8 on AVX512-VNNI, calibrated on the benchmark's input
  --input CxHxW  input shape (default: the model's own, 3x224x224 ImageNet, 3x32x32 CIFAR)
  --threads N    oneDNN (OpenMP) threads (default: OMP_NUM_THREADS, else every core)
  --warmup N     untimed runs first (default 3 infer, 2 train)
  --runs N       timed runs; the median is reported (default 10 infer, 5 train)
  --json         print the result as one JSON object on the last line`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parse('bench', argv, {
    model: { type: 'string' }, batch: { type: 'string' }, mode: { type: 'string' }, dtype: { type: 'string' },
    input: { type: 'string' }, threads: { type: 'string' }, warmup: { type: 'string' }, runs: { type: 'string' },
    json: { type: 'boolean' },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const missing = (['model', 'batch'] as const).filter((k) => !values[k]);
  if (missing.length) {
    console.error(`bench: missing ${missing.map((k) => `--${k}`).join(', ')}\n${usage}`);
    return 2;
  }
  const mode = values.mode ?? 'infer';
  if (mode !== 'infer' && mode !== 'train') throw new Error(`bench: --mode must be infer or train, got "${mode}"`);
  const dtype = dtypeOption('bench', values.dtype, PLAN_DTYPES) ?? 'f32';
  getModel(values.model!); // an unknown name fails before any work, listing the known ones
  const batch = intOption('bench', 'batch', values.batch, 1);
  const input = values.input ? shapeOption('bench', 'input', values.input) : undefined;
  const warmup = values.warmup === undefined ? undefined : Number(values.warmup);
  if (warmup !== undefined && !(Number.isInteger(warmup) && warmup >= 0)) {
    throw new Error(`bench: --warmup must be a non-negative integer, got "${values.warmup}"`);
  }
  const runs = values.runs === undefined ? undefined : intOption('bench', 'runs', values.runs, 1);
  const threads = values.threads === undefined ? undefined : intOption('bench', 'threads', values.threads, 1);
  await initBackend(mode === 'infer' ? 'native' : undefined, { threads });

  const r = benchmark({ model: values.model!, batch, mode: mode as BenchMode, dtype, input, warmup, runs });
  if (values.json) {
    console.log(JSON.stringify({ ...r, host: hostInfo() }));
  } else {
    console.log(`${r.model} ${r.mode} ${r.dtype} batch ${r.batch} input ${r.input.join('x')} (${r.backend}, ${r.threads} threads): ` +
      `${r.ms_per_image.toFixed(2)} ms/image, ${r.images_per_s.toFixed(1)} images/s ` +
      `(median of ${r.runs} runs after ${r.warmup} warm-up; batch ${r.ms_min.toFixed(1)}..${r.ms_max.toFixed(1)} ms)`);
  }
  return 0;
}
