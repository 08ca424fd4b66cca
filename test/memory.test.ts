// 2,000 training steps leave memory flat: native tensors are all freed (live count back to the
// model's), and resident memory does not grow with the step count. Runs in a child process so the
// measurement sees only this loop (and can call the garbage collector).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { repoRoot } from './helpers.js';

const script = `
import { initBackend } from ${JSON.stringify(join(repoRoot, 'dist/src/backend/index.js'))};
import { BatchNorm2d, Conv2d, Flatten, AdaptiveAvgPool2d, Linear, ReLU, Sequential, MaxPool2d } from ${JSON.stringify(join(repoRoot, 'dist/src/nn/index.js'))};
import { Tensor, tidy, crossEntropy, add } from ${JSON.stringify(join(repoRoot, 'dist/src/tensor/index.js'))};
import { SGD } from ${JSON.stringify(join(repoRoot, 'dist/src/train/sgd.js'))};
const backend = await initBackend('native');
const body = new Sequential(new Conv2d(3, 16, 3, { padding: 1, bias: false }), new BatchNorm2d(16), new ReLU());
const branch = new Sequential(new Conv2d(16, 16, 3, { padding: 1, groups: 2 }), new BatchNorm2d(16));
const head = new Sequential(new MaxPool2d(3, 2, 1), new AdaptiveAvgPool2d(1), new Flatten(), new Linear(16, 10));
const params = [...body.parameters(), ...branch.parameters(), ...head.parameters()];
const opt = new SGD(params, { lr: 0.01, momentum: 0.9, nesterov: true, weightDecay: 1e-4 });
const x = new Float32Array(8 * 3 * 12 * 12).map(() => Math.random());
const y = Int32Array.from({ length: 8 }, (_, i) => i % 10);
const samples = [];
for (let step = 1; step <= 2000; step++) {
  tidy(() => {
    const h = body.forward(Tensor.fromArray(x, [8, 3, 12, 12]));
    const loss = crossEntropy(head.forward(add(h, branch.forward(h))), y);
    loss.backward();
    loss.item();
  });
  opt.step();
  opt.zeroGrad();
  if (step % 250 === 0) {
    globalThis.gc();
    samples.push({ step, rss: process.memoryUsage().rss, live: backend.stats().liveTensors, liveBytes: backend.stats().liveBytes });
  }
}
console.log(JSON.stringify(samples));
`;

describe('memory', () => {
  it('2,000 training steps keep native tensors and resident memory flat', () => {
    const r = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const samples = JSON.parse(r.stdout.trim().split('\n').pop()!) as { step: number; rss: number; live: number; liveBytes: number }[];
    const first = samples[0];
    const last = samples[samples.length - 1];
    // Every step's tensors are freed: the same live count at step 250 and step 2000.
    assert.equal(last.live, first.live, `live native tensors: ${samples.map((s) => s.live).join(' ')}`);
    assert.equal(last.liveBytes, first.liveBytes);
    // A leak of one small activation per step (8x16x12x12 floats = 74 KB) would add 130 MB here.
    const growthMb = (last.rss - first.rss) / 2 ** 20;
    assert.ok(growthMb < 24, `resident memory grew ${growthMb.toFixed(1)} MB from step ${first.step} to ${last.step}`);
  });
});
