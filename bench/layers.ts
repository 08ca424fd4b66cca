// Per-layer training benchmark: forward + backward of every conv -> BN -> ReLU shape of ResNet-50
// (batch 16, 224x224) and CIFAR ResNet-20 (batch 128, 32x32), our engine against PyTorch, in one run.
//
//   node dist/bench/layers.js [--threads 2] [--rounds 2] [--repeats 5] [--net resnet50|resnet20|all]
//
// Runs alternate (ours, PyTorch, ours, PyTorch...) because this machine is shared; each layer keeps
// its fastest median across rounds. Prints one JSON object: per layer ms for both engines, and the
// sum over the network's layers (each layer weighted by how often it occurs) with the ratio
// ours / PyTorch (below 1.0 means we are faster). Both engines are pinned to the same thread count.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

export interface LayerSpec {
  name: string;
  /** Input [N, C, H, W]. */
  input: [number, number, number, number];
  out: number;
  kernel: number;
  stride: number;
  padding: number;
  groups: number;
  /** How many times the network has this layer. */
  count: number;
  /** False for the stem, whose input gradient nobody needs. */
  input_grad: boolean;
}

function layer(name: string, n: number, c: number, hw: number, out: number, kernel: number, stride: number, count: number, inputGrad = true): LayerSpec {
  return { name, input: [n, c, hw, hw], out, kernel, stride, padding: Math.floor(kernel / 2), groups: 1, count, input_grad: inputGrad };
}

/** ResNet-50 (torchvision v1.5: stride on the 3x3) conv shapes, with their multiplicity. */
export function resnet50Layers(n: number): LayerSpec[] {
  const out: LayerSpec[] = [layer('conv1 7x7/2', n, 3, 224, 64, 7, 2, 1, false)];
  const stages = [[64, 3, 56], [128, 4, 56], [256, 6, 28], [512, 3, 14]] as const;
  let inC = 64;
  stages.forEach(([width, blocks, hw], i) => {
    const stride = i === 0 ? 1 : 2;
    const outHw = hw / stride;
    const s = `layer${i + 1}`;
    out.push(layer(`${s}.0.conv1 1x1`, n, inC, hw, width, 1, 1, 1));
    out.push(layer(`${s}.0.conv2 3x3/${stride}`, n, width, hw, width, 3, stride, 1));
    out.push(layer(`${s}.0.conv3 1x1`, n, width, outHw, width * 4, 1, 1, blocks));
    out.push(layer(`${s}.0.downsample 1x1/${stride}`, n, inC, hw, width * 4, 1, stride, 1));
    out.push(layer(`${s}.k.conv1 1x1`, n, width * 4, outHw, width, 1, 1, blocks - 1));
    out.push(layer(`${s}.k.conv2 3x3`, n, width, outHw, width, 3, 1, blocks - 1));
    inC = width * 4;
  });
  return out;
}

/** CIFAR ResNet-20 conv shapes (3 input channels, 32x32). */
export function resnet20Layers(n: number): LayerSpec[] {
  return [
    layer('conv1 3x3', n, 3, 32, 16, 3, 1, 1, false),
    layer('stage1 3x3 16', n, 16, 32, 16, 3, 1, 6),
    layer('stage2.0 3x3/2 16->32', n, 16, 32, 32, 3, 2, 1),
    layer('stage2 3x3 32', n, 32, 16, 32, 3, 1, 5),
    layer('stage3.0 3x3/2 32->64', n, 32, 16, 64, 3, 2, 1),
    layer('stage3 3x3 64', n, 64, 8, 64, 3, 1, 5),
  ];
}

interface EngineResult {
  engine: string;
  threads: number;
  layers: { name: string; ms: number }[];
}

const here = dirname(fileURLToPath(import.meta.url));

/** Our side, in this process: the public ops with the autograd tape, as a training step uses them. */
async function runOurs(spec: { layers: LayerSpec[]; warmup: number; repeats: number }): Promise<EngineResult> {
  const { initBackend } = await import('../src/backend/index.js');
  const { Tensor, batchNorm, conv2d, keep, relu, tidy } = await import('../src/tensor/index.js');
  const backend = await initBackend('native');
  const rand = (n: number, scale: number) => Float32Array.from({ length: n }, () => (Math.random() * 2 - 1) * scale);
  const layers: EngineResult['layers'] = [];
  for (const l of spec.layers) {
    const [n, c, h, w] = l.input;
    const x = Tensor.fromArray(rand(n * c * h * w, 1), l.input, { requiresGrad: l.input_grad });
    const weight = Tensor.fromArray(rand(l.out * (c / l.groups) * l.kernel * l.kernel, 0.05), [l.out, c / l.groups, l.kernel, l.kernel], { requiresGrad: true });
    const gamma = Tensor.fromArray(new Float32Array(l.out).fill(1), [l.out], { requiresGrad: true });
    const beta = Tensor.zeros([l.out], { requiresGrad: true });
    const rm = Tensor.zeros([l.out]);
    const rv = Tensor.fromArray(new Float32Array(l.out).fill(1), [l.out]);
    let dy: InstanceType<typeof Tensor> | null = null;
    const step = () => {
      tidy(() => {
        const y = relu(batchNorm(conv2d(x, weight, null, { stride: l.stride, padding: l.padding, groups: l.groups }), gamma, beta, rm, rv, { training: true }));
        dy ??= keep(Tensor.fromArray(rand(y.size, 1), y.shape)); // reused across steps, outlives tidy
        y.backward(dy);
      });
      for (const t of [x, weight, gamma, beta]) { t.grad?.dispose(); t.grad = null; }
    };
    for (let i = 0; i < spec.warmup; i++) step();
    const times: number[] = [];
    for (let i = 0; i < spec.repeats; i++) {
      const t0 = performance.now();
      step();
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    layers.push({ name: l.name, ms: times[Math.floor(times.length / 2)] });
    for (const t of [x, weight, gamma, beta, rm, rv]) t.dispose();
    (dy as InstanceType<typeof Tensor> | null)?.dispose();
  }
  return { engine: `residual ${backend.name}`, threads: backend.info().threads, layers };
}

function runChild(args: string[], env: NodeJS.ProcessEnv, what: string): EngineResult {
  const r = spawnSync(args[0], args.slice(1), { env, encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status}): ${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as EngineResult;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      threads: { type: 'string', default: '2' }, rounds: { type: 'string', default: '2' }, repeats: { type: 'string', default: '5' },
      net: { type: 'string', default: 'all' }, 'ours-only': { type: 'string' }, 'torch-layout': { type: 'string', default: 'nchw' },
    },
  });
  if (values['ours-only']) {
    // Child mode: the spec file names the layers.
    const { readFileSync } = await import('node:fs');
    const spec = JSON.parse(readFileSync(values['ours-only'], 'utf8'));
    console.log(JSON.stringify(await runOurs(spec)));
    return;
  }
  const threads = Number(values.threads);
  const nets: Record<string, LayerSpec[]> = { resnet50: resnet50Layers(16), resnet20: resnet20Layers(128) };
  const chosen = values.net === 'all' ? Object.keys(nets) : [values.net!];
  const tmp = mkdtempSync(join(tmpdir(), 'residual-bench-'));
  const env = { ...process.env, OMP_NUM_THREADS: String(threads) };
  const report: Record<string, unknown> = { date: new Date().toISOString(), threads, rounds: Number(values.rounds), repeats: Number(values.repeats), networks: {} };
  try {
    for (const net of chosen) {
      const layers = nets[net];
      if (!layers) throw new Error(`--net must be resnet50, resnet20 or all, got ${net}`);
      const specFile = join(tmp, `${net}.json`);
      writeFileSync(specFile, JSON.stringify({ layers, threads, warmup: 2, repeats: Number(values.repeats), torch_layout: values['torch-layout'] }));
      const best = { ours: new Map<string, number>(), torch: new Map<string, number>() };
      const engines: Record<string, string> = {};
      for (let round = 0; round < Number(values.rounds); round++) {
        const ours = runChild([process.execPath, join(here, 'layers.js'), '--ours-only', specFile], env, 'our engine');
        const torch = runChild(['/usr/bin/python3', join(here, '..', '..', 'bench', 'torch_layers.py'), specFile], env, 'PyTorch');
        for (const [key, r] of [['ours', ours], ['torch', torch]] as const) {
          engines[key] = `${r.engine}, ${r.threads} threads`;
          for (const l of r.layers) best[key].set(l.name, Math.min(best[key].get(l.name) ?? Infinity, l.ms));
        }
      }
      let oursTotal = 0;
      let torchTotal = 0;
      const rows = layers.map((l) => {
        const o = best.ours.get(l.name)!;
        const t = best.torch.get(l.name)!;
        oursTotal += o * l.count;
        torchTotal += t * l.count;
        return { layer: l.name, input: l.input, out: l.out, count: l.count, ours_ms: +o.toFixed(3), torch_ms: +t.toFixed(3), ratio: +(o / t).toFixed(3) };
      });
      (report.networks as Record<string, unknown>)[net] = {
        engines, layers: rows, ours_total_ms: +oursTotal.toFixed(2), torch_total_ms: +torchTotal.toFixed(2), ratio: +(oursTotal / torchTotal).toFixed(3),
      };
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  console.log(JSON.stringify(report, null, 1));
}

await main();
