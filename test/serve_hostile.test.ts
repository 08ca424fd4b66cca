// Issue #16, the server: image bombs (small PNGs of 7000x7000 pixels) must neither freeze the event
// loop nor add up to gigabytes: they are shrunk while libvips decodes them, their decoded size is
// charged against a per-image and a total budget before decoding (413, or 503 with Retry-After), and
// a client dripping its headers is cut at the headers timeout. Large images still classify close to
// what PIL's full-size resize gives.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { initBackend } from '../src/backend/index.js';
import { Rng, applyTransforms, decodeImage, SHRINK_ON_LOAD_PIXELS } from '../src/data/index.js';
import { evalTransforms } from '../src/infer/preprocess.js';
import { loadClassifier, type Classifier } from '../src/infer/index.js';
import { manualSeed } from '../src/nn/index.js';
import { startServer, type Health } from '../src/serve/index.js';
import { blockPng } from './images.js';

/** A width x height PNG of a smooth colour gradient: kilobytes on disk, width*height*3 bytes decoded. */
async function gradientPng(width: number, height: number): Promise<Buffer> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}"><defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1">` +
    '<stop offset="0" stop-color="#203080"/><stop offset="0.5" stop-color="#e0c040"/><stop offset="1" stop-color="#10a050"/></linearGradient></defs>' +
    `<rect width="${width}" height="${height}" fill="url(#g)"/><circle cx="${width / 3}" cy="${height / 2}" r="${height / 4}" fill="#c02020"/></svg>`;
  return sharp(Buffer.from(svg), { limitInputPixels: false }).png({ compressionLevel: 9 }).toBuffer();
}

async function post(base: string, body: Buffer): Promise<{ status: number; retryAfter: string | null; body: { top?: unknown[]; error?: string } }> {
  const res = await fetch(new URL('/predict', base), { method: 'POST', body: new Uint8Array(body), headers: { 'Content-Type': 'image/png' } });
  return { status: res.status, retryAfter: res.headers.get('retry-after'), body: await res.json() as { top?: unknown[]; error?: string } };
}

describe('serve under image bombs', () => {
  let classifier: Classifier;
  let bomb: Buffer;
  before(async () => {
    await initBackend('native');
    manualSeed(1);
    classifier = await loadClassifier({ model: 'resnet20', labels: 'cifar10', maxBatch: 8 });
    bomb = await sharp({ create: { width: 7000, height: 7000, channels: 3, background: { r: 10, g: 200, b: 30 } } }).png({ compressionLevel: 9 }).toBuffer();
  });
  after(() => classifier.dispose());

  it('64 concurrent 7000x7000 PNGs with small images in the mix: /health answers within 1 s, RSS stays within the decode budget', async () => {
    const maxDecodeMemory = 512 * 1024 ** 2;
    const server = await startServer(classifier, { port: 0, maxDecodeMemory });
    const small = await Promise.all(Array.from({ length: 8 }, (_, i) => blockPng(40 + i, 30 + i, 7 + i)));
    global.gc?.();
    const baseline = process.memoryUsage().rss;
    let peak = baseline, worstHealth = 0, healthChecks = 0, stop = false;
    const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 20);
    const pinger = (async () => {
      while (!stop) {
        const t0 = performance.now();
        const h = await (await fetch(new URL('/health', server.url))).json() as Health;
        assert.equal(h.status, 'ok');
        worstHealth = Math.max(worstHealth, performance.now() - t0);
        healthChecks++;
        await new Promise((r) => setTimeout(r, 25));
      }
    })();
    try {
      const t0 = performance.now();
      const answers = await Promise.all([...Array.from({ length: 64 }, () => post(server.url, bomb)), ...small.map((png) => post(server.url, png))]);
      const seconds = (performance.now() - t0) / 1000;
      stop = true;
      await pinger;
      const byStatus = new Map<number, number>();
      for (const a of answers) byStatus.set(a.status, (byStatus.get(a.status) ?? 0) + 1);
      for (const a of answers) {
        assert.ok(a.status === 200 || a.status === 503, `status ${a.status}: ${a.body.error}`);
        if (a.status === 503) {
          assert.equal(a.retryAfter, '1');
          assert.match(a.body.error!, /server busy: (the image \(7000x7000 png, 140\.2 MB decoded\) does not fit .*\(--max-decode-memory\)|64 requests in progress)/);
        } else {
          assert.equal(a.body.top!.length, 5);
        }
      }
      const bombsOk = answers.slice(0, 64).filter((a) => a.status === 200).length;
      assert.ok(bombsOk >= 3, `${bombsOk} of the bombs were classified`);
      const growth = peak - baseline;
      console.log(`# bombs: ${[...byStatus].map(([s, n]) => `${n} x ${s}`).join(', ')} in ${seconds.toFixed(1)} s; ` +
        `/health worst ${worstHealth.toFixed(0)} ms over ${healthChecks} checks; RSS ${(baseline / 1e6).toFixed(0)} -> peak ${(peak / 1e6).toFixed(0)} MB (+${(growth / 1e6).toFixed(0)} MB)`);
      assert.ok(worstHealth < 1000, `/health took ${worstHealth.toFixed(0)} ms`);
      assert.ok(healthChecks >= 3, `${healthChecks} health checks`);
      assert.ok(growth < maxDecodeMemory, `RSS grew by ${(growth / 1e6).toFixed(0)} MB, over the ${maxDecodeMemory / 1e6} MB decode budget`);
      assert.equal(server.health().decoding_bytes, 0, 'every reservation released');
      assert.equal(server.health().in_progress, 0);
    } finally {
      stop = true;
      clearInterval(sampler);
      await server.close();
    }
  });

  it('an image over --max-image-memory gets 413 naming its decoded size; the budget must hold one image', async () => {
    const server = await startServer(classifier, { port: 0, maxImageMemory: 1024 ** 2, maxDecodeMemory: 4 * 1024 ** 2 });
    try {
      const big = await post(server.url, await blockPng(700, 600, 3));
      assert.equal(big.status, 413);
      assert.match(big.body.error!, /the image is 700x600 png, 1\.2 MB decoded, over this server's limit of 1 MB per image \(--max-image-memory\)/);
      assert.equal((await post(server.url, await blockPng(300, 200, 4))).status, 200);
      assert.equal(server.health().max_image_memory, 1024 ** 2);
    } finally {
      await server.close();
    }
    await assert.rejects(startServer(classifier, { port: 0, maxImageMemory: 8, maxDecodeMemory: 4 }), /maxImageMemory \(8\) is above maxDecodeMemory \(4\)/);
  });

  it('a client dripping its headers is cut at the headers timeout', async () => {
    const server = await startServer(classifier, { port: 0, headersTimeoutMs: 1000 });
    try {
      const socket = connect(server.port, '127.0.0.1');
      await new Promise((r) => socket.once('connect', r));
      const t0 = performance.now();
      const text = 'POST /predict HTTP/1.1\r\nHost: x\r\nX-Drip: ' + 'a'.repeat(1000);
      let i = 0;
      const drip = setInterval(() => { if (!socket.destroyed) socket.write(text[i++ % text.length]!); }, 100);
      const closedAfter = await new Promise<number>((resolve) => {
        socket.on('error', () => {});
        socket.once('close', () => resolve(performance.now() - t0));
        setTimeout(() => resolve(Infinity), 8000);
      });
      clearInterval(drip);
      socket.destroy();
      assert.ok(closedAfter >= 900 && closedAfter < 3000, `the dripping connection was closed after ${closedAfter.toFixed(0)} ms`);
      // A normal client is unaffected.
      assert.equal((await post(server.url, await blockPng(40, 40, 1))).status, 200);
    } finally {
      await server.close();
    }
  });

  it('a large image is shrunk on load and stays within one 8-bit step on average of PIL\'s full-size resize', async () => {
    const png = await gradientPng(2400, 1800);
    assert.ok(2400 * 1800 > SHRINK_ON_LOAD_PIXELS);
    for (const input of [[3, 32, 32], [3, 224, 224]] as const) {
      const c = await loadClassifier({ model: 'resnet20', input: [...input], maxBatch: 1 });
      try {
        const full = await decodeImage(png, { maxPixels: 1e8 });
        const pre = { height: input[1], width: input[2], mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
        const want = applyTransforms({ data: full.data, channels: 3, height: full.height, width: full.width }, evalTransforms(pre), new Rng(0)).data;
        let sizes: number[] = [];
        const got = await c.preprocess(png, { admit: (info) => { sizes = [info.width, info.height, info.bytes]; } });
        assert.deepEqual(sizes, [2400, 1800, 2400 * 1800 * 4]); // the SVG-made PNG is RGBA
        let worst = 0, sum = 0;
        for (let i = 0; i < got.length; i++) {
          const d = Math.abs(got[i]! - want[i]!);
          worst = Math.max(worst, d);
          sum += d;
        }
        // Normalised units (one 8-bit step is about 0.017): a mean below one step, edges within a few.
        console.log(`# ${input.join('x')}: shrink-on-load vs full-size resize: mean |diff| ${(sum / got.length).toFixed(4)}, max ${worst.toFixed(3)}`);
        assert.ok(sum / got.length < 0.017, `mean |diff| ${sum / got.length}`);
        assert.ok(worst < 0.2, `max |diff| ${worst}`);
      } finally {
        c.dispose();
      }
    }
  });
});
