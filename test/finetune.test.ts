// Fine-tuning, the road most users take: pretrained weights in, a new head for their classes, a
// frozen trunk that neither learns nor moves its BatchNorm statistics, and a model that comes back
// knowing its class names. The "pretrained" weights are a torchvision-format .pth written by
// PyTorch (scripts/fixtures/finetune_pretrained.py): random convolutions whose BatchNorm statistics
// were measured on the images, as close to ImageNet weights as a machine without network gets.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { initBackend } from '../src/backend/index.js';
import { loadClassifier } from '../src/infer/classifier.js';
import { SafetensorsFile, saveStateDictFile, writeSafetensors } from '../src/io/index.js';
import { CARD_KEY, createModel, loadModel, loadPretrained } from '../src/models/index.js';
import { BatchNorm2d, Conv2d } from '../src/nn/index.js';
import { startServer } from '../src/serve/index.js';
import { Tensor, crossEntropy, tidy } from '../src/tensor/index.js';
import { SGD, scaleGroups } from '../src/train/sgd.js';
import { repoRoot } from './helpers.js';
import { SHAPE_CLASSES, writeShapesFolder } from './images.js';

const cli = join(repoRoot, 'dist', 'src', 'cli', 'main.js');
const dir = mkdtempSync(join(tmpdir(), 'residual-finetune-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function residual(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, RESIDUAL_BACKEND: 'native' } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function randomInput(shape: number[], seed: number): Tensor {
  let s = seed;
  const data = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1);
  return Tensor.fromArray(data, shape);
}

describe('freezing layers', () => {
  before(async () => { await initBackend(); });

  it("freeze('trunk'): only fc learns; the trunk's weights and BatchNorm statistics stay put through a training step", () => {
    const model = createModel('resnet20', { inChannels: 1, numClasses: 10 });
    model.freeze('trunk');
    model.train();
    assert.equal(model.frozenLayers, 'trunk');
    assert.deepEqual(model.namedParameters().filter(([, p]) => p.requiresGrad).map(([k]) => k), ['fc.weight', 'fc.bias']);
    const bns = model.namedModules().filter(([, m]) => m instanceof BatchNorm2d);
    assert.ok(bns.length > 10 && bns.every(([, m]) => !m.training), 'every BatchNorm of the frozen trunk stays in eval mode after train()');
    assert.ok(model.fc.training, 'the head trains');
    const before = model.stateDict();
    const opt = new SGD(model.parameters(), { lr: 0.1, momentum: 0.9 });
    tidy(() => crossEntropy(model.forward(randomInput([8, 1, 28, 28], 1)), [0, 1, 2, 3, 4, 5, 6, 7]).backward());
    assert.equal((model.conv1 as Conv2d).weight.grad, null, 'a frozen conv gets no gradient');
    opt.step();
    const after = model.stateDict();
    for (const [k, v] of before) {
      const same = v.data.every((x, i) => x === after.get(k)!.data[i]);
      assert.equal(same, !k.startsWith('fc.'), `${k} ${k.startsWith('fc.') ? 'changed' : 'unchanged'}`);
    }
    opt.dispose();
    model.dispose();
  });

  it("freeze('stages:1'): the stem and layer1 are frozen, layer2 onwards learns; unfreeze() undoes it", () => {
    const model = createModel('resnet20', { inChannels: 1, numClasses: 10 });
    model.freeze('stages:1').train();
    assert.equal(model.frozenLayers, 'stages:1');
    tidy(() => crossEntropy(model.forward(randomInput([4, 1, 28, 28], 2)), [0, 1, 2, 3]).backward());
    const grads = new Map(model.namedParameters().map(([k, p]) => [k, p.grad !== null]));
    assert.equal(grads.get('conv1.weight'), false);
    assert.equal(grads.get('layer1.0.conv1.weight'), false);
    assert.equal(grads.get('layer2.0.conv1.weight'), true);
    assert.equal(grads.get('fc.weight'), true);
    model.zeroGrad();
    model.unfreeze();
    assert.equal(model.frozenLayers, 'none');
    assert.ok(model.parameters().every((p) => p.requiresGrad));
    assert.ok(model.namedModules().every(([, m]) => m.training));
    assert.throws(() => model.freeze('stages:4' as 'trunk'), /only 3 stages/);
    model.dispose();
  });

  it('a frozen trunk in train mode computes what the eval-mode model computes', () => {
    const model = createModel('resnet20', { inChannels: 1, numClasses: 10 });
    // Non-trivial running statistics, so eval-mode BatchNorm differs from batch statistics.
    tidy(() => { for (let i = 0; i < 3; i++) model.forward(randomInput([16, 1, 28, 28], 10 + i)); });
    const x = randomInput([4, 1, 28, 28], 3);
    model.eval();
    const reference = tidy(() => model.forward(x).toArray());
    model.freeze('trunk').train();
    const frozen = tidy(() => model.forward(x).toArray());
    assert.deepEqual([...frozen], [...reference]);
    x.dispose();
    model.dispose();
  });

  it('scaleGroups: the head steps at lr x scale, the rest at lr', () => {
    const model = createModel('resnet20', { inChannels: 1, numClasses: 10 });
    const groups = scaleGroups(model, [{ params: model.parameters() }], ['fc'], 10);
    const opt = new SGD(groups, { lr: 0.01 });
    tidy(() => crossEntropy(model.forward(randomInput([4, 1, 28, 28], 4)), [0, 1, 2, 3]).backward());
    const before = new Map(model.namedParameters().map(([k, p]) => [k, { w: p.toArray(), g: p.grad!.toArray() }]));
    opt.step();
    for (const [k, p] of model.namedParameters().filter(([k]) => k === 'fc.weight' || k === 'conv1.weight')) {
      const { w, g } = before.get(k)!;
      const lr = k.startsWith('fc.') ? 0.1 : 0.01;
      const now = p.toArray();
      for (let i = 0; i < 5; i++) assert.ok(Math.abs(now[i]! - (w[i]! - lr * g[i]!)) <= 1e-6 * Math.max(1, Math.abs(w[i]!)), `${k}[${i}] stepped at lr ${lr}`);
    }
    opt.dispose();
    model.dispose();
  });
});

describe('loading weights for another task', () => {
  before(async () => { await initBackend(); });

  it('loadModel refuses a head of another size with a hint, and resetHead keeps the trunk and starts a new head', () => {
    const source = createModel('resnet20', { inChannels: 1, numClasses: 10 });
    const file = join(dir, 'r20.safetensors');
    saveStateDictFile(file, source.stateDict());
    assert.throws(() => loadModel('resnet20', file, { numClasses: 3 }), /classify 10 classes, but 3 were asked for.*resetHead: true/);
    const notes: string[] = [];
    const model = loadModel('resnet20', file, { numClasses: 3, resetHead: true }, (m) => notes.push(m));
    assert.deepEqual(model.fc.weight.shape, [3, 64]);
    assert.deepEqual([...model.getModule('layer3')!.stateDict().get('2.conv2.weight')!.data],
      [...source.getModule('layer3')!.stateDict().get('2.conv2.weight')!.data]);
    assert.match(notes.join('\n'), /fc \(10 classes in the weights\) was replaced by a new one with 3 outputs/);
    model.dispose();
    source.dispose();
  });

  it('weights of another model: a short summary that names the model they look like', () => {
    const r50 = createModel('resnet50', {}, { initWeights: false });
    const file = join(dir, 'r50.safetensors');
    saveStateDictFile(file, r50.stateDict());
    r50.dispose();
    let message = '';
    try {
      loadModel('resnet18', file).dispose();
    } catch (e) {
      message = (e as Error).message;
    }
    assert.match(message, /does not fit resnet18/);
    assert.match(message, /look like resnet50/);
    assert.ok(message.length < 800, `the message is a summary, not a key dump (${message.length} characters)`);
    // The commands that load weights themselves say it the same way.
    const x = join(dir, 'x.safetensors');
    writeSafetensors(x, { input: { dtype: 'F32', shape: [1, 3, 32, 32], data: new Float32Array(3 * 32 * 32) } });
    for (const args of [['infer', '--input', x, '--output', join(dir, 'y.safetensors')], ['export', '--safetensors', join(dir, 'z.safetensors')]]) {
      const r = residual(args[0]!, '--model', 'resnet18', '--weights', file, ...args.slice(1));
      assert.equal(r.code, 1, `${args[0]}: ${r.stderr}`);
      assert.match(r.stderr, /does not fit resnet18: .*look like resnet50/);
      assert.ok(r.stderr.length < 800, `${args[0]}: a summary, not a key dump (${r.stderr.length} characters)`);
    }
  });
});

describe('pretrained weights by name in the library', () => {
  before(async () => { await initBackend(); });

  it("loadPretrained and loadClassifier take 'torchvision:resnet18': the cached file, ImageNet's classes, torchvision's eval transform", async () => {
    // No network here: put a resnet18 checkpoint where a verified download would have left it, with
    // the marker such a download writes (the cache trusts it while the file's size and mtime hold).
    const home = join(dir, 'home');
    const folder = join(home, 'weights', 'torchvision');
    mkdirSync(folder, { recursive: true });
    const file = join(folder, 'resnet18-f37072fd.pth');
    const source = createModel('resnet18');
    saveStateDictFile(file, source.stateDict());
    const st = statSync(file);
    writeFileSync(join(folder, '.resnet18-f37072fd.pth.sha256'), JSON.stringify({ sha256: 'f37072fd' + '0'.repeat(56), size: st.size, mtimeMs: st.mtimeMs }));
    const model = await loadPretrained('torchvision:resnet18', { numClasses: 5, resetHead: true, download: { home } });
    assert.equal(model.spec.name, 'resnet18');
    assert.equal(model.numClasses, 5);
    assert.deepEqual([...(model.conv1 as Conv2d).weight.toArray()], [...(source.conv1 as Conv2d).weight.toArray()]);
    model.dispose();
    const classifier = await loadClassifier({ weights: 'torchvision:resnet18', download: { home } });
    assert.equal(classifier.model, 'resnet18');
    assert.equal(classifier.labels.length, 1000);
    assert.equal(classifier.labels[0], 'tench');
    assert.deepEqual(classifier.input, [3, 224, 224]);
    // Its logits equal the eager model's on the preprocessed image (same weights, same preprocessing path).
    const x = await classifier.preprocess(await sharpPng());
    source.eval();
    const eager = tidy(() => source.forward(Tensor.fromArray(x, [1, 3, 224, 224])).toArray());
    const best = eager.indexOf(Math.max(...eager));
    assert.equal(classifier.predictSync(x, 1, 1)[0]![0]!.class, best);
    classifier.dispose();
    source.dispose();
    await assert.rejects(loadPretrained('torchvision:resnet18', { model: 'resnet34', download: { home } }), /--model resnet34 does not fit/);
    assert.throws(() => loadModel('resnet18', 'torchvision:resnet18'), /use await loadPretrained\('torchvision:resnet18'\)/);
  });
});

async function sharpPng(): Promise<Buffer> {
  const { blockPng } = await import('./images.js');
  return blockPng(300, 260, 5);
}

describe('fine-tuning an image folder from the command line', () => {
  const data = join(dir, 'shapes');
  const weights = join(dir, 'resnet18-pretrained.pth');
  const run = join(dir, 'run');

  before(async () => {
    await writeShapesFolder(data, { train: 24, val: 8 });
    const py = spawnSync('/usr/bin/python3', [join(repoRoot, 'scripts', 'fixtures', 'finetune_pretrained.py'), join(data, 'train'), weights, '64'], { encoding: 'utf8' });
    assert.equal(py.status, 0, `the PyTorch fixture script failed: ${py.stderr}`);
  });

  it('train --weights --num-classes 3 --freeze trunk learns the folder well above chance, with the fine-tuning recipe', () => {
    const r = residual('train', '--model', 'resnet18', '--weights', weights, '--num-classes', '3', '--data', `folder:${data}`,
      '--freeze', 'trunk', '--image-size', '64', '--json', '--out', run, '--threads', '2');
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const start = lines.find((l) => l.event === 'start') as { recipe: string; trainable_params: number; settings: Record<string, unknown>; defaults: string[] };
    assert.equal(start.recipe, 'fine-tuning');
    assert.equal(start.trainable_params, 512 * 3 + 3, 'only the new head trains');
    assert.equal(start.settings.lr, 0.005);
    assert.equal(start.settings.schedule, 'cosine');
    assert.ok(start.defaults.includes('lr') && !start.defaults.includes('freeze'));
    assert.ok(lines.some((l) => l.event === 'note' && /replaced by a new one with 3 outputs/.test(String(l.note))));
    const end = lines.find((l) => l.event === 'end') as { test_acc: number };
    assert.ok(end.test_acc >= 0.6, `test accuracy ${end.test_acc} (chance: 0.33)`);
  });

  it("the run's weights carry a model card: class names, input, mean/std, eval resize", () => {
    const file = join(run, 'checkpoints', 'epoch-0005', 'model.safetensors');
    assert.ok(existsSync(file));
    const f = SafetensorsFile.open(file);
    const card = JSON.parse(f.metadata![CARD_KEY]!) as Record<string, unknown>;
    f.close();
    assert.deepEqual(card.classes, [...SHAPE_CLASSES]);
    assert.deepEqual(card.input, [3, 64, 64]);
    assert.equal(card.resize, 73);
    assert.equal(card.model, 'resnet18');
    assert.equal(card.finetunedFrom, weights);
    assert.deepEqual((JSON.parse(readFileSync(join(run, 'checkpoints', 'epoch-0005', 'state.json'), 'utf8')) as { card: unknown }).card, card);
  });

  it('predict on the run prints the class names without --model; a bad image among good ones is reported and exits 1', () => {
    const good = SHAPE_CLASSES.map((c) => join(data, 'val', c, '0.png'));
    const r = residual('predict', '--weights', run, '--json', ...good);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { image: string; top: { label: string }[] }[];
    assert.equal(out.length, 3);
    for (const o of out) {
      assert.equal(o.top.length, 3, 'the default top is clamped to the 3 classes');
      assert.deepEqual(o.top.map((t) => t.label).sort(), [...SHAPE_CLASSES].sort());
    }
    const mixed = residual('predict', '--weights', run, good[0]!, join(dir, 'missing.png'), good[1]!);
    assert.equal(mixed.code, 1);
    assert.match(mixed.stderr, /missing\.png/);
    assert.match(mixed.stderr, /1 of 3 images could not be classified/);
    assert.equal((mixed.stdout.match(/^\s+\d+\.\d+%\s+(circle|square|stripes) \(\d\)$/gm) ?? []).length, 6, 'both good images still get their top 3');
  });

  it('eval on the run needs neither --model nor --data, and agrees with the last epoch', () => {
    const r = residual('eval', '--weights', run, '--json');
    assert.equal(r.code, 0, r.stderr);
    const metrics = readFileSync(join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { test_acc: number });
    assert.equal((JSON.parse(r.stdout) as { acc: number }).acc, metrics.at(-1)!.test_acc);
  });

  it('export keeps the model card: the exported safetensors alone predicts by class name; the ONNX file carries it too', () => {
    const out = join(dir, 'pets.safetensors');
    const onnx = join(dir, 'pets.onnx');
    const r = residual('export', '--weights', run, '--safetensors', out, '--onnx', onnx, '--input', '3x64x64');
    assert.equal(r.code, 0, r.stderr);
    const f = SafetensorsFile.open(out);
    const card = JSON.parse(f.metadata![CARD_KEY]!) as { classes: string[] };
    f.close();
    assert.deepEqual(card.classes, [...SHAPE_CLASSES]);
    assert.ok(readFileSync(onnx).includes(Buffer.from(CARD_KEY)), 'the ONNX metadata_props hold the card');
    const p = residual('predict', '--weights', out, '--json', join(data, 'val', 'circle', '0.png'));
    assert.equal(p.code, 0, p.stderr);
    const top = (JSON.parse(p.stdout) as { top: { label: string }[] }[])[0]!.top;
    assert.deepEqual(top.map((t) => t.label).sort(), [...SHAPE_CLASSES].sort());
  });

  it('loadClassifier and serve: the run answers with its class names, a plain POST gets its 3 classes', async () => {
    const classifier = await loadClassifier({ weights: run });
    assert.equal(classifier.model, 'resnet18');
    assert.deepEqual(classifier.labels, [...SHAPE_CLASSES]);
    assert.deepEqual(classifier.input, [3, 64, 64]);
    assert.equal(classifier.top, 3);
    const server = await startServer(classifier, { port: 0, maxBatch: 2 });
    try {
      const res = await fetch(new URL("/predict", server.url), { method: 'POST', body: readFileSync(join(data, 'val', 'square', '1.png')) });
      assert.equal(res.status, 200, await res.clone().text());
      const body = (await res.json()) as { top: { label: string }[] };
      assert.equal(body.top.length, 3);
    } finally {
      await server.close();
      classifier.dispose();
    }
  });

  it('train refuses what cannot work: --freeze without weights, a class count the data does not have', () => {
    const a = residual('train', '--model', 'resnet20', '--freeze', 'trunk', '--subset', '64');
    assert.equal(a.code, 1);
    assert.match(a.stderr, /needs pretrained weights/);
    const b = residual('train', '--weights', weights, '--model', 'resnet18', '--data', `folder:${data}`, '--num-classes', '5', '--image-size', '64');
    assert.equal(b.code, 1);
    assert.match(b.stderr, /5 classes asked for, but folder:.* has 3 \(circle, square, stripes\)/);
    const c = residual('train');
    assert.equal(c.code, 1);
    assert.match(c.stderr, /usage: residual train/);
  });

  it('a loss that diverges stops the run with the epoch, the step and a hint, exit 1', () => {
    const r = residual('train', '--model', 'resnet20', '--subset', '512', '--batch', '64', '--lr', '1e30', '--out', join(dir, 'diverged'));
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /the loss is (NaN|Infinity|-Infinity) at epoch 1, step \d+.*diverged.*--lr/);
  });
});
