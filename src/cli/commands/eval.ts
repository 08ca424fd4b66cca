import { initBackend } from '../../backend/index.js';
import { DataLoader } from '../../data/index.js';
import { loadModel, readCard } from '../../models/index.js';
import { resolveWeightsArgument } from '../weights_arg.js';
import { openData } from '../../train/data_spec.js';
import { evaluate } from '../../train/trainer.js';
import { PLAN_DTYPES, dtypeOption, intOption, parse } from '../args.js';
import { resolveCalibration } from '../calibration_arg.js';
import { evaluateCompiled } from '../../infer/evaluate.js';

export const summary = 'evaluate trained weights on a test set: loss, top-1, top-5';

const usage = `usage: residual eval [--model M] --weights W [--data fashion-mnist|cifar10:DIR|cifar100:DIR|folder:DIR] [--batch 256]
                     [--dtype f32|bf16|int8 [--calibration FILE.json|DATA] [--calibration-images 512]] [--json]

  --weights W   .safetensors or .pth with torchvision key names, or a training run folder (its newest checkpoint);
                weights with a model card (from \`residual train\`) name their model and dataset, so --model
                and --data may be left out; or torchvision:MODEL[.ENTRY] (downloaded once into the cache)
  --dtype D     run the compiled inference plan in f32, bf16 or int8 (default: the eager model in f32),
                and, for bf16 and int8, report how many images keep the f32 plan's top-1 class
  --calibration int8's activation ranges: a calibration .json, or DATA (a data spec or an image folder) to
                calibrate on now. Default: the one saved beside the weights (calibration.json in a run folder,
                NAME.calibration.json beside a file), else one made from --calibration-images training
                images of --data and saved there`;

export async function run(argv: string[]): Promise<number> {
  const { values: v } = parse('eval', argv, {
    model: { type: 'string' }, weights: { type: 'string' }, data: { type: 'string' }, batch: { type: 'string' }, json: { type: 'boolean' },
    'image-size': { type: 'string' }, 'skip-bad': { type: 'boolean' }, dtype: { type: 'string' }, calibration: { type: 'string' },
    'calibration-images': { type: 'string' },
  });
  const dtype = dtypeOption('eval', v.dtype, PLAN_DTYPES);
  if ((v.calibration || v['calibration-images']) && dtype !== 'int8') throw new Error('eval: --calibration and --calibration-images are for --dtype int8');
  if (v.help) {
    console.log(usage);
    return 0;
  }
  if (!v.weights) throw new Error(`eval: --weights is required\n\n${usage}`);
  const weights = await resolveWeightsArgument('eval', v.weights, v.model);
  const modelName = v.model ?? weights.model;
  if (!modelName) throw new Error(`eval: --model is required: ${v.weights} do not say which model they hold\n\n${usage}`);
  await initBackend();
  const card = readCard(weights.path);
  const imageSize = v['image-size'] ? intOption('eval', 'image-size', v['image-size'], 224) : card?.dataset?.startsWith('folder:') ? card.input[1] : undefined;
  const data = await openData(v.data ?? card?.dataset ?? 'fashion-mnist', { imageSize, skipBad: v['skip-bad'] });
  const model = loadModel(modelName, weights.path, { inChannels: data.input[0] }, (m) => console.error(`eval: ${m}`));
  if (model.numClasses !== data.classNames.length) {
    model.dispose();
    throw new Error(`eval: the weights classify ${model.numClasses} classes but ${data.name} has ${data.classNames.length}`);
  }
  // Same count is not enough: a model trained on folders of other names would score garbage.
  if (card && card.classes.join('\n') !== data.classNames.join('\n')) {
    model.dispose();
    throw new Error(`eval: the weights were trained on the classes ${card.classes.join(', ')}, but ${data.name} has ${data.classNames.join(', ')}`);
  }
  const loader = new DataLoader(data.test, { batchSize: intOption('eval', 'batch', v.batch, 256), transforms: data.testTransforms });
  if (dtype) {
    try {
      const calibration = dtype === 'int8'
        ? await resolveCalibration('eval', model, weights.path, data.input, {
          calibration: v.calibration, data, images: v['calibration-images'] ? intOption('eval', 'calibration-images', v['calibration-images'], 512) : undefined,
          log: (m) => console.error(`eval: ${m}`),
        })
        : undefined;
      const r = await evaluateCompiled(model, loader, { input: data.input, dtype, calibration });
      if (v.json) console.log(JSON.stringify({ model: modelName, weights: v.weights, data: data.name, ...r }));
      else {
        const agree = r.agreement ? `; top-1 same as f32 on ${r.agreement.same} of ${r.samples} (${(100 * r.agreement.rate).toFixed(2)}%), f32 top-1 ${(100 * r.agreement.f32Acc).toFixed(2)}%` : '';
        console.log(`${modelName} ${dtype} on ${data.name} (${r.samples} images): loss ${r.loss.toFixed(4)}, top-1 ${(100 * r.acc).toFixed(2)}%, top-5 ${(100 * r.top5).toFixed(2)}%${agree}`);
      }
    } finally {
      model.dispose();
    }
    return 0;
  }
  const r = await evaluate(model, loader);
  model.dispose();
  if (v.json) console.log(JSON.stringify({ model: modelName, weights: v.weights, data: data.name, ...r }));
  else console.log(`${modelName} on ${data.name} (${r.samples} images): loss ${r.loss.toFixed(4)}, top-1 ${(100 * r.acc).toFixed(2)}%, top-5 ${(100 * r.top5).toFixed(2)}%`);
  return 0;
}
