// The HTTP side of `residual serve`, on Node's built-in http module:
//   POST /predict   raw image bytes as the body (?top=N) -> { top: [{class, label, probability}], ms }
//   GET  /health    model, dtype, input, uptime, requests served, batches, queue length
//   GET  /          a small page to pick or drop an image (page.ts)
// Each request's image is decoded and preprocessed as it arrives; the samples then meet in the
// Batcher, which runs the classifier once per batch off the main thread. Every error is JSON
// { error } with a status that says whose fault it is: 400/413/415 for the request, 404/405 for the
// URL or method, 503 when the server is at capacity or stopping, 500 for a failure of ours.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { ImageDecodeError, type ImageSizeInfo } from '../data/decode.js';
import type { Classification, Classifier } from '../infer/classifier.js';
import { Batcher, QueueFullError } from './batcher.js';
import { PAGE_CSP, pageHtml } from './page.js';

export interface ServeOptions {
  /** Port to listen on (default 8080; 0 picks a free one). */
  port?: number;
  /** Address to listen on (default 127.0.0.1: this machine only). */
  host?: string;
  /** Largest batch (default and at most the classifier's maxBatch). */
  maxBatch?: number;
  /** How long the first image of a batch waits for more (default 5 ms). */
  maxWaitMs?: number;
  /** Largest request body (default 10 MiB): a larger one gets 413 without being read to the end. */
  maxBytes?: number;
  /** Prediction requests handled at once, from their first byte to their answer (default 64); more get 503. */
  maxQueue?: number;
  /**
   * Largest decoded image per request, in bytes (width x height x channels x bytes per sample, read
   * from the image's header before decoding; default 256 MiB, a 9000x9000 RGB image): larger get 413.
   */
  maxImageMemory?: number;
  /**
   * Decoded bytes of all images being decoded at once (default 1 GiB): a request whose image does not
   * fit in what is left gets 503 with Retry-After, so many large images cannot add up to gigabytes.
   */
  maxDecodeMemory?: number;
  /**
   * A connection must deliver a request's complete headers within this long (default 20 s), however
   * slowly it drips them; then it is closed.
   */
  headersTimeoutMs?: number;
  /** How long close() waits for requests in progress before cutting their connections (default 10 s). */
  graceMs?: number;
  /**
   * Run every batch size 1..maxBatch once before listening (default true): the first run at a batch
   * size builds its kernels (measured 1.6-3x a later run for ResNet-50), which no request should wait for.
   */
  warmup?: boolean;
}

export interface Health {
  status: 'ok' | 'stopping';
  model: string;
  dtype: string;
  engine: string;
  input: number[];
  classes: number;
  uptime_s: number;
  /** /predict requests answered with a prediction. */
  requests: number;
  /** /predict requests refused or failed (any status but 200). */
  failures: number;
  /** Model runs (batches) and the images they took. */
  batches: number;
  images: number;
  largest_batch: number;
  /** Images waiting for the next batch. */
  queue: number;
  /** /predict requests in progress (reading, preprocessing, waiting or running). */
  in_progress: number;
  max_batch: number;
  max_wait_ms: number;
  max_queue: number;
  max_bytes: number;
  /** Decoded bytes reserved by images being decoded now, and the budgets (per image, in total). */
  decoding_bytes: number;
  max_image_memory: number;
  max_decode_memory: number;
}

export interface RunningServer {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly server: Server;
  health(): Health;
  /** Stops accepting, answers the requests in progress (up to graceMs), then closes every connection. */
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly headers: Record<string, string> = {}) {
    super(message);
  }
}

const ROUTES: Record<string, string[]> = { '/predict': ['POST'], '/health': ['GET', 'HEAD'], '/': ['GET', 'HEAD'] };

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff', ...headers,
  });
  res.end(res.req.method === 'HEAD' ? undefined : text);
}

/** "10MB", "512KiB", "1.5M", "1048576" -> bytes (K/M/G are powers of 1024, as the MB in --help). */
export function parseBytes(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(i?b)?\s*$/i.exec(text);
  if (!m) throw new Error(`"${text}" is not a size: write e.g. 10MB, 512KB or 1048576`);
  const n = Math.floor(Number(m[1]) * 1024 ** ' kmg'.indexOf((m[2] || ' ').toLowerCase()));
  if (!(n >= 1)) throw new Error(`"${text}" is not a size of at least one byte`);
  return n;
}

function formatBytes(n: number): string {
  if (n >= 1024 ** 2 && n % 1024 ** 2 !== 0) return `${(n / 1024 ** 2).toFixed(1)} MB`;
  return n >= 1024 ** 2 && n % 1024 ** 2 === 0 ? `${n / 1024 ** 2} MB` : n >= 1024 && n % 1024 === 0 ? `${n / 1024} KB` : `${n} bytes`;
}

/**
 * Answers a request whose body may not be read yet (too large, server busy, wrong URL): the answer goes
 * at once, and whatever of the body still arrives is dropped, never buffered. A client that sent
 * "Expect: 100-continue" (curl does for large bodies) sends no body at all. One that sends anyway gets
 * its connection closed if the body has not ended LINGER_MS after the answer: closing right away
 * would reset the connection and could lose the answer before the client reads it.
 */
function refuse(req: IncomingMessage, res: ServerResponse, e: HttpError): void {
  req.removeAllListeners('data');
  req.resume();
  sendJson(res, e.status, { error: e.message }, e.headers);
  if (req.complete) return;
  res.once('finish', () => {
    const timer = setTimeout(() => { if (!req.complete) req.socket?.destroy(); }, LINGER_MS);
    timer.unref();
    req.once('end', () => clearTimeout(timer));
  });
}

const LINGER_MS = 2000;

const tooLarge = (maxBytes: number, size: string) => new HttpError(413,
  `the body is ${size}, over this server's limit of ${formatBytes(maxBytes)} (--max-bytes): send a smaller image`);

/** The request body, refused with 413 as soon as it is known to exceed maxBytes. */
function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > maxBytes) {
        req.off('data', onData);
        chunks.length = 0;
        reject(tooLarge(maxBytes, `over ${maxBytes} bytes`));
        return;
      }
      chunks.push(c);
    };
    req.on('data', onData);
    req.on('end', () => resolve(Buffer.concat(chunks, size)));
    req.on('error', reject);
    // A client that goes away mid-body: give up on it (settling twice is harmless).
    req.on('close', () => { if (!req.complete) reject(new HttpError(400, 'the client closed the connection before the body ended')); });
  });
}

/** Starts serving `classifier`; resolves once listening. The caller keeps ownership of the classifier. */
export async function startServer(classifier: Classifier, opts: ServeOptions = {}): Promise<RunningServer> {
  const int = (name: string, v: number | undefined, fallback: number, min = 1) => {
    const n = v ?? fallback;
    if (!Number.isInteger(n) || n < min) throw new Error(`serve: ${name} must be an integer >= ${min}, got ${v}`);
    return n;
  };
  const port = int('port', opts.port, 8080, 0);
  if (port > 65535) throw new Error(`serve: port must be 0..65535, got ${port}`);
  const host = opts.host ?? '127.0.0.1';
  const maxBatch = int('maxBatch', opts.maxBatch, classifier.maxBatch);
  if (maxBatch > classifier.maxBatch) throw new Error(`serve: maxBatch ${maxBatch} is above the classifier's ${classifier.maxBatch}; load it with a larger maxBatch`);
  const maxWaitMs = opts.maxWaitMs ?? 5;
  if (!(Number.isFinite(maxWaitMs) && maxWaitMs >= 0)) throw new Error(`serve: maxWaitMs must be a number >= 0, got ${opts.maxWaitMs}`);
  const maxBytes = int('maxBytes', opts.maxBytes, 10 * 1024 ** 2);
  const maxQueue = int('maxQueue', opts.maxQueue, 64);
  const graceMs = opts.graceMs ?? 10_000;
  const maxImageMemory = int('maxImageMemory', opts.maxImageMemory, 256 * 1024 ** 2);
  const maxDecodeMemory = int('maxDecodeMemory', opts.maxDecodeMemory, 1024 ** 3);
  if (maxImageMemory > maxDecodeMemory) throw new Error(`serve: maxImageMemory (${maxImageMemory}) is above maxDecodeMemory (${maxDecodeMemory}); no image that large could ever be decoded`);
  const headersTimeoutMs = int('headersTimeoutMs', opts.headersTimeoutMs, 20_000);

  const classes = classifier.labels.length;
  const perSample = classifier.input[0] * classifier.input[1] * classifier.input[2];
  const batcher = new Batcher<Classification[]>({
    perSample, maxBatch, maxWaitMs, maxQueue,
    run: (batch, n) => classifier.predict(batch, n, classes),
  });
  if (opts.warmup ?? true) {
    for (let n = 1; n <= maxBatch; n++) await classifier.predict(new Float32Array(n * perSample), n, 1);
  }
  const page = Buffer.from(pageHtml({ model: classifier.model, dtype: classifier.dtype, input: classifier.input, classes, top: Math.min(5, classes) }));
  const started = performance.now();
  let requests = 0, failures = 0, inProgress = 0, stopping = false, decoding = 0;

  const health = (): Health => {
    const s = batcher.stats;
    return {
      status: stopping ? 'stopping' : 'ok', model: classifier.model, dtype: classifier.dtype, engine: classifier.engine, input: [...classifier.input], classes,
      uptime_s: Math.round((performance.now() - started) / 10) / 100, requests, failures, batches: s.batches, images: s.samples,
      largest_batch: s.largestBatch, queue: batcher.length, in_progress: inProgress, max_batch: maxBatch, max_wait_ms: maxWaitMs,
      max_queue: maxQueue, max_bytes: maxBytes, decoding_bytes: decoding, max_image_memory: maxImageMemory, max_decode_memory: maxDecodeMemory,
    };
  };

  async function predict(req: IncomingMessage, res: ServerResponse, url: URL, t0: number): Promise<void> {
    const topText = url.searchParams.get('top');
    // The default never asks for more classes than the model has (a 3-class model answers its top 3).
    const top = topText === null ? Math.min(5, classes) : Number(topText);
    if (!Number.isInteger(top) || top < 1 || top > classes) throw new HttpError(400, `top must be an integer from 1 to ${classes}, got "${topText}"`);
    const type = (req.headers['content-type'] ?? '').toLowerCase();
    if (type.startsWith('multipart/form-data')) {
      throw new HttpError(415, 'the body is multipart/form-data; send the image bytes themselves as the body (curl --data-binary @photo.jpg, not -F)');
    }
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > maxBytes) throw tooLarge(maxBytes, `${declared} bytes`);
    if (expectsContinue.has(req)) res.writeContinue(); // the client waits for this before sending the body
    const body = await readBody(req, maxBytes);
    if (body.length === 0) throw new HttpError(400, 'the body is empty: POST the image bytes as the request body (curl --data-binary @photo.jpg)');
    let x: Float32Array;
    let reserved = 0;
    // Checked from the image's header, before a pixel is decoded: its decoded size against the
    // per-image limit, then against what the images being decoded now have left of the total.
    const admit = (info: ImageSizeInfo) => {
      const size = `${info.width}x${info.height} ${info.format}, ${formatBytes(info.bytes)} decoded`;
      if (info.bytes > maxImageMemory) {
        throw new HttpError(413, `the image is ${size}, over this server's limit of ${formatBytes(maxImageMemory)} per image (--max-image-memory): send a smaller image`);
      }
      if (decoding + info.bytes > maxDecodeMemory) {
        throw new HttpError(503, `server busy: the image (${size}) does not fit in what is left of the ${formatBytes(maxDecodeMemory)} ` +
          `for images being decoded (--max-decode-memory); try again shortly`, { 'Retry-After': '1' });
      }
      decoding += info.bytes;
      reserved = info.bytes;
    };
    try {
      x = await classifier.preprocess(body, { admit });
    } catch (e) {
      if (e instanceof ImageDecodeError) {
        const message = e.message.replace(/^the image data/, 'the request body');
        if (e.problem === 'too-many-pixels') throw new HttpError(413, `${message} (--max-pixels)`);
        // curl sends --data-binary as x-www-form-urlencoded too; only -d mangles the bytes (it drops newlines).
        throw new HttpError(415, type.startsWith('application/x-www-form-urlencoded') ? `${message} (with curl, send files with --data-binary, not -d)` : message);
      }
      throw e;
    } finally {
      decoding -= reserved;
    }
    let result: Classification[];
    try {
      result = await batcher.submit(x);
    } catch (e) {
      if (e instanceof QueueFullError) throw new HttpError(503, `server busy: ${e.message}`, { 'Retry-After': '1' });
      throw e;
    }
    sendJson(res, 200, { top: result.slice(0, top), ms: Math.round((performance.now() - t0) * 100) / 100 });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const t0 = performance.now();
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://localhost');
    } catch {
      refuse(req, res, new HttpError(400, `the request target "${req.url}" is not a valid URL path`));
      return;
    }
    const methods = ROUTES[url.pathname];
    if (!methods) {
      refuse(req, res, new HttpError(404, `no endpoint ${url.pathname}: use POST /predict (image bytes), GET /health or GET /`));
      return;
    }
    if (!methods.includes(req.method ?? '')) {
      refuse(req, res, new HttpError(405, `${req.method} ${url.pathname} is not supported; use ${methods.join(' or ')}`, { Allow: methods.join(', ') }));
      return;
    }
    if (url.pathname === '/health') {
      sendJson(res, 200, health());
      return;
    }
    if (url.pathname === '/') {
      res.writeHead(200, {
        'Content-Type': 'text/html; charset=utf-8', 'Content-Length': page.length, 'Content-Security-Policy': PAGE_CSP,
        'X-Content-Type-Options': 'nosniff', 'Referrer-Policy': 'no-referrer', 'Cache-Control': 'no-cache',
      });
      res.end(req.method === 'HEAD' ? undefined : page);
      return;
    }
    // POST /predict
    if (stopping) {
      failures++;
      refuse(req, res, new HttpError(503, 'the server is shutting down', { 'Retry-After': '1' }));
      return;
    }
    if (inProgress >= maxQueue) {
      failures++;
      refuse(req, res, new HttpError(503, `server busy: ${maxQueue} requests in progress (--max-queue); try again shortly`, { 'Retry-After': '1' }));
      return;
    }
    inProgress++;
    try {
      await predict(req, res, url, t0);
      requests++;
    } catch (e) {
      failures++;
      if (e instanceof HttpError) refuse(req, res, e);
      else sendJson(res, 500, { error: `prediction failed: ${(e as Error).message}` });
    } finally {
      if (--inProgress === 0) for (const f of whenIdle.splice(0)) f();
    }
  }

  const whenIdle: (() => void)[] = [];
  const expectsContinue = new WeakSet<IncomingMessage>();
  // Node's own headersTimeout is only checked every connectionsCheckingInterval and was seen not to
  // cut a client dripping one header byte a second (issue #16); this timer does, per connection: armed
  // when it opens and again after each answer (the next request's headers), disarmed by a request.
  const headerTimers = new WeakMap<Socket, NodeJS.Timeout>();
  const armHeaders = (socket: Socket) => {
    clearTimeout(headerTimers.get(socket));
    const timer = setTimeout(() => socket.destroy(), headersTimeoutMs);
    timer.unref();
    headerTimers.set(socket, timer);
  };
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    clearTimeout(headerTimers.get(req.socket));
    res.once('finish', () => { if (!req.socket.destroyed) armHeaders(req.socket); });
    handle(req, res).catch((e: unknown) => {
      try {
        sendJson(res, 500, { error: `internal error: ${(e as Error).message}` });
      } catch {
        res.destroy();
      }
    });
  };
  const server = createServer({
    requestTimeout: 60_000, headersTimeout: headersTimeoutMs, keepAliveTimeout: 5_000, connectionsCheckingInterval: Math.min(1000, headersTimeoutMs),
  }, onRequest);
  server.on('connection', (socket: Socket) => {
    armHeaders(socket);
    socket.once('close', () => clearTimeout(headerTimers.get(socket)));
  });
  // "Expect: 100-continue": answer 100 only once the request is accepted, so a refused body is never sent.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    expectsContinue.add(req);
    onRequest(req, res);
  });
  server.on('clientError', (err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: application/json\r\n\r\n{"error":"malformed HTTP request"}');
    else socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      reject(new Error(e.code === 'EADDRINUSE' ? `serve: port ${port} on ${host} is in use; pick another with --port (or --port 0 for any free one)`
        : e.code === 'EADDRNOTAVAIL' ? `serve: ${host} is not an address of this machine; use --host 127.0.0.1 or 0.0.0.0`
          : `serve: cannot listen on ${host}:${port}: ${e.message}`));
    });
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const shown = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  let closing: Promise<void> | null = null;

  return {
    url: `http://${shown}:${addr.port}/`, host: addr.address, port: addr.port, server, health,
    close() {
      closing ??= (async () => {
        stopping = true;
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        const idle = inProgress === 0 ? Promise.resolve() : new Promise<void>((resolve) => whenIdle.push(resolve));
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([idle, new Promise((resolve) => { timer = setTimeout(resolve, graceMs); })]);
        clearTimeout(timer);
        server.closeAllConnections();
        await closed;
        await batcher.drained();
      })();
      return closing;
    },
  };
}
