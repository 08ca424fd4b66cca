// The asynchronous run of a compiled plan (CompiledModel.runAsync, native planRunAsync): the same
// logits as the synchronous run, the event loop keeps turning while a long batch runs, concurrent
// calls are safe and see the input as it was at the call, disposing tensors meanwhile does not wait
// for the engine, and disposal and bad input reject the promise with a clear message, never crash.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { defaultBackend, initBackend } from '../src/backend/index.js';
import type { NativeBackend } from '../src/backend/native.js';
import { compileForInference } from '../src/infer/index.js';
import { createModel } from '../src/models/index.js';
import { manualSeed } from '../src/nn/index.js';
import { Tensor } from '../src/tensor/index.js';
import { rng } from './helpers.js';

function randomArray(n: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => 2 * r() - 1);
}

describe('compiled inference, asynchronous run', () => {
  before(async () => {
    await initBackend('native');
  });

  it('runAsync gives the same logits as run', async () => {
    manualSeed(1);
    const compiled = compileForInference(createModel('resnet20'), { input: [3, 32, 32], maxBatch: 4 });
    for (const n of [1, 4]) {
      const x = randomArray(n * 3 * 32 * 32, n);
      assert.deepEqual(await compiled.runAsync(x, n), compiled.run(x, n));
    }
    compiled.dispose();
  });

  it('a timer on the event loop keeps firing while a long batch runs', async () => {
    manualSeed(2);
    const compiled = compileForInference(createModel('resnet18'), { input: [3, 224, 224], maxBatch: 16 });
    const x = randomArray(16 * 3 * 224 * 224, 3);
    const ticks: number[] = [];
    const timer = setInterval(() => ticks.push(performance.now()), 5);
    const start = performance.now();
    await compiled.runAsync(x, 16);
    const end = performance.now();
    clearInterval(timer);
    compiled.dispose();
    const ms = end - start;
    // The batch takes hundreds of ms (tens of ms per image); a synchronous run would let no tick
    // through at all. Ticks must keep coming: many of them, and no gap near the run's length.
    assert.ok(ms > 100, `the batch should take over 100 ms to make the test meaningful, took ${ms.toFixed(0)} ms`);
    const gaps = ticks.slice(1).map((t, i) => t - ticks[i]!);
    const maxGap = Math.max(ticks[0]! - start, ...gaps, end - ticks.at(-1)!);
    assert.ok(ticks.length >= 5, `only ${ticks.length} timer ticks during a ${ms.toFixed(0)} ms run`);
    assert.ok(maxGap < ms / 2, `the event loop stalled for ${maxGap.toFixed(0)} ms of a ${ms.toFixed(0)} ms run`);
  });

  it('disposing tensors during a run does not wait for it; their memory is freed after it', async () => {
    manualSeed(6);
    const backend = defaultBackend() as unknown as NativeBackend;
    const compiled = compileForInference(createModel('resnet18'), { input: [3, 224, 224], maxBatch: 8 });
    const tensors = Array.from({ length: 50 }, (_, i) => Tensor.fromArray(randomArray(1000, i), [10, 100]));
    const live = backend.stats().liveTensors;
    const start = performance.now();
    const run = compiled.runAsync(randomArray(8 * 3 * 224 * 224, 7), 8);
    for (const t of tensors) t.dispose();
    const disposeMs = performance.now() - start;
    await run;
    const runMs = performance.now() - start;
    compiled.dispose();
    assert.ok(disposeMs < runMs / 2, `disposing took ${disposeMs.toFixed(0)} ms of a ${runMs.toFixed(0)} ms run: it waited for the run`);
    // At most: the garbage collector may have freed the (unreferenced) model's tensors as well.
    const after = backend.stats().liveTensors;
    assert.ok(after <= live - 50, `${live} live tensors before, ${after} after the run: the 50 disposed ones were not all freed`);
  });

  it('concurrent calls each get their own input as it was at the call', async () => {
    manualSeed(3);
    const compiled = compileForInference(createModel('resnet20'), { input: [3, 32, 32], maxBatch: 2 });
    const inputs = Array.from({ length: 6 }, (_, i) => randomArray(2 * 3 * 32 * 32, 10 + i));
    const expected = inputs.map((x) => compiled.run(x, 2));
    // One shared array, overwritten right after each call: every run must still see its own data.
    const shared = new Float32Array(inputs[0]!.length);
    const pending = inputs.map((x) => {
      shared.set(x);
      const p = compiled.runAsync(shared, 2);
      shared.fill(0);
      return p;
    });
    const sync = compiled.run(inputs[5]!, 2); // a synchronous call in between is safe too
    const results = await Promise.all(pending);
    results.forEach((r, i) => assert.deepEqual(r, expected[i], `call ${i}`));
    assert.deepEqual(sync, expected[5]);
    compiled.dispose();
  });

  it('bad input and disposal reject with clear messages', async () => {
    manualSeed(4);
    const compiled = compileForInference(createModel('resnet20'), { input: [3, 32, 32], maxBatch: 2 });
    await assert.rejects(compiled.runAsync(new Float32Array(5), 1), /input has 5 values, but 1 x \[3, 32, 32\] needs 3072/);
    await assert.rejects(compiled.runAsync(new Float32Array(3 * 3072), 3), /batch 3 is outside 1\.\.2; compile with a larger maxBatch/);
    const x = randomArray(3072, 5);
    const first = compiled.runAsync(x, 1);
    const queued = compiled.runAsync(x, 1);
    compiled.dispose(); // the first may already be running; the queued one has not started
    const [a, b] = await Promise.allSettled([first, queued]);
    if (a.status === 'rejected') assert.match(String(a.reason), /dispose/);
    assert.equal(b.status, 'rejected');
    assert.match(String((b as PromiseRejectedResult).reason), /dispose\(\) was called before this runAsync\(\) ran/);
    await assert.rejects(compiled.runAsync(x, 1), /runAsync\(\) after dispose\(\)/);
  });
});
