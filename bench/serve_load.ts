// Load test of `residual serve` from a second process: starts the server as a child process (or
// targets --url), sends real JPEGs from `--concurrency` clients until --requests are done or
// --duration seconds have passed, and prints one JSON object: requests, failures, latency
// percentiles, throughput, the server's batching (from /health) and its RSS before and after
// (VmRSS and the peak VmHWM of the child, from /proc).
//
//   node dist/bench/serve_load.js [--model resnet50] [--weights W] [--dtype f32|bf16] [--max-batch 8]
//        [--max-wait-ms 5] [--threads N] [--requests 200] [--duration 60] [--concurrency 16]
//        [--warmup 8] [--image 640x480] [--images 8] [--url http://host:port/ [--pid PID]]
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import sharp from 'sharp';

const here = dirname(fileURLToPath(import.meta.url));
const cli = join(here, '..', 'src', 'cli', 'main.js');

const { values: o } = parseArgs({
  options: {
    model: { type: 'string', default: 'resnet50' }, weights: { type: 'string' }, dtype: { type: 'string', default: 'f32' },
    'max-batch': { type: 'string', default: '8' }, 'max-wait-ms': { type: 'string', default: '5' }, threads: { type: 'string' },
    requests: { type: 'string', default: '200' }, duration: { type: 'string', default: '60' }, concurrency: { type: 'string', default: '16' },
    warmup: { type: 'string', default: '8' }, image: { type: 'string', default: '640x480' }, images: { type: 'string', default: '8' },
    url: { type: 'string' }, pid: { type: 'string' }, help: { type: 'boolean', short: 'h' },
  },
});
if (o.help) {
  console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').filter((l) => l.startsWith('//')).map((l) => l.slice(3)).join('\n'));
  process.exit(0);
}

function int(name: string, min = 1): number {
  const v = Number(o[name as keyof typeof o]);
  if (!Number.isInteger(v) || v < min) throw new Error(`serve_load: --${name} must be an integer >= ${min}, got "${o[name as keyof typeof o]}"`);
  return v;
}
const requests = int('requests'), concurrency = int('concurrency'), warmup = int('warmup', 0), nImages = int('images');
const duration = Number(o.duration);
if (!(duration > 0)) throw new Error(`serve_load: --duration must be a positive number of seconds, got "${o.duration}"`);
const size = /^(\d+)x(\d+)$/.exec(o.image!);
if (!size) throw new Error(`serve_load: --image must look like 640x480, got "${o.image}"`);
const [width, height] = [Number(size[1]), Number(size[2])];

/** Photo-like JPEGs: a smooth gradient with noisy blocks, different per seed. */
async function makeImages(): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for (let k = 0; k < nImages; k++) {
    let s = (k + 1) * 2654435761 >>> 0;
    const rand = () => ((s = (Math.imul(s ^ (s >>> 15), 2246822507) + 0x9e3779b9) >>> 0) / 4294967296);
    const raw = Buffer.alloc(width * height * 3);
    const cell = 8 + Math.floor(rand() * 40);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const block = ((x / cell | 0) * 7 + (y / cell | 0) * 13 + k) % 5;
        for (let c = 0; c < 3; c++) raw[(y * width + x) * 3 + c] = (x * (c + 1) / width * 120 + y / height * 80 + block * 25 + rand() * 20) & 255;
      }
    }
    out.push(await sharp(raw, { raw: { width, height, channels: 3 } }).jpeg({ quality: 85 }).toBuffer());
  }
  return out;
}

/** VmRSS and VmHWM (peak) of a process, in MB, or null when it cannot be read (another machine, gone). */
function memory(pid: number | null): { rss_mb: number; peak_mb: number } | null {
  if (pid === null) return null;
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]);
    return { rss_mb: Math.round(kb('VmRSS') / 102.4) / 10, peak_mb: Math.round(kb('VmHWM') / 102.4) / 10 };
  } catch {
    return null;
  }
}

async function startServer(): Promise<{ child: ChildProcess; url: string; pid: number }> {
  const args = [cli, 'serve', '--model', o.model!, '--dtype', o.dtype!, '--max-batch', o['max-batch']!, '--max-wait-ms', o['max-wait-ms']!,
    '--max-queue', String(Math.max(64, 2 * concurrency)), '--port', '0', '--json'];
  if (o.weights) args.push('--weights', o.weights);
  if (o.threads) args.push('--threads', o.threads);
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (c: Buffer) => { err += c.toString(); });
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`residual serve exited with ${code} before listening:\n${err}`)));
  });
  const info = JSON.parse(line) as { url: string; pid: number };
  return { child, url: info.url, pid: child.pid! };
}

const agent = new Agent({ keepAlive: true, maxSockets: concurrency });

function post(url: URL, body: Buffer): Promise<{ status: number; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const req = request(url, { method: 'POST', agent, headers: { 'Content-Type': 'image/jpeg', 'Content-Length': body.length } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - t0 }));
    });
    req.on('error', () => resolve({ status: 0, ms: performance.now() - t0 }));
    req.end(body);
  });
}

async function health(base: string): Promise<{ batches: number; images: number; requests: number; largest_batch: number; model: string; dtype: string }> {
  const res = await fetch(new URL('health', base));
  return (await res.json()) as { batches: number; images: number; requests: number; largest_batch: number; model: string; dtype: string };
}

function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! * 100) / 100;
}

const images = await makeImages();
const server = o.url ? { child: null, url: o.url, pid: o.pid ? Number(o.pid) : null } : await startServer();
const predictUrl = new URL('predict', server.url);
try {
  // Unmeasured requests first (connections, the allocator, the batch sizes the load will use).
  await Promise.all(Array.from({ length: warmup }, (_, i) => post(predictUrl, images[i % images.length]!)));
  const memStart = memory(server.pid);
  const h0 = await health(server.url);
  const latencies: number[] = [];
  const statuses: Record<string, number> = {};
  let issued = 0;
  const t0 = performance.now(), deadline = t0 + duration * 1000;
  const client = async () => {
    while (issued < requests && performance.now() < deadline) {
      const body = images[issued++ % images.length]!;
      const r = await post(predictUrl, body);
      statuses[r.status] = (statuses[r.status] ?? 0) + 1;
      if (r.status === 200) latencies.push(r.ms);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, client));
  const elapsed = (performance.now() - t0) / 1000;
  const h1 = await health(server.url);
  const memEnd = memory(server.pid);
  latencies.sort((a, b) => a - b);
  const done = Object.values(statuses).reduce((a, b) => a + b, 0);
  const batches = h1.batches - h0.batches;
  console.log(JSON.stringify({
    model: h1.model, dtype: h1.dtype, max_batch: Number(o['max-batch']), max_wait_ms: Number(o['max-wait-ms']), threads: o.threads ? Number(o.threads) : null,
    concurrency, image: `${width}x${height}`, image_kb: Math.round(images.reduce((a, b) => a + b.length, 0) / images.length / 102.4) / 10,
    requests: done, failures: done - (statuses['200'] ?? 0), statuses,
    p50_ms: percentile(latencies, 0.5), p90_ms: percentile(latencies, 0.9), p99_ms: percentile(latencies, 0.99), max_ms: percentile(latencies, 1),
    throughput_rps: Math.round((statuses['200'] ?? 0) / elapsed * 100) / 100, duration_s: Math.round(elapsed * 100) / 100,
    stopped_by: done >= requests ? 'requests' : 'duration',
    batches, mean_batch: batches ? Math.round((h1.images - h0.images) / batches * 100) / 100 : null, largest_batch: h1.largest_batch,
    server_rss_start_mb: memStart?.rss_mb ?? null, server_rss_end_mb: memEnd?.rss_mb ?? null, server_rss_peak_mb: memEnd?.peak_mb ?? null,
    node: process.version,
  }));
} finally {
  agent.destroy();
  if (server.child) {
    const exited = new Promise<number | null>((resolve) => server.child!.once('exit', (code) => resolve(code)));
    server.child.kill('SIGTERM');
    const code = await exited;
    if (code !== 0) console.error(`serve_load: the server exited with ${code} on SIGTERM`);
  }
}
