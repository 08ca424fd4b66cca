// loadFeatureExtractor: a model, its weights and its preprocessing as one object that turns images
// (or preprocessed samples) into embeddings: the globally pooled features [n, D] that the head
// would read, D the last stage's channels (2048 for ResNet-50, 512 for ResNet-18, 64 for ResNet-20).
//
// It is the classifier's twin (classifier.ts): the same preprocessing (preprocessImage; the weights'
// model card, else the run folder's dataset, else torchvision's eval transform), the same compiled plan, stopped at the pool
// (compileForInference's output 'pool': no head work), `embed` on a libuv pool thread and
// `embedSync` on the calling thread. On the reference backend the eager model's forwardFeatures runs.
import { headFeatures, ResNet } from '../models/index.js';
import type { FetchPretrainedOptions } from '../pretrained/index.js';
import { Tensor, noGrad, tidy } from '../tensor/index.js';
import { checkRunnerOptions, evalTransforms, loadWithPreprocessing, preprocessImage, type Preprocessing } from './preprocess.js';
import { compileForInference } from './compile.js';
import type { Calibration } from './quantize.js';
import type { PlanDtype } from '../backend/index.js';

export interface FeatureExtractorOptions {
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
  /** Input [C, H, W] (default: the weights' model card, else the run's dataset, else the model's own, e.g. [3, 224, 224]). */
  input?: readonly number[];
  /** 'f32' (default) or 'bf16' (needs AVX512-BF16 or AMX; features then carry bf16 rounding). */
  dtype?: PlanDtype;
  /** int8: the calibration (calibrate()), or a function that makes or finds it once the model is loaded. */
  calibration?: Calibration | ((model: ResNet, input: [number, number, number]) => Promise<Calibration>);
  /** Largest batch one kernel run takes (default 16); embed() splits larger batches. */
  maxBatch?: number;
  /** Winograd convs in the compiled plan: unset lets it decide, false saves memory (see compileForInference). */
  winograd?: boolean;
  /** Images with more pixels (width x height) are refused before decoding (default sharp's 268M). */
  maxPixels?: number;
  /** Notes about the weights (e.g. a renamed head); default: none. */
  warn?: (message: string) => void;
}

export interface FeatureExtractor {
  /** The model's name (or the built model's spec name). */
  readonly model: string;
  /** Input [C, H, W] that preprocess() produces and embed() takes per sample. */
  readonly input: readonly [number, number, number];
  /** Features per sample: the channels of the last stage (2048 for ResNet-50). */
  readonly dim: number;
  readonly dtype: PlanDtype;
  readonly maxBatch: number;
  /** 'compiled' (the native plan) or 'eager' (reference backend). */
  readonly engine: 'compiled' | 'eager';
  /** An image (bytes or a file path) decoded and transformed to one NCHW sample, as loadClassifier does. Throws when it is not an image. */
  preprocess(image: Buffer | Uint8Array | string): Promise<Float32Array>;
  /** Features [n, dim] row-major of `n` preprocessed samples, the kernels running off the main thread. */
  embed(batch: Float32Array, n: number): Promise<Float32Array>;
  /** embed() on the calling thread, for scripts. */
  embedSync(batch: Float32Array, n: number): Float32Array;
  /** preprocess + embed for a list of images: [images.length, dim]. */
  embedImages(images: readonly (Buffer | Uint8Array | string)[]): Promise<Float32Array>;
  /** Frees the compiled plan (after runs in flight finish) and the model if the extractor built it. */
  dispose(): void;
}

interface Runner {
  run(x: Float32Array, n: number): Float32Array;
  runAsync(x: Float32Array, n: number): Promise<Float32Array>;
  dispose(): void;
}

/**
 * Loads a model with its weights and preprocessing, compiled to stop at the pooled features. Calls
 * initBackend() when no backend is chosen yet; on the reference backend the model runs eagerly.
 */
export async function loadFeatureExtractor(opts: FeatureExtractorOptions): Promise<FeatureExtractor> {
  const { dtype, maxBatch, maxPixels, native } = await checkRunnerOptions('loadFeatureExtractor', opts, 16);

  const { model, ownsModel, pre, name } = await loadWithPreprocessing('loadFeatureExtractor', opts);
  const input: [number, number, number] = [pre.channels, pre.height, pre.width];
  const dim = headFeatures(model.spec);

  let runner: Runner;
  try {
    if (native) {
      const calibration = typeof opts.calibration === 'function' ? dtype === 'int8' ? await opts.calibration(model, input) : undefined : opts.calibration;
      const plan = compileForInference(model, { input, maxBatch, dtype, winograd: opts.winograd, output: 'pool', calibration });
      runner = { run: (x, n) => plan.run(x, n), runAsync: (x, n) => plan.runAsync(x, n), dispose: () => plan.dispose() };
      if (ownsModel) model.dispose(); // the plan holds its own copy of the weights
    } else {
      model.eval();
      const run = (x: Float32Array, n: number) =>
        noGrad(() => tidy(() => model.forwardFeatures(Tensor.fromArray(x, [n, ...input]), ['pool']).pool!.toArray()));
      runner = { run, runAsync: (x, n) => new Promise((resolve) => resolve(run(x, n))), dispose: () => { if (ownsModel) model.dispose(); } };
    }
  } catch (e) {
    if (ownsModel) model.dispose();
    throw e;
  }
  return makeExtractor({ name, input, dim, dtype, maxBatch, maxPixels, pre, runner, engine: native ? 'compiled' : 'eager' });
}

function makeExtractor(c: {
  name: string; input: [number, number, number]; dim: number; dtype: PlanDtype; maxBatch: number;
  maxPixels: number | undefined; pre: Preprocessing; runner: Runner; engine: 'compiled' | 'eager';
}): FeatureExtractor {
  const { input, dim, maxBatch, runner } = c;
  const perSample = input[0] * input[1] * input[2];
  const transforms = evalTransforms(c.pre);
  let disposed = false, inFlight = 0, freed = false;
  const free = () => {
    if (freed) return;
    freed = true;
    runner.dispose();
  };
  const checkBatch = (method: string, batch: Float32Array, n: number): void => {
    if (disposed) throw new Error(`feature extractor: ${method}() after dispose()`);
    if (!(batch instanceof Float32Array)) throw new Error(`feature extractor: ${method}: the batch must be a Float32Array of preprocessed NCHW samples (see preprocess())`);
    if (!Number.isInteger(n) || n < 1) throw new Error(`feature extractor: ${method}: n must be a positive integer, got ${n}`);
    if (batch.length !== n * perSample) {
      throw new Error(`feature extractor: ${method}: the batch has ${batch.length} values, but ${n} x [${input.join(', ')}] needs ${n * perSample}`);
    }
  };

  const self: FeatureExtractor = {
    model: c.name, input, dim, dtype: c.dtype, maxBatch, engine: c.engine,

    async preprocess(image) {
      if (disposed) throw new Error('feature extractor: preprocess() after dispose()');
      if (typeof image !== 'string' && !(image instanceof Uint8Array)) {
        throw new Error('feature extractor: preprocess takes image bytes (a Buffer) or a file path');
      }
      if (c.pre.channels !== 1 && c.pre.channels !== 3) {
        throw new Error(`feature extractor: the input has ${c.pre.channels} channels, and images give 1 (grayscale) or 3 (RGB); embed preprocessed samples instead`);
      }
      return preprocessImage(image, c.pre.channels, transforms, { maxPixels: c.maxPixels });
    },

    async embed(batch, n) {
      checkBatch('embed', batch, n);
      inFlight++;
      try {
        const out = new Float32Array(n * dim);
        // Batches above maxBatch run as several kernel runs of at most maxBatch samples.
        for (let s = 0; s < n; s += maxBatch) {
          const m = Math.min(maxBatch, n - s);
          out.set(await runner.runAsync(batch.subarray(s * perSample, (s + m) * perSample), m), s * dim);
        }
        return out;
      } finally {
        if (--inFlight === 0 && disposed) free();
      }
    },

    embedSync(batch, n) {
      checkBatch('embedSync', batch, n);
      const out = new Float32Array(n * dim);
      for (let s = 0; s < n; s += maxBatch) {
        const m = Math.min(maxBatch, n - s);
        out.set(runner.run(batch.subarray(s * perSample, (s + m) * perSample), m), s * dim);
      }
      return out;
    },

    async embedImages(images) {
      if (!Array.isArray(images)) throw new Error('feature extractor: embedImages takes an array of images (Buffers or file paths)');
      if (images.length === 0) return new Float32Array(0);
      const xs = await Promise.all(images.map((im) => self.preprocess(im)));
      const batch = new Float32Array(xs.length * perSample);
      xs.forEach((x, i) => batch.set(x, i * perSample));
      return self.embed(batch, xs.length);
    },

    dispose() {
      if (disposed) return;
      disposed = true;
      if (inFlight === 0) free();
    },
  };
  return self;
}
