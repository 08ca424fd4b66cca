// `residual export`: writes a model as ONNX (to serve with onnxruntime, Triton, ...) and/or as a
// safetensors state dict that torchvision's load_state_dict takes as it is. --dtype int8 makes the
// ONNX file a QDQ model (onnx/qdq.ts), calibrated as eval and serve calibrate (calibration_arg.ts).
import { initBackend } from '../../backend/index.js';
import { saveStateDictFile } from '../../io/index.js';
import { checkOutputPath } from '../../io/index.js';
import { exportOnnx } from '../../onnx/index.js';
import { manualSeed } from '../../nn/index.js';
import { buildWithWeights, cardMetadata, getModel, inputChannels, readCard, readWeights, type ModelOptions } from '../../models/index.js';
import { checkWeightsArgument, isPretrainedSpec } from '../../pretrained/index.js';
import { resolveWeightsArgument } from '../weights_arg.js';
import { intOption, parse, shapeOption } from '../args.js';
import { resolve } from 'node:path';
import { openData } from '../../train/data_spec.js';
import { resolveCalibration } from '../calibration_arg.js';

export const summary = 'write a model as ONNX (onnxruntime) and/or safetensors (PyTorch)';

const usage = `usage: residual export --model M [--weights FILE] [--input CxHxW] [--num-classes K]
                       [--onnx OUT.onnx] [--safetensors OUT.safetensors] [--output logits|pool]
                       [--opset N] [--static-batch] [--keep-batchnorm] [--seed N]
                       [--dtype f32|int8 [--calibration FILE.json|DATA] [--calibration-images 512]]

  --model M            a name from \`residual models\`
  --weights FILE       .pth (torch.save) or .safetensors state dict with torchvision key names; classes
                       and input channels are taken from it. Without it: random init (--seed).
                       Or torchvision:MODEL[.ENTRY]: downloaded once into the cache; --model may then be left out
  --input CxHxW        input the ONNX graph declares (default: the model card's, else the model's, e.g. 3x224x224)
  --num-classes K      classifier outputs when no weights are given (default: the model's)
  --onnx FILE          write ONNX: input "input" [batch, C, H, W], output "logits" [batch, K]
  --output pool        the ONNX file is a feature extractor instead: it ends at the flattened pooled
                       features, output "features" [batch, D] (D = 2048 for resnet50), no classifier
  --safetensors FILE   write the state dict as safetensors (torchvision keys, num_batches_tracked I64)
  --opset N            ONNX operator set, 13..22 (default 17)
  --static-batch       fix the batch at 1 instead of a symbolic "batch" dimension
  --keep-batchnorm     keep BatchNormalization nodes instead of folding them into the convolutions
  --seed N             seed of the random init when no weights are given (default 0)
  --dtype int8         the ONNX file is a quantized QDQ model: QuantizeLinear/DequantizeLinear around the
                       convs (uint8 activations, int8 per-channel weights; stem and classifier stay float32)
                       that onnxruntime runs with its int8 kernels
  --calibration C      int8's activation ranges: a calibration .json made with graph values, or DATA (a data
                       spec or an image folder) to calibrate on now. Default: the one saved beside the
                       weights, else --calibration-images training images of the dataset their model card
                       names (saved beside the weights as eval --dtype int8 saves it)
At least one of --onnx and --safetensors is required.`;

function megabytes(n: number): string {
  return `${(n / 1e6).toFixed(1)} MB`;
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parse('export', argv, {
    model: { type: 'string' }, weights: { type: 'string' }, input: { type: 'string' }, 'num-classes': { type: 'string' },
    onnx: { type: 'string' }, safetensors: { type: 'string' }, output: { type: 'string' }, opset: { type: 'string' },
    'static-batch': { type: 'boolean' }, 'keep-batchnorm': { type: 'boolean' }, seed: { type: 'string' },
    dtype: { type: 'string' }, calibration: { type: 'string' }, 'calibration-images': { type: 'string' },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  if (!values.model && !values.weights) {
    console.error(`export: missing --model\n${usage}`);
    return 2;
  }
  if (!values.onnx && !values.safetensors) {
    console.error(`export: nothing to write; give --onnx OUT.onnx and/or --safetensors OUT.safetensors\n${usage}`);
    return 2;
  }
  // A spec is checked here, with the other arguments; its download waits until they all pass.
  const settled = values.weights && isPretrainedSpec(values.weights) ? checkWeightsArgument(values.weights, values.model).model : values.model;
  // Every argument is checked before the (possibly slow) build and weight loading.
  for (const out of [values.onnx, values.safetensors]) if (out) checkOutputPath(out);
  if (values.onnx && values.safetensors && resolve(values.onnx) === resolve(values.safetensors)) {
    throw new Error('export: --onnx and --safetensors name the same file');
  }
  const dtype = values.dtype ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'int8') throw new Error(`export: --dtype must be f32 or int8 (a QDQ ONNX model), got "${dtype}"`);
  if (dtype === 'int8' && !values.onnx) throw new Error('export: --dtype int8 quantizes the ONNX file; give --onnx OUT.onnx (--safetensors always holds the float32 state dict)');
  if (dtype === 'int8' && values['keep-batchnorm']) throw new Error('export: --dtype int8 folds every BatchNorm into its conv (the int8 weights are the folded ones); leave out --keep-batchnorm');
  if ((values.calibration || values['calibration-images']) && dtype !== 'int8') throw new Error('export: --calibration and --calibration-images are for --dtype int8');
  const calibrationImages = values['calibration-images'] === undefined ? undefined : intOption('export', 'calibration-images', values['calibration-images'], 512);
  const output = values.output ?? 'logits';
  if (output !== 'logits' && output !== 'pool') throw new Error(`export: --output must be logits or pool, got "${output}"`);
  if (values.output && !values.onnx) throw new Error('export: --output shapes the ONNX graph; give --onnx OUT.onnx too (--safetensors always holds the whole state dict)');
  const input = values.input === undefined ? null : shapeOption('export', 'input', values.input);
  const numClasses = values['num-classes'] === undefined ? null : intOption('export', 'num-classes', values['num-classes'], 0);
  const opset = intOption('export', 'opset', values.opset, 17);
  const seed = values.seed === undefined ? 0 : Number(values.seed);
  if (!Number.isInteger(seed) || seed < 0) throw new Error(`export: --seed must be a non-negative integer, got "${values.seed}"`);

  const resolved = values.weights ? await resolveWeightsArgument('export', values.weights, settled) : null;
  const name = settled ?? resolved?.model;
  if (!name) throw new Error(`export: --model is required: ${values.weights} do not say which model they hold`);
  const entry = getModel(name);
  await initBackend();
  const read = resolved ? readWeights(name, resolved.path, (m) => console.error(`export: ${m}`)) : null;
  const weights = read?.weights ?? null;
  const opts: ModelOptions = { ...read?.implied };
  if (numClasses !== null) {
    if (opts.numClasses !== undefined && opts.numClasses !== numClasses) {
      throw new Error(`export: --num-classes ${numClasses} disagrees with the weights, whose classifier has ${opts.numClasses} outputs`);
    }
    opts.numClasses = numClasses;
  }
  if (input) {
    if (opts.inChannels !== undefined && opts.inChannels !== input[0]) {
      throw new Error(`export: --input ${values.input} has ${input[0]} channels, but the weights expect ${opts.inChannels}`);
    }
    opts.inChannels = input[0];
  }
  const spec = entry.spec(opts);
  // Default: the input the weights' model card says they were trained at (int8 calibrates on those images), else the model's.
  const shape = input ?? resolved?.card?.input ?? [inputChannels(spec), entry.defaultInput[1], entry.defaultInput[2]];

  if (!weights) manualSeed(seed);
  const model = weights ? buildWithWeights(name, weights, opts, values.weights!) : entry.build(opts);
  try {
    model.eval();
    const source = values.weights ?? `random init, seed ${seed}`;
    // The model card travels with the weights (safetensors metadata, ONNX metadata_props), so the
    // file alone says what it classifies and how to feed it.
    const card = resolved?.card ? cardMetadata(resolved.card) : {};
    if (values.onnx) {
      const dataset = resolved ? readCard(resolved.path)?.dataset : undefined;
      const calibration = dtype === 'int8'
        ? await resolveCalibration('export', model, resolved?.path ?? null, shape, {
          calibration: values.calibration, images: calibrationImages, values: true,
          data: async () => (dataset ? openData(dataset, { imageSize: shape[1] }) : undefined),
          log: (m) => console.error(`export: ${m}`),
        })
        : undefined;
      const info = exportOnnx(model, {
        file: values.onnx, input: shape, opset, dynamicBatch: !values['static-batch'], foldBatchNorm: !values['keep-batchnorm'],
        metadata: { weights: source, ...card }, output, dtype, calibration,
      });
      const ops = Object.entries(info.ops).map(([op, n]) => `${n} ${op}`).join(', ');
      const int8 = calibration ? `, int8 QDQ calibrated on ${calibration.images} images` : '';
      console.log(`${name}: wrote ${values.onnx} (ONNX opset ${info.opset}${int8}, ${megabytes(info.bytes)}; ${info.nodes} nodes: ${ops}; ` +
        `${info.inputName} [${info.inputShape.join(', ')}] -> ${info.outputName} [${info.outputShape.join(', ')}])`);
    }
    if (values.safetensors) {
      const sd = model.stateDict();
      saveStateDictFile(values.safetensors, sd, { format: 'pt', model: name, weights: source, ...card });
      console.log(`${name}: wrote ${values.safetensors} (safetensors, ${sd.size} tensors, ${model.parameterCount()} parameters)`);
    }
  } finally {
    model.dispose();
  }
  return 0;
}
