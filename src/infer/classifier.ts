// loadClassifier: a model, its weights, its preprocessing and its class names as one object that
// turns images into top-k classes. `residual predict` and `residual serve` are built on it.
//
// Preprocessing and class names follow what the weights were made with (see preprocess.ts).
// The network runs through compileForInference (BN folded, fused ReLU and sums, weights reordered
// once); `predict` runs the kernels on a libuv pool thread, `predictSync` on the calling thread. On
// the reference backend (no native addon) both run the eager eval-mode model instead.
import { classNames, type ImageSizeInfo } from '../data/index.js';
import { ResNet } from '../models/index.js';
import type { FetchPretrainedOptions } from '../pretrained/index.js';
import { Tensor, noGrad, tidy } from '../tensor/index.js';
import { compileForInference, type CompileOptions, type CompiledModel } from './compile.js';
import { checkRunnerOptions, evalTransforms, loadWithPreprocessing, positiveInt, preprocessImage, type Preprocessing } from './preprocess.js';
import type { Calibration } from './quantize.js';
import type { PlanDtype } from '../backend/index.js';

export interface ClassifierOptions {
  /**
   * A registered model name (`residual models`), or a model already built (it is compiled, not kept
   * or disposed). May be left out when the weights carry a model card, which names the model.
   */
  model?: string | ResNet;
  /**
   * Weights for a named model: .pth, .safetensors, a run folder from `residual train`, or
   * torchvision:MODEL[.ENTRY] (downloaded once into the cache). Without: random weights.
   */
  weights?: string | null;
  /** How pretrained weights are downloaded (cache folder, mirror, progress). */
  download?: FetchPretrainedOptions;
  /** Class names: 'imagenet', 'fashion-mnist', 'cifar10', a file with one name per line, or the names themselves. */
  labels?: string | readonly string[];
  /** Input [C, H, W] (default: the run's dataset, else the model's own). */
  input?: readonly number[];
  /** 'f32' (default), 'bf16' (needs AVX512-BF16 or AMX) or 'int8' (needs AVX512-VNNI and `calibration`); see compileForInference. */
  dtype?: PlanDtype;
  /** int8: the calibration (calibrate()), or a function that makes or finds it once the model is loaded. */
  calibration?: Calibration | ((model: ResNet, input: [number, number, number]) => Promise<Calibration>);
  /** Largest batch one kernel run takes (default 8); predict() splits larger batches. */
  maxBatch?: number;
  /** Winograd convs in the compiled plan: unset lets it decide, false saves memory (see compileForInference). */
  winograd?: boolean;
  /** Classes returned per image (default 5). */
  top?: number;
  /** Images with more pixels (width x height) are refused before decoding (default sharp's 268M). */
  maxPixels?: number;
  /** Notes about the weights (e.g. a renamed head); default: none. */
  warn?: (message: string) => void;
}

export interface Classification {
  /** The class index (the model's output). */
  class: number;
  label: string;
  probability: number;
}

export interface Classifier {
  /** The model's name (or the built model's spec name). */
  readonly model: string;
  /** Input [C, H, W] that preprocess() produces and predict() takes per image. */
  readonly input: readonly [number, number, number];
  /** One name per class. */
  readonly labels: readonly string[];
  readonly dtype: PlanDtype;
  readonly maxBatch: number;
  /** Default classes per image. */
  readonly top: number;
  /** 'compiled' (the native plan) or 'eager' (reference backend). */
  readonly engine: 'compiled' | 'eager';
  /**
   * An image (bytes or a file path) decoded and transformed to one NCHW sample. Throws when it is not
   * an image. `admit` sees the image's size from its header before any pixel is decoded (throw to
   * refuse it). Images over 4M pixels are shrunk while decoding (libvips, off the main thread) to
   * twice the resize target, then resized as PIL does; smaller ones exactly as PIL does.
   */
  preprocess(image: Buffer | Uint8Array | string, opts?: { admit?: (info: ImageSizeInfo) => void }): Promise<Float32Array>;
  /** Top-k classes of `n` preprocessed samples, the kernels running off the main thread. */
  predict(batch: Float32Array, n: number, top?: number): Promise<Classification[][]>;
  /** predict() on the calling thread, for scripts. */
  predictSync(batch: Float32Array, n: number, top?: number): Classification[][];
  /** preprocess + predict for a list of images. */
  classify(images: readonly (Buffer | Uint8Array | string)[], top?: number): Promise<Classification[][]>;
  /** Frees the compiled plan (after runs in flight finish) and the model if the classifier built it. */
  dispose(): void;
}

/** Softmax of each row of `logits` [n, classes] (float64), then the `top` most probable classes. */
export function topK(logits: Float32Array, n: number, labels: readonly string[], top: number): Classification[][] {
  const k = labels.length;
  const out: Classification[][] = [];
  for (let r = 0; r < n; r++) {
    const row = logits.subarray(r * k, (r + 1) * k);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    const e = Float64Array.from(row, (v) => Math.exp(v - max));
    let sum = 0;
    for (const v of e) sum += v;
    const order = [...e.keys()].sort((a, b) => e[b]! - e[a]!).slice(0, Math.min(top, k));
    out.push(order.map((c) => ({ class: c, label: labels[c]!, probability: e[c]! / sum })));
  }
  return out;
}

interface Runner {
  run(x: Float32Array, n: number): Float32Array;
  runAsync(x: Float32Array, n: number): Promise<Float32Array>;
  dispose(): void;
}

function compiledRunner(model: ResNet, opts: CompileOptions): Runner {
  const plan: CompiledModel = compileForInference(model, opts);
  return { run: (x, n) => plan.run(x, n), runAsync: (x, n) => plan.runAsync(x, n), dispose: () => plan.dispose() };
}

function eagerRunner(model: ResNet, input: [number, number, number]): Runner {
  model.eval();
  const run = (x: Float32Array, n: number) => noGrad(() => tidy(() => model.forward(Tensor.fromArray(x, [n, ...input])).toArray()));
  return { run, runAsync: (x, n) => new Promise((resolve) => resolve(run(x, n))), dispose: () => {} };
}

/**
 * Loads a model with its weights, preprocessing and class names, compiled for inference. Calls
 * initBackend() when no backend is chosen yet; on the reference backend the model runs eagerly.
 */
export async function loadClassifier(opts: ClassifierOptions): Promise<Classifier> {
  const { dtype, maxBatch, maxPixels, native } = await checkRunnerOptions('loadClassifier', opts, 8);
  const topAsked = positiveInt('loadClassifier', 'top', opts.top, 5);

  const { model, ownsModel, pre, name } = await loadWithPreprocessing('loadClassifier', opts);
  const input: [number, number, number] = [pre.channels, pre.height, pre.width];

  let modelDisposed = false;
  try {
    // Class names.
    const numClasses = model.numClasses;
    const labelSpec = opts.labels ?? pre.labels ?? (numClasses === 1000 ? 'imagenet' : null);
    const labels = labelSpec === null ? Array.from({ length: numClasses }, (_, i) => `class ${i}`)
      : typeof labelSpec === 'string' ? classNames(labelSpec) : [...labelSpec];
    if (labels.length !== numClasses) {
      const what = typeof labelSpec === 'string' ? `labels ${labelSpec}` : 'the labels given';
      throw new Error(`${what}: ${labels.length} class names, but the model has ${numClasses} outputs; pass labels with ${numClasses} names`);
    }

    let calibration = typeof opts.calibration === 'function' ? undefined : opts.calibration;
    if (dtype === 'int8' && typeof opts.calibration === 'function') calibration = await opts.calibration(model, input);
    const runner = native ? compiledRunner(model, { input, maxBatch, dtype, winograd: opts.winograd, calibration }) : eagerRunner(model, input);
    if (native && ownsModel) {
      modelDisposed = true;
      model.dispose(); // the plan holds its own copy of the weights
    }
    // A model with fewer classes than the default top answers all of its classes.
    const top = opts.top === undefined ? Math.min(topAsked, numClasses) : topAsked;
    return makeClassifier({ name, input, labels, dtype, maxBatch, top, maxPixels, pre, runner, engine: native ? 'compiled' : 'eager', model: !native && ownsModel ? model : null });
  } catch (e) {
    if (ownsModel && !modelDisposed) model.dispose();
    throw e;
  }
}

function makeClassifier(c: {
  name: string; input: [number, number, number]; labels: readonly string[]; dtype: PlanDtype; maxBatch: number; top: number;
  maxPixels: number | undefined; pre: Preprocessing; runner: Runner; engine: 'compiled' | 'eager'; model: ResNet | null;
}): Classifier {
  const { input, labels, maxBatch, runner } = c;
  const perSample = input[0] * input[1] * input[2];
  const transforms = evalTransforms(c.pre);
  let disposed = false, inFlight = 0, freed = false;
  const free = () => {
    if (freed) return;
    freed = true;
    runner.dispose();
    c.model?.dispose();
  };

  const checkBatch = (method: string, batch: Float32Array, n: number, top: number | undefined): number => {
    if (disposed) throw new Error(`classifier: ${method}() after dispose()`);
    if (!(batch instanceof Float32Array)) throw new Error(`classifier: ${method}: the batch must be a Float32Array of preprocessed samples (see preprocess())`);
    if (!Number.isInteger(n) || n < 1) throw new Error(`classifier: ${method}: n must be a positive integer, got ${n}`);
    if (batch.length !== n * perSample) {
      throw new Error(`classifier: ${method}: the batch has ${batch.length} values, but ${n} x [${input.join(', ')}] needs ${n * perSample}`);
    }
    const k = top ?? c.top;
    if (!Number.isInteger(k) || k < 1) throw new Error(`classifier: ${method}: top must be a positive integer, got ${top}`);
    return k;
  };
  // Batches above maxBatch run as several kernel runs of at most maxBatch samples.
  const chunks = (n: number) => {
    const out: [number, number][] = [];
    for (let s = 0; s < n; s += maxBatch) out.push([s, Math.min(maxBatch, n - s)]);
    return out;
  };

  const self: Classifier = {
    model: c.name, input, labels, dtype: c.dtype, maxBatch, top: c.top, engine: c.engine,

    async preprocess(image, opts) {
      if (disposed) throw new Error('classifier: preprocess() after dispose()');
      if (typeof image !== 'string' && !(image instanceof Uint8Array)) {
        throw new Error('classifier: preprocess takes image bytes (a Buffer) or a file path');
      }
      return preprocessImage(image, c.pre.channels, transforms, { maxPixels: c.maxPixels, admit: opts?.admit });
    },

    async predict(batch, n, top) {
      const k = checkBatch('predict', batch, n, top);
      inFlight++;
      try {
        const out: Classification[][] = [];
        for (const [s, m] of chunks(n)) {
          const logits = await runner.runAsync(batch.subarray(s * perSample, (s + m) * perSample), m);
          out.push(...topK(logits, m, labels, k));
        }
        return out;
      } finally {
        if (--inFlight === 0 && disposed) free();
      }
    },

    predictSync(batch, n, top) {
      const k = checkBatch('predictSync', batch, n, top);
      const out: Classification[][] = [];
      for (const [s, m] of chunks(n)) out.push(...topK(runner.run(batch.subarray(s * perSample, (s + m) * perSample), m), m, labels, k));
      return out;
    },

    async classify(images, top) {
      if (!Array.isArray(images)) throw new Error('classifier: classify takes an array of images (Buffers or file paths)');
      if (images.length === 0) return [];
      const xs = await Promise.all(images.map((im) => self.preprocess(im)));
      const batch = new Float32Array(xs.length * perSample);
      xs.forEach((x, i) => batch.set(x, i * perSample));
      return self.predict(batch, xs.length, top);
    },

    dispose() {
      if (disposed) return;
      disposed = true;
      if (inFlight === 0) free();
    },
  };
  return self;
}
