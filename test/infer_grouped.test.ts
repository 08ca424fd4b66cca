// The plan's own kernel for 3x3 convs with 4 or 8 channels per group (native/grouped_conv.cc),
// against a direct float64 convolution written here. The plans end in a linear head with identity
// weights, so the logits are the last conv's output itself, every position and channel of it:
// padding rows and columns, the unchecked middle of a row, strides, odd sizes, a fused residual sum, the ReLU. Both activation
// layouts (NHWC, nChw16c), f32 and bf16, batch 3 and 1 from one plan. Also: ResNeXt-50's narrow
// grouped convs run on it with no reorder around them, and oneDNN's path stays selectable for A/B.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { initBackend } from '../src/backend/index.js';
import type { NativeBackend, PlanOp } from '../src/backend/native.js';
import { compileForInference } from '../src/infer/index.js';
import { createModel } from '../src/models/index.js';
import { manualSeed } from '../src/nn/index.js';
import { assertClose, rng } from './helpers.js';

type Shape = [number, number, number];

function random(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => scale * (2 * r() - 1));
}

/** y = conv(x) + bias (+ add) (ReLU) for `n` NCHW samples, in float64. */
function directConv(
  x: ArrayLike<number>, n: number, [c, h, w]: Shape, weight: Float32Array, bias: Float32Array, out: number,
  k: number, stride: number, pad: number, groups: number, relu: boolean, add?: ArrayLike<number>,
): Float64Array {
  const oh = Math.floor((h + 2 * pad - k) / stride) + 1, ow = Math.floor((w + 2 * pad - k) / stride) + 1;
  const cin = c / groups, cout = out / groups;
  const y = new Float64Array(n * out * oh * ow);
  for (let b = 0; b < n; b++) {
    for (let o = 0; o < out; o++) {
      const g = Math.floor(o / cout);
      for (let i = 0; i < oh; i++) {
        for (let j = 0; j < ow; j++) {
          let s = bias[o]!;
          for (let ci = 0; ci < cin; ci++) {
            for (let a = 0; a < k; a++) {
              const yy = i * stride - pad + a;
              if (yy < 0 || yy >= h) continue;
              for (let d = 0; d < k; d++) {
                const xx = j * stride - pad + d;
                if (xx < 0 || xx >= w) continue;
                s += weight[((o * cin + ci) * k + a) * k + d]! * x[((b * c + g * cin + ci) * h + yy) * w + xx]!;
              }
            }
          }
          const at = ((b * out + o) * oh + i) * ow + j;
          if (add) s += add[at]!;
          y[at] = relu ? Math.max(0, s) : s;
        }
      }
    }
  }
  return y;
}

function identityHead(name: string, src: number, dst: number, [c, h, w]: Shape): PlanOp {
  const k = c * h * w;
  const weight = new Float32Array(k * k);
  for (let i = 0; i < k; i++) weight[i * k + i] = 1;
  return { type: 'linear', name, src, dst, in: [c, h, w], out: [k, 1, 1], weight, bias: new Float32Array(k) };
}

function grouped(
  name: string, src: number, dst: number, input: Shape, groups: number, stride: number, relu: boolean, sum: boolean, seed: number,
): PlanOp & { type: 'conv' } {
  const [c, h, w] = input;
  const out: Shape = [c, Math.floor((h - 1) / stride) + 1, Math.floor((w - 1) / stride) + 1];
  return {
    type: 'conv', name, src, dst, in: input, out, kh: 3, kw: 3, sh: stride, sw: stride, ph: 1, pw: 1, dh: 1, dw: 1, groups, relu, sum,
    weight: random(c * (c / groups) * 9, seed, 0.3), bias: random(c, seed + 1, 0.5),
  };
}

// Each case: the plan's ops and the float64 answer for n NCHW samples.
interface Case {
  name: string;
  input: Shape;
  ops: PlanOp[];
  expect(x: Float32Array, n: number): Float64Array;
}

/** One grouped conv straight from the input, then the identity head. */
function single(name: string, input: Shape, groups: number, stride: number, relu: boolean, seed: number): Case {
  const g = grouped(name, 0, 1, input, groups, stride, relu, false, seed);
  return {
    name: `${input[0] / groups} per group, stride ${stride}, ${relu ? 'ReLU' : 'no ReLU'}, ${input[1]}x${input[2]}`,
    input,
    ops: [g, identityHead('head', 1, 2, g.out as Shape)],
    expect: (x, n) => directConv(x, n, input, g.weight, g.bias, input[0], 3, stride, 1, groups, relu),
  };
}

const CASES: Case[] = [
  single('g4', [16, 8, 14], 4, 1, true, 3),
  single('g8s2', [48, 7, 13], 6, 2, false, 5), // 3 channel blocks
  (() => {
    const input: Shape = [16, 6, 13];
    const shortcut: PlanOp & { type: 'conv' } = {
      type: 'conv', name: 'shortcut', src: 0, dst: 1, in: input, out: input, kh: 1, kw: 1, sh: 1, sw: 1, ph: 0, pw: 0, dh: 1, dw: 1,
      groups: 1, relu: false, sum: false, weight: random(16 * 16, 7, 0.3), bias: random(16, 8, 0.5),
    };
    const g = grouped('g8sum', 0, 1, input, 2, 1, true, true, 9); // adds onto the shortcut, then ReLU
    return {
      name: '8 per group, residual sum then ReLU, 6x13',
      input,
      ops: [shortcut, g, identityHead('head', 1, 2, input)],
      expect: (x, n) => {
        const s = directConv(x, n, input, shortcut.weight, shortcut.bias, 16, 1, 1, 0, 1, false);
        return directConv(x, n, input, g.weight, g.bias, 16, 3, 1, 1, 2, true, s);
      },
    };
  })(),
];

describe('narrow grouped 3x3 convs in the compiled plan', () => {
  let nb: NativeBackend;
  // The plan's switches come from the engine configuration, set by initBackend (src/backend/config.ts).
  const configure = (plan: { layout?: '' | 'nhwc' | 'blocked'; grouped?: '' | 'onednn' }) =>
    initBackend('native', { plan: { layout: '', grouped: '', ...plan } });
  before(async () => {
    nb = (await configure({})) as unknown as NativeBackend;
  });
  after(async () => {
    await initBackend('native', {});
  });

  for (const layout of ['nhwc', 'blocked'] as const) {
    for (const c of CASES) {
      for (const dtype of ['f32', 'bf16'] as const) {
        it(`${c.name}: ${layout} ${dtype} matches a direct float64 convolution`, async (t) => {
          await configure({ layout });
          const per = c.input[0] * c.input[1] * c.input[2];
          let x = random(3 * per, 11);
          if (dtype === 'bf16') {
            // bf16 inputs exactly (the plan rounds its input to bf16), so the oracle sees the same
            const bits = new Uint32Array(x.buffer);
            for (let i = 0; i < bits.length; i++) bits[i] = bits[i]! & 0xffff0000;
            x = new Float32Array(bits.buffer);
          }
          let plan;
          try {
            plan = nb.planCreate({ input: c.input, dtype, maxBatch: 3, buffers: 3, inputBuffer: 0, ops: c.ops });
          } catch (e) {
            assert.match((e as Error).message, /bf16 needs a CPU with AVX512-BF16/);
            t.skip('this CPU has no bf16');
            return;
          }
          try {
            const impls = nb.planInfo(plan).implementations;
            const narrow = impls.filter((e) => e.impl.startsWith('residual:grouped3x3'));
            assert.equal(narrow.length, 1, `our kernel runs the grouped conv: ${JSON.stringify(impls)}`);
            // bf16: weights and the intermediate shortcut are rounded to bf16 (8 bits of mantissa).
            const tol = dtype === 'f32' ? 1e-5 : 2e-2;
            assertClose(nb.planRun(plan, x, 3), c.expect(x, 3), tol, `${c.name} ${layout} ${dtype} batch 3`);
            assertClose(nb.planRun(plan, x.subarray(per, 2 * per), 1), c.expect(x.subarray(per, 2 * per), 1), tol, `${c.name} batch 1`);
          } finally {
            nb.planDispose(plan);
          }
        });
      }
    }
  }

  it('ResNeXt-50 32x4d: stages 1 and 2 run it with no reorder around them, and agree with oneDNN\'s kernels', async () => {
    await configure({});
    manualSeed(2);
    const model = createModel('resnext50_32x4d');
    const input: Shape = [3, 64, 64];
    const x = random(2 * 3 * 64 * 64, 13);
    const ours = compileForInference(model, { input, maxBatch: 2 });
    await configure({ grouped: 'onednn' });
    const theirs = compileForInference(model, { input, maxBatch: 2 });
    try {
      const impls = ours.implementations();
      const narrow = impls.filter((e) => e.impl.startsWith('residual:grouped3x3'));
      // layer1 (3 blocks, 4 per group) and layer2 (4 blocks, 8 per group); layers 3-4 stay oneDNN's
      assert.deepEqual(narrow.map((e) => e.impl), [...Array(3).fill('residual:grouped3x3:g4'), ...Array(4).fill('residual:grouped3x3:g8')]);
      const reorders = impls.filter((e) => /reorder/.test(e.impl) || /:reorder$/.test(e.op)).map((e) => e.op);
      assert.ok(reorders.every((op) => !/layer[12]/.test(op)), `reorders in stages 1-2: ${reorders.join(', ')}`);
      assert.ok(theirs.implementations().every((e) => !e.impl.startsWith('residual:')));
      assertClose(ours.run(x, 2), theirs.run(x, 2), 1e-5, 'ours vs oneDNN');
    } finally {
      ours.dispose();
      theirs.dispose();
      model.dispose();
      await configure({});
    }
  });

  it('a bad RESIDUAL_PLAN_GROUPED value is refused at initBackend with the accepted ones', async () => {
    const saved = process.env.RESIDUAL_PLAN_GROUPED;
    process.env.RESIDUAL_PLAN_GROUPED = 'fast';
    try {
      await assert.rejects(initBackend('native', {}), /RESIDUAL_PLAN_GROUPED must be own or onednn, got "fast"/);
    } finally {
      if (saved === undefined) delete process.env.RESIDUAL_PLAN_GROUPED;
      else process.env.RESIDUAL_PLAN_GROUPED = saved;
    }
  });
});
