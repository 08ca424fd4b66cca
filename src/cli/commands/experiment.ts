// `residual experiment <name>`: the papers' experiments, each into a run folder with report.md.
import { join } from 'node:path';
import { initBackend } from '../../backend/index.js';
import {
  CARDINALITY_BUDGET, DEFAULT_BUDGET, checkDataOption, experimentNames, experiments, parseBudget, parseIntList, runExperiment, type ExperimentOptions,
} from '../../experiments/index.js';
import { TRAIN_DTYPES, dtypeOption, intOption, parse, threadsOption } from '../args.js';

export const summary = 'run a paper experiment (degradation, cardinality, forms, complexity) and write its report';

const usage = `usage: residual experiment <${experimentNames().join('|')}> [options]

${experimentNames().map((n) => `  ${n.padEnd(12)} ${experiments[n].summary}`).join('\n')}

options:
  --data fashion-mnist|cifar10:DIR|cifar100:DIR   dataset (default fashion-mnist)
  --budget 30m|3e|500i  minutes of training shared by the experiment's models, or epochs or iterations
                      per model (default 30m; cardinality: 2e)
  --full              the paper's recipe instead (degradation: 64k iterations of batch 128, lr 0.1 /10 at 32k
                      and 48k, wd 1e-4, momentum 0.9; cardinality: ResNeXt-29 at width 64, 300 epochs, wd 5e-4)
  --subset N          train on the first N training samples; --test-subset N: evaluate on the first N test samples
                      (default 2000 without --full; cardinality: all of them)
  --batch N           mini-batch (default 128); --evals N: test evaluations along each run (default 10)
  --out DIR           run folder (default runs/experiment-<name>-<time>); --resume continues an interrupted one there
  --seed S            (default 0); --json prints progress and the result as JSON lines
  --threads N|auto    engine threads (default: OMP_NUM_THREADS, else every core); auto: each model's training
                      times every core against one thread and keeps the faster (for a shared machine; runs
                      then do not repeat bit for bit)
  --dtype f32|bf16    the precision every model trains in (default f32); bf16 is mixed precision as in
                      \`residual train --dtype bf16\` (needs AVX512-BF16). One run folder keeps one precision:
                      --resume in the other is refused
  degradation:  --depths 20,56          plain and residual nets of these depths (6n+2)
                --models plain20,plain56 train only these (another process can train the rest into the same
                --out; then one more --resume run without --models reuses them all and writes the whole report)
  cardinality:  --cardinalities 1,2,4,8 --width D (d of C=1, default 16) --base B (stem width, default 16) --depth 20
                --seeds N (default 3: seeds S..S+N-1, the same for every configuration) --no-table4 (Table 3 only);
                default budget 2e per model, whole test set, --evals 4; per-image predictions in each model folder
                (--full: ResNeXt-29, width 64, base 64: the paper's 1x64d .. 8x14d at equal cost)
  forms:        --cardinalities 2,4,8,32 --width 64 --channels 256 --size 28 --batch 8 --repeats 10

Each run writes DIR/report.md (scale, tables, plots, whether the paper's claim held), PNG plots, and for the
training experiments DIR/models/<model>/ (metrics.jsonl, curve.jsonl, checkpoints, curves.png).`;

export async function run(argv: string[]): Promise<number> {
  const { values: v, positionals } = parse('experiment', argv, {
    data: { type: 'string' }, budget: { type: 'string' }, full: { type: 'boolean' }, out: { type: 'string' }, seed: { type: 'string' },
    json: { type: 'boolean' }, subset: { type: 'string' }, 'test-subset': { type: 'string' }, batch: { type: 'string' }, evals: { type: 'string' },
    depths: { type: 'string' }, models: { type: 'string' }, cardinalities: { type: 'string' }, width: { type: 'string' }, base: { type: 'string' }, depth: { type: 'string' },
    channels: { type: 'string' }, size: { type: 'string' }, repeats: { type: 'string' }, resume: { type: 'boolean' },
    threads: { type: 'string' }, seeds: { type: 'string' }, 'no-table4': { type: 'boolean' }, dtype: { type: 'string' },
  }, true);
  if (v.help) {
    console.log(usage);
    return 0;
  }
  const [name, ...extra] = positionals;
  if (!name) {
    console.error(usage);
    return 2;
  }
  if (!experiments[name]) throw new Error(`experiment: unknown experiment "${name}"; one of ${experimentNames().join(', ')}`);
  if (extra.length) throw new Error(`experiment: unexpected argument "${extra[0]}". See residual experiment --help`);
  if (v.full && v.budget) throw new Error('experiment: --full and --budget exclude each other (--full is the paper\'s whole recipe)');
  const seed = v.seed === undefined ? 0 : Number(v.seed);
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`experiment: --seed must be a non-negative integer, got "${v.seed}"`);
  const int = (k: keyof typeof v & string) => (v[k] === undefined ? undefined : intOption('experiment', k, v[k] as string, 1));
  const threads = threadsOption('experiment', v.threads);
  const dtype = dtypeOption('experiment', v.dtype, TRAIN_DTYPES);
  if (dtype === 'bf16' && (name === 'forms' || name === 'complexity')) throw new Error(`experiment: --dtype is for the training experiments (degradation, cardinality); ${name} trains nothing`);
  const json = !!v.json;
  const tty = !json && process.stdout.isTTY;
  const o: ExperimentOptions = {
    data: v.data ?? 'fashion-mnist',
    // cardinality's runs are per model (configurations x seeds): 2 epochs each is ~4.5 h at one thread on a 2-core machine.
    budget: v.budget ? parseBudget(v.budget) : name === 'cardinality' ? CARDINALITY_BUDGET : DEFAULT_BUDGET,
    full: !!v.full,
    out: v.out ?? join('runs', `experiment-${name}-${new Date().toISOString().replace(/[:.]/g, '-')}`),
    seed,
    subset: int('subset'),
    testSubset: int('test-subset'),
    batch: int('batch'),
    evals: int('evals'),
    depths: v.depths ? parseIntList('depths', v.depths) : undefined,
    models: v.models ? v.models.split(',').map((s) => s.trim()).filter((s) => s) : undefined,
    cardinalities: v.cardinalities ? parseIntList('cardinalities', v.cardinalities) : undefined,
    width: int('width'),
    base: int('base'),
    depth: int('depth'),
    seeds: int('seeds'),
    tableFour: !v['no-table4'],
    channels: int('channels'),
    size: int('size'),
    repeats: int('repeats'),
    resume: !!v.resume,
    dtype,
    autoThreads: threads.auto,
    // On a terminal a status line shows the batch being trained; log lines print over it.
    log: (event, text) => {
      if (tty) process.stdout.write('\r\x1b[2K');
      console.log(json ? JSON.stringify(event) : text);
    },
    progress: tty ? (text) => process.stdout.write(`\r\x1b[2K${text.slice(0, (process.stdout.columns ?? 100) - 1)}`) : undefined,
  };
  checkDataOption(o.data);
  const backend = await initBackend(undefined, { threads: threads.fixed });
  if (json) console.log(JSON.stringify({ event: 'start', experiment: name, out: o.out, backend: backend.name, threads: backend.info().threads }));
  else console.log(`experiment ${name} -> ${o.out} (${backend.name} backend, ${backend.info().threads} threads)`);
  const r = await runExperiment(name, o);
  if (json) console.log(JSON.stringify({ event: 'end', ...r }));
  const models = (r.models as { stopped?: string }[] | undefined) ?? [];
  if (models.some((m) => m.stopped === 'interrupted')) {
    if (!json) console.log(`interrupted: the report covers what finished; continue with the same arguments plus --resume --out ${o.out}`);
    return 130;
  }
  if (json) return 0;
  console.log(`done in ${(r.seconds / 60).toFixed(1)} min: the paper's claim ${r.held === null ? 'was not decided' : r.held ? 'held' : 'did not hold'} at this scale; report ${r.report}`);
  return 0;
}
