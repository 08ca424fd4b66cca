// Quantized ONNX out (issue #13): `exportOnnx(..., { dtype: 'int8' })` and `residual export --dtype
// int8` write a QDQ model that onnxruntime runs with its own int8 kernels.
//
// - The trained Fashion-MNIST ResNet-20 (committed by the degradation experiment), calibrated on 512
//   training images: onnxruntime's top-1 on 2,000 test images (RESIDUAL_ONNX_INT8_IMAGES=10000: all
//   of them) must agree with our int8 plan's and with the f32 plan's on >= 99%, and its accuracy stay
//   within 0.5 points of f32. The model onnxruntime optimizes must hold QLinearConv for every conv
//   but the float32 stem, and QLinearAdd for every residual sum: its int8 kernels run, not float32
//   convs between Q/DQ pairs.
// - Random weights, every int8 path (bottleneck projection shortcuts, grouped convs, ResNet-D's deep
//   stem and average-pool shortcut): onnxruntime's logits within 5% of the largest f32 logit (measured
//   1.9-2.8%, our own int8 plan 1.8-2.4%), fused the same way.
// - `residual export --dtype int8`: the file, its saved calibration reused, and bad input refused.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { initBackend } from '../src/backend/index.js';
import { FASHION_MNIST_MEAN, FASHION_MNIST_STD, Subset, fashionMnist } from '../src/data/index.js';
import { calibrate, compileForInference, writeCalibration, type Calibration } from '../src/infer/index.js';
import { recordValueRanges } from '../src/infer/value_ranges.js';
import { createModel, loadModel, resnextBlock, valueNames, type ResNet } from '../src/models/index.js';
import { manualSeed } from '../src/nn/index.js';
import { exportOnnx, onnxBytes } from '../src/onnx/index.js';
import { activationParams, quantizeWeights } from '../src/onnx/qdq.js';
import { residual } from './helpers.js';
import { TRAINED, deviation, firstBatch, inputs, top1 } from './int8_helpers.js';

const SESSION: ort.InferenceSession.SessionOptions = { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential' };

/** Node op types of an ONNX file, counted: ModelProto.graph (7) -> GraphProto.node (1) -> NodeProto.op_type (4). */
function opTypes(file: string): Record<string, number> {
  const b = readFileSync(file);
  function* fields(start: number, end: number): Generator<[number, number, number, number]> {
    let i = start;
    const varint = (): number => {
      let v = 0, m = 1, x: number;
      do {
        x = b[i++]!;
        v += (x & 0x7f) * m;
        m *= 128;
      } while (x & 0x80);
      return v;
    };
    while (i < end) {
      const tag = varint(), field = Math.floor(tag / 8), wire = tag & 7;
      if (wire === 0) varint();
      else if (wire === 1) i += 8;
      else if (wire === 5) i += 4;
      else if (wire === 2) {
        const len = varint();
        yield [field, wire, i, i + len];
        i += len;
      } else throw new Error(`protobuf wire type ${wire} in ${file}`);
    }
  }
  const ops: Record<string, number> = {};
  for (const [f, , a, z] of fields(0, b.length)) {
    if (f !== 7) continue;
    for (const [g, , ga, gz] of fields(a, z)) {
      if (g !== 1) continue;
      for (const [h, , ha, hz] of fields(ga, gz)) if (h === 4) ops[b.toString('utf8', ha, hz)] = (ops[b.toString('utf8', ha, hz)] ?? 0) + 1;
    }
  }
  return ops;
}

/** What onnxruntime makes of a model at its full optimization level (saved by the session, then read back). */
async function optimizedOps(bytes: Uint8Array, dir: string, name: string): Promise<Record<string, number>> {
  const file = join(dir, `${name}.optimized.onnx`);
  // (logSeverityLevel 3: not the warning that a model saved at this level may hold hardware-specific ops)
  const s = await ort.InferenceSession.create(bytes, { ...SESSION, graphOptimizationLevel: 'all', optimizedModelFilePath: file, logSeverityLevel: 3 });
  await s.release();
  return opTypes(file);
}

describe('int8 ONNX export (QDQ) in onnxruntime', () => {
  let dir: string;
  let vnni = true;
  before(async () => {
    await initBackend('native');
    dir = mkdtempSync(join(tmpdir(), 'residual-onnx-int8-'));
    try {
      const m = (manualSeed(0), createModel('resnet20'));
      const cal = calibrate(m, inputs(3 * 32 * 32, 1), 1, { input: [3, 32, 32] });
      compileForInference(m, { input: [3, 32, 32], dtype: 'int8', calibration: cal }).dispose();
    } catch (e) {
      if (!/VNNI/.test((e as Error).message)) throw e;
      vnni = false; // onnxruntime's int8 kernels do not need it; our int8 plan does
    }
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('the trained ResNet-20: onnxruntime\'s top-1 agrees with our int8 plan and f32 on >= 99% of 2,000 test images', async (t) => {
    const model = loadModel('resnet20', TRAINED, { inChannels: 1 });
    model.eval();
    const input: [number, number, number] = [1, 28, 28];
    const cal = await firstBatch(fashionMnist('train'), 512, true);
    const calibration = calibrate(model, cal.x, 512, { input, batch: 128, values: true });
    assert.deepEqual(Object.keys(calibration.values!), valueNames(model.lower(input)), 'a range for every graph value');
    const { bytes, info } = onnxBytes(model, { input, dtype: 'int8', calibration });
    // 19 convs: the stem in f32, 18 with int8 weights and biases behind a DequantizeLinear each
    assert.equal(info.ops.Conv, 19);
    assert.equal(info.ops.DequantizeLinear, info.ops.QuantizeLinear! + 2 * 18);
    const ops = await optimizedOps(bytes, dir, 'resnet20');
    t.diagnostic(`onnxruntime optimized: ${JSON.stringify(ops)}`);
    assert.equal(ops.QLinearConv, 18, 'every conv but the stem runs onnxruntime\'s int8 conv');
    assert.equal(ops.QLinearAdd, 9, 'every residual sum runs in int8');
    assert.equal(ops.Conv, 1, 'only the stem stays float32');

    const n = Number(process.env.RESIDUAL_ONNX_INT8_IMAGES ?? 2000), B = 250; // all 10,000 for BENCHMARKS.md's figure
    assert.ok(Number.isInteger(n / B) && n <= 10000, `RESIDUAL_ONNX_INT8_IMAGES must be a multiple of ${B} up to 10000, got ${n}`);
    const test = await firstBatch(new Subset(fashionMnist('test'), Array.from({ length: n }, (_, i) => i)), n, false);
    const session = await ort.InferenceSession.create(bytes, SESSION);
    const f32 = compileForInference(model, { input, maxBatch: B });
    const q = vnni ? compileForInference(model, { input, maxBatch: B, dtype: 'int8', calibration }) : null;
    let same8 = 0, same32 = 0, rightOrt = 0, right32 = 0, right8 = 0;
    try {
      for (let i = 0; i < n; i += B) {
        const x = test.x.subarray(i * 784, (i + B) * 784);
        const o = top1((await session.run({ input: new ort.Tensor('float32', x, [B, ...input]) })).logits!.data as Float32Array, B);
        const a = top1(f32.run(x, B), B), b = q ? top1(q.run(x, B), B) : null;
        for (let j = 0; j < B; j++) {
          same32 += o[j] === a[j] ? 1 : 0;
          same8 += b && o[j] === b[j] ? 1 : 0;
          rightOrt += o[j] === test.y[i + j] ? 1 : 0;
          right8 += b && b[j] === test.y[i + j] ? 1 : 0;
          right32 += a[j] === test.y[i + j] ? 1 : 0;
        }
      }
    } finally {
      await session.release();
      f32.dispose();
      q?.dispose();
    }
    t.diagnostic(`onnxruntime int8 top-1 same as our int8 plan on ${vnni ? same8 : 'n/a'}/${n}, as f32 on ${same32}/${n}; ` +
      `accuracy onnxruntime int8 ${rightOrt / n}, our int8 ${vnni ? right8 / n : 'n/a'}, f32 ${right32 / n}`);
    if (vnni) assert.ok(same8 >= 0.99 * n, `onnxruntime keeps our int8 plan's top-1 on ${same8} of ${n}`);
    assert.ok(same32 >= 0.99 * n, `onnxruntime keeps the f32 top-1 on ${same32} of ${n}`);
    assert.ok(rightOrt >= right32 - 0.005 * n, `onnxruntime int8 accuracy ${rightOrt / n} vs f32 ${right32 / n}`);
    assert.ok(right32 / n > 0.9, `the trained model is trained (${right32 / n})`);
    model.dispose();
  });

  for (const [name, input, convs, sums] of [['resnet50', [3, 64, 64], 53, 16], ['resnext50_32x4d', [3, 64, 64], 53, 16], ['resnet26d', [3, 64, 64], 31, 8]] as const) {
    it(`${name} (random weights): onnxruntime's int8 logits within 5% (of the largest) of f32's, every conv but the stem fused`, async (t) => {
      manualSeed(3);
      const model: ResNet = createModel(name);
      model.eval();
      const per = input[0] * input[1] * input[2];
      const calibration = calibrate(model, inputs(8 * per, 5), 8, { input: [...input], batch: 4, values: true });
      const { bytes } = onnxBytes(model, { input: [...input], dtype: 'int8', calibration });
      const ops = await optimizedOps(bytes, dir, name);
      // ResNet-D's deep stem: its first conv reads the input (f32), its second and third are int8
      assert.equal(ops.QLinearConv, convs - 1, `QLinearConv: ${JSON.stringify(ops)}`);
      assert.equal(ops.QLinearAdd, sums, `QLinearAdd: ${JSON.stringify(ops)}`);
      assert.equal(ops.Conv, 1, `float32 Conv: ${JSON.stringify(ops)}`);
      const x = inputs(2 * per, 9);
      const f32 = compileForInference(model, { input: [...input], maxBatch: 2 });
      const session = await ort.InferenceSession.create(bytes, SESSION);
      try {
        const o = (await session.run({ input: new ort.Tensor('float32', x, [2, ...input]) })).logits!.data as Float32Array;
        const dev = deviation(o, f32.run(x, 2));
        t.diagnostic(`onnxruntime int8 vs f32: ${dev.toFixed(4)} of the largest logit`);
        assert.ok(dev < 0.05, `deviation ${dev}`);
      } finally {
        await session.release();
        f32.dispose();
        model.dispose();
      }
    });
  }

  it('the quantization parameters: uint8 activations hold 0 exactly, int8 weights symmetric per output channel', () => {
    const relu = activationParams(0, 5.1);
    assert.equal(relu.zeroPoint, 0, 'a value never negative has zero point 0 (a runtime drops the ReLU before it)');
    assert.equal(relu.scale, Math.fround(5.1 / 255));
    const signed = activationParams(-1, 3);
    assert.equal(signed.zeroPoint, Math.round(1 / signed.scale));
    assert.ok(Math.abs(signed.scale * (0 - signed.zeroPoint) + 1) < signed.scale, 'the range\'s low end is representable');
    const positive = activationParams(2, 4);
    assert.equal(positive.zeroPoint, 0, 'the range is widened to hold 0 (zero padding stays exact)');
    assert.deepEqual(activationParams(0, 0), { scale: 1, zeroPoint: 0 });
    const w = quantizeWeights(Float32Array.of(0.5, -1, 0.25, 0, 0, 0, 2, 1, -2), 3);
    assert.deepEqual([...w.q], [64, -127, 32, 0, 0, 0, 127, 64, -127]);
    assert.deepEqual([...w.scales], [Math.fround(1 / 127), 1, Math.fround(2 / 127)]);
  });

  it('refuses: no calibration, one without graph values, one for another model, a block, BN kept; a non-finite value is named', () => {
    manualSeed(0);
    const model = createModel('resnet20');
    model.eval();
    const input = [3, 32, 32];
    const x = inputs(2 * 3 * 32 * 32, 1);
    assert.throws(() => onnxBytes(model, { input, dtype: 'int8' }), /int8 needs a calibration with the range of every graph value/);
    const planOnly = calibrate(model, x, 2, { input });
    assert.throws(() => onnxBytes(model, { input, dtype: 'int8', calibration: planOnly }), /the int8 plan's ranges only/);
    const cal = calibrate(model, x, 2, { input, values: true });
    assert.throws(() => onnxBytes(model, { input: [3, 40, 40], dtype: 'int8', calibration: cal }), /calibrated for resnet20 at \[3, 32, 32\]/);
    assert.throws(() => onnxBytes(model, { input, dtype: 'int8', calibration: cal, foldBatchNorm: false }), /folds every BatchNorm/);
    assert.throws(() => onnxBytes(model, { input, dtype: 'int16' as 'int8', calibration: cal }), /dtype must be 'f32' or 'int8'/);
    const holed: Calibration = { ...cal, values: { ...cal.values } };
    delete holed.values!['layer2.0.relu#2'];
    assert.throws(() => onnxBytes(model, { input, dtype: 'int8', calibration: holed }), /no range for the value layer2\.0\.relu#2/);
    const block = resnextBlock('a', { inChannels: 64, outChannels: 64, cardinality: 2, pathWidth: 4 });
    assert.throws(() => onnxBytes(block, { input: [64, 8, 8], dtype: 'int8', calibration: cal }), /needs a ResNet\/ResNeXt network/);
    // a NaN weight: the value it first spoils is named
    const sd = model.stateDict();
    sd.get('layer2.0.conv1.weight')!.data[3] = NaN;
    model.loadStateDict(sd);
    assert.throws(() => recordValueRanges(model.lower(input), model, x, 2, 2), /calibration: layer2\.0\.conv1 produced a non-finite value .*images 0\.\.1/);
    model.dispose();
  });

  it('residual export --onnx --dtype int8: the file runs in onnxruntime, the calibration is saved and reused, bad input refused', async () => {
    const weights = join(dir, 'r20.safetensors');
    writeFileSync(weights, readFileSync(TRAINED));
    const onnx = join(dir, 'r20.int8.onnx');
    const args = ['export', '--model', 'resnet20', '--weights', weights, '--input', '1x28x28', '--onnx', onnx, '--dtype', 'int8'];
    let r = residual([...args, '--calibration', 'fashion-mnist', '--calibration-images', '256']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /calibrated int8 on 256 fashion-mnist training images; saved .*r20\.calibration\.json/);
    assert.match(r.stdout, /resnet20: wrote .*r20\.int8\.onnx \(ONNX opset 17, int8 QDQ calibrated on 256 images/);
    const saved = JSON.parse(readFileSync(join(dir, 'r20.calibration.json'), 'utf8')) as Calibration;
    assert.equal(saved.images, 256);
    assert.ok(saved.values && saved.values['layer3.2.relu#2'], 'the saved calibration has the graph values');
    const test = await firstBatch(new Subset(fashionMnist('test'), Array.from({ length: 100 }, (_, i) => i)), 100, false);
    const session = await ort.InferenceSession.create(onnx, SESSION);
    const out = await session.run({ input: new ort.Tensor('float32', test.x, [100, 1, 28, 28]) });
    await session.release();
    const right = top1(out.logits!.data as Float32Array, 100).filter((c, i) => c === test.y[i]).length;
    assert.ok(right >= 85, `the exported int8 model classifies ${right} of 100 test images right`);

    r = residual(args);
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /calibrated/, 'the saved calibration is used');
    // One saved by eval --dtype int8 has the plan's ranges only: without data to calibrate on, refused...
    const planOnly = { ...saved };
    delete planOnly.values;
    writeCalibration(join(dir, 'r20.calibration.json'), planOnly);
    r = residual(args);
    assert.equal(r.status, 1, 'no model card names a dataset to calibrate on');
    assert.match(r.stderr, /int8 needs a calibration with graph-value ranges \(.*r20\.calibration\.json has the int8 plan's only\)/);
    // ...and with a model card that names its dataset (and input), made again from it and saved in its place.
    const run = join(dir, 'run');
    mkdirSync(run);
    writeFileSync(join(run, 'model.safetensors'), readFileSync(TRAINED));
    const card = { model: 'resnet20', classes: fashionMnist('test').classNames, input: [1, 28, 28], mean: FASHION_MNIST_MEAN, std: FASHION_MNIST_STD, dataset: 'fashion-mnist' };
    writeFileSync(join(run, 'state.json'), JSON.stringify({ card }));
    writeCalibration(join(run, 'model.calibration.json'), planOnly);
    const runArgs = ['export', '--model', 'resnet20', '--weights', join(run, 'model.safetensors'), '--onnx', join(run, 'm.onnx'), '--dtype', 'int8', '--calibration-images', '64'];
    r = residual(runArgs);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /model\.calibration\.json has no graph-value ranges .*calibrating again/);
    assert.match(r.stderr, /calibrated int8 on 64 fashion-mnist training images; saved .*model\.calibration\.json/);
    assert.match(r.stdout, /input \[batch, 1, 28, 28\]/, 'the card\'s input is the default');
    assert.ok((JSON.parse(readFileSync(join(run, 'model.calibration.json'), 'utf8')) as Calibration).values);
    const planFile = join(dir, 'plan-only.json');
    writeCalibration(planFile, planOnly);
    r = residual([...args, '--calibration', planFile]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /plan-only\.json has the int8 plan's ranges only.*give --calibration DATA/);

    const refusals: [string[], RegExp][] = [
      [['export', '--model', 'resnet20', '--safetensors', join(dir, 'x.safetensors'), '--dtype', 'int8'], /--dtype int8 quantizes the ONNX file; give --onnx/],
      [['export', '--model', 'resnet20', '--onnx', join(dir, 'x.onnx'), '--calibration', 'fashion-mnist'], /--calibration and --calibration-images are for --dtype int8/],
      [['export', '--model', 'resnet20', '--onnx', join(dir, 'x.onnx'), '--dtype', 'bf16'], /--dtype must be f32 or int8/],
      [['export', '--model', 'resnet20', '--onnx', join(dir, 'x.onnx'), '--dtype', 'int8', '--keep-batchnorm'], /leave out --keep-batchnorm/],
      [['export', '--model', 'resnet20', '--onnx', join(dir, 'x.onnx'), '--dtype', 'int8'], /int8 needs a calibration/],
      [['export', '--model', 'resnet20', '--input', '1x32x32', '--onnx', join(dir, 'x.onnx'), '--dtype', 'int8', '--calibration', 'fashion-mnist'],
        /fashion-mnist gives 1x28x28 images but the model runs at 1x32x32/],
    ];
    for (const [a, message] of refusals) {
      r = residual(a);
      assert.equal(r.status, 1, `${a.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message, a.join(' '));
    }
    assert.ok(!existsSync(join(dir, 'x.onnx')), 'nothing written by a refused export');
  });
});
