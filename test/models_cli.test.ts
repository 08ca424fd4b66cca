// The `models`, `summary` and `infer` commands as a person runs them: figures, tables, JSON, and
// errors that say what to fix.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { readSafetensors, saveStateDictFile, writeSafetensors } from '../src/io/index.js';
import { resnet18, traceModel } from '../src/models/index.js';
import { manualSeed } from '../src/nn/index.js';
import { repoRoot } from './helpers.js';

const cli = join(repoRoot, 'dist', 'src', 'cli', 'main.js');
const work = mkdtempSync(join(tmpdir(), 'residual-models-cli-'));
after(() => rmSync(work, { recursive: true, force: true }));

function residual(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function writeInput(path: string, shape: number[]): void {
  const data = Float32Array.from({ length: shape.reduce((a, b) => a * b) }, (_, i) => Math.sin(i * 0.3));
  writeSafetensors(path, { input: { dtype: 'F32', shape, data } });
}

describe('residual models', () => {
  it('--json lists every model with the walk\'s params and MACs at its input', () => {
    const r = residual('models', '--json');
    assert.equal(r.code, 0, r.stderr);
    const list = JSON.parse(r.stdout) as { name: string; input: number[]; params: number; macs: number }[];
    const byName = new Map(list.map((m) => [m.name, m]));
    for (const name of ['resnet18', 'resnext101_64x4d', 'wide_resnet101_2', 'plain34', 'resnet1202', 'plain110', 'resnext29_16x64d']) {
      assert.ok(byName.has(name), `${name} is listed`);
    }
    assert.deepEqual(byName.get('resnet50'), { ...byName.get('resnet50'), input: [3, 224, 224], params: 25_557_032, macs: traceModel('resnet50').macs });
    assert.deepEqual(byName.get('resnet110')!.input, [3, 32, 32]);
  });
  it('prints a table', () => {
    const r = residual('models');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^resnet18\s+imagenet\s+3x224x224\s+11,689,512\s+1\.814 G/m);
    assert.match(r.stdout, /^resnet20\s+cifar\s+3x32x32\s+269,722\s+40\.6 M/m);
  });
});

describe('residual summary', () => {
  it('prints one row per layer and the totals', () => {
    const r = residual('summary', 'resnet18');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^conv1\s+Conv2d 7x7 s2\s+\[1, 64, 112, 112\]\s+9,408\s+118,013,952$/m);
    assert.match(r.stdout, /^layer2\.0\.downsample\.0\s+Conv2d 1x1 s2\s+\[1, 128, 28, 28\]\s+8,192\s+6,422,528$/m);
    assert.match(r.stdout, /^fc\s+Linear\s+\[1, 1000\]\s+513,000\s+512,000$/m);
    assert.match(r.stdout, /total params: 11,689,512/);
    assert.match(r.stdout, /total MACs: +1,814,073,344 \(1\.814 G/);
  });
  it('--stages: the paper\'s view, a convolution block then identity blocks per stage, summing to the totals', () => {
    const r = residual('summary', 'resnet101', '--stages', '--json');
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as { params: number; macs: number; stages: { stage: string; blocks: string[]; params: number; macs: number; outShape: number[] }[] };
    assert.deepEqual(s.stages.map((x) => x.stage), ['conv1', 'conv2_x', 'conv3_x', 'conv4_x', 'conv5_x', 'head']);
    assert.deepEqual(s.stages.map((x) => x.blocks.length), [0, 3, 4, 23, 3, 0]);
    for (const st of s.stages.slice(1, 5)) assert.deepEqual(st.blocks, ['conv', ...Array(st.blocks.length - 1).fill('identity')]);
    assert.equal(s.stages.reduce((a, x) => a + x.params, 0), 44_549_160);
    assert.equal(s.stages.reduce((a, x) => a + x.macs, 0), s.macs);
    assert.deepEqual(s.stages[4]!.outShape, [1, 2048, 7, 7]);
    const text = residual('summary', 'plain20', '--stages');
    assert.match(text.stdout, /^conv3_x\s+layer2\s+3: 3 plain\s+\[1, 32, 16, 16\]/m);
    assert.match(residual('summary', 'resnet20', '--stages').stdout, /^conv3_x\s+layer2\s+3: A \+ 2 identity/m);
  });
  it('--json with --input and --depth groups rows by module', () => {
    const r = residual('summary', 'resnet20', '--input', '1x28x28', '--depth', '2', '--num-classes', '7', '--json');
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as { params: number; macs: number; output: number[]; layers: { name: string; type: string; params: number; macs: number }[] };
    assert.deepEqual(s.output, [7]);
    const block = s.layers.find((l) => l.name === 'layer2.0')!;
    assert.equal(block.type, 'BasicBlock');
    assert.equal(block.params, 16 * 32 * 9 + 64 + 32 * 32 * 9 + 64);
    assert.equal(s.layers.reduce((a, l) => a + l.params, 0), s.params);
    assert.equal(s.layers.reduce((a, l) => a + l.macs, 0), s.macs);
  });
  it('an unknown model lists the known ones; a bad --input says the format', () => {
    let r = residual('summary', 'resnet19');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /unknown model "resnet19"\. Known models: resnet18, .*resnext29_16x64d/);
    r = residual('summary', 'resnet18', '--input', '224x224');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--input must look like 3x224x224 \(channels x height x width\), got "224x224"/);
    r = residual('summary', 'resnet18', '--input', '3x0x8');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--input must look like 3x224x224/);
    r = residual('summary');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /name one model/);
  });
});

describe('residual infer', () => {
  it('runs a random-init model and writes logits or an asked feature', () => {
    const input = join(work, 'x.safetensors');
    writeInput(input, [2, 1, 20, 20]);
    let r = residual('infer', '--model', 'resnet20', '--input', input, '--output', join(work, 'y.safetensors'), '--seed', '3');
    assert.equal(r.code, 0, r.stderr);
    const y = readSafetensors(join(work, 'y.safetensors')).tensors.get('output')!;
    assert.deepEqual(y.shape, [2, 10]);
    r = residual('infer', '--model', 'resnet20', '--input', input, '--output', join(work, 'f.safetensors'), '--seed', '3',
      '--feature', 'layer3', '--batch-size', '1');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readSafetensors(join(work, 'f.safetensors')).tensors.get('output')!.shape, [2, 64, 5, 5]);
    // Same seed, same weights: batch-size 1 and 2 give the same logits.
    r = residual('infer', '--model', 'resnet20', '--input', input, '--output', join(work, 'y1.safetensors'), '--seed', '3', '--batch-size', '1');
    assert.equal(r.code, 0, r.stderr);
    const y1 = readSafetensors(join(work, 'y1.safetensors')).tensors.get('output')!;
    for (let i = 0; i < y.data.length; i++) assert.ok(Math.abs(y.data[i] - y1.data[i]) <= 1e-5 * Math.max(1, Math.abs(y.data[i])));
  });
  it('takes classes from the weights, and says what does not fit', () => {
    manualSeed(8);
    const m = resnet18({ numClasses: 3 });
    const weights = join(work, 'r18.safetensors');
    saveStateDictFile(weights, m.stateDict());
    m.dispose();
    const input = join(work, 'x3.safetensors');
    writeInput(input, [1, 3, 32, 32]);
    let r = residual('infer', '--model', 'resnet18', '--weights', weights, '--input', input, '--output', join(work, 'o.safetensors'));
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readSafetensors(join(work, 'o.safetensors')).tensors.get('output')!.shape, [1, 3]);
    r = residual('infer', '--model', 'resnet34', '--weights', weights, '--input', input, '--output', join(work, 'o.safetensors'));
    assert.equal(r.code, 1);
    // A summary, not every key: how many are missing, the first few, and the model the weights fit.
    assert.match(r.stderr, /does not fit resnet34: 96 of the model's keys missing \(layer1\.2\.conv1\.weight, .*\); the weights look like resnet18: try --model resnet18/);
    writeInput(join(work, 'x1.safetensors'), [1, 1, 32, 32]);
    r = residual('infer', '--model', 'resnet18', '--weights', weights, '--input', join(work, 'x1.safetensors'), '--output', join(work, 'o.safetensors'));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /the weights expect 3-channel input, but "input" has 1 channels/);
  });
  it('missing options and a file without "input" get a clear error', () => {
    let r = residual('infer', '--model', 'resnet20');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /missing --input, --output/);
    const other = join(work, 'other.safetensors');
    writeSafetensors(other, { images: { dtype: 'F32', shape: [1], data: new Float32Array(1) } });
    r = residual('infer', '--model', 'resnet20', '--input', other, '--output', join(work, 'o.safetensors'));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /has no tensor "input" \(it has images\)/);
    r = residual('infer', '--model', 'resnet20', '--input', other, '--output', join(work, 'o.safetensors'), '--feature', 'layer9');
    assert.equal(r.code, 1);
  });
});
