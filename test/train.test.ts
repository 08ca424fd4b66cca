// The trainer end to end on real Fashion-MNIST (a subset): the loss falls and accuracy is far above
// chance; a resumed run reproduces the uninterrupted one; a kill -9 during a save leaves the previous
// checkpoint loadable.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { initBackend } from '../src/backend/index.js';
import { DataLoader, FASHION_MNIST_MEAN, FASHION_MNIST_STD, Subset, fashionMnist } from '../src/data/index.js';
import { BatchNorm2d, Conv2d, Flatten, AdaptiveAvgPool2d, Linear, ReLU, Sequential, manualSeed } from '../src/nn/index.js';
import { listCheckpoints, loadCheckpoint } from '../src/train/checkpoint.js';
import { addBatch, emptyTally } from '../src/train/metrics.js';
import { train } from '../src/train/trainer.js';
import { repoRoot } from './helpers.js';

await initBackend(process.env.RESIDUAL_TEST_REFERENCE_ONLY ? 'reference' : 'native');
const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'residual-train-'));
  dirs.push(d);
  return d;
}

function tinyNet() {
  manualSeed(3);
  return new Sequential(
    new Conv2d(1, 16, 3, { stride: 2, padding: 1, bias: false }), new BatchNorm2d(16), new ReLU(),
    new Conv2d(16, 32, 3, { stride: 2, padding: 1, bias: false }), new BatchNorm2d(32), new ReLU(),
    new AdaptiveAvgPool2d(1), new Flatten(), new Linear(32, 10),
  );
}

const trainSet = new Subset(fashionMnist('train'), Array.from({ length: 4096 }, (_, i) => i));
const testSet = new Subset(fashionMnist('test'), Array.from({ length: 1024 }, (_, i) => i));
const normalize = { type: 'normalize', mean: FASHION_MNIST_MEAN, std: FASHION_MNIST_STD } as const;
const loaders = () => ({
  train: new DataLoader(trainSet, { batchSize: 64, shuffle: true, seed: 11, transforms: [{ type: 'randomCrop', size: 28, padding: 2 }, normalize] }),
  test: new DataLoader(testSet, { batchSize: 256, transforms: [normalize] }),
});
const recipe = { epochs: 3, lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 5e-4, schedule: { kind: 'onecycle', pctStart: 0.2 } } as const;

describe('trainer', () => {
  it('trains a small net: the loss falls and accuracy is far above chance', async () => {
    const { train: tl, test } = loaders();
    const { history } = await train(tinyNet(), tl, test, recipe);
    assert.equal(history.length, 3);
    assert.ok(history[2].train_loss < history[0].train_loss * 0.85, `loss fell: ${history.map((h) => h.train_loss.toFixed(3))}`);
    assert.ok(history[2].test_acc! > 0.6, `test accuracy ${history[2].test_acc} > 0.6 (chance is 0.1)`);
    // Where each epoch's time went: every phase measured, none negative, together within the epoch.
    for (const h of history) {
      const p = h.phase_s;
      assert.ok(p.forward > 0 && p.backward > 0 && p.optimizer > 0 && p.data >= 0, JSON.stringify(p));
      assert.ok(p.data + p.forward + p.backward + p.optimizer <= h.epoch_s + 0.01, `phases ${JSON.stringify(p)} within epoch_s ${h.epoch_s}`);
    }
  });

  it('resuming after epoch 1 reproduces the uninterrupted run exactly', async () => {
    const whole = await train(tinyNet(), loaders().train, loaders().test, { ...recipe, outDir: tempDir() });
    const dir = tempDir();
    const first = await train(tinyNet(), loaders().train, loaders().test, { ...recipe, outDir: dir, stopAfterEpochs: 1 });
    assert.equal(first.stopped, 'stopAfterEpochs');
    // A fresh model with other initial weights: everything must come from the checkpoint.
    manualSeed(99);
    const resumed = await train(tinyNet(), loaders().train, loaders().test, { ...recipe, outDir: dir, resume: true });
    assert.equal(resumed.history.length, 3);
    for (const k of ['train_loss', 'train_acc', 'test_loss', 'test_acc', 'lr'] as const) {
      assert.equal(resumed.history[1][k], whole.history[1][k], `epoch 2 ${k}`);
      assert.equal(resumed.history[2][k], whole.history[2][k], `epoch 3 ${k}`);
    }
  });

  it('kill -9 during checkpoint writes leaves the previous checkpoint loadable', async () => {
    const dir = tempDir();
    // A child saving checkpoints of a 2M-parameter state in a loop; killed at a moment it is writing.
    const script = `
      import { saveCheckpoint } from ${JSON.stringify(join(repoRoot, 'dist/src/train/checkpoint.js'))};
      const big = { shape: [2000000], dtype: 'F32', data: new Float32Array(2000000) };
      for (let e = 1; ; e++) {
        big.data.fill(e);
        saveCheckpoint(${JSON.stringify(dir)}, { epoch: e, batch: 0, iteration: e }, new Map([['w', big]]), new Map([['m', big]]));
        if (e === 2) process.stdout.write('saved\\n');
      }`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    await new Promise((r) => setTimeout(r, 150));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    assert.ok(listCheckpoints(dir).length >= 1);
    const ck = loadCheckpoint(dir);
    const w = ck.model.get('w')!;
    assert.equal(w.data.length, 2000000);
    assert.ok(w.data.every((v) => v === ck.state.epoch), 'weights belong to the epoch the state names');
    assert.ok(!existsSync(join(ck.dir, '..', 'epoch-0000')));
  });
});

describe('training fails loudly and runs do not collide', () => {
  const cli = join(repoRoot, 'dist', 'src', 'cli', 'main.js');
  const residual = (args: string[], env: NodeJS.ProcessEnv = {}) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });

  it('a row of NaN or infinite logits never counts as correct', () => {
    const t = emptyTally();
    addBatch(t, new Float32Array([NaN, NaN, NaN, 1, Infinity, 0, 0, 2, 1]), new Int32Array([0, 1, 1]), 3, 0);
    assert.equal(t.top1, 1, 'only the finite row whose label scores highest');
    assert.equal(t.samples, 3);
  });

  it('absurd options are refused before any work: a batch above the data or the memory budget, momentum outside [0, 1)', () => {
    const big = residual(['train', '--model', 'resnet20', '--subset', '256', '--batch', '1000000000']);
    assert.equal(big.status, 1);
    assert.match(big.stderr, /batch 1000000000 is larger than the 256 training samples/);
    const mem = residual(['train', '--model', 'resnet20', '--subset', '256', '--batch', '256'], { RESIDUAL_MAX_TRAIN_BYTES: String(64 * 2 ** 20) });
    assert.equal(mem.status, 1);
    assert.match(mem.stderr, /batch 256 of resnet20 at 1x28x28 needs about .* GiB for activations, over the budget .* a batch of at most \d+ fits/);
    const momentum = residual(['train', '--model', 'resnet20', '--subset', '256', '--momentum', '2']);
    assert.equal(momentum.status, 1);
    assert.match(momentum.stderr, /momentum must be in \[0, 1\), got 2/);
    const lr = residual(['train', '--model', 'resnet20', '--subset', '256', '--batch', '64', '--lr', '1e308', '--threads', '1', '--out', join(tempDir(), 'r')]);
    assert.equal(lr.status, 1);
    assert.match(lr.stderr, /learning rate at iteration 1 comes out as -?Infinity .*give a smaller --lr|the loss is .* diverged/);
    const bench = residual(['bench', '--model', 'resnet50', '--batch', '1000000000']);
    assert.equal(bench.status, 1);
    assert.match(bench.stderr, /bench: batch 1000000000 of resnet50 at 3x224x224 needs about .* a batch of at most \d+ fits/);
  });

  it('a second run on the same --out is refused with the pid of the first; a stale lock is taken over', async () => {
    const dir = tempDir();
    // A live process that is not us holds the lock (our parent, the test runner's process).
    writeFileSync(join(dir, '.lock'), JSON.stringify({ pid: process.ppid, host: hostname(), started: 'earlier' }));
    const r = residual(['train', '--model', 'resnet20', '--subset', '128', '--batch', '64', '--out', dir]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, new RegExp(`in use by another training run \\(pid ${process.ppid}, started earlier\\)`));
    assert.ok(!existsSync(join(dir, 'metrics.jsonl')), 'nothing written');
    // A lock left by a process that is gone (kill -9) does not block the next run, which releases its own.
    writeFileSync(join(dir, '.lock'), JSON.stringify({ pid: 2 ** 22 + 12345, host: hostname(), started: 'long ago' }));
    const { history } = await train(tinyNet(), loaders().train, null, { ...recipe, epochs: 1, outDir: dir });
    assert.equal(history.length, 1);
    assert.ok(!existsSync(join(dir, '.lock')), 'the lock is released at the end');
  });

  it('resume leaves metrics.jsonl with each epoch once (a line repeated by an older kill is dropped)', async () => {
    const dir = tempDir();
    await train(tinyNet(), loaders().train, null, { ...recipe, outDir: dir, stopAfterEpochs: 1 });
    const path = join(dir, 'metrics.jsonl');
    appendFileSync(path, readFileSync(path, 'utf8')); // epoch 1 logged twice, as a kill between log and checkpoint left it
    await train(tinyNet(), loaders().train, null, { ...recipe, outDir: dir, resume: true });
    const epochs = readFileSync(path, 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { epoch: number }).epoch);
    assert.deepEqual(epochs, [1, 2, 3]);
  });
});
