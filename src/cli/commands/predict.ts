import { loadClassifier, type Classification } from '../../infer/classifier.js';
import { calibrationFromArgs } from '../calibration_arg.js';
import { downloadProgress } from '../progress.js';
import { PLAN_DTYPES, dtypeOption, parse, shapeOption } from '../args.js';

export const summary = 'classify images: top-5 classes with probabilities';

const usage = `usage: residual predict [--model M] --weights W [--labels imagenet|fashion-mnist|cifar10|FILE] [--input CxHxW] [--top 5]
                        [--dtype f32|bf16|int8 [--calibration FILE.json|DATA]] [--json] IMAGE...

  --weights W   torchvision:MODEL[.ENTRY] (downloaded once), a .pth/.safetensors, or a run folder from
                \`residual train\` (or weights exported from one): their model card, or the pretrained
                table, gives the model, the preprocessing and the class names, so --model may be left out
  An image that cannot be read is reported on its own line; the others are still classified, and the
  exit code is 1 at the end.
  --input       the model's input size; 3x224x224 uses torchvision's ImageNet eval transform
                (resize 256, center crop 224, ImageNet mean/std)
  --dtype       f32 (default), bf16 (needs AVX512-BF16 or AMX) or int8 (needs AVX512-VNNI)
  --calibration int8: a calibration .json, or DATA (a data spec or an image folder) to calibrate on. Default:
                the one saved beside the weights, else one made from the training images of the dataset their
                model card names (saved beside them)`;

/** Images per kernel run. */
const BATCH = 8;

export async function run(argv: string[]): Promise<number> {
  const { values: v, positionals: images } = parse('predict', argv, {
    model: { type: 'string' }, weights: { type: 'string' }, labels: { type: 'string' }, input: { type: 'string' },
    top: { type: 'string' }, dtype: { type: 'string' }, json: { type: 'boolean' }, calibration: { type: 'string' },
  }, true);
  if (v.help) {
    console.log(usage);
    return 0;
  }
  if ((!v.model && !v.weights) || images.length === 0) throw new Error(`predict: --weights (or --model) and at least one IMAGE are required\n\n${usage}`);
  if (!v.weights) console.error('predict: no --weights: the model has random weights, so the classes are meaningless');
  const top = v.top ? Number(v.top) : 5;
  if (!Number.isInteger(top) || top < 1) throw new Error(`predict: --top must be a positive integer, got "${v.top}"`);
  const dtype = dtypeOption('predict', v.dtype, PLAN_DTYPES);
  if (v.calibration && dtype !== 'int8') throw new Error('predict: --calibration is for --dtype int8');

  const classifier = await loadClassifier({
    model: v.model, weights: v.weights, download: { onProgress: downloadProgress('predict') }, labels: v.labels, input: v.input ? shapeOption('predict', 'input', v.input) : undefined,
    dtype, maxBatch: Math.min(BATCH, images.length), top, warn: (m) => console.error(`predict: ${m}`),
    calibration: calibrationFromArgs('predict', v),
  });
  // Each image is read on its own: one bad file is reported and the rest are still classified.
  const results: ({ image: string; top: Classification[] } | { image: string; error: string })[] = [];
  const perSample = classifier.input.reduce((a, b) => a * b, 1);
  try {
    for (let s = 0; s < images.length; s += BATCH) {
      const files = images.slice(s, s + BATCH);
      const read = await Promise.all(files.map((f) => classifier.preprocess(f).then((x) => ({ x }), (e: unknown) => ({ error: (e as Error).message }))));
      const good = read.flatMap((r, i) => ('x' in r ? [{ i, x: r.x }] : []));
      const batch = new Float32Array(good.length * perSample);
      good.forEach((g, k) => batch.set(g.x, k * perSample));
      const tops = good.length ? await classifier.predict(batch, good.length) : [];
      const byIndex = new Map(good.map((g, k) => [g.i, tops[k]!]));
      files.forEach((image, i) => {
        const r = read[i]!;
        results.push('error' in r ? { image, error: r.error } : { image, top: byIndex.get(i)! });
      });
    }
  } finally {
    classifier.dispose();
  }
  if (v.json) console.log(JSON.stringify(results));
  else {
    for (const r of results) {
      if ('error' in r) {
        console.error(`predict: ${r.error.includes(r.image) ? r.error : `${r.image}: ${r.error}`}`);
        continue;
      }
      console.log(r.image);
      for (const t of r.top) console.log(`  ${(100 * t.probability).toFixed(2).padStart(6)}%  ${t.label} (${t.class})`);
    }
  }
  const failed = results.filter((r) => 'error' in r).length;
  if (failed) console.error(`predict: ${failed} of ${results.length} images could not be classified`);
  return failed ? 1 : 0;
}
