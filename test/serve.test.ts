// `residual serve` (src/serve/): the HTTP API in process on port 0 (real PNGs, 32 requests at once
// answered right and in fewer batches, every error status with a JSON reason), the command as a child
// process (listening line, graceful SIGTERM that still answers a request in progress), and the page
// in Debian's Chromium driven by playwright-core.
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { initBackend } from '../src/backend/index.js';
import { loadClassifier, type Classification, type Classifier } from '../src/infer/index.js';
import { manualSeed } from '../src/nn/index.js';
import { startServer, type Health, type RunningServer } from '../src/serve/index.js';
import { repoRoot } from './helpers.js';
import { blockPng } from './images.js';

const cli = join(repoRoot, 'dist', 'src', 'cli', 'main.js');
const dir = mkdtempSync(join(tmpdir(), 'residual-serve-'));
after(() => rmSync(dir, { recursive: true, force: true }));

interface Answer {
  status: number;
  headers: Headers;
  body: { top?: Classification[]; ms?: number; error?: string };
}

async function post(base: string, path: string, body: Uint8Array | string, headers: Record<string, string> = {}): Promise<Answer> {
  const data = typeof body === 'string' ? body : new Uint8Array(body); // a copy on an ArrayBuffer, as fetch's types want
  const res = await fetch(new URL(path, base), { method: 'POST', body: data, headers: { 'Content-Type': 'application/octet-stream', ...headers } });
  return { status: res.status, headers: res.headers, body: await res.json() as Answer['body'] };
}

async function get(base: string, path: string, method = 'GET'): Promise<{ status: number; headers: Headers; text: string }> {
  const res = await fetch(new URL(path, base), { method });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** A body sent in chunks without Content-Length (chunked), so only counting can find it too large. */
function postChunked(url: string, chunks: number, chunkBytes: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers: { 'Content-Type': 'application/octet-stream' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, body });
        req.destroy();
      });
    });
    req.on('error', (e: NodeJS.ErrnoException) => {
      // The server may close the connection once it has answered; the answer is what counts.
      if (e.code !== 'EPIPE' && e.code !== 'ECONNRESET') reject(e);
    });
    let sent = 0;
    const write = () => {
      while (sent < chunks) {
        sent++;
        if (!req.write(Buffer.alloc(chunkBytes, 7))) {
          req.once('drain', write);
          return;
        }
      }
      req.end();
    };
    write();
  });
}

describe('residual serve: the HTTP API', () => {
  let classifier: Classifier;
  let server: RunningServer;
  const images: Buffer[] = [];
  const expected: Classification[][] = [];

  before(async () => {
    await initBackend('native');
    manualSeed(1);
    classifier = await loadClassifier({ model: 'resnet20', labels: 'cifar10', maxBatch: 8 });
    server = await startServer(classifier, { port: 0, maxWaitMs: 20, maxBytes: 256 * 1024 });
    for (let i = 0; i < 8; i++) {
      const png = await blockPng(30 + 7 * i, 50 - 3 * i, 100 + i);
      images.push(png);
      expected.push(classifier.predictSync(await classifier.preprocess(png), 1, 10)[0]!);
    }
  });

  after(async () => {
    await server.close();
    classifier.dispose();
  });

  it('POST /predict: the top 5 of a PNG, as the classifier gives them; ?top=N', async () => {
    const r = await post(server.url, '/predict', images[0]!);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.match(r.headers.get('content-type')!, /^application\/json/);
    assert.equal(r.body.top!.length, 5);
    assert.deepEqual(r.body.top!.map((t) => t.class), expected[0]!.slice(0, 5).map((t) => t.class));
    r.body.top!.forEach((t, i) => {
      assert.equal(t.label, classifier.labels[t.class]);
      assert.ok(Math.abs(t.probability - expected[0]![i]!.probability) < 1e-6);
    });
    assert.ok(typeof r.body.ms === 'number' && r.body.ms > 0);
    const three = await post(server.url, '/predict?top=3', images[1]!);
    assert.deepEqual(three.body.top!.map((t) => t.label), expected[1]!.slice(0, 3).map((t) => t.label));
    for (const bad of ['0', '11', 'abc', '2.5']) {
      const b = await post(server.url, `/predict?top=${bad}`, images[1]!);
      assert.equal(b.status, 400);
      assert.match(b.body.error!, /top must be an integer from 1 to 10/);
    }
  });

  it('32 requests at once: all answered, each with its own image\'s classes, in fewer batches', async () => {
    const before = (await (await fetch(new URL('/health', server.url))).json()) as Health;
    const answers = await Promise.all(Array.from({ length: 32 }, (_, i) => post(server.url, '/predict?top=10', images[i % 8]!)));
    for (const [i, a] of answers.entries()) {
      assert.equal(a.status, 200, JSON.stringify(a.body));
      assert.deepEqual(a.body.top!.map((t) => t.class), expected[i % 8]!.map((t) => t.class), `request ${i}`);
    }
    const h = (await (await fetch(new URL('/health', server.url))).json()) as Health;
    assert.equal(h.requests - before.requests, 32);
    const batches = h.batches - before.batches;
    assert.ok(batches < 32, `32 requests ran in ${batches} batches`);
    assert.ok(h.largest_batch > 1 && h.largest_batch <= 8, `largest batch ${h.largest_batch}`);
    assert.equal(h.images - before.images, 32);
    assert.equal(h.queue, 0);
    assert.equal(h.in_progress, 0);
  });

  it('413 for a body over --max-bytes, declared or chunked, without reading it all', async () => {
    const big = new Uint8Array(256 * 1024 + 1);
    const r = await post(server.url, '/predict', big);
    assert.equal(r.status, 413);
    assert.match(r.body.error!, /262145 bytes, over this server's limit of 256 KB \(--max-bytes\)/);
    const c = await postChunked(new URL('/predict', server.url).href, 64, 64 * 1024); // 4 MB offered
    assert.equal(c.status, 413);
    assert.match((JSON.parse(c.body) as { error: string }).error, /over this server's limit of 256 KB/);
    // The server still answers afterwards.
    assert.equal((await post(server.url, '/predict', images[2]!)).status, 200);
  });

  it('a client that goes away mid-body frees its place', async () => {
    const req = request(new URL('/predict', server.url), { method: 'POST', headers: { 'Content-Length': '100000' } });
    req.on('error', () => {});
    req.write(Buffer.alloc(1000));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(server.health().in_progress, 1);
    req.destroy();
    for (let i = 0; i < 50 && server.health().in_progress > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(server.health().in_progress, 0);
  });

  it('415 for a body that is not an image, 400 for an empty one, 415 for a multipart form', async () => {
    const text = await post(server.url, '/predict', 'hello, I am text', { 'Content-Type': 'text/plain' });
    assert.equal(text.status, 415);
    assert.match(text.body.error!, /the request body is not a decodable image .* Formats read: jpeg, png/);
    const empty = await post(server.url, '/predict', new Uint8Array(0));
    assert.equal(empty.status, 400);
    assert.match(empty.body.error!, /the body is empty/);
    const form = new FormData();
    form.append('file', new Blob([new Uint8Array(images[0]!)]), 'a.png');
    const res = await fetch(new URL('/predict', server.url), { method: 'POST', body: form });
    assert.equal(res.status, 415);
    assert.match(((await res.json()) as { error: string }).error, /multipart\/form-data; send the image bytes themselves/);
  });

  it('404 for an unknown path, 405 for a wrong method, each with a JSON reason', async () => {
    const nf = await get(server.url, '/nope');
    assert.equal(nf.status, 404);
    assert.match((JSON.parse(nf.text) as { error: string }).error, /no endpoint \/nope: use POST \/predict/);
    const m = await get(server.url, '/predict');
    assert.equal(m.status, 405);
    assert.equal(m.headers.get('allow'), 'POST');
    assert.match((JSON.parse(m.text) as { error: string }).error, /GET \/predict is not supported; use POST/);
    const put = await fetch(new URL('/health', server.url), { method: 'PUT', body: 'x' });
    assert.equal(put.status, 405);
    await put.text();
  });

  it('GET /health and GET / (a self-contained page)', async () => {
    const h = JSON.parse((await get(server.url, '/health')).text) as Health;
    assert.equal(h.status, 'ok');
    assert.equal(h.model, 'resnet20');
    assert.equal(h.dtype, 'f32');
    assert.deepEqual(h.input, [3, 32, 32]);
    assert.ok(h.uptime_s > 0 && h.requests > 0 && h.batches > 0);
    assert.equal(typeof h.queue, 'number');
    const page = await get(server.url, '/');
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type')!, /^text\/html/);
    assert.match(page.headers.get('content-security-policy')!, /default-src 'none'/);
    assert.match(page.text, /<title>Residual: resnet20<\/title>/);
    assert.doesNotMatch(page.text, /(src|href)="(https?:)?\/\//, 'no external resources');
  });

  it('503 with Retry-After when more requests are in progress than --max-queue', async () => {
    const small = await startServer(classifier, { port: 0, maxQueue: 2, maxWaitMs: 200 });
    try {
      const answers = await Promise.all(Array.from({ length: 8 }, (_, i) => post(small.url, '/predict', images[i]!)));
      const ok = answers.filter((a) => a.status === 200), busy = answers.filter((a) => a.status === 503);
      assert.equal(ok.length + busy.length, 8);
      assert.ok(ok.length >= 2 && busy.length >= 1, `${ok.length} answered, ${busy.length} refused`);
      assert.equal(busy[0]!.headers.get('retry-after'), '1');
      assert.match(busy[0]!.body.error!, /server busy: 2 requests in progress \(--max-queue\)/);
    } finally {
      await small.close();
    }
  });
});

/** Starts `residual serve ... --port 0 --json` and resolves with its listening line. */
async function spawnServe(args: string[]): Promise<{ child: ChildProcessWithoutNullStreams; info: { url: string; port: number }; lines: string[]; stderr: () => string }> {
  const child = spawn(process.execPath, [cli, 'serve', ...args, '--port', '0', '--json'], { env: { ...process.env, RESIDUAL_BACKEND: 'native' } });
  let err = '';
  child.stderr.on('data', (c: Buffer) => { err += c.toString(); });
  const lines: string[] = [];
  const rl = createInterface({ input: child.stdout });
  const first = await new Promise<string>((resolve, reject) => {
    rl.on('line', (l) => { lines.push(l); if (lines.length === 1) resolve(l); });
    child.once('exit', (code) => reject(new Error(`serve exited with ${code} before listening: ${err}`)));
  });
  return { child, info: JSON.parse(first) as { url: string; port: number }, lines, stderr: () => err };
}

describe('residual serve: the command', () => {
  it('prints its port with --json; SIGTERM answers the request in progress, then exits 0', async () => {
    const { child, info, lines, stderr } = await spawnServe(['--model', 'resnet20', '--labels', 'cifar10', '--max-wait-ms', '400']);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      assert.ok(info.port > 0);
      assert.match(info.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
      const h = JSON.parse((await get(info.url, '/health')).text) as Health;
      assert.equal(h.model, 'resnet20');
      const png = await blockPng(40, 40, 5);
      const pending = post(info.url, '/predict', png); // waits up to 400 ms for a batch
      await new Promise((r) => setTimeout(r, 150));
      child.kill('SIGTERM');
      const answer = await pending;
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.equal(answer.body.top!.length, 5);
      assert.equal(await exited, 0, stderr());
      const stopped = JSON.parse(lines.at(-1)!) as { event: string; requests: number };
      assert.equal(stopped.event, 'stopped');
      assert.equal(stopped.requests, 1);
      assert.match(stderr(), /SIGTERM: stopping/);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('bad options are refused with a reason', async () => {
    const run = (args: string[]) => new Promise<{ code: number | null; err: string }>((resolve) => {
      const c = spawn(process.execPath, [cli, 'serve', ...args]);
      let err = '';
      c.stderr.on('data', (d: Buffer) => { err += d.toString(); });
      c.on('exit', (code) => resolve({ code, err }));
    });
    const noModel = await run([]);
    assert.equal(noModel.code, 2);
    assert.match(noModel.err, /--model is required/);
    const bytes = await run(['--model', 'resnet20', '--max-bytes', 'lots']);
    assert.equal(bytes.code, 1);
    assert.match(bytes.err, /--max-bytes: "lots" is not a size: write e\.g\. 10MB/);
    const port = await run(['--model', 'resnet20', '--port', '70000']);
    assert.match(port.err, /--port must be an integer from 0 to 65535/);
    const wino = await run(['--model', 'resnet20', '--winograd', 'maybe']);
    assert.match(wino.err, /--winograd must be on or off, got "maybe"/);
  });
});

const CHROMIUM = '/usr/bin/chromium';

describe('residual serve: the page in a browser', () => {
  it('picking an image shows its top 5 with the right labels; a text file shows the error',
    { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is absent: install Debian's chromium (scripts/setup.sh test does) to run the browser test` },
    async () => {
      const { chromium } = await import('playwright-core');
      await initBackend('native');
      manualSeed(2);
      const classifier = await loadClassifier({ model: 'resnet20', labels: 'cifar10' });
      const server = await startServer(classifier, { port: 0 });
      const profile = mkdtempSync(join(tmpdir(), 'residual-chromium-'));
      const context = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM, headless: true,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
          '--disable-component-update', '--disable-sync'],
        viewport: { width: 900, height: 640 },
      });
      try {
        const page = context.pages()[0] ?? await context.newPage();
        const external: string[] = [];
        page.on('request', (r) => { if (!r.url().startsWith(server.url)) external.push(r.url()); });
        await page.goto(server.url);
        const file = join(dir, 'photo.png');
        const png = await blockPng(240, 180, 42);
        writeFileSync(file, png);
        const expected = (await post(server.url, '/predict?top=5', png)).body.top!.map((t) => t.label);
        await page.setInputFiles('#file', file);
        await page.locator('#results li').nth(4).waitFor({ timeout: 20_000 });
        assert.equal(await page.locator('#results li').count(), 5);
        const labels = await page.locator('#results li .label').allTextContents();
        assert.deepEqual(labels, expected);
        assert.match(await page.locator('#status').textContent() ?? '', /photo\.png: .* ms on the server/);
        await page.screenshot({ path: process.env.RESIDUAL_SERVE_SCREENSHOT ?? join(dir, 'page.png') });

        const text = join(dir, 'notes.txt');
        writeFileSync(text, 'not an image');
        await page.setInputFiles('#file', text);
        await page.locator('#status.error').waitFor({ timeout: 20_000 });
        assert.match(await page.locator('#status').textContent() ?? '', /not a decodable image/);
        assert.equal(await page.locator('#results li').count(), 0);
        assert.deepEqual(external.filter((u) => !u.startsWith('blob:') && !u.startsWith('data:')), [], 'the page loads nothing from elsewhere');
      } finally {
        await context.close();
        await server.close();
        classifier.dispose();
        rmSync(profile, { recursive: true, force: true });
      }
    });
});
