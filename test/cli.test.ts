// The command line end to end, as a person uses it: train a little on Fashion-MNIST, then evaluate,
// predict, plot and resume from the run folder it wrote; and the errors a person sees for bad input.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import sharp from 'sharp';
import { repoRoot } from './helpers.js';

const cli = join(repoRoot, 'dist', 'src', 'cli', 'main.js');
const dir = mkdtempSync(join(tmpdir(), 'residual-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function residual(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, RESIDUAL_BACKEND: 'native' } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function jsonLines(text: string): Record<string, unknown>[] {
  return text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('residual CLI', () => {
  const run = join(dir, 'run');

  it('info reports the native backend with oneDNN and its ISA', () => {
    const r = residual('info', '--json');
    assert.equal(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout) as { backend: string; onednnVersion: string; isa: string; threads: number };
    assert.equal(info.backend, 'native');
    assert.match(info.onednnVersion, /^2\.6\./);
    assert.match(info.isa, /avx/);
    assert.ok(info.threads >= 1);
  });

  it('train writes JSON lines, metrics.jsonl and a checkpoint per epoch (with --threads auto)', () => {
    const r = residual('train', '--model', 'resnet20', '--subset', '512', '--epochs', '2', '--batch', '64', '--json', '--out', run, '--threads', 'auto');
    assert.equal(r.code, 0, r.stderr);
    const lines = jsonLines(r.stdout);
    assert.equal(lines[0].event, 'start');
    // the governor's log: every core from step 0, then its probe of one thread (when there are 2+ cores)
    const threads = lines.find((l) => l.event === 'threads') as { changes: [number, number][] } | undefined;
    assert.ok(threads, 'no threads event');
    assert.deepEqual(threads.changes[0], [0, lines[0].threads]);
    if ((lines[0].threads as number) > 1) assert.deepEqual(threads.changes[1], [4, 1]);
    const epochs = lines.filter((l) => 'epoch' in l);
    assert.equal(epochs.length, 2);
    for (const k of ['epoch', 'train_loss', 'train_acc', 'test_loss', 'test_acc', 'lr', 'elapsed_s', 'images_per_s']) {
      assert.equal(typeof epochs[1][k], 'number', `${k} in ${JSON.stringify(epochs[1])}`);
    }
    assert.ok((epochs[1].test_acc as number) > 0.2, `test accuracy ${epochs[1].test_acc} is above chance after 2 epochs on 512 images`);
    assert.equal(readFileSync(join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').length, 2);
    assert.ok(existsSync(join(run, 'checkpoints', 'epoch-0002', 'model.safetensors')));
  });

  it('eval reproduces the run\'s final test accuracy from its checkpoint', () => {
    const r = residual('eval', '--model', 'resnet20', '--weights', run, '--json');
    assert.equal(r.code, 0, r.stderr);
    const e = JSON.parse(r.stdout) as { acc: number; samples: number };
    const last = jsonLines(readFileSync(join(run, 'metrics.jsonl'), 'utf8')).pop()!;
    assert.equal(e.samples, 10000); // eval uses the whole test set; the run tested on a subset
    assert.ok(Math.abs(e.acc - (last.test_acc as number)) < 0.15, `eval ${e.acc} vs run ${last.test_acc}`);
  });

  it('predict gives top-5 Fashion-MNIST classes for an image', async () => {
    const img = join(dir, 'shirt.png');
    await sharp({ create: { width: 40, height: 40, channels: 3, background: { r: 230, g: 230, b: 230 } } }).png().toFile(img);
    const r = residual('predict', '--model', 'resnet20', '--weights', run, '--json', img);
    assert.equal(r.code, 0, r.stderr);
    const [p] = JSON.parse(r.stdout) as { top: { label: string; probability: number }[] }[];
    assert.equal(p.top.length, 5);
    const total = p.top.reduce((a, t) => a + t.probability, 0);
    assert.ok(total > 0 && total <= 1 + 1e-9);
    assert.ok(p.top.every((t) => ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'].includes(t.label)));
  });

  it('plot draws the run\'s curves', () => {
    const r = residual('plot', run);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(existsSync(join(run, 'curves.png')));
  });

  it('resume continues a finished run to more epochs', () => {
    const r = residual('train', '--model', 'resnet20', '--subset', '512', '--epochs', '3', '--batch', '64', '--json', '--out', run, '--resume');
    assert.equal(r.code, 0, r.stderr);
    const epochs = jsonLines(r.stdout).filter((l) => 'epoch' in l);
    assert.deepEqual(epochs.map((e) => e.epoch), [3]);
  });

  it('Ctrl-C saves a checkpoint mid-epoch; --resume then ends exactly where an uninterrupted run ends', async () => {
    // A fixed thread count: bit-for-bit repetition is what fixed counts promise (auto, the default, does not).
    const args = ['train', '--model', 'resnet20', '--subset', '1536', '--epochs', '2', '--batch', '32', '--json', '--threads', '2'];
    const whole = residual(...args, '--out', join(dir, 'whole'));
    assert.equal(whole.code, 0, whole.stderr);
    const cut = join(dir, 'cut');
    const child = spawn(process.execPath, [cli, ...args, '--out', cut], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    // Interrupt once training is under way (the start line is printed before the first batch).
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    await new Promise((r) => setTimeout(r, 2500));
    child.kill('SIGINT');
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    assert.equal(code, 130, `exit code after Ctrl-C (output: ${out})`);
    assert.match(jsonLines(out).pop()!.stopped as string, /interrupted/);
    const resumed = residual(...args, '--out', cut, '--resume');
    assert.equal(resumed.code, 0, resumed.stderr);
    const last = (text: string) => jsonLines(text).filter((l) => 'epoch' in l).pop()!;
    for (const k of ['epoch', 'train_loss', 'train_acc', 'test_loss', 'test_acc']) {
      assert.equal(last(resumed.stdout)[k], last(whole.stdout)[k], `final ${k}`);
    }
  });

  it('bad input gets a clear error and a non-zero exit, never a stack trace', () => {
    const cases: [string[], RegExp][] = [
      [['train', '--model', 'resnet21'], /unknown model "resnet21"\. Known models: .*resnet20/],
      [['train', '--model', 'resnet20', '--epochs', '0'], /--epochs must be a positive integer, got "0"/],
      [['train', '--model', 'resnet20', '--threads', 'fast'], /--threads must be a positive integer or auto, got "fast"/],
      [['experiment', 'degradation', '--threads', '0'], /experiment: --threads must be a positive integer or auto, got "0"/],
      [['train', '--model', 'resnet20', '--data', 'mnist'], /--data must be fashion-mnist, cifar10:DIR/],
      [['train', '--model', 'resnet20', '--data', 'cifar10:/nonexistent'], /directory \/nonexistent does not exist/],
      [['eval', '--model', 'resnet20', '--weights', join(dir, 'nope.safetensors')], /nope\.safetensors do not exist/],
      [['summary', 'resnet50', '--input', '3x224'], /must look like 3x224x224|CxHxW|format/i],
      [['frobnicate'], /unknown command "frobnicate"/],
      // Every command with --dtype names its own choices.
      [['train', '--model', 'resnet20', '--dtype', 'int8'], /train: --dtype must be f32 or bf16, got "int8"/],
      [['eval', '--model', 'resnet20', '--dtype', 'fp16'], /eval: --dtype must be f32, bf16 or int8, got "fp16"/],
      [['predict', '--model', 'resnet20', '--dtype', 'fp16', 'x.png'], /predict: --dtype must be f32, bf16 or int8, got "fp16"/],
      [['embed', '--model', 'resnet20', '--out', join(dir, 'f.safetensors'), '--dtype', 'fp16', 'x.png'], /embed: --dtype must be f32, bf16 or int8, got "fp16"/],
      [['serve', '--model', 'resnet20', '--dtype', 'fp16'], /serve: --dtype must be f32, bf16 or int8, got "fp16"/],
    ];
    for (const [args, pattern] of cases) {
      const r = residual(...args);
      assert.notEqual(r.code, 0, `${args.join(' ')} should fail`);
      assert.match(r.stderr, pattern, args.join(' '));
      assert.doesNotMatch(r.stderr, /\n\s+at /, `no stack trace for ${args.join(' ')}`);
    }
  });
});
