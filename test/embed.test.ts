// Embeddings: the pooled features [N, D] that the head would read, on every path that gives them.
//
// - PyTorch parity (scripts/fixtures/embed_parity.py, Debian's /usr/bin/python3, cached like
//   models_parity): torchvision resnet50 and resnext50_32x4d with random weights and non-trivial BN,
//   `model.fc = nn.Identity()` in eval mode, on a non-square 2x3x160x224 batch. Our eager
//   forwardFeatures, the compiled plan (f32, through loadFeatureExtractor: embed and embedSync),
//   `residual embed --input`, and `residual export --output pool` run by onnxruntime must all be within
//   1e-4 of PyTorch's largest feature. bf16 plans: within 3e-2 of the largest feature, and every
//   row's cosine similarity with PyTorch's at least 0.999 (bf16 keeps about 3 significant digits).
// - The plan's other outputs against forwardFeatures: 'stem' and 'layerK' maps, a model whose fc is
//   an Identity (this used to fail with a disposed-tensor error), bad output names.
// - `residual embed` on images (a folder, recursively) gives the rows embedImages gives for the
//   files it lists, preprocessed exactly as loadClassifier preprocesses; bad input fails with exit 1
//   and a message naming it, and writes nothing.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { initBackend } from '../src/backend/index.js';
import { compileForInference, loadClassifier, loadFeatureExtractor } from '../src/infer/index.js';
import { readSafetensors, writeSafetensors } from '../src/io/index.js';
import { onnxBytes } from '../src/onnx/index.js';
import { cardMetadata, createModel, loadModel, type ResNet } from '../src/models/index.js';
import { BatchNorm2d, Identity, ReLU, manualSeed } from '../src/nn/index.js';
import { Tensor, noGrad, tidy } from '../src/tensor/index.js';
import { assertClose, repoRoot, rng } from './helpers.js';
import { blockPng } from './images.js';

const PYTHON = '/usr/bin/python3';
const script = join(repoRoot, 'scripts', 'fixtures', 'embed_parity.py');
// embed_parity.py takes its weight recipe from models_parity.py: a change to either remakes the set.
const recipe = join(repoRoot, 'scripts', 'fixtures', 'models_parity.py');
const cli = join(repoRoot, 'dist', 'src', 'cli', 'main.js');
const TOL = 1e-4;
const BF16_TOL = 3e-2;
const PARITY_MODELS = ['resnet50', 'resnext50_32x4d'];

interface Manifest {
  version: number;
  input: number[];
  models: Record<string, { features: number[]; max_abs_feature: number }>;
}

function fixtureDir(): string {
  const hash = createHash('sha256').update(readFileSync(script)).update(readFileSync(recipe)).digest('hex').slice(0, 12);
  return join(process.env.RESIDUAL_FIXTURE_CACHE ?? join(tmpdir(), 'residual-fixtures'), `embed-parity-${hash}`);
}

/** Makes the fixtures unless a complete set (manifest.json written last) is cached. */
function ensureFixtures(dir: string): Manifest {
  const manifestPath = join(dir, 'manifest.json');
  if (!existsSync(manifestPath)) {
    const probe = spawnSync(PYTHON, ['-c', 'import torch, torchvision'], { encoding: 'utf8' });
    if (probe.error || probe.status !== 0) {
      throw new Error(`the PyTorch embedding fixtures need Debian's ${PYTHON} with torch and torchvision ` +
        `(apt-get install -y python3-torch python3-torchvision): ${probe.error?.message ?? probe.stderr.trim().split('\n').pop()}`);
    }
    mkdirSync(dir, { recursive: true });
    const run = spawnSync(PYTHON, [script, '--out', dir], { encoding: 'utf8', timeout: 15 * 60_000 });
    if (run.status !== 0 || !existsSync(manifestPath)) {
      throw new Error(`${script} failed (exit ${run.status}): ${run.error?.message ?? run.stderr.slice(-2000)}`);
    }
  }
  return JSON.parse(readFileSync(manifestPath, 'utf8')) as Manifest;
}

function read(path: string, key: string): { shape: number[]; data: Float32Array; metadata: Record<string, string> | null } {
  const { tensors, metadata } = readSafetensors(path);
  const t = tensors.get(key);
  assert.ok(t, `${path} has no "${key}" (it has ${[...tensors.keys()].join(', ')})`);
  return { shape: t.shape, data: t.data, metadata };
}

/** |ours - theirs| <= tol x the largest |theirs|, naming the worst value. */
function assertWithin(ours: ArrayLike<number>, theirs: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(ours.length, theirs.length, `${what}: ${ours.length} values vs ${theirs.length}`);
  let scale = 0;
  for (let i = 0; i < theirs.length; i++) scale = Math.max(scale, Math.abs(theirs[i]!));
  assert.ok(scale > 0, `${what}: the reference is all zeros; a useless comparison`);
  let worst = 0, at = 0;
  for (let i = 0; i < theirs.length; i++) {
    const d = Math.abs(ours[i]! - theirs[i]!);
    if (!(d <= worst)) { worst = d; at = i; }
  }
  assert.ok(worst <= tol * scale, `${what}: feature ${at} is ${ours[at]}, expected ${theirs[at]} (|diff| ${worst} > ${tol} x ${scale})`);
}

/** The smallest cosine similarity between matching rows of two [n, d] arrays. */
function minCosine(a: Float32Array, b: Float32Array, d: number): number {
  let worst = 1;
  for (let r = 0; r < a.length / d; r++) {
    let ab = 0, aa = 0, bb = 0;
    for (let j = r * d; j < (r + 1) * d; j++) { ab += a[j]! * b[j]!; aa += a[j]! ** 2; bb += b[j]! ** 2; }
    worst = Math.min(worst, ab / Math.sqrt(aa * bb));
  }
  return worst;
}

function runCli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 10 * 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function randomArray(n: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => 2 * r() - 1);
}

/** Random BN scales, shifts and running statistics (eval BN, and so its folding, is no identity). */
function randomizeBatchNorm(model: ResNet, seed: number): void {
  const r = rng(seed);
  const u = (n: number, lo: number, hi: number) => Float32Array.from({ length: n }, () => lo + (hi - lo) * r());
  for (const [, m] of model.namedModules()) {
    if (!(m instanceof BatchNorm2d)) continue;
    const n = m.numFeatures;
    m.weight.assign(u(n, 0.5, 1.5));
    m.bias.assign(u(n, -0.3, 0.3));
    m.runningMean.assign(u(n, -0.3, 0.3));
    m.runningVar.assign(u(n, 0.5, 2));
  }
}

function eagerFeatures(model: ResNet, x: Float32Array, shape: number[], name = 'pool'): Float32Array {
  model.eval();
  return noGrad(() => tidy(() => model.forwardFeatures(Tensor.fromArray(x, shape), [name])[name]!.toArray()));
}

/** Whether this CPU runs bf16 plans (they are refused, with this reason, elsewhere). */
function bf16Supported(model: ResNet, input: [number, number, number]): boolean {
  try {
    compileForInference(model, { input, dtype: 'bf16', output: 'pool' }).dispose();
    return true;
  } catch (e) {
    assert.match((e as Error).message, /bf16 needs a CPU with AVX512-BF16 or AMX/);
    return false;
  }
}

describe('embeddings: PyTorch parity (fc = Identity, eval) on a non-square batch', () => {
  const dir = fixtureDir();
  let manifest: Manifest;
  let work: string;
  let x: Float32Array, shape: number[];

  before(async () => {
    await initBackend('native');
    assert.ok(existsSync(cli), `${cli} is missing; build with \`npx tsc -p .\` first`);
    manifest = ensureFixtures(dir);
    const input = read(join(dir, 'input.safetensors'), 'input');
    x = input.data;
    shape = input.shape;
    assert.deepEqual(shape, [2, 3, 160, 224]);
    work = mkdtempSync(join(tmpdir(), 'residual-embed-'));
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  for (const name of PARITY_MODELS) {
    const weights = () => join(dir, `${name}.safetensors`);
    const theirs = () => read(join(dir, `${name}_features.safetensors`), 'features');

    it(`${name}: eager forwardFeatures 'pool' and the compiled plan (f32, embed and embedSync) within 1e-4`, async () => {
      assert.ok(manifest.models[name], `the fixture set in ${dir} has no ${name}; delete the directory to regenerate it`);
      const want = theirs();
      assert.deepEqual(want.shape, [2, 2048]);
      const model = loadModel(name, weights());
      try {
        assertWithin(eagerFeatures(model, x, shape), want.data, TOL, `${name} eager`);
      } finally {
        model.dispose();
      }
      const fx = await loadFeatureExtractor({ model: name, weights: weights(), input: shape.slice(1), maxBatch: 2 });
      try {
        assert.equal(fx.engine, 'compiled');
        assert.equal(fx.dim, 2048);
        assertWithin(await fx.embed(x, 2), want.data, TOL, `${name} compiled embed`);
        assertWithin(fx.embedSync(x, 2), want.data, TOL, `${name} compiled embedSync`);
        // Batch 1 through the same extractor: a second program over the same buffers.
        assertWithin(fx.embedSync(x.subarray(0, x.length / 2), 1), want.data.subarray(0, 2048), TOL, `${name} batch 1`);
      } finally {
        fx.dispose();
      }
    });

    it(`${name}: bf16 plan within ${BF16_TOL} of the largest feature, cosine >= 0.999 per row (or refused with a reason)`, async (t) => {
      const want = theirs();
      const model = loadModel(name, weights());
      let plan;
      try {
        if (!bf16Supported(model, [3, 160, 224])) {
          t.skip('this CPU has no bf16');
          return;
        }
        plan = compileForInference(model, { input: [3, 160, 224], maxBatch: 2, dtype: 'bf16', output: 'pool' });
      } finally {
        model.dispose();
      }
      try {
        assert.deepEqual(plan.outputShape, [2048]);
        const got = plan.run(x, 2);
        let dev = 0;
        for (let i = 0; i < got.length; i++) dev = Math.max(dev, Math.abs(got[i]! - want.data[i]!));
        const cos = minCosine(got, want.data, 2048);
        t.diagnostic(`${name} bf16: max deviation ${(dev / manifest.models[name]!.max_abs_feature).toExponential(2)} of the largest feature, min cosine ${cos.toFixed(6)}`);
        assertWithin(got, want.data, BF16_TOL, `${name} bf16`);
        assert.ok(cos >= 0.999, `${name} bf16: cosine similarity ${cos}`);
      } finally {
        plan.dispose();
      }
    });

    it(`${name}: \`residual embed --input\` writes "features" within 1e-4, with its metadata`, () => {
      const out = join(work, `${name}.features.safetensors`);
      const r = runCli(['embed', '--model', name, '--weights', weights(), '--input', join(dir, 'input.safetensors'), '--out', out, '--batch', '1']);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /embed: 2\/2 \(100%\)/);
      const ours = read(out, 'features');
      assert.deepEqual(ours.shape, [2, 2048]);
      assertWithin(ours.data, theirs().data, TOL, `${name} residual embed`);
      assert.equal(ours.metadata?.model, name);
      assert.equal(ours.metadata?.output, 'pool');
      assert.equal(ours.metadata?.files, undefined, 'no file names for a preprocessed batch');
    });

    it(`${name}: \`residual export --output pool\` run by onnxruntime within 1e-4`, async () => {
      const file = join(work, `${name}.features.onnx`);
      const r = runCli(['export', '--model', name, '--weights', weights(), '--input', '3x160x224', '--output', 'pool', '--onnx', file]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /features \[batch, 2048\]/);
      const session = await ort.InferenceSession.create(file);
      try {
        assert.deepEqual(session.outputNames, ['features']);
        const y = (await session.run({ input: new ort.Tensor('float32', x, shape) })).features!;
        assert.deepEqual(y.dims, [2, 2048]);
        assertWithin(y.data as Float32Array, theirs().data, TOL, `${name} ONNX`);
      } finally {
        await session.release();
      }
    });
  }
});

describe('embeddings: the plan stops where asked', () => {
  before(async () => {
    await initBackend('native');
  });

  it("'stem', 'layer2', 'layer4' and 'pool' equal forwardFeatures (f32), at batch 3 and 1; no head op for 'pool'", () => {
    manualSeed(2);
    const model = createModel('resnet18');
    randomizeBatchNorm(model, 3);
    const input: [number, number, number] = [3, 72, 56];
    const per = input[0] * input[1] * input[2];
    const x = randomArray(3 * per, 4);
    try {
      for (const output of ['stem', 'layer2', 'layer4', 'pool'] as const) {
        const want = eagerFeatures(model, x, [3, ...input], output);
        const plan = compileForInference(model, { input, maxBatch: 3, output });
        try {
          assert.equal(plan.output, output);
          assert.equal(plan.outputShape.reduce((a, b) => a * b, 1) * 3, want.length, `${output}: output shape ${plan.outputShape}`);
          assertClose(plan.run(x, 3), want, TOL, `${output} batch 3`);
          assertClose(plan.run(x.subarray(0, per), 1), want.subarray(0, want.length / 3), TOL, `${output} batch 1`);
          assert.ok(!plan.implementations().some((e) => e.op === 'fc'), `${output}: the head ran`);
        } finally {
          plan.dispose();
        }
      }
      const pool = compileForInference(model, { input, output: 'pool' });
      assert.deepEqual(pool.outputShape, [512]);
      assert.equal(pool.numClasses, 1000, 'numClasses is still the model\'s');
      pool.dispose();
      const l2 = compileForInference(model, { input, output: 'layer2' });
      assert.deepEqual(l2.outputShape, [128, 9, 7]);
      l2.dispose();
      assert.throws(() => compileForInference(model, { input, output: 'layer5' as 'pool' }),
        /output must be one of 'stem', 'layer1', 'layer2', 'layer3', 'layer4', 'pool', 'logits' for resnet18, got "layer5"/);
    } finally {
      model.dispose();
    }
  });

  it('ResNet-20 (NHWC plan, option A) pool and layer3 equal forwardFeatures', () => {
    manualSeed(6);
    const model = createModel('resnet20');
    randomizeBatchNorm(model, 6);
    const input: [number, number, number] = [3, 32, 24];
    const x = randomArray(2 * 3 * 32 * 24, 7);
    try {
      for (const output of ['layer3', 'pool'] as const) {
        const plan = compileForInference(model, { input, maxBatch: 2, output });
        try {
          assertClose(plan.run(x, 2), eagerFeatures(model, x, [2, ...input], output), TOL, `resnet20 ${output}`);
        } finally {
          plan.dispose();
        }
      }
    } finally {
      model.dispose();
    }
  });

  it('a model whose fc is an Identity runs forward and compiles to the pooled features (f32 and bf16), and exports them', async (t) => {
    manualSeed(8);
    const model = createModel('resnext50_32x4d');
    randomizeBatchNorm(model, 8);
    const input: [number, number, number] = [3, 64, 48];
    const x = randomArray(2 * 3 * 64 * 48, 9);
    try {
      const pooled = eagerFeatures(model, x, [2, ...input]);
      model.registerModule('fc', new Identity());
      assert.ok(model.head instanceof Identity);
      assert.throws(() => model.fc, /fc is an Identity \(the model outputs its pooled features\), so there is no classifier to read; use model.head/);
      assert.equal(model.numClasses, 2048);
      model.eval();
      const forward = noGrad(() => tidy(() => model.forward(Tensor.fromArray(x, [2, ...input])).toArray()));
      assertClose(forward, pooled, 0, 'forward with an Identity fc');
      const plan = compileForInference(model, { input, maxBatch: 2 });
      try {
        assert.equal(plan.output, 'pool');
        assert.deepEqual(plan.outputShape, [2048]);
        assertClose(plan.run(x, 2), pooled, TOL, 'compiled, Identity fc');
        assertClose(await plan.runAsync(x, 2), pooled, TOL, 'compiled async, Identity fc');
      } finally {
        plan.dispose();
      }
      if (bf16Supported(model, input)) {
        const bf16 = compileForInference(model, { input, maxBatch: 2, dtype: 'bf16' });
        try {
          assertWithin(bf16.run(x, 2), pooled, BF16_TOL, 'bf16, Identity fc');
        } finally {
          bf16.dispose();
        }
      } else {
        t.diagnostic('bf16 not checked: this CPU has none');
      }
      const { bytes, info } = onnxBytes(model, { input });
      assert.equal(info.outputName, 'features');
      assert.deepEqual(info.outputShape, ['batch', 2048]);
      const session = await ort.InferenceSession.create(bytes);
      try {
        const y = (await session.run({ input: new ort.Tensor('float32', x, [2, ...input]) })).features!;
        assertWithin(y.data as Float32Array, pooled, TOL, 'ONNX, Identity fc');
      } finally {
        await session.release();
      }
      assert.throws(() => model.registerModule('fc', new ReLU()), /fc must be a Linear \(a classifier\) or an Identity \(pooled features\), got a ReLU/);
    } finally {
      model.dispose();
    }
  });
});

describe('embeddings: residual embed on images, loadFeatureExtractor', () => {
  let work: string;
  const files: string[] = [];

  before(async () => {
    await initBackend('native');
    work = mkdtempSync(join(tmpdir(), 'residual-embed-img-'));
    mkdirSync(join(work, 'imgs', 'b'), { recursive: true });
    // Not in sorted order on purpose: the command lists a folder as torchvision's ImageFolder does
    // (folders in sorted order, each folder's files sorted), subfolders included.
    const names = ['imgs/b/z.png', 'imgs/c.png', 'imgs/a.png', 'imgs/b/y.png', 'imgs/d.png'];
    for (const [i, n] of names.entries()) writeFileSync(join(work, n), await blockPng(70 + 13 * i, 50 + 7 * i, 30 + i));
    files.push(...['imgs/a.png', 'imgs/c.png', 'imgs/d.png', 'imgs/b/y.png', 'imgs/b/z.png'].map((n) => join(work, n)));
    writeFileSync(join(work, 'imgs', 'notes.txt'), 'not an image, and not listed');
    writeFileSync(join(work, 'fake.png'), 'not an image at all');
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  it('preprocess is the classifier\'s, bit for bit; embedImages equals embed of those samples; batches above maxBatch split', async () => {
    const fx = await loadFeatureExtractor({ model: 'resnet18', input: [3, 64, 64], maxBatch: 2 });
    const cls = await loadClassifier({ model: 'resnet18', input: [3, 64, 64], maxBatch: 2 });
    try {
      assert.deepEqual(fx.input, [3, 64, 64]);
      assert.equal(fx.dim, 512);
      const xs = await Promise.all(files.map((f) => fx.preprocess(f)));
      for (const [i, f] of files.entries()) assert.deepEqual(xs[i], await cls.preprocess(readFileSync(f)), `${f}: preprocessing differs`);
      const batch = new Float32Array(xs.length * 3 * 64 * 64);
      xs.forEach((x, i) => batch.set(x, i * 3 * 64 * 64));
      const viaImages = await fx.embedImages(files);
      assert.equal(viaImages.length, files.length * 512);
      assertClose(viaImages, fx.embedSync(batch, files.length), 0, 'embedImages vs embedSync (5 samples at maxBatch 2)');
      await assert.rejects(fx.embed(batch, 4), /the batch has 61440 values, but 4 x \[3, 64, 64\] needs 49152/);
      await assert.rejects(fx.preprocess(join(work, 'fake.png')), /fake\.png is not a decodable image/);
    } finally {
      fx.dispose();
      cls.dispose();
    }
    assert.throws(() => fx.embedSync(new Float32Array(3 * 64 * 64), 1), /embedSync\(\) after dispose\(\)/);
  });

  it('dispose() while an embed runs lets it finish, then frees the plan', async () => {
    const fx = await loadFeatureExtractor({ model: 'resnet18', input: [3, 64, 64], maxBatch: 2 });
    const x = randomArray(2 * 3 * 64 * 64, 12);
    const want = fx.embedSync(x, 2);
    const pending = fx.embed(x, 2);
    fx.dispose();
    assertClose(await pending, want, 0, 'the embed in flight');
    await assert.rejects(fx.embed(x, 2), /embed\(\) after dispose\(\)/);
  });

  it('`residual embed DIR` lists images recursively in ImageFolder order, "files" in the metadata', () => {
    const out = join(work, 'dir.features.safetensors');
    const r = runCli(['embed', '--model', 'resnet18', '--size', '3x64x64', '--batch', '2', '--out', out, join(work, 'imgs')]);
    assert.equal(r.status, 0, r.stderr);
    const ours = read(out, 'features');
    assert.deepEqual(ours.shape, [5, 512]);
    assert.deepEqual(JSON.parse(ours.metadata!.files!), files);
    assert.equal(ours.metadata!.input, '3x64x64');
    assert.equal(ours.metadata!.output, 'pool');
    // The values are checked in the next test, against the same weights (these are random).
    assert.ok(ours.data.some((v) => v > 0));
  });

  it('`residual embed` with weights: image rows equal loadFeatureExtractor.embedImages of the same files', async () => {
    manualSeed(21);
    const model = createModel('resnet18');
    randomizeBatchNorm(model, 21);
    const weights = join(work, 'r18.safetensors');
    const sd = model.stateDict();
    writeSafetensors(weights, Object.fromEntries([...sd].map(([k, v]) => [k, { dtype: v.dtype, shape: v.shape, data: v.data }])));
    model.dispose();
    const out = join(work, 'w.features.safetensors');
    const r = runCli(['embed', '--model', 'resnet18', '--weights', weights, '--size', '3x64x64', '--batch', '2', '--out', out, join(work, 'imgs', 'c.png'), join(work, 'imgs', 'b')]);
    assert.equal(r.status, 0, r.stderr);
    const ours = read(out, 'features');
    const listed = [join(work, 'imgs', 'c.png'), join(work, 'imgs', 'b', 'y.png'), join(work, 'imgs', 'b', 'z.png')];
    assert.deepEqual(JSON.parse(ours.metadata!.files!), listed);
    const fx = await loadFeatureExtractor({ model: 'resnet18', weights, input: [3, 64, 64], maxBatch: 3 });
    try {
      assertClose(ours.data, await fx.embedImages(listed), TOL, 'residual embed vs embedImages');
    } finally {
      fx.dispose();
    }
  });

  it('weights with a model card: its model and preprocessing, as loadClassifier takes them; `residual embed` without --model', async () => {
    manualSeed(23);
    const model = createModel('resnet18', { numClasses: 3 });
    randomizeBatchNorm(model, 23);
    const card = { model: 'resnet18', classes: ['cat', 'dog', 'fox'], input: [3, 48, 40] as [number, number, number], mean: [0.3, 0.4, 0.5], std: [0.2, 0.25, 0.3], resize: 56 };
    const weights = join(work, 'carded.safetensors');
    writeSafetensors(weights, Object.fromEntries([...model.stateDict()].map(([k, v]) => [k, { dtype: v.dtype, shape: v.shape, data: v.data }])), cardMetadata(card));
    model.dispose();
    const fx = await loadFeatureExtractor({ weights, maxBatch: 4 });
    const cls = await loadClassifier({ weights });
    try {
      assert.equal(fx.model, 'resnet18');
      assert.deepEqual(fx.input, [3, 48, 40]);
      for (const f of files.slice(0, 2)) assert.deepEqual(await fx.preprocess(f), await cls.preprocess(f), `${f}: preprocessing differs from the classifier's`);
      const out = join(work, 'carded.features.safetensors');
      const r = runCli(['embed', '--weights', weights, '--out', out, ...files.slice(0, 3)]);
      assert.equal(r.status, 0, r.stderr);
      const ours = read(out, 'features');
      assert.equal(ours.metadata!.model, 'resnet18');
      assert.equal(ours.metadata!.input, '3x48x40');
      assertClose(ours.data, await fx.embedImages(files.slice(0, 3)), TOL, 'residual embed (card) vs embedImages');
    } finally {
      fx.dispose();
      cls.dispose();
    }
  });

  it('bad input: exit 1, a message naming it, no output file', () => {
    const out = join(work, 'bad.features.safetensors');
    const good = join(work, 'x.safetensors');
    writeSafetensors(good, { input: { dtype: 'F32', shape: [2, 3, 32, 32], data: randomArray(2 * 3 * 32 * 32, 1) } });
    const cases: [string[], RegExp][] = [
      [[join(work, 'fake.png')], /fake\.png is not a decodable image/],
      [[join(work, 'missing.png')], /missing\.png: no such file or folder/],
      [[join(work, 'imgs', 'b', 'y.png'), join(work, 'fake.png')], /fake\.png is not a decodable image/],
    ];
    const inputs: [string, Record<string, { dtype: 'F32' | 'I64'; shape: number[]; data: Float32Array }>, RegExp][] = [
      ['nokey', { pixels: { dtype: 'F32', shape: [1, 3, 8, 8], data: new Float32Array(192) } }, /nokey\.safetensors has no tensor "input" \(it has pixels\)/],
      ['flat', { input: { dtype: 'F32', shape: [3, 32, 32], data: new Float32Array(3072) } }, /"input" in .*flat\.safetensors must be a float \[N, C, H, W\] tensor, got F32 \[3, 32, 32\]/],
      ['ints', { input: { dtype: 'I64', shape: [1, 3, 8, 8], data: new Float32Array(192) } }, /"input" in .*ints\.safetensors must be a float \[N, C, H, W\] tensor, got I64 \[1, 3, 8, 8\]/],
      ['empty', { input: { dtype: 'F32', shape: [0, 3, 8, 8], data: new Float32Array(0) } }, /"input" in .*empty\.safetensors is empty \(\[0, 3, 8, 8\]\)/],
    ];
    for (const [name, tensors] of inputs) writeSafetensors(join(work, `${name}.safetensors`), tensors);
    for (const [name, , pattern] of inputs) cases.push([['--input', join(work, `${name}.safetensors`)], pattern]);
    for (const [args, pattern] of cases) {
      const r = runCli(['embed', '--model', 'resnet18', '--out', out, ...args]);
      assert.equal(r.status, 1, `${args.join(' ')}: exit ${r.status}\n${r.stderr}`);
      assert.match(r.stderr, pattern);
      assert.ok(!existsSync(out), `${args.join(' ')}: wrote ${out}`);
    }
    // Channels the weights do not take.
    manualSeed(1);
    const gray = createModel('resnet18', { inChannels: 1 });
    const weights = join(work, 'gray.safetensors');
    writeSafetensors(weights, Object.fromEntries([...gray.stateDict()].map(([k, v]) => [k, { dtype: v.dtype, shape: v.shape, data: v.data }])));
    gray.dispose();
    const r = runCli(['embed', '--model', 'resnet18', '--weights', weights, '--input', good, '--out', out]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /"input" in .*x\.safetensors has 3 channels \(\[2, 3, 32, 32\]\), but the weights .*gray\.safetensors take 1-channel input/);
    assert.ok(!existsSync(out));
    const both = runCli(['embed', '--model', 'resnet18', '--input', good, join(work, 'fake.png'), '--out', out]);
    assert.equal(both.status, 2);
    assert.match(both.stderr, /give either --input X\.safetensors or images .*not both/);
  });
});
