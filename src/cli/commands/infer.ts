// `residual infer`: runs a model in eval mode on a safetensors batch and writes its output.
import { initBackend } from '../../backend/index.js';
import { readSafetensors, writeSafetensors } from '../../io/index.js';
import { manualSeed } from '../../nn/index.js';
import { buildWithWeights, featureNames, getModel, readWeights, type ModelOptions } from '../../models/index.js';
import { resolveWeightsArgument } from '../weights_arg.js';
import { Tensor, noGrad, tidy } from '../../tensor/index.js';
import { intOption, parse } from '../args.js';

export const summary = 'run a model on a safetensors batch (eval mode) and save its output';

const usage = `usage: residual infer --model M [--weights FILE] --input IN.safetensors --output OUT.safetensors
                      [--feature NAME] [--batch-size N] [--seed N]

  --model M         a name from \`residual models\`
  --weights FILE    .pth (torch.save) or .safetensors state dict with torchvision key names; the number
                    of classes and input channels are taken from it. Without it: random init (--seed).
                    Or torchvision:MODEL[.ENTRY]: downloaded once into the cache; --model may then be left out
  --input FILE      safetensors with key "input": float32 [N, C, H, W]
  --output FILE     safetensors written with key "output" ([N, classes] logits, or the feature map)
  --feature NAME    output an intermediate instead of the logits: stem, layer1..layerN, pool
  --batch-size N    run N samples at a time (default: all at once)
  --seed N          seed of the random init when no weights are given (default 0)`;

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);

export async function run(argv: string[]): Promise<number> {
  const { values } = parse('infer', argv, {
    model: { type: 'string' }, weights: { type: 'string' }, input: { type: 'string' }, output: { type: 'string' },
    feature: { type: 'string' }, 'batch-size': { type: 'string' }, seed: { type: 'string' },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const missing = (['input', 'output'] as const).filter((k) => !values[k]);
  if (missing.length || (!values.model && !values.weights)) {
    console.error(`infer: missing ${[...(values.model || values.weights ? [] : ['--model']), ...missing.map((k) => `--${k}`)].join(', ')}\n${usage}`);
    return 2;
  }
  const resolved = values.weights ? await resolveWeightsArgument('infer', values.weights, values.model) : null;
  const name = values.model ?? resolved?.model;
  if (!name) throw new Error(`infer: --model is required: ${values.weights} do not say which model they hold`);
  const entry = getModel(name);
  await initBackend();

  const read = resolved ? readWeights(name, resolved.path, (m) => console.error(`infer: ${m}`)) : null;
  const weights = read?.weights ?? null;
  const opts: ModelOptions = { ...read?.implied };
  const { tensors } = readSafetensors(values.input!);
  const input = tensors.get('input');
  if (!input) {
    throw new Error(`infer: ${values.input} has no tensor "input" (it has ${[...tensors.keys()].join(', ') || 'none'}); ` +
      'save the batch under the key "input"');
  }
  if (!FLOAT_DTYPES.has(input.dtype) || input.shape.length !== 4) {
    throw new Error(`infer: "input" in ${values.input} must be a float [N, C, H, W] tensor, got ${input.dtype} [${input.shape.join(', ')}]`);
  }
  const [n, c, h, w] = input.shape;
  if (opts.inChannels !== undefined && opts.inChannels !== c) {
    throw new Error(`infer: the weights expect ${opts.inChannels}-channel input, but "input" has ${c} channels ([${input.shape.join(', ')}])`);
  }
  opts.inChannels = c;
  const spec = entry.spec(opts);
  const feature = values.feature ?? 'logits';
  const known = featureNames(spec);
  if (!known.includes(feature)) throw new Error(`infer: unknown --feature "${feature}"; ${name} has ${known.join(', ')}`);
  const batch = intOption('infer', 'batch-size', values['batch-size'], n);
  const seed = values.seed === undefined ? 0 : Number(values.seed);
  if (!Number.isInteger(seed) || seed < 0) throw new Error(`infer: --seed must be a non-negative integer, got "${values.seed}"`);
  manualSeed(seed);

  const model = weights ? buildWithWeights(name, weights, opts, values.weights!) : entry.build(opts);
  try {
    model.eval();
    const perSample = c * h * w;
    const chunks: Float32Array[] = [];
    let outShape: number[] = [];
    for (let start = 0; start < n; start += batch) {
      const count = Math.min(batch, n - start);
      const data = input.data.subarray(start * perSample, (start + count) * perSample);
      const y = noGrad(() => tidy(() => model.forwardFeatures(Tensor.fromArray(data, [count, c, h, w]), [feature])[feature]));
      outShape = [...y.shape];
      chunks.push(y.toArray());
      y.dispose();
    }
    const out = new Float32Array(chunks.reduce((a, ch) => a + ch.length, 0));
    let offset = 0;
    for (const ch of chunks) { out.set(ch, offset); offset += ch.length; }
    outShape[0] = n;
    writeSafetensors(values.output!, { output: { dtype: 'F32', shape: outShape, data: out } },
      { model: name, feature, weights: values.weights ?? 'random init' });
    console.log(`${name}: wrote "output" [${outShape.join(', ')}] to ${values.output}`);
  } finally {
    model.dispose();
  }
  return 0;
}
