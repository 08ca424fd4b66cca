// `residual embed`: embeddings (the pooled features the head would read) of images or of a
// preprocessed safetensors batch, through loadFeatureExtractor (the compiled plan stopped at the
// pool), written as safetensors "features" [N, D].
import { statSync } from 'node:fs';
import { initBackend } from '../../backend/index.js';
import { IMAGE_EXTENSIONS, listImages } from '../../data/index.js';
import { loadFeatureExtractor, type FeatureExtractor } from '../../infer/features.js';
import { openStateDictFile, SafetensorsFile, writeSafetensors } from '../../io/index.js';
import { checkOutputPath } from '../../io/index.js';
import { getModel } from '../../models/index.js';
import { PLAN_DTYPES, dtypeOption, intOption, parse, shapeOption } from '../args.js';
import { downloadProgress } from '../progress.js';
import { resolveWeightsArgument } from '../weights_arg.js';
import { calibrationFromArgs } from '../calibration_arg.js';

export const summary = 'embeddings: the pooled features of images or a preprocessed batch, as safetensors';

const usage = `usage: residual embed [--model M] --weights W --out F.safetensors (--input X.safetensors | IMAGE... | DIR...)
                      [--size CxHxW] [--batch 16] [--dtype f32|bf16|int8] [--calibration FILE.json|DATA] [--threads N] [--json]

  --model M        a name from \`residual models\`; may be left out when the weights' model card names it
  --weights W      torchvision:MODEL[.ENTRY] (downloaded once), a .pth/.safetensors, or a run folder from
                   \`residual train\`; their model card (or the run's dataset) gives the preprocessing.
                   Without it: random weights (the features mean nothing)
  --out F          safetensors written (atomically) with key "features": float32 [N, D], D the last
                   stage's channels (2048 for resnet50); __metadata__ has the model, the output ("pool"),
                   the dtype, the input size and, for images, "files" (a JSON list, in the order of the rows)
  --input X        safetensors with key "input": float [N, C, H, W], already preprocessed
  IMAGE... DIR...  image files (any format sharp reads), or folders: every .jpg/.jpeg/.png/.webp below
                   them, recursively, in torchvision ImageFolder's order (folders sorted, then each folder's
                   files sorted). Each is decoded and preprocessed as \`residual predict\` does
                   (3x224x224: resize 256, center crop 224, ImageNet mean/std)
  --size CxHxW     the input size images are preprocessed to (default: the run's dataset, else the model's)
  --batch N        samples per kernel run (default 16)
  --dtype          f32 (default), bf16 (needs AVX512-BF16 or AMX; features carry bf16 rounding) or int8
                   (needs AVX512-VNNI; features carry int8 rounding)
  --calibration    int8: a calibration .json, or DATA (a data spec or an image folder) to calibrate on. Default:
                   the one saved beside the weights, else one made from the training images of the dataset their
                   model card names (saved beside them)
  --threads N      oneDNN (OpenMP) threads (default: OMP_NUM_THREADS, else every core)
  --json           print the result (shape, timing) as one JSON object on the last line`;

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);

/** The image files the positionals name: files as given, folders expanded (recursively, in ImageFolder's order). */
function imageFiles(paths: readonly string[]): string[] {
  const files: string[] = [];
  for (const p of paths) {
    let isDir: boolean;
    try {
      isDir = statSync(p).isDirectory();
    } catch {
      throw new Error(`embed: ${p}: no such file or folder`);
    }
    if (!isDir) {
      files.push(p);
      continue;
    }
    const found = listImages(p);
    if (found.length === 0) throw new Error(`embed: the folder ${p} has no image files (${IMAGE_EXTENSIONS.join(', ')}) in it or below it`);
    files.push(...found);
  }
  return files;
}

/** The preprocessed batch of --input: the "input" tensor, checked to be a float [N, C, H, W] with samples. */
function readInput(file: string): { data: Float32Array; shape: [number, number, number, number] } {
  const f = SafetensorsFile.open(file);
  try {
    const info = f.tensors.get('input');
    if (!info) {
      throw new Error(`embed: ${file} has no tensor "input" (it has ${[...f.tensors.keys()].join(', ') || 'none'}); ` +
        'save the preprocessed batch under the key "input" as float32 [N, C, H, W]');
    }
    if (!FLOAT_DTYPES.has(info.dtype) || info.shape.length !== 4) {
      throw new Error(`embed: "input" in ${file} must be a float [N, C, H, W] tensor, got ${info.dtype} [${info.shape.join(', ')}]`);
    }
    if (info.shape.some((d) => d === 0)) throw new Error(`embed: "input" in ${file} is empty ([${info.shape.join(', ')}]); it needs at least one sample`);
    const [n, c, h, w] = info.shape as [number, number, number, number];
    return { data: f.read('input').data, shape: [n, c, h, w] };
  } finally {
    f.close();
  }
}

/** Input channels the weights file takes (conv1's), when it says. */
function weightChannels(file: string): number | null {
  const r = openStateDictFile(file);
  try {
    return r.names.includes('conv1.weight') ? r.info('conv1.weight').shape[1] ?? null : null;
  } finally {
    r.close();
  }
}

/** One line of progress on stderr: rewritten in place on a terminal, at most every 2 s otherwise (logs). */
function progress(total: number): (done: number, final?: boolean) => void {
  const t0 = performance.now();
  const tty = process.stderr.isTTY;
  let last = 0;
  return (done, final = false) => {
    const now = performance.now();
    if (!final && !tty && now - last < 2000) return;
    last = now;
    const rate = done / Math.max(1e-9, (now - t0) / 1000);
    const line = `embed: ${done}/${total} (${Math.floor((100 * done) / total)}%) ${rate.toFixed(1)} images/s`;
    process.stderr.write(tty ? `\r${line}${final ? '\n' : ''}` : `${line}\n`);
  };
}

export async function run(argv: string[]): Promise<number> {
  const { values: v, positionals } = parse('embed', argv, {
    model: { type: 'string' }, weights: { type: 'string' }, out: { type: 'string' }, input: { type: 'string' },
    size: { type: 'string' }, batch: { type: 'string' }, dtype: { type: 'string' }, threads: { type: 'string' }, calibration: { type: 'string' },
    json: { type: 'boolean' },
  }, true);
  if (v.help) {
    console.log(usage);
    return 0;
  }
  const missing = [...(v.model || v.weights ? [] : ['--weights (or --model)']), ...(v.out ? [] : ['--out'])];
  if (missing.length) {
    console.error(`embed: missing ${missing.join(', ')}\n${usage}`);
    return 2;
  }
  if (!v.input === (positionals.length === 0)) {
    console.error(`embed: give either --input X.safetensors or images (files or folders), ${v.input ? 'not both' : 'none was given'}\n${usage}`);
    return 2;
  }
  if (v.input && v.size) throw new Error('embed: --size sets how images are preprocessed; an --input batch is already preprocessed (its shape is the input)');
  if (v.model) getModel(v.model); // an unknown name fails before any work, listing the known ones
  checkOutputPath(v.out!);
  const batch = intOption('embed', 'batch', v.batch, 16);
  const dtype = dtypeOption('embed', v.dtype, PLAN_DTYPES) ?? 'f32';
  if (v.calibration && dtype !== 'int8') throw new Error('embed: --calibration is for --dtype int8');
  const threads = v.threads === undefined ? undefined : intOption('embed', 'threads', v.threads, 1);
  const size = v.size ? shapeOption('embed', 'size', v.size) : undefined;

  // Everything the user named is read and checked before the model is built.
  const given = v.input ? readInput(v.input) : null;
  const files = given ? null : imageFiles(positionals);
  // Resolved once here (a spec downloads, with a progress line), then handed on as the local file.
  const resolved = v.weights ? await resolveWeightsArgument('embed', v.weights, v.model) : null;
  if (given && resolved) {
    const wc = weightChannels(resolved.path);
    if (wc !== null && wc !== given.shape[1]) {
      throw new Error(`embed: "input" in ${v.input} has ${given.shape[1]} channels ([${given.shape.join(', ')}]), but the weights ${v.weights} take ${wc}-channel input`);
    }
  }

  if (!v.weights) console.error('embed: no --weights: the model has random weights, so the features mean nothing');

  await initBackend(undefined, { threads });
  const total = given ? given.shape[0] : files!.length;
  let extractor: FeatureExtractor;
  try {
    extractor = await loadFeatureExtractor({
      // The argument itself, not the resolved file: a spec's table entry carries its eval transform.
      model: v.model, weights: v.weights, download: { onProgress: downloadProgress('embed') }, input: given ? given.shape.slice(1) : size, dtype,
      calibration: calibrationFromArgs('embed', v),
      maxBatch: Math.min(batch, total), warn: (m) => console.error(`embed: ${m}`),
    });
  } catch (e) {
    if (!given) throw e;
    throw new Error(`embed: cannot run ${v.model ?? v.weights} on "input" [${given.shape.join(', ')}] of ${v.input}: ${(e as Error).message}`, { cause: e });
  }

  const { dim, input, model: name } = extractor;
  const per = input[0] * input[1] * input[2];
  const features = new Float32Array(total * dim);
  const show = progress(total);
  const t0 = performance.now();
  const batchMs: number[] = []; // kernel time of each batch, for comparing with `residual bench`
  try {
    // Images: the next batch is decoded and preprocessed while the current one runs on a libuv thread.
    // A preprocessed --input has nothing to overlap, so it runs on this thread, as `residual bench` does.
    const prepare = async (start: number): Promise<Float32Array> => {
      const end = Math.min(total, start + batch);
      if (given) return given.data.subarray(start * per, end * per);
      const xs = await Promise.all(files!.slice(start, end).map((f) => extractor.preprocess(f)));
      const out = new Float32Array(xs.length * per);
      xs.forEach((x, i) => out.set(x, i * per));
      return out;
    };
    let next = prepare(0);
    for (let start = 0; start < total; start += batch) {
      const x = await next;
      const n = Math.min(batch, total - start);
      const started = performance.now();
      const pending = (given ? Promise.resolve(extractor.embedSync(x, n)) : extractor.embed(x, n))
        .then((y) => { batchMs.push(performance.now() - started); return y; });
      if (start + batch < total) {
        next = prepare(start + batch);
        next.catch(() => {}); // awaited next turn; a failure then must not also surface as unhandled now
      }
      features.set(await pending, start * dim);
      show(start + n, start + n === total);
    }
  } finally {
    extractor.dispose();
  }
  const seconds = (performance.now() - t0) / 1000;

  const metadata: Record<string, string> = {
    model: name, output: 'pool', dtype, input: input.join('x'), weights: v.weights ?? 'random init', engine: extractor.engine,
  };
  if (files) metadata.files = JSON.stringify(files);
  writeSafetensors(v.out!, { features: { dtype: 'F32', shape: [total, dim], data: features } }, metadata);
  const result = {
    model: name, out: v.out!, n: total, dim, dtype, input: [...input], batch, seconds: round(seconds),
    images_per_s: round(total / seconds), ms_per_image: round((1000 * seconds) / total),
    // The first batch also pays for first touching the plan's memory; `residual bench` reports the
    // median after warm-up runs, which this median (of full batches) compares with.
    ms_first_batch: round(batchMs[0]!), ms_per_batch_median: round(median(batchMs.slice(0, Math.floor(total / batch)))),
  };
  if (v.json) console.log(JSON.stringify(result));
  else console.log(`${name}: wrote "features" [${total}, ${dim}] to ${v.out} (${total} in ${seconds.toFixed(2)} s, ${result.images_per_s} images/s, ${dtype})`);
  return 0;
}

function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function round(x: number): number {
  return Number(x.toPrecision(6));
}
