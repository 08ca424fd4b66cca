// int8 inference (post-training static quantization): a ResNet-20 trained 12 epochs on Fashion-MNIST
// (committed by the degradation experiment), calibrated on 512 training images, must keep the f32
// plan's top-1 class on at least 99% of 2,000 test images and lose at most 0.5 points of accuracy
// (issue #13's goals, on a fifth of the test set to keep CI short); the reference backend's eager
// forward is the f32 oracle. Random-weight networks with every int8 path (projection shortcuts summed
// as s8, grouped convs, the average-pool shortcut and deep stem of ResNet-D) stay within a stated
// share of the largest logit. Bad calibration input and a CPU without VNNI are refused with the reason.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { defaultBackend, initBackend, referenceBackend, setDefaultBackend } from '../src/backend/index.js';
import { Subset, fashionMnist } from '../src/data/index.js';
import { calibrate, compileForInference, readCalibration, writeCalibration, type Calibration } from '../src/infer/index.js';
import { createModel, loadModel, type ResNet } from '../src/models/index.js';
import { manualSeed } from '../src/nn/index.js';
import { Tensor, noGrad } from '../src/tensor/index.js';
import { lastJson, repoRoot, residual } from './helpers.js';
import { TRAINED, deviation, firstBatch, inputs, top1 } from './int8_helpers.js';

const refOnly = !!process.env.RESIDUAL_TEST_REFERENCE_ONLY;

describe('int8 inference', { skip: refOnly && 'native only' }, () => {
  let vnni = true;
  before(async () => {
    await initBackend('native');
    try {
      const m = (manualSeed(0), createModel('resnet20'));
      const cal = calibrate(m, inputs(3 * 32 * 32, 1), 1, { input: [3, 32, 32] });
      compileForInference(m, { input: [3, 32, 32], dtype: 'int8', calibration: cal }).dispose();
    } catch (e) {
      if (!/VNNI/.test((e as Error).message)) throw e;
      vnni = false;
    }
  });

  it('a trained Fashion-MNIST ResNet-20: top-1 agrees with f32 on >= 99% of 2,000 test images, accuracy within 0.5 points', async (t) => {
    if (!vnni) return t.skip('this CPU has no AVX512-VNNI');
    const model = loadModel('resnet20', TRAINED, { inChannels: 1 });
    model.eval();
    const input: [number, number, number] = [1, 28, 28];
    const cal = await firstBatch(fashionMnist('train'), 512, true);
    const calibration = calibrate(model, cal.x, 512, { input, batch: 128 });
    const n = 2000;
    const test = await firstBatch(new Subset(fashionMnist('test'), Array.from({ length: n }, (_, i) => i)), n, false);
    const f32 = compileForInference(model, { input, maxBatch: 250 });
    const q = compileForInference(model, { input, maxBatch: 250, dtype: 'int8', calibration });
    assert.ok(q.implementations().some((e) => /vnni/.test(e.impl)), 'the int8 convs run VNNI kernels');
    let same = 0, right32 = 0, right8 = 0, refSame = 0;
    for (let i = 0; i < n; i += 250) {
      const x = test.x.subarray(i * 784, (i + 250) * 784);
      const a = top1(f32.run(x, 250), 250), b = top1(q.run(x, 250), 250);
      // The oracle for the f32 plan: the reference backend's eager forward (pure JS: the first 250 only).
      if (i === 0) {
        const native = defaultBackend();
        setDefaultBackend(referenceBackend());
        try {
          const ref = loadModel('resnet20', TRAINED, { inChannels: 1 });
          ref.eval();
          const r = top1(noGrad(() => ref.forward(Tensor.fromArray(x, [250, 1, 28, 28])).toArray()), 250);
          for (let j = 0; j < 250; j++) refSame += r[j] === a[j] ? 1 : 0;
        } finally {
          setDefaultBackend(native);
        }
      }
      for (let j = 0; j < 250; j++) {
        const label = test.y[i + j]!;
        same += a[j] === b[j] ? 1 : 0;
        right32 += a[j] === label ? 1 : 0;
        right8 += b[j] === label ? 1 : 0;
      }
    }
    f32.dispose();
    q.dispose();
    t.diagnostic(`top-1 same ${same}/${n}; accuracy f32 ${right32 / n}, int8 ${right8 / n}; f32 plan = reference on ${refSame}/250`);
    assert.ok(same >= 0.99 * n, `int8 keeps f32's top-1 on ${same} of ${n}`);
    assert.equal(refSame, 250, 'the f32 plan picks the reference backend\'s class on every image');
    assert.ok(right8 >= right32 - 0.005 * n, `int8 accuracy ${right8 / n} vs f32 ${right32 / n}`);
    assert.ok(right32 / n > 0.9, `the trained model is trained (${right32 / n})`);
  });

  // Random weights (torchvision init) and inputs: no accuracy to keep, but the logits must follow f32's.
  // Measured 0.5-1.6% of the largest logit; 5% leaves room for other inputs, not for a wrong scale.
  for (const [name, input] of [['resnet50', [3, 64, 64]], ['resnext50_32x4d', [3, 64, 64]], ['resnet26d', [3, 64, 64]], ['resnet20', [3, 32, 32]]] as const) {
    it(`${name}: int8 logits within 5% (of the largest) of the f32 plan's`, (t) => {
      if (!vnni) return t.skip('this CPU has no AVX512-VNNI');
      manualSeed(3);
      const model: ResNet = createModel(name);
      model.eval();
      const per = input[0] * input[1] * input[2];
      const calibration = calibrate(model, inputs(8 * per, 5), 8, { input: [...input], batch: 4 });
      const x = inputs(2 * per, 9);
      const f32 = compileForInference(model, { input: [...input], maxBatch: 2 });
      const q = compileForInference(model, { input: [...input], maxBatch: 2, dtype: 'int8', calibration });
      const dev = deviation(q.run(x, 2), f32.run(x, 2));
      // a smaller batch gets its own primitives over the same scales
      const dev1 = deviation(q.run(x.subarray(0, per), 1), f32.run(x.subarray(0, per), 1));
      f32.dispose();
      q.dispose();
      t.diagnostic(`deviation ${dev.toFixed(4)} (batch 2), ${dev1.toFixed(4)} (batch 1)`);
      assert.ok(dev < 0.05 && dev1 < 0.05, `deviation ${dev}, ${dev1}`);
    });
  }

  it('the plan stops at a stage in int8 too (dequantized features)', (t) => {
    if (!vnni) return t.skip('this CPU has no AVX512-VNNI');
    const model = (manualSeed(2), createModel('resnet50'));
    model.eval();
    const input = [3, 64, 64];
    const calibration = calibrate(model, inputs(4 * 3 * 64 * 64, 3), 4, { input });
    const x = inputs(3 * 64 * 64, 4);
    const f32 = compileForInference(model, { input, output: 'layer2' });
    const q = compileForInference(model, { input, output: 'layer2', dtype: 'int8', calibration });
    const dev = deviation(q.run(x, 1), f32.run(x, 1));
    f32.dispose();
    q.dispose();
    assert.ok(dev < 0.05, `layer2 features deviate by ${dev}`);
  });

  it('refuses int8 without a calibration, or with one made for another model or input', () => {
    const model = (manualSeed(0), createModel('resnet20'));
    model.eval();
    const input = [3, 32, 32];
    assert.throws(() => compileForInference(model, { input, dtype: 'int8' }), /int8 needs a calibration/);
    const cal = calibrate(model, inputs(3 * 32 * 32, 1), 1, { input });
    assert.throws(() => compileForInference(model, { input: [3, 40, 40], dtype: 'int8', calibration: cal }), /calibrated for resnet20 at \[3, 32, 32\]/);
    const other = (manualSeed(0), createModel('resnet32'));
    assert.throws(() => compileForInference(other, { input, dtype: 'int8', calibration: cal }), /calibrated for resnet20/);
    const holed: Calibration = { ...cal, ops: { ...cal.ops } };
    delete holed.ops['layer2.0.conv1'];
    assert.throws(() => compileForInference(model, { input, dtype: 'int8', calibration: holed }), /no range for layer2\.0\.conv1/);
  });

  it('refuses bad calibration input: no images, wrong length, wrong channels, non-finite values', () => {
    const model = (manualSeed(0), createModel('resnet20'));
    const input = [3, 32, 32];
    assert.throws(() => calibrate(model, new Float32Array(0), 0, { input }), /at least one image/);
    assert.throws(() => calibrate(model, new Float32Array(100), 1, { input }), /1 x \[3, 32, 32\] = 3072 values, got 100/);
    assert.throws(() => calibrate(model, new Float32Array(32 * 32), 1, { input: [1, 32, 32] }), /takes 3-channel input/);
    const nan = inputs(3 * 32 * 32, 1);
    nan[5] = NaN;
    assert.throws(() => calibrate(model, nan, 1, { input }), /non-finite/);
  });

  it('a calibration file round-trips, and a damaged one is refused with its name', () => {
    const dir = mkdtempSync(join(tmpdir(), 'residual-int8-'));
    try {
      const model = (manualSeed(0), createModel('resnet20'));
      const cal = calibrate(model, inputs(2 * 3 * 32 * 32, 1), 2, { input: [3, 32, 32] });
      const file = join(dir, 'calibration.json');
      writeCalibration(file, cal);
      assert.deepEqual(readCalibration(file, 'resnet20', [3, 32, 32]), cal);
      writeFileSync(file, '{"format": "residual-calibration", "version": 1, "model": "resnet20", "input": [3, 32, 32], "ops": {"conv1": {"min": 0, "max": "x"}}}');
      assert.throws(() => readCalibration(file, 'resnet20', [3, 32, 32]), /calibration .*calibration\.json: the range of conv1 is not a finite/);
      writeFileSync(file, 'not json');
      assert.throws(() => readCalibration(file, 'resnet20', [3, 32, 32]), /not JSON/);
      writeFileSync(file, '{"format": "something else"}');
      assert.throws(() => readCalibration(file, 'resnet20', [3, 32, 32]), /not a Residual calibration/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('residual eval --dtype int8: the issue\'s goals on all 10,000 test images, and the calibration saved once', (t) => {
    if (!vnni) return t.skip('this CPU has no AVX512-VNNI');
    const dir = mkdtempSync(join(tmpdir(), 'residual-int8-eval-'));
    try {
      const weights = join(dir, 'r20.safetensors');
      copyFileSync(TRAINED, weights);
      const args = ['eval', '--model', 'resnet20', '--weights', weights, '--dtype', 'int8', '--batch', '500', '--json'];
      let r = residual(args, { OMP_NUM_THREADS: '2' });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /calibrated int8 on 512 fashion-mnist training images; saved .*r20\.calibration\.json/);
      const j = lastJson(r.stdout) as unknown as { samples: number; acc: number; agreement: { rate: number; f32Acc: number } };
      t.diagnostic(`int8 ${j.acc}, f32 ${j.agreement.f32Acc}, same top-1 ${j.agreement.rate}`);
      assert.equal(j.samples, 10000);
      assert.ok(j.agreement.rate >= 0.99, `agreement ${j.agreement.rate}`);
      assert.ok(j.acc >= j.agreement.f32Acc - 0.005, `int8 ${j.acc} vs f32 ${j.agreement.f32Acc}`);
      r = residual(args, { OMP_NUM_THREADS: '2' });
      assert.equal(r.status, 0, r.stderr);
      assert.doesNotMatch(r.stderr, /calibrated/, 'the saved calibration is used');
      r = residual(['eval', '--model', 'resnet20', '--weights', weights, '--calibration', 'fashion-mnist']);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /--calibration and --calibration-images are for --dtype int8/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a CPU without AVX512-VNNI (oneDNN capped at avx512_core) is refused with the reason', () => {
    const dist = (p: string) => JSON.stringify(join(repoRoot, 'dist', p));
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', `
      import { initBackend } from ${dist('src/backend/index.js')};
      import { createModel } from ${dist('src/models/index.js')};
      import { calibrate, compileForInference } from ${dist('src/infer/index.js')};
      await initBackend('native');
      const m = createModel('resnet20');
      const cal = calibrate(m, new Float32Array(3 * 32 * 32).fill(0.5), 1, { input: [3, 32, 32] });
      try { compileForInference(m, { input: [3, 32, 32], dtype: 'int8', calibration: cal }); console.log('compiled'); }
      catch (e) { console.log(e.message); }`], {
      encoding: 'utf8', cwd: repoRoot, env: { ...process.env, DNNL_MAX_CPU_ISA: 'AVX512_CORE', OMP_NUM_THREADS: '1' },
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /int8 needs a CPU with AVX512-VNNI/);
  });
});
