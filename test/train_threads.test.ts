// ThreadGovernor (src/train/threads.ts): probes every core and one thread, keeps the faster median,
// probes again after runSteps; the first step of each probe is not counted (it may build
// primitives). Driven with made-up step times, so the choices are exact.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ThreadGovernor } from '../src/train/threads.js';

/** Runs `steps` steps whose time depends on the thread count in use; returns the counts used. */
function drive(g: ThreadGovernor, steps: number, time: (threads: number, step: number) => number): number[] {
  const used: number[] = [];
  for (let i = 0; i < steps; i++) {
    used.push(g.threads);
    g.record(time(g.threads, i));
  }
  return used;
}

describe('ThreadGovernor', () => {
  it('keeps every core when they are faster, after probing one thread', () => {
    const applied: number[] = [];
    const g = new ThreadGovernor(2, (n) => applied.push(n), { probeSteps: 3, runSteps: 10 });
    const used = drive(g, 8, (t) => (t === 2 ? 120 : 230));
    assert.deepEqual(used, [2, 2, 2, 2, 1, 1, 1, 1]); // 1 untimed + 3 timed per candidate
    assert.equal(g.threads, 2);
    assert.deepEqual(applied, [2, 1, 2]);
  });

  it('moves to one thread when that is faster (a busy neighbour), and back when the neighbour leaves', () => {
    const g = new ThreadGovernor(2, () => {}, { probeSteps: 3, runSteps: 10 });
    let busy = true;
    const time = (t: number) => (busy ? (t === 2 ? 750 : 234) : t === 2 ? 122 : 234);
    drive(g, 8, time);
    assert.equal(g.threads, 1);
    assert.deepEqual(drive(g, 10, time), Array(10).fill(1)); // runSteps at the choice, no probe
    busy = false;
    drive(g, 8, time); // the next probe sees the machine idle
    assert.equal(g.threads, 2);
    assert.deepEqual(g.changes.map(([, n]) => n), [2, 1, 2, 1, 2]);
  });

  it('does not count the first step of a probe (primitives built for the new count)', () => {
    const g = new ThreadGovernor(2, () => {}, { probeSteps: 3, runSteps: 10 });
    let seen1 = 0;
    drive(g, 8, (t) => (t === 1 && seen1++ === 0 ? 5000 : t === 2 ? 300 : 200));
    assert.equal(g.threads, 1);
  });

  it('with one core there is nothing to choose', () => {
    const applied: number[] = [];
    const g = new ThreadGovernor(1, (n) => applied.push(n));
    assert.deepEqual(drive(g, 20, () => 100), Array(20).fill(1));
    assert.deepEqual(applied, [1]);
  });

  it('refuses bad settings with the reason', () => {
    assert.throws(() => new ThreadGovernor(0, () => {}), /max threads must be a positive integer, got 0/);
    assert.throws(() => new ThreadGovernor(2, () => {}, { probeSteps: 0 }), /probeSteps must be a positive integer, got 0/);
    assert.throws(() => new ThreadGovernor(2, () => {}, { runSteps: 1.5 }), /runSteps must be a positive integer, got 1.5/);
  });
});
