// The trainer end to end on real Fashion-MNIST (a subset): the loss falls and accuracy is far above
// chance; a resumed run reproduces the uninterrupted one; a kill -9 during a save leaves the previous
// checkpoint loadable.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { initBackend } from '../src/backend/index.js';
import { DataLoader, FASHION_MNIST_MEAN, FASHION_MNIST_STD, Subset, fashionMnist } from '../src/data/index.js';
import { BatchNorm2d, Conv2d, Flatten, AdaptiveAvgPool2d, Linear, ReLU, Sequential, manualSeed } from '../src/nn/index.js';
import { listCheckpoints, loadCheckpoint } from '../src/train/checkpoint.js';
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
