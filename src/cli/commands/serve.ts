// `residual serve`: a model behind HTTP (src/serve/), until SIGINT or SIGTERM.
import { initBackend } from '../../backend/index.js';
import { loadClassifier } from '../../infer/classifier.js';
import { downloadProgress } from '../progress.js';
import { parseBytes, startServer } from '../../serve/index.js';
import { PLAN_DTYPES, dtypeOption, intOption, numberOption, parse, shapeOption } from '../args.js';
import { calibrationFromArgs } from '../calibration_arg.js';

export const summary = 'serve a model over HTTP: POST an image, get its top classes (batched), with a page to try it';

const usage = `usage: residual serve [--model M] [--weights W] [--port 8080] [--host 127.0.0.1] [--dtype f32|bf16|int8]
                      [--max-batch 8] [--max-wait-ms 5] [--max-bytes 10MB] [--max-queue 64] [--max-pixels 50000000]
                      [--max-image-memory 256MB] [--max-decode-memory 1GB]
                      [--labels imagenet|fashion-mnist|cifar10|FILE] [--input CxHxW] [--threads N] [--winograd on|off] [--json]

  --model M        a name from \`residual models\`
  --weights W      torchvision .pth/.safetensors, or a run folder from \`residual train\` (its preprocessing and
                   class names come with it); without, random weights (the classes are then meaningless)
  --port P         TCP port (default 8080; 0 picks a free one, printed at start)
  --host H         address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for every interface)
  --dtype          f32 (default), bf16 (needs AVX512-BF16 or AMX) or int8 (needs AVX512-VNNI and a calibration)
  --calibration    int8: a calibration .json, or DATA (a data spec or an image folder) to calibrate on at start.
                   Default: the one saved beside the weights, else one made from the training images of the
                   dataset their model card names, and saved there (so the next start does not recalibrate)
  --max-batch N    most images per model run (default 8)
  --max-wait-ms T  how long the first image of a batch waits for others (default 5)
  --max-bytes S    largest request body, e.g. 10MB (default), 512KB; larger ones get 413
  --max-queue N    prediction requests in progress at once (default 64); more get 503 (Retry-After: 1)
  --max-pixels N   largest image (width x height) decoded (default 50000000); larger ones get 413
  --max-image-memory S   largest decoded image (width x height x channels x bytes per sample, read from its
                   header before decoding; default 256MB); larger ones get 413
  --max-decode-memory S  decoded bytes of all images being decoded at once (default 1GB); an image that does
                   not fit in what is left gets 503 (Retry-After: 1)
  --labels, --input  as for \`residual predict\`
  --threads N      oneDNN threads (default: OMP_NUM_THREADS, else every core)
  --winograd       on|off: Winograd 3x3 convs in f32 ResNets (default: where they pay off). off trades
                   10-20% of speed for memory (ResNet-50 at --max-batch 8: about 170 MB instead of 390)
  --json           print one JSON line when listening ({"event":"listening","url",...,"port"}) and one when stopped

Endpoints:
  POST /predict[?top=N]  the image file as the raw body (jpeg, png, webp, gif, tiff, avif, svg)
                         -> {"top":[{"class":<index>,"label":"<name>","probability":<0..1>},...],"ms":<server time>}
  GET  /health           model, dtype, input, uptime, requests served, batches, queue length
  GET  /                 a page to pick or drop an image and see its top 5
Errors are JSON {"error": "..."}: 400 bad request, 413 too large, 415 not an image, 404/405, 503 busy.

  curl --data-binary @photo.jpg 'http://127.0.0.1:8080/predict?top=3'

Ctrl-C (SIGINT) or SIGTERM: stops accepting, answers the requests in progress, exits 0.`;

export async function run(argv: string[]): Promise<number> {
  const { values: v } = parse('serve', argv, {
    model: { type: 'string' }, weights: { type: 'string' }, labels: { type: 'string' }, input: { type: 'string' },
    dtype: { type: 'string' }, port: { type: 'string' }, host: { type: 'string' }, 'max-batch': { type: 'string' },
    'max-wait-ms': { type: 'string' }, 'max-bytes': { type: 'string' }, 'max-queue': { type: 'string' }, 'max-pixels': { type: 'string' },
    'max-image-memory': { type: 'string' }, 'max-decode-memory': { type: 'string' },
    threads: { type: 'string' }, winograd: { type: 'string' }, json: { type: 'boolean' }, calibration: { type: 'string' },
  });
  if (v.help) {
    console.log(usage);
    return 0;
  }
  if (!v.model && !v.weights) {
    console.error(`serve: --model is required, unless --weights name their model (torchvision:MODEL, or a run folder)\n${usage}`);
    return 2;
  }
  const dtype = dtypeOption('serve', v.dtype, PLAN_DTYPES);
  if (v.calibration && dtype !== 'int8') throw new Error('serve: --calibration is for --dtype int8');
  if (v.winograd !== undefined && v.winograd !== 'on' && v.winograd !== 'off') throw new Error(`serve: --winograd must be on or off, got "${v.winograd}"`);
  const port = v.port === undefined ? 8080 : Number(v.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`serve: --port must be an integer from 0 to 65535, got "${v.port}"`);
  const maxBatch = intOption('serve', 'max-batch', v['max-batch'], 8);
  const maxWaitMs = numberOption('serve', 'max-wait-ms', v['max-wait-ms'], 5);
  if (maxWaitMs < 0) throw new Error(`serve: --max-wait-ms must be >= 0, got "${v['max-wait-ms']}"`);
  let maxBytes = 10 * 1024 ** 2;
  if (v['max-bytes'] !== undefined) {
    try {
      maxBytes = parseBytes(v['max-bytes']);
    } catch (e) {
      throw new Error(`serve: --max-bytes: ${(e as Error).message}`);
    }
  }
  const size = (name: 'max-image-memory' | 'max-decode-memory', fallback: number): number => {
    const text = v[name];
    if (text === undefined) return fallback;
    try {
      return parseBytes(text);
    } catch (e) {
      throw new Error(`serve: --${name}: ${(e as Error).message}`);
    }
  };
  const maxImageMemory = size('max-image-memory', 256 * 1024 ** 2);
  const maxDecodeMemory = size('max-decode-memory', 1024 ** 3);
  const maxQueue = intOption('serve', 'max-queue', v['max-queue'], 64);
  const maxPixels = intOption('serve', 'max-pixels', v['max-pixels'], 50_000_000);
  const threads = v.threads === undefined ? undefined : intOption('serve', 'threads', v.threads, 1);
  // Before the classifier loads the engine, so the count holds on the threads that run requests too.
  await initBackend(undefined, { threads });

  const classifier = await loadClassifier({
    model: v.model, weights: v.weights, download: { onProgress: downloadProgress('serve') }, labels: v.labels, input: v.input ? shapeOption('serve', 'input', v.input) : undefined,
    dtype, maxBatch, maxPixels, warn: (m) => console.error(`serve: ${m}`),
    calibration: calibrationFromArgs('serve', v),
    winograd: v.winograd === undefined ? undefined : v.winograd === 'on',
  });
  if (!v.weights) console.error('serve: no --weights: the model has random weights, so the classes are meaningless');
  let server;
  try {
    server = await startServer(classifier, { port, host: v.host ?? '127.0.0.1', maxBatch, maxWaitMs, maxBytes, maxQueue, maxImageMemory, maxDecodeMemory });
  } catch (e) {
    classifier.dispose();
    throw e;
  }
  const info = { model: classifier.model, dtype: classifier.dtype, input: classifier.input, engine: classifier.engine, max_batch: maxBatch };
  if (v.json) console.log(JSON.stringify({ event: 'listening', url: server.url, host: server.host, port: server.port, pid: process.pid, ...info }));
  else {
    console.log(`residual serve: ${server.url}  (${classifier.model}, ${classifier.dtype}, input ${classifier.input.join('x')}, ` +
      `batches of up to ${maxBatch}; Ctrl-C stops)`);
  }

  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    const on = (s: NodeJS.Signals) => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(s);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
  const h = server.health();
  console.error(`serve: ${signal}: stopping (${h.in_progress} request(s) in progress; ${signal} again to quit at once)`);
  // A second signal during the shutdown quits without waiting.
  const force = () => process.exit(signal === 'SIGINT' ? 130 : 143);
  process.once('SIGINT', force);
  process.once('SIGTERM', force);
  try {
    await server.close();
  } finally {
    process.off('SIGINT', force);
    process.off('SIGTERM', force);
    classifier.dispose();
  }
  const end = server.health();
  if (v.json) console.log(JSON.stringify({ event: 'stopped', signal, requests: end.requests, failures: end.failures, batches: end.batches }));
  else console.error(`serve: stopped after ${end.requests} prediction(s) in ${end.batches} batch(es)`);
  return 0;
}
