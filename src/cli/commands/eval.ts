import { initBackend } from '../../backend/index.js';
import { DataLoader } from '../../data/index.js';
import { loadModel } from '../../models/index.js';
import { isPretrainedSpec, resolveWeightsArgument } from '../../pretrained/index.js';
import { openData } from '../../train/data_spec.js';
import { evaluate } from '../../train/trainer.js';
import { intOption, parse } from '../args.js';
import { downloadProgress } from '../progress.js';

export const summary = 'evaluate trained weights on a test set: loss, top-1, top-5';

const usage = `usage: residual eval --model M --weights W [--data fashion-mnist|cifar10:DIR|cifar100:DIR|folder:DIR] [--batch 256] [--json]

  --weights W   .safetensors or .pth with torchvision key names, or a training run folder (its newest checkpoint),
                or torchvision:MODEL[.ENTRY] (downloaded once into the cache; --model may then be left out)`;

export async function run(argv: string[]): Promise<number> {
  const { values: v } = parse('eval', argv, {
    model: { type: 'string' }, weights: { type: 'string' }, data: { type: 'string' }, batch: { type: 'string' }, json: { type: 'boolean' },
    'image-size': { type: 'string' }, 'skip-bad': { type: 'boolean' },
  });
  if (v.help) {
    console.log(usage);
    return 0;
  }
  if (!v.weights || (!v.model && !isPretrainedSpec(v.weights))) throw new Error(`eval: --model and --weights are required\n${usage}`);
  const weights = await resolveWeightsArgument(v.weights, v.model, { onProgress: downloadProgress('eval') });
  await initBackend();
  const data = await openData(v.data ?? 'fashion-mnist', { imageSize: v['image-size'] ? intOption('eval', 'image-size', v['image-size'], 224) : undefined, skipBad: v['skip-bad'] });
  const model = loadModel(weights.model, weights.path, { inChannels: data.input[0] }, (m) => console.error(`eval: ${m}`));
  const head = model.parameters().at(-1)!;
  if (head.shape[0] !== data.classNames.length) {
    throw new Error(`eval: the weights classify ${head.shape[0]} classes but ${data.name} has ${data.classNames.length}`);
  }
  const loader = new DataLoader(data.test, { batchSize: intOption('eval', 'batch', v.batch, 256), transforms: data.testTransforms });
  const r = await evaluate(model, loader);
  model.dispose();
  if (v.json) console.log(JSON.stringify({ model: weights.model, weights: v.weights, data: data.name, ...r }));
  else console.log(`${weights.model} on ${data.name} (${r.samples} images): loss ${r.loss.toFixed(4)}, top-1 ${(100 * r.acc).toFixed(2)}%, top-5 ${(100 * r.top5).toFixed(2)}%`);
  return 0;
}
