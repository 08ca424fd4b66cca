// ONNX export: onnxruntime runs what we write to the outputs of our own engine and of PyTorch.
//
// - ImageNet nets (resnet18, resnet50, resnext50_32x4d) with random weights and non-trivial BN
//   (random scales, shifts and running statistics), at batch 2 and 3 on a dynamic-batch graph, on a
//   small non-square input: onnxruntime vs our engine in eval mode.
// - PyTorch parity: `residual export` writes ONNX and safetensors from those weights; torchvision
//   (scripts/fixtures/onnx_parity.py, Debian's /usr/bin/python3) loads the safetensors strictly and
//   runs; onnxruntime's output of the exported ONNX must match it.
// - CIFAR ResNet-20 (option A: Slice + Pad), a plain net, BN kept as nodes, the three ResNeXt block
//   forms, other opsets, a static batch; errors for an unknown model and a missing folder.
// Tolerance everywhere: 1e-4 of the largest logit. RESIDUAL_ONNX_ALL=1 also exports and runs every
// registered model (minutes; they are all checked that way by hand before a release).
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { initBackend } from '../src/backend/index.js';
import { openStateDictFile, readSafetensors, saveStateDictFile, writeSafetensors } from '../src/io/index.js';
import { exportOnnx, onnxBytes, type OnnxExportOptions } from '../src/onnx/index.js';
import { createModel, getModel, modelNames, resnextBlock, type ResNeXtForm } from '../src/models/index.js';
import { BatchNorm2d, Module, manualSeed } from '../src/nn/index.js';
import { Tensor, noGrad, tidy } from '../src/tensor/index.js';
import { repoRoot, rng } from './helpers.js';

const PYTHON = '/usr/bin/python3';
const cli = join(repoRoot, 'dist', 'src', 'cli', 'main.js');
const parityScript = join(repoRoot, 'scripts', 'fixtures', 'onnx_parity.py');
const INPUT: [number, number, number] = [3, 64, 80];
const TOL = 1e-4;
const IMAGENET = ['resnet18', 'resnet50', 'resnext50_32x4d'];

function randomArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * r());
}

/** Random BN scales, shifts and running statistics, so eval-mode BN (and its folding) is not an identity. */
function randomizeBatchNorm(model: Module, seed: number): void {
  const r = rng(seed);
  const u = (lo: number, hi: number) => lo + (hi - lo) * r();
  const bns = new Set(model.namedModules().filter(([, m]) => m instanceof BatchNorm2d).map(([p]) => (p ? `${p}.` : '')));
  const sd = model.stateDict();
  for (const [k, t] of sd) {
    const dot = k.lastIndexOf('.');
    if (!bns.has(k.slice(0, dot + 1))) continue;
    const key = k.slice(dot + 1);
    const range = { weight: [0.5, 1.5], bias: [-0.3, 0.3], running_mean: [-0.3, 0.3], running_var: [0.5, 2] }[key];
    if (range) t.data = t.data.map(() => u(range[0]!, range[1]!));
    if (key === 'num_batches_tracked') t.data[0] = 1234;
  }
  model.loadStateDict(sd);
}

function engineForward(model: Module, x: Float32Array, shape: number[]): Float32Array {
  return noGrad(() => tidy(() => model.forward(Tensor.fromArray(x, shape)).toArray()));
}

async function openSession(model: string | Uint8Array): Promise<ort.InferenceSession> {
  return typeof model === 'string' ? ort.InferenceSession.create(model) : ort.InferenceSession.create(model);
}

async function ortOutput(session: ort.InferenceSession, x: Float32Array, shape: number[], output: string): Promise<{ data: Float32Array; dims: readonly number[] }> {
  const r = await session.run({ input: new ort.Tensor('float32', x, shape) });
  const y = r[output];
  assert.ok(y, `the session has no output "${output}" (it has ${Object.keys(r).join(', ')})`);
  return { data: y.data as Float32Array, dims: y.dims };
}

/** Runs an ONNX model (file or bytes) once in onnxruntime. */
async function ortRun(model: string | Uint8Array, x: Float32Array, shape: number[], output = 'logits'): Promise<{ data: Float32Array; dims: readonly number[] }> {
  const session = await openSession(model);
  try {
    return await ortOutput(session, x, shape, output);
  } finally {
    await session.release();
  }
}

/** |a - b| <= tol * max|b| elementwise: relative to the largest reference value. */
function assertMatches(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: ${actual.length} values vs ${expected.length}`);
  let scale = 0;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]!));
  assert.ok(Number.isFinite(scale) && scale > 0, `${what}: the reference output is ${scale} at most; a useless comparison`);
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    if (!(d <= TOL * scale)) assert.fail(`${what}: value ${i}: ${actual[i]} vs ${expected[i]} (|diff| ${d} > ${TOL} x ${scale})`);
  }
}

/** Our engine and onnxruntime on the same batches (each size in `batches`) of one exported graph. */
async function checkAgainstEngine(model: Module, onnx: string | Uint8Array, input: readonly number[], batches: number[], seed: number, output = 'logits'): Promise<void> {
  const session = await openSession(onnx);
  try {
    for (const n of batches) {
      const shape = [n, ...input];
      const x = randomArray(shape.reduce((a, b) => a * b, 1), seed + n);
      const got = await ortOutput(session, x, shape, output);
      const want = engineForward(model, x, shape);
      assert.equal(got.dims[0], n, `onnxruntime returned batch ${got.dims[0]} for ${n}`);
      assertMatches(got.data, want, `batch ${n}`);
    }
  } finally {
    await session.release();
  }
}

function runCli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function runCliAsync(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ status: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

describe('ONNX export', () => {
  let dir: string;
  const weightFiles = new Map<string, string>();

  before(async () => {
    await initBackend();
    assert.ok(existsSync(cli), `${cli} is missing; build with \`npx tsc -p .\` first`);
    dir = mkdtempSync(join(tmpdir(), 'residual-onnx-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** Our random weights for `name`: He init and random BN, deterministic in `seed`. */
  function randomModel(name: string, seed: number): Module {
    manualSeed(seed);
    const m = createModel(name);
    randomizeBatchNorm(m, seed);
    return m;
  }

  /** Those weights saved as safetensors (once), for `residual export --weights` and PyTorch. */
  function weightsFor(name: string, seed: number, model?: Module): string {
    const file = join(dir, `${name}.weights.safetensors`);
    if (!weightFiles.has(name)) {
      const m = model ?? randomModel(name, seed);
      saveStateDictFile(file, m.stateDict());
      if (!model) m.dispose();
      weightFiles.set(name, file);
    }
    return file;
  }

  IMAGENET.forEach((name, i) => {
    it(`${name}: onnxruntime matches our engine at batch 2 and 3 (dynamic batch), input ${INPUT.join('x')}`, async () => {
      const m = randomModel(name, 100 + i);
      try {
        weightsFor(name, 100 + i, m); // the PyTorch parity test below starts from the same weights
        m.eval();
        const file = join(dir, `${name}.onnx`);
        const info = exportOnnx(m, { input: INPUT, file });
        assert.equal(info.opset, 17);
        assert.equal(info.irVersion, 8);
        assert.deepEqual(info.inputShape, ['batch', ...INPUT]);
        assert.deepEqual(info.outputShape, ['batch', 1000]);
        assert.equal(info.ops.BatchNormalization, undefined, 'BN is folded by default');
        await checkAgainstEngine(m, file, INPUT, [2, 3], 7 + i);
      } finally {
        m.dispose();
      }
    });
  });

  it('PyTorch parity: `residual export` ONNX in onnxruntime vs torchvision on the exported safetensors', async () => {
    const probe = spawnSync(PYTHON, ['-c', 'import torch, torchvision'], { encoding: 'utf8' });
    assert.ok(!probe.error && probe.status === 0,
      `PyTorch parity needs Debian's ${PYTHON} with torch and torchvision (apt-get install -y python3-torch python3-torchvision): ` +
      `${probe.error?.message ?? probe.stderr.trim().split('\n').pop()}`);
    const shape = [2, ...INPUT];
    const x = randomArray(shape.reduce((a, b) => a * b, 1), 42);
    const inputFile = join(dir, 'parity_input.safetensors');
    writeSafetensors(inputFile, { input: { dtype: 'F32', shape, data: x } });
    // The three exports run side by side: each mostly waits on its file writes.
    const jobs = await Promise.all(IMAGENET.map(async (name, i) => {
      const onnx = join(dir, `${name}.cli.onnx`), st = join(dir, `${name}.cli.safetensors`);
      const r = await runCliAsync(['export', '--model', name, '--weights', weightsFor(name, 100 + i), '--input', INPUT.join('x'),
        '--onnx', onnx, '--safetensors', st]);
      assert.equal(r.status, 0, `residual export ${name} failed: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`${name}: wrote .*${name}\\.cli\\.onnx \\(ONNX opset 17`));
      // num_batches_tracked must reach PyTorch as int64 (the Python side checks this too).
      const reader = openStateDictFile(st);
      try {
        for (const k of reader.names) assert.equal(reader.info(k).dtype, k.endsWith('num_batches_tracked') ? 'I64' : 'F32', k);
        assert.equal(reader.read('bn1.num_batches_tracked').data[0], 1234);
      } finally {
        reader.close();
      }
      return { model: name, weights: st, input: inputFile, output: join(dir, `${name}.torch.safetensors`), onnx };
    }));
    writeFileSync(join(dir, 'jobs.json'), JSON.stringify(jobs));
    const py = spawnSync(PYTHON, [parityScript, join(dir, 'jobs.json')], { encoding: 'utf8', timeout: 5 * 60_000 });
    assert.equal(py.status, 0, `${parityScript} failed (exit ${py.status}): ${py.error?.message ?? py.stderr.slice(-2000)}`);
    for (const job of jobs) {
      const torchOut = readSafetensors(job.output).tensors.get('logits');
      assert.ok(torchOut, `${job.output} has no logits`);
      assert.deepEqual(torchOut.shape, [2, 1000]);
      const got = await ortRun(job.onnx, x, shape);
      assertMatches(got.data, torchOut.data, `${job.model}: onnxruntime vs PyTorch`);
    }
  });

  for (const name of ['resnet20', 'plain20']) {
    it(`${name} (CIFAR${name === 'resnet20' ? ', option-A shortcuts' : ', no shortcuts'}) runs in onnxruntime like our engine`, async () => {
      manualSeed(3);
      const m = createModel(name);
      try {
        randomizeBatchNorm(m, 5);
        m.eval();
        for (const input of [[3, 32, 32], [3, 33, 27]]) {
          const file = join(dir, `${name}.onnx`);
          const info = exportOnnx(m, { input, file });
          if (name === 'resnet20') {
            // Two stage transitions, each subsampled (Slice, steps 2) and zero-padded on channels (Pad).
            assert.equal(info.ops.Slice, 2);
            assert.equal(info.ops.Pad, 2);
            assert.equal(info.ops.Add, 9);
          } else {
            assert.equal(info.ops.Add, undefined);
          }
          await checkAgainstEngine(m, file, input, [2, 3], 11);
        }
      } finally {
        m.dispose();
      }
    });
  }

  it('BatchNorm kept as nodes (foldBatchNorm: false) matches too', async () => {
    manualSeed(4);
    const m = createModel('resnet20');
    try {
      randomizeBatchNorm(m, 6);
      m.eval();
      const { bytes, info } = onnxBytes(m, { input: [3, 32, 32], foldBatchNorm: false });
      assert.equal(info.ops.BatchNormalization, 19);
      await checkAgainstEngine(m, bytes, [3, 32, 32], [2], 13);
    } finally {
      m.dispose();
    }
  });

  for (const form of ['a', 'b', 'c'] as ResNeXtForm[]) {
    it(`ResNeXt block form (${form}) exports on its own and matches our engine (BN folded and kept)`, async () => {
      manualSeed(8);
      const block = resnextBlock(form, { inChannels: 32, outChannels: 64, cardinality: 4, pathWidth: 4, stride: 2 });
      try {
        randomizeBatchNorm(block, 9);
        block.eval();
        for (const foldBatchNorm of [true, false]) {
          const { bytes, info } = onnxBytes(block, { input: [32, 9, 10], foldBatchNorm });
          assert.deepEqual(info.outputShape, ['batch', 64, 5, 5]);
          if (form === 'b') assert.equal(info.ops.Concat, 1);
          await checkAgainstEngine(block, bytes, [32, 9, 10], [2], 17, 'output');
        }
      } finally {
        block.dispose();
      }
    });
  }

  it('opsets 13 and 22, and a static batch of 1', async () => {
    manualSeed(5);
    const m = createModel('resnet20');
    try {
      m.eval();
      for (const opset of [13, 22]) {
        const { bytes, info } = onnxBytes(m, { input: [3, 32, 32], opset });
        assert.equal(info.irVersion, opset === 13 ? 7 : 10);
        await checkAgainstEngine(m, bytes, [3, 32, 32], [2], 19);
      }
      const { bytes, info } = onnxBytes(m, { input: [3, 32, 32], dynamicBatch: false });
      assert.deepEqual(info.inputShape, [1, 3, 32, 32]);
      await checkAgainstEngine(m, bytes, [3, 32, 32], [1], 23);
      await assert.rejects(ortRun(bytes, new Float32Array(2 * 3 * 32 * 32), [2, 3, 32, 32]), /dimension|shape|Got: 2/i);
      assert.throws(() => onnxBytes(m, { input: [3, 32, 32], opset: 9 }), /opset 9 is not supported; use one of 13,/);
      assert.throws(() => onnxBytes(m, { input: [32, 32] }), /input must be \[C, H, W\]/);
      assert.throws(() => onnxBytes(m, { input: [1, 32, 32] }), /conv1: expects 3 input channels, gets 1/);
    } finally {
      m.dispose();
    }
  });

  it('the file is a valid model onnxruntime loads, written atomically; clear errors for a missing folder and an unknown model', async () => {
    manualSeed(6);
    const m = createModel('plain20');
    try {
      const file = join(dir, 'plain20.onnx');
      exportOnnx(m, { input: [3, 32, 32], file });
      const head = readFileSync(file).subarray(0, 2);
      assert.deepEqual([...head], [0x08, 8], 'the file starts with ir_version 8');
      const session = await ort.InferenceSession.create(file);
      assert.deepEqual([...session.inputNames], ['input']);
      assert.deepEqual([...session.outputNames], ['logits']);
      await session.release();
      assert.deepEqual(readdirSync(dir).filter((f) => f.includes('.tmp-')), [], 'no temp file is left behind');

      const missing = join(dir, 'no', 'such', 'folder', 'm.onnx');
      assert.throws(() => exportOnnx(m, { input: [3, 32, 32], file: missing }), /the folder .*folder does not exist/);
      assert.throws(() => exportOnnx(m, { input: [3, 32, 32], file: dir }), /it is a folder/);
    } finally {
      m.dispose();
    }

    const unknown = runCli(['export', '--model', 'resnet19', '--onnx', join(dir, 'x.onnx')]);
    assert.equal(unknown.status, 1);
    assert.match(unknown.stderr, /unknown model "resnet19"\. Known models: resnet18, /);
    const noFolder = runCli(['export', '--model', 'resnet20', '--onnx', join(dir, 'nope', 'x.onnx')]);
    assert.equal(noFolder.status, 1);
    assert.match(noFolder.stderr, /cannot write .*x\.onnx: the folder .*nope does not exist/);
    const nothing = runCli(['export', '--model', 'resnet20']);
    assert.equal(nothing.status, 2);
    assert.match(nothing.stderr, /nothing to write; give --onnx/);
    const badInput = runCli(['export', '--model', 'resnet20', '--onnx', join(dir, 'x.onnx'), '--input', '3x32']);
    assert.equal(badInput.status, 1);
    assert.match(badInput.stderr, /--input must look like 3x224x224/);
    const classes = runCli(['export', '--model', 'resnet20', '--weights', weightsFor('resnet20', 1), '--num-classes', '7', '--onnx', join(dir, 'x.onnx')]);
    assert.equal(classes.status, 1);
    assert.match(classes.stderr, /--num-classes 7 disagrees with the weights, whose classifier has 10 outputs/);
    assert.ok(!existsSync(join(dir, 'x.onnx')), 'a failed export writes nothing');
  });

  it('`residual export` without weights: --num-classes and a 1-channel --input', async () => {
    const file = join(dir, 'r20_1ch.onnx');
    const r = runCli(['export', '--model', 'resnet20', '--input', '1x28x28', '--num-classes', '5', '--onnx', file, '--static-batch', '--keep-batchnorm']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /BatchNormalization.*input \[1, 1, 28, 28\] -> logits \[1, 5\]/);
    const y = await ortRun(file, randomArray(28 * 28, 1), [1, 1, 28, 28]);
    assert.deepEqual([...y.dims], [1, 5]);
  });

  if (process.env.RESIDUAL_ONNX_ALL) {
    for (const name of modelNames()) {
      it(`every model: ${name} exports and matches our engine`, async () => {
        manualSeed(1);
        const m = createModel(name);
        try {
          randomizeBatchNorm(m, 2);
          // Very deep nets overflow float32 with random BN: damp the residual branches.
          if (name === 'resnet1202') {
            const sd = m.stateDict();
            for (const [k, t] of sd) if (/bn2\.weight$/.test(k)) t.data = t.data.map((v) => v * 0.02);
            m.loadStateDict(sd);
          }
          m.eval();
          const input = getModel(name).family === 'cifar' ? [3, 32, 32] : [3, 64, 48];
          const opts: OnnxExportOptions = { input };
          await checkAgainstEngine(m, onnxBytes(m, opts).bytes, input, [2], 29);
        } finally {
          m.dispose();
        }
      });
    }
  }
});
