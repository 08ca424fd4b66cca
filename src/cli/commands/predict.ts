import { loadClassifier, type Classification } from '../../infer/classifier.js';
import { parse, shapeOption } from '../args.js';

export const summary = 'classify images: top-5 classes with probabilities';

const usage = `usage: residual predict --model M --weights W [--labels imagenet|fashion-mnist|cifar10|FILE] [--input CxHxW] [--top 5]
                        [--dtype f32|bf16] [--json] IMAGE...

  --weights W   torchvision .pth/.safetensors, or a run folder from \`residual train\` (its preprocessing
                and class names are then taken from the run)
  --input       the model's input size; 3x224x224 uses torchvision's ImageNet eval transform
                (resize 256, center crop 224, ImageNet mean/std)
  --dtype       f32 (default) or bf16 (needs AVX512-BF16 or AMX)`;

/** Images per kernel run. */
const BATCH = 8;

export async function run(argv: string[]): Promise<number> {
  const { values: v, positionals: images } = parse('predict', argv, {
    model: { type: 'string' }, weights: { type: 'string' }, labels: { type: 'string' }, input: { type: 'string' },
    top: { type: 'string' }, dtype: { type: 'string' }, json: { type: 'boolean' },
  }, true);
  if (v.help) {
    console.log(usage);
    return 0;
  }
  if (!v.model || images.length === 0) throw new Error(`predict: --model and at least one IMAGE are required\n${usage}`);
  if (!v.weights) console.error('predict: no --weights: the model has random weights, so the classes are meaningless');
  const top = v.top ? Number(v.top) : 5;
  if (!Number.isInteger(top) || top < 1) throw new Error(`predict: --top must be a positive integer, got "${v.top}"`);
  if (v.dtype !== undefined && v.dtype !== 'f32' && v.dtype !== 'bf16') throw new Error(`predict: --dtype must be f32 or bf16, got "${v.dtype}"`);

  const classifier = await loadClassifier({
    model: v.model, weights: v.weights, labels: v.labels, input: v.input ? shapeOption('predict', 'input', v.input) : undefined,
    dtype: v.dtype as 'f32' | 'bf16' | undefined, maxBatch: Math.min(BATCH, images.length), top, warn: (m) => console.error(`predict: ${m}`),
  });
  const results: { image: string; top: Classification[] }[] = [];
  try {
    for (let s = 0; s < images.length; s += BATCH) {
      const files = images.slice(s, s + BATCH);
      const tops = await classifier.classify(files);
      files.forEach((image, i) => results.push({ image, top: tops[i]! }));
    }
  } finally {
    classifier.dispose();
  }
  if (v.json) console.log(JSON.stringify(results));
  else {
    for (const r of results) {
      console.log(r.image);
      for (const t of r.top) console.log(`  ${(100 * t.probability).toFixed(2).padStart(6)}%  ${t.label} (${t.class})`);
    }
  }
  return 0;
}
