// Pretrained weights by name: the table against torchvision itself, spec parsing, and the download
// cache against a loopback HTTP server that misbehaves on purpose (wrong bytes, a cut transfer, 404,
// redirects, a stall, a refused connection), then the CLI through a mirror on the same server.
// Nothing here reaches the internet: every URL is 127.0.0.1 or a port nobody listens on.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { IMAGENET_CLASSES } from '../src/data/labels.js';
import { loadStateDictFile, readSafetensors } from '../src/io/index.js';
import { modelFigures } from '../src/models/index.js';
import {
  checkWeightsArgument, fetchPretrained, isPretrainedSpec, parsePretrainedSpec, pretrainedCachePath, pretrainedCacheStatus, pretrainedDownloadUrl,
  pretrainedEntries, resolveWeightsArgument, residualHome, sha256PrefixOf, WeightsDownloadError, type DownloadEvent, type PretrainedEntry,
} from '../src/pretrained/index.js';
import { repoRoot } from './helpers.js';

const PYTHON = '/usr/bin/python3';
const cli = join(repoRoot, 'dist', 'src', 'cli', 'main.js');
const dir = mkdtempSync(join(tmpdir(), 'residual-pretrained-'));

const ENV_KEYS = ['RESIDUAL_HOME', 'RESIDUAL_WEIGHTS_MIRROR', 'RESIDUAL_DOWNLOAD_IDLE_TIMEOUT', 'XDG_CACHE_HOME'] as const;
const savedEnv = Object.fromEntries(ENV_KEYS.map((k) => [k, process.env[k]]));
function restoreEnv(): void {
  for (const k of ENV_KEYS) {
    if (savedEnv[k] === undefined) delete process.env[k];
    else process.env[k] = savedEnv[k];
  }
}
// The caller's own settings must not leak in (a mirror would redirect every download here).
for (const k of ENV_KEYS) delete process.env[k];

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

let homeCount = 0;
/** A fresh, empty cache root per test, so one test's files never serve another. */
function freshHome(): string {
  const home = join(dir, `home-${homeCount++}`);
  mkdirSync(home);
  return home;
}

/** Every file (temp files and markers included) in a cache root's torchvision folder. */
function cacheFiles(home: string): string[] {
  const folder = join(home, 'weights', 'torchvision');
  return existsSync(folder) ? readdirSync(folder).sort() : [];
}

// ---------------------------------------------------------------------------------------------
// The loopback server

const GOOD = randomBytes(300_000); // several chunks, so progress is reported more than once
const GOOD_NAME = `tiny-${sha256(GOOD).slice(0, 8)}.pth`;
const BAD = Buffer.from(GOOD.map((b) => b ^ 0xff));
let checkpoint: Buffer | null = null; // a real torchvision resnet18 state dict, when PyTorch is here

const requests: string[] = [];
const server = http.createServer((req, res) => {
  const url = req.url ?? '/';
  requests.push(url);
  const [, route, name = ''] = url.split('/');
  const send = (body: Buffer) => {
    res.writeHead(200, { 'content-length': body.length, 'content-type': 'application/octet-stream' });
    res.end(body);
  };
  switch (route) {
    case 'good':
      return send(GOOD);
    case 'bad':
      return send(BAD);
    case 'ckpt':
      return checkpoint ? send(checkpoint) : res.writeHead(404).end();
    case 'truncated':
      // Promise the whole file, send a third, then cut the connection.
      res.writeHead(200, { 'content-length': GOOD.length });
      res.write(GOOD.subarray(0, 100_000), () => res.socket?.destroy());
      return;
    case 'stall':
      // Headers and a little data, then silence with the connection open.
      res.writeHead(200, { 'content-length': GOOD.length });
      res.write(GOOD.subarray(0, 1000));
      return;
    case 'hang':
      return; // never answers at all
    case 'redirect':
      res.writeHead(302, { location: `/good/${name}` }).end();
      return;
    case 'redirect-absolute':
      res.writeHead(301, { location: `http://127.0.0.1:${port}/redirect/${name}` }).end();
      return;
    case 'loop':
      res.writeHead(307, { location: `/loop/${name}` }).end();
      return;
    default:
      res.writeHead(404, { 'content-type': 'text/plain' }).end('no such file');
  }
});
let port = 0;
let base = '';
/** A port that refuses connections: one we listened on and closed. */
let refusedPort = 0;

before(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
  base = `http://127.0.0.1:${port}`;
  const closed = http.createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  refusedPort = (closed.address() as AddressInfo).port;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
});

after(() => {
  server.closeAllConnections();
  server.close();
  restoreEnv();
  rmSync(dir, { recursive: true, force: true });
});

/** A table entry for the test file: resnet18's metadata with our URL and a file name carrying GOOD's sha256 prefix. */
function testEntry(url: string, fileName = GOOD_NAME): PretrainedEntry {
  return { ...parsePretrainedSpec('torchvision:resnet18'), spec: 'test:tiny', url, fileName };
}

async function rejectsWith(p: Promise<unknown>, kind: string, patterns: RegExp[]): Promise<WeightsDownloadError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof WeightsDownloadError, `expected a WeightsDownloadError, got ${(e as Error).stack}`);
    assert.equal(e.kind, kind, e.message);
    for (const re of patterns) assert.match(e.message, re);
    return e;
  }
  return assert.fail('the fetch succeeded but should have failed');
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// ---------------------------------------------------------------------------------------------

describe('the table is torchvision\'s', () => {
  // Dumps every ResNet/ResNeXt/WideResNet weights enum of the installed torchvision as JSON.
  const DUMP = `
import json, sys
import torchvision.models as tvm
from torchvision.models import resnet
out = {}
for cls_name in sorted(n for n in dir(resnet) if n.endswith('_Weights')):
    cls = getattr(resnet, cls_name)
    model = cls_name[:-len('_Weights')].lower()
    assert tvm.get_model_weights(model) is cls, (model, cls)
    entries = []
    for w in cls:
        t = w.transforms()
        m = w.meta['_metrics']['ImageNet-1K']
        entries.append({
            'name': w.name, 'url': w.url, 'resize_size': list(t.resize_size), 'crop_size': list(t.crop_size),
            'mean': list(t.mean), 'std': list(t.std), 'interpolation': t.interpolation.value,
            'num_params': w.meta['num_params'], 'acc1': m['acc@1'], 'acc5': m['acc@5'],
            'recipe': w.meta['recipe'], 'categories': w.meta['categories'],
        })
    out[model] = {'default': cls.DEFAULT.name, 'entries': entries}
json.dump(out, sys.stdout)
`;
  interface Dumped {
    default: string;
    entries: {
      name: string; url: string; resize_size: number[]; crop_size: number[]; mean: number[]; std: number[]; interpolation: string;
      num_params: number; acc1: number; acc5: number; recipe: string; categories: string[];
    }[];
  }

  it('every entry of every ResNet/ResNeXt/WideResNet weights enum, field by field', (t) => {
    const probe = spawnSync(PYTHON, ['-c', 'import torchvision'], { encoding: 'utf8' });
    if (probe.error || probe.status !== 0) {
      t.skip(`${PYTHON} cannot import torchvision (apt-get install python3-torchvision): ${probe.error?.message ?? probe.stderr.trim().split('\n').pop()}`);
      return;
    }
    const run = spawnSync(PYTHON, ['-c', DUMP], { encoding: 'utf8', maxBuffer: 64 << 20 });
    assert.equal(run.status, 0, run.stderr);
    const tv = JSON.parse(run.stdout) as Record<string, Dumped>;
    const ours = pretrainedEntries();
    assert.deepEqual([...new Set(ours.map((e) => e.model))].sort(), Object.keys(tv).sort(), 'the same builders have weights');
    for (const [model, { default: dflt, entries }] of Object.entries(tv)) {
      const mine = pretrainedEntries(model);
      assert.deepEqual(mine.map((e) => e.name), entries.map((e) => e.name), `${model}: entries in torchvision's order`);
      assert.deepEqual(mine.filter((e) => e.isDefault).map((e) => e.name), [dflt], `${model}: DEFAULT`);
      for (const [i, w] of entries.entries()) {
        const e = mine[i]!;
        const what = e.spec;
        assert.equal(e.spec, `torchvision:${model}.${w.name}`);
        assert.equal(e.url, w.url, what);
        assert.equal(e.fileName, basename(w.url), what);
        assert.deepEqual(
          { resize: [e.transform.resizeSize], crop: [e.transform.cropSize], mean: [...e.transform.mean], std: [...e.transform.std], interpolation: e.transform.interpolation },
          { resize: w.resize_size, crop: w.crop_size, mean: w.mean, std: w.std, interpolation: w.interpolation },
          `${what}: eval transform`,
        );
        assert.equal(e.numParams, w.num_params, `${what}: num_params`);
        assert.deepEqual([e.metrics.acc1, e.metrics.acc5], [w.acc1, w.acc5], `${what}: acc@1, acc@5`);
        assert.equal(e.recipe, w.recipe, `${what}: recipe`);
        assert.deepEqual(e.categories, w.categories, `${what}: categories`);
      }
    }
  });

  it('categories are the repository\'s ImageNet list (one copy), and each model\'s parameter count is our builder\'s', () => {
    for (const e of pretrainedEntries()) {
      assert.equal(e.categories, IMAGENET_CLASSES, `${e.spec} shares the one list`);
      assert.equal(modelFigures(e.model).params, e.numParams, `${e.model}: our builder has torchvision's parameter count`);
      assert.match(sha256PrefixOf(e.fileName), /^[0-9a-f]{8}$/, e.fileName);
    }
  });
});

describe('spec parsing', () => {
  it('MODEL, MODEL.DEFAULT and MODEL.ENTRY name entries as torchvision does', () => {
    assert.equal(parsePretrainedSpec('torchvision:resnet50').spec, 'torchvision:resnet50.IMAGENET1K_V2');
    assert.equal(parsePretrainedSpec('torchvision:resnet50.DEFAULT').spec, 'torchvision:resnet50.IMAGENET1K_V2');
    assert.equal(parsePretrainedSpec('torchvision:resnet50.IMAGENET1K_V1').fileName, 'resnet50-0676ba61.pth');
    assert.equal(parsePretrainedSpec('torchvision:resnet50.imagenet1k_v1').name, 'IMAGENET1K_V1');
    assert.equal(parsePretrainedSpec('torchvision:resnet18').name, 'IMAGENET1K_V1');
    assert.equal(parsePretrainedSpec('torchvision:resnext101_64x4d').spec, 'torchvision:resnext101_64x4d.IMAGENET1K_V1');
    assert.equal(isPretrainedSpec('torchvision:resnet50'), true);
    assert.equal(isPretrainedSpec('resnet50.pth'), false);
    assert.equal(isPretrainedSpec('runs/r20'), false);
  });

  it('unknown models and entries are errors that list what exists', () => {
    assert.throws(() => parsePretrainedSpec('torchvision:resnet20'), /no weights for "resnet20".*resnet18, resnet34, resnet50.*wide_resnet101_2/);
    assert.throws(() => parsePretrainedSpec('torchvision:resnet18.IMAGENET1K_V2'), /resnet18 has no weights named "IMAGENET1K_V2"; it has IMAGENET1K_V1 \(DEFAULT\)$/);
    assert.throws(() => parsePretrainedSpec('torchvision:resnet50.V3'), /it has IMAGENET1K_V1, IMAGENET1K_V2 \(DEFAULT\)$/);
    assert.throws(() => parsePretrainedSpec('torchvision:'), /no model named/);
    assert.throws(() => parsePretrainedSpec('resnet50'), /not a pretrained weights name; write torchvision:MODEL/);
    assert.throws(() => pretrainedEntries('resnet20'), /no weights for "resnet20"/);
  });

  it('file names carry their sha256 prefix after the last "-"', () => {
    assert.equal(sha256PrefixOf('resnet50-11ad3fa6.pth'), '11ad3fa6');
    assert.equal(sha256PrefixOf('my-model-0123abcd.pth'), '0123abcd');
    assert.throws(() => sha256PrefixOf('resnet50.pth'), /carries no sha256 prefix/);
    assert.throws(() => sha256PrefixOf('resnet50-final.pth'), /carries no sha256 prefix/);
  });

  it('a --weights argument: the spec settles the model, a different --model is refused, a path needs --model', () => {
    assert.deepEqual(checkWeightsArgument('w.pth', 'resnet18'), { model: 'resnet18', entry: null });
    assert.equal(checkWeightsArgument('torchvision:resnet50').model, 'resnet50');
    assert.equal(checkWeightsArgument('torchvision:resnet50', 'resnet50').entry?.name, 'IMAGENET1K_V2');
    assert.throws(() => checkWeightsArgument('torchvision:resnet50', 'resnet34'), /--model resnet34 does not fit --weights torchvision:resnet50, which are resnet50 weights/);
    assert.throws(() => checkWeightsArgument('w.pth'), /--model is required with --weights w\.pth/);
  });
});

describe('the cache folder', () => {
  after(restoreEnv);

  it('RESIDUAL_HOME, else $XDG_CACHE_HOME/residual, else ~/.cache/residual', () => {
    delete process.env.RESIDUAL_HOME;
    delete process.env.XDG_CACHE_HOME;
    assert.equal(residualHome(), join(homedir(), '.cache', 'residual'));
    process.env.XDG_CACHE_HOME = '/xdg/cache';
    assert.equal(residualHome(), '/xdg/cache/residual');
    process.env.RESIDUAL_HOME = '/somewhere/res';
    assert.equal(residualHome(), '/somewhere/res');
    assert.equal(pretrainedCachePath('torchvision:resnet50'), '/somewhere/res/weights/torchvision/resnet50-11ad3fa6.pth');
    assert.equal(pretrainedCachePath('torchvision:resnet50', { home: '/other' }), '/other/weights/torchvision/resnet50-11ad3fa6.pth');
    delete process.env.RESIDUAL_HOME;
    delete process.env.XDG_CACHE_HOME;
  });

  it('RESIDUAL_WEIGHTS_MIRROR replaces download.pytorch.org/models/', () => {
    const e = parsePretrainedSpec('torchvision:resnet50');
    assert.equal(pretrainedDownloadUrl(e), 'https://download.pytorch.org/models/resnet50-11ad3fa6.pth');
    process.env.RESIDUAL_WEIGHTS_MIRROR = 'http://mirror.example/weights';
    assert.equal(pretrainedDownloadUrl(e), 'http://mirror.example/weights/resnet50-11ad3fa6.pth');
    delete process.env.RESIDUAL_WEIGHTS_MIRROR;
  });
});

describe('fetchPretrained against a loopback server', () => {
  after(restoreEnv);

  it('downloads a good file once, reporting progress; the second call is served from the cache without a request', async () => {
    const home = freshHome();
    const entry = testEntry(`${base}/good/${GOOD_NAME}`);
    const events: [number, number | null, DownloadEvent['phase']][] = [];
    const before = requests.length;
    const first = await fetchPretrained(entry, { home, onProgress: (b, t, ev) => events.push([b, t, ev.phase]) });
    assert.equal(first.downloaded, true);
    assert.equal(first.path, join(home, 'weights', 'torchvision', GOOD_NAME));
    assert.ok(readFileSync(first.path).equals(GOOD), 'the cached file holds the served bytes');
    assert.equal(requests.length - before, 1);
    assert.deepEqual(events[0], [0, GOOD.length, 'start']);
    assert.deepEqual(events.at(-1), [GOOD.length, GOOD.length, 'done']);
    assert.ok(events.filter((e) => e[2] === 'data').length >= 2, 'progress per chunk');
    for (let i = 1; i < events.length; i++) assert.ok(events[i]![0] >= events[i - 1]![0], 'bytes never go back');
    assert.equal(pretrainedCacheStatus(entry, { home }), 'verified');

    const second = await fetchPretrained(entry, { home, onProgress: () => assert.fail('no download expected') });
    assert.equal(second.downloaded, false);
    assert.equal(second.path, first.path);
    assert.equal(requests.length - before, 1, 'no second request');
    assert.deepEqual(cacheFiles(home), [`.${GOOD_NAME}.sha256`, GOOD_NAME], 'the file and its marker, no temp file');
  });

  it('RESIDUAL_WEIGHTS_MIRROR and RESIDUAL_HOME: the real entry URL is never used', async () => {
    const home = freshHome();
    process.env.RESIDUAL_HOME = home;
    process.env.RESIDUAL_WEIGHTS_MIRROR = `${base}/good/`;
    try {
      // The entry's own URL would need the internet; the mirror serves the same name.
      const entry = testEntry(`https://download.pytorch.org/models/${GOOD_NAME}`);
      const before = requests.length;
      const r = await fetchPretrained(entry);
      assert.equal(r.path, join(home, 'weights', 'torchvision', GOOD_NAME));
      assert.deepEqual(requests.slice(before), [`/good/${GOOD_NAME}`]);
      assert.ok(readFileSync(r.path).equals(GOOD));
    } finally {
      delete process.env.RESIDUAL_HOME;
      delete process.env.RESIDUAL_WEIGHTS_MIRROR;
    }
  });

  it('wrong bytes are refused, naming the expected prefix and the actual sha256; nothing is left in the cache', async () => {
    const home = freshHome();
    const failed: string[] = [];
    await rejectsWith(fetchPretrained(testEntry(`${base}/bad/${GOOD_NAME}`), { home, onProgress: (_b, _t, ev) => ev.phase === 'failed' && failed.push(ev.path) }),
      'hash', [new RegExp(`starting with ${sha256(GOOD).slice(0, 8)}`), new RegExp(sha256(BAD)), /Nothing was kept/]);
    assert.deepEqual(cacheFiles(home), []);
    assert.equal(failed.length, 1, 'the progress callback hears of the failure');
  });

  it('a transfer cut short of Content-Length is an error and leaves nothing', async () => {
    const home = freshHome();
    await rejectsWith(fetchPretrained(testEntry(`${base}/truncated/${GOOD_NAME}`), { home }), 'truncated', [/connection broke|transfer was cut/, /try again/]);
    assert.deepEqual(cacheFiles(home), []);
  });

  it('HTTP 404 names the URL and the status', async () => {
    const home = freshHome();
    const url = `${base}/nothing-here/${GOOD_NAME}`;
    await rejectsWith(fetchPretrained(testEntry(url), { home }), 'http', [new RegExp(`${escape(url)} failed: HTTP 404`)]);
    assert.deepEqual(cacheFiles(home), []);
  });

  it('redirects are followed (relative and absolute Location), and a loop stops', async () => {
    const home = freshHome();
    const before = requests.length;
    const r = await fetchPretrained(testEntry(`${base}/redirect-absolute/${GOOD_NAME}`), { home });
    assert.ok(readFileSync(r.path).equals(GOOD));
    assert.deepEqual(requests.slice(before), [`/redirect-absolute/${GOOD_NAME}`, `/redirect/${GOOD_NAME}`, `/good/${GOOD_NAME}`]);
    const home2 = freshHome();
    await rejectsWith(fetchPretrained(testEntry(`${base}/loop/${GOOD_NAME}`), { home: home2, maxRedirects: 3 }), 'redirect', [/more than 3 redirects/]);
    assert.deepEqual(cacheFiles(home2), []);
  });

  it('a server that stalls mid-file or never answers hits the idle timeout; nothing is left', async () => {
    const home = freshHome();
    let t0 = Date.now();
    await rejectsWith(fetchPretrained(testEntry(`${base}/stall/${GOOD_NAME}`), { home, idleTimeoutMs: 300 }), 'timeout', [/no data for 0\.3 s after 1000 bytes/]);
    assert.ok(Date.now() - t0 < 5000, `gave up after ${Date.now() - t0} ms`);
    assert.deepEqual(cacheFiles(home), []);
    // The environment variable sets it too (seconds).
    process.env.RESIDUAL_DOWNLOAD_IDLE_TIMEOUT = '0.3';
    try {
      t0 = Date.now();
      await rejectsWith(fetchPretrained(testEntry(`${base}/hang/${GOOD_NAME}`), { home }), 'timeout', [/no answer in 0\.3 s/, /RESIDUAL_DOWNLOAD_IDLE_TIMEOUT/]);
      assert.ok(Date.now() - t0 < 5000, `gave up after ${Date.now() - t0} ms`);
    } finally {
      delete process.env.RESIDUAL_DOWNLOAD_IDLE_TIMEOUT;
    }
    assert.deepEqual(cacheFiles(home), []);
  });

  it('no network: the error names the URL and the exact cache path to put the file at by hand', async () => {
    const home = freshHome();
    const url = `http://127.0.0.1:${refusedPort}/${GOOD_NAME}`;
    const path = join(home, 'weights', 'torchvision', GOOD_NAME);
    await rejectsWith(fetchPretrained(testEntry(url), { home }), 'network', [new RegExp(`cannot reach ${escape(url)} \\(ECONNREFUSED`), new RegExp(`put it at ${escape(path)}$`)]);
    // Through a mirror the message says to check the mirror, and still where the file goes.
    await rejectsWith(fetchPretrained(testEntry(`https://download.pytorch.org/models/${GOOD_NAME}`), { home, mirror: `http://127.0.0.1:${refusedPort}` }),
      'network', [/check the mirror \(http:\/\/127\.0\.0\.1:\d+\/\)/, new RegExp(`at ${escape(path)} by hand$`)]);
    assert.deepEqual(cacheFiles(home), []);
  });

  it('a file dropped in by hand is hash-checked before its first use: a bad one is refused (and kept for the person to look at)', async () => {
    const home = freshHome();
    const entry = testEntry(`http://127.0.0.1:${refusedPort}/${GOOD_NAME}`); // a download would fail loudly
    const path = pretrainedCachePath(entry, { home });
    mkdirSync(join(home, 'weights', 'torchvision'), { recursive: true });
    writeFileSync(path, BAD);
    assert.equal(pretrainedCacheStatus(entry, { home }), 'unverified');
    await assert.rejects(fetchPretrained(entry, { home }), (e: Error) => {
      assert.match(e.message, new RegExp(`^${escape(path)}: this file is not test:tiny: its sha256 is ${sha256(BAD)}, but the name promises one starting with ${sha256(GOOD).slice(0, 8)}`));
      assert.match(e.message, /delete it/);
      return true;
    });
    assert.deepEqual(cacheFiles(home), [GOOD_NAME], 'no marker for a bad file');
    // The same place with the right bytes: accepted without any request, and remembered as verified.
    writeFileSync(path, GOOD);
    const r = await fetchPretrained(entry, { home });
    assert.equal(r.downloaded, false);
    assert.equal(pretrainedCacheStatus(entry, { home }), 'verified');
  });

  it('the verified marker is keyed by size and mtime: a file changed since it was hashed is hashed again', async () => {
    const home = freshHome();
    const entry = testEntry(`${base}/good/${GOOD_NAME}`);
    const { path } = await fetchPretrained(entry, { home });
    // A whole-second mtime, so the test can put it back exactly; the file is hashed again for it.
    const stamp = 1_700_000_000;
    utimesSync(path, stamp, stamp);
    await fetchPretrained(entry, { home });
    // Same size, different bytes, new mtime: the marker no longer vouches for it.
    writeFileSync(path, BAD);
    utimesSync(path, stamp, stamp + 5);
    await assert.rejects(fetchPretrained(entry, { home }), /its sha256 is/);
    // Same size and the old mtime restored: the marker is trusted and the file is not re-read
    // (what spares hashing 500 MB on every start; a deliberate forgery like this one is not caught).
    utimesSync(path, stamp, stamp);
    assert.equal((await fetchPretrained(entry, { home })).path, path);
  });

  it('temp files of a killed download are removed by the next one', async () => {
    const home = freshHome();
    const folder = join(home, 'weights', 'torchvision');
    mkdirSync(folder, { recursive: true });
    const stale = join(folder, `.${GOOD_NAME}.download-999999999-0badf00d`); // no such pid
    writeFileSync(stale, 'half a file');
    await fetchPretrained(testEntry(`${base}/good/${GOOD_NAME}`), { home });
    assert.equal(existsSync(stale), false);
  });

  it('resolveWeightsArgument passes paths through and checks a spec before any request', async () => {
    assert.deepEqual(await resolveWeightsArgument('runs/r20', 'resnet20'), { path: 'runs/r20', model: 'resnet20', entry: null });
    const before = requests.length;
    await assert.rejects(resolveWeightsArgument('torchvision:resnet18', 'resnet50', { home: freshHome(), mirror: `${base}/good/` }), /--model resnet50 does not fit/);
    assert.equal(requests.length, before);
  });
});

// ---------------------------------------------------------------------------------------------

describe('the CLI with torchvision:... weights', () => {
  const home = join(dir, 'cli-home');
  const folder = join(home, 'weights', 'torchvision');
  let torchError = '';

  /** Runs the CLI without blocking: the loopback server in this process must keep answering. */
  async function residual(args: string[], mirror: string): Promise<{ code: number; stdout: string; stderr: string }> {
    const child = spawn(process.execPath, [cli, ...args], {
      env: { ...process.env, RESIDUAL_HOME: home, RESIDUAL_WEIGHTS_MIRROR: mirror, RESIDUAL_BACKEND: 'native' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const [code] = (await once(child, 'close')) as [number | null];
    return { code: code ?? -1, stdout, stderr };
  }

  before(() => {
    assert.ok(existsSync(cli), `${cli} is missing; build with \`npx tsc -p .\` first`);
    // A real torchvision checkpoint (random weights) to serve under resnet18's file name. Its hash
    // cannot match torchvision's published prefix, so only the refusal can go through a download.
    const out = join(dir, 'resnet18-random.pth');
    const r = spawnSync(PYTHON, ['-c', `import torch, torchvision\ntorch.manual_seed(0)\ntorch.save(torchvision.models.resnet18().state_dict(), ${JSON.stringify(out)})`], { encoding: 'utf8' });
    if (r.status === 0) checkpoint = readFileSync(out);
    else torchError = `${PYTHON} cannot make a torchvision checkpoint (apt-get install python3-torchvision): ${r.error?.message ?? r.stderr.trim().split('\n').pop()}`;
  });

  it('weights list --json: the table, nothing cached; weights path: where a file goes by hand', async () => {
    const r = await residual(['weights', 'list', '--json'], `${base}/good/`);
    assert.equal(r.code, 0, r.stderr);
    const rows = JSON.parse(r.stdout) as { spec: string; default: boolean; cached: boolean; path: string; acc1: number; fileName: string }[];
    assert.deepEqual(rows.map((x) => x.spec), pretrainedEntries().map((e) => e.spec));
    assert.ok(rows.every((x) => !x.cached));
    assert.equal(rows.find((x) => x.spec === 'torchvision:resnet50.IMAGENET1K_V2')?.acc1, 80.858);
    const p = await residual(['weights', 'path', 'torchvision:resnet50'], `${base}/good/`);
    assert.equal(p.code, 0, p.stderr);
    assert.equal(p.stdout, `${join(folder, 'resnet50-11ad3fa6.pth')}\n`);
    const text = await residual(['weights', 'list', '--model', 'resnet50'], `${base}/good/`);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /torchvision:resnet50\.IMAGENET1K_V2 \(default\)\s+80\.858\s+95\.434\s+25,557,032\s+resnet50-11ad3fa6\.pth\s+no/);
    const bad = await residual(['weights', 'path', 'torchvision:resnet51'], `${base}/good/`);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /no weights for "resnet51"; models with pretrained weights: resnet18/);
  });

  it('eval --weights torchvision:resnet18 through a mirror serving other bytes: exit 1, a clear message, nothing cached', async (t) => {
    if (!checkpoint) return t.skip(torchError);
    const r = await residual(['eval', '--weights', 'torchvision:resnet18'], `${base}/ckpt/`);
    assert.equal(r.code, 1, r.stderr);
    const path = join(folder, 'resnet18-f37072fd.pth');
    assert.match(r.stderr, new RegExp(`eval: downloading ${escape(base)}/ckpt/resnet18-f37072fd\\.pth \\(\\d+\\.\\d MB\\) to ${escape(path)}\n`));
    assert.match(r.stderr, new RegExp(`residual: downloading ${escape(base)}/ckpt/resnet18-f37072fd\\.pth: sha256 mismatch: the file name promises a sha256 starting with f37072fd, the .* received hash to ${sha256(checkpoint)}`));
    assert.deepEqual(cacheFiles(home), []);
  });

  it('a --model that differs from the spec\'s is refused before any download', async () => {
    const before = requests.length;
    const r = await residual(['infer', '--model', 'resnet50', '--weights', 'torchvision:resnet18', '--input', 'x.safetensors', '--output', 'y.safetensors'], `${base}/ckpt/`);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--model resnet50 does not fit --weights torchvision:resnet18, which are resnet18 weights; drop --model or give --model resnet18/);
    assert.equal(requests.length, before);
  });

  it('weights fetch without a network: exit 1, naming the URL and the cache path', async () => {
    const r = await residual(['weights', 'fetch', 'torchvision:resnet34'], `http://127.0.0.1:${refusedPort}/`);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`cannot reach http://127\\.0\\.0\\.1:${refusedPort}/resnet34-b627a593\\.pth \\(ECONNREFUSED.*put resnet34-b627a593\\.pth \\(from https://download\\.pytorch\\.org/models/resnet34-b627a593\\.pth\\) at ${escape(join(folder, 'resnet34-b627a593.pth'))} by hand`));
  });

  it('export --weights torchvision:resnet18 (no --model) loads the cached file, with no network', async (t) => {
    if (!checkpoint) return t.skip(torchError);
    // The one way to have torchvision's file name in the cache without torchvision's bytes: write the
    // marker a verified download leaves (the cache trusts it while size and mtime are unchanged).
    const path = join(folder, 'resnet18-f37072fd.pth');
    mkdirSync(folder, { recursive: true });
    writeFileSync(path, checkpoint);
    const st = statSync(path);
    writeFileSync(join(folder, '.resnet18-f37072fd.pth.sha256'), JSON.stringify({ sha256: 'f37072fd' + '0'.repeat(56), size: st.size, mtimeMs: st.mtimeMs }));
    const out = join(dir, 'exported.safetensors');
    const r = await residual(['export', '--weights', 'torchvision:resnet18', '--safetensors', out], `http://127.0.0.1:${refusedPort}/`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '', 'no download line');
    const exported = readSafetensors(out).tensors;
    const source = loadStateDictFile(path);
    assert.equal(exported.size, source.size);
    for (const k of ['conv1.weight', 'layer4.1.bn2.running_var', 'fc.weight', 'fc.bias']) {
      assert.deepEqual(exported.get(k)!.data, source.get(k)!.data, k);
    }
    const list = await residual(['weights', 'list', '--model', 'resnet18', '--json'], `${base}/good/`);
    assert.deepEqual((JSON.parse(list.stdout) as { cached: boolean; verified: boolean }[]).map((x) => [x.cached, x.verified]), [[true, true]]);
  });
});
