// `residual bench`: the JSON line scripts read, both modes, bf16 inference, and the clear refusals
// (bf16 on a CPU without it, bad options), on CIFAR ResNet-20 with few runs so that the test stays fast.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseCpuinfo } from '../src/benchmark/index.js';
import { lastJson, residual } from './helpers.js';

describe('residual bench', () => {
  for (const mode of ['infer', 'train']) {
    it(`--mode ${mode} --json: the last line is one object with the figures`, () => {
      const r = residual(['bench', '--model', 'resnet20', '--batch', '2', '--mode', mode, '--warmup', '1', '--runs', '3',
        '--threads', '1', '--input', '3x32x24', '--json']);
      assert.equal(r.status, 0, r.stderr);
      const o = lastJson(r.stdout);
      for (const k of ['model', 'batch', 'mode', 'dtype', 'ms_per_image', 'images_per_s', 'threads', 'runs']) assert.ok(k in o, `missing ${k}`);
      assert.equal(o.model, 'resnet20');
      assert.equal(o.batch, 2);
      assert.equal(o.mode, mode);
      assert.equal(o.dtype, 'f32');
      assert.equal(o.threads, 1);
      assert.equal(o.runs, 3);
      assert.deepEqual(o.input, [3, 32, 24]);
      const ms = o.ms_per_image as number, ips = o.images_per_s as number;
      assert.ok(ms > 0 && ips > 0);
      assert.ok(Math.abs((ips * ms) / 1000 - 1) < 1e-3, `images_per_s ${ips} and ms_per_image ${ms} disagree`);
      // the host beside the figure: the same engine is ~2x apart on Zen 4 and Zen 5
      const host = o.host as { logical_cpus: number; load_1min: number; features: string[] };
      assert.ok(host.logical_cpus >= 1 && host.load_1min >= 0 && Array.isArray(host.features), JSON.stringify(host));
    });
  }

  it('the host record names the CPU generation from /proc/cpuinfo', () => {
    const amd = (family: number, flags: string) =>
      `processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: ${family}\nmodel\t\t: 2\nmodel name\t: AMD EPYC\nflags\t\t: ${flags}\n\nprocessor\t: 1\nvendor_id\t: Other\n`;
    const zen5 = parseCpuinfo(amd(26, 'fpu avx2 avx512f avx512_bf16 avx512_vnni avx512_vp2intersect'));
    assert.deepEqual(zen5, { cpu: 'AMD EPYC', vendor: 'AuthenticAMD', family: 26, model: 2, microarchitecture: 'Zen 5',
      features: ['avx2', 'avx512f', 'avx512_bf16', 'avx512_vnni', 'avx512_vp2intersect'] });
    assert.equal(parseCpuinfo(amd(25, 'avx2 avx512f avx512_bf16')).microarchitecture, 'Zen 4');
    assert.equal(parseCpuinfo(amd(25, 'avx2')).microarchitecture, 'Zen 3');
    const intel = parseCpuinfo('vendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\nflags\t\t: avx512f amx_bf16 amx_int8\n');
    assert.equal(intel.microarchitecture, null);
    assert.deepEqual(intel.features, ['avx512f', 'amx_bf16', 'amx_int8']);
    assert.deepEqual(parseCpuinfo(''), { cpu: null, vendor: null, family: null, model: null, microarchitecture: null, features: [] });
  });

  it('--dtype bf16 runs the bf16 plan, or is refused with a reason on a CPU without bf16', () => {
    const r = residual(['bench', '--model', 'resnet20', '--batch', '2', '--dtype', 'bf16', '--warmup', '1', '--runs', '2', '--json']);
    if (r.status === 0) assert.equal(lastJson(r.stdout).dtype, 'bf16');
    else assert.match(r.stderr, /bf16 needs a CPU with AVX512-BF16 or AMX/);
  });

  it('a plain-text line without --json', () => {
    const r = residual(['bench', '--model', 'plain20', '--batch', '1', '--warmup', '0', '--runs', '1']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /plain20 infer f32 batch 1 input 3x32x32 \(native, \d+ threads\): [\d.]+ ms\/image/);
  });

  it('--mode train --dtype bf16 times a mixed-precision step; with the ISA capped below AVX512-BF16 it is refused with the reason', () => {
    let r = residual(['bench', '--model', 'resnet20', '--batch', '2', '--mode', 'train', '--dtype', 'bf16', '--input', '3x16x16',
      '--warmup', '0', '--runs', '1', '--threads', '1', '--json']);
    if (r.status === 0) assert.equal(lastJson(r.stdout).dtype, 'bf16');
    else assert.match(r.stderr, /bf16 training needs a CPU with AVX512-BF16/);
    // oneDNN's dispatcher cap (read once, at its first use): the same CPU seen as plain AVX-512
    r = residual(['bench', '--model', 'resnet20', '--batch', '1', '--mode', 'train', '--dtype', 'bf16', '--runs', '1'], { DNNL_MAX_CPU_ISA: 'AVX512_CORE' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /bf16 training needs a CPU with AVX512-BF16 \(or AMX\), and oneDNN reports this one as avx512_core .*DNNL_MAX_CPU_ISA caps it.*train with dtype f32/);
  });

  it('times an int8 plan (calibrated on its own input) where the CPU has VNNI', () => {
    const r = residual(['bench', '--model', 'resnet20', '--batch', '2', '--dtype', 'int8', '--input', '3x16x16', '--warmup', '0', '--runs', '1', '--threads', '1', '--json']);
    if (r.status !== 0) return assert.match(r.stderr, /int8 needs a CPU with AVX512-VNNI/);
    const j = lastJson(r.stdout);
    assert.equal(j.dtype, 'int8');
    assert.ok(Number(j.ms_per_image) > 0);
  });

  it('refuses bad options with reasons', () => {
    let r = residual(['bench', '--model', 'resnet20', '--batch', '1', '--dtype', 'f16']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /--dtype must be f32, bf16 or int8/);
    r = residual(['bench', '--model', 'resnet20', '--batch', '1', '--mode', 'train', '--dtype', 'int8']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /int8 is for inference/);
    r = residual(['bench', '--model', 'resnet20']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /missing --batch/);
    r = residual(['bench', '--model', 'resnet20', '--batch', '1', '--mode', 'serve']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /--mode must be infer or train/);
    r = residual(['bench', '--model', 'resnet20', '--batch', '0']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /--batch must be a positive integer/);
    r = residual(['bench', '--model', 'resnet21', '--batch', '1']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /unknown model "resnet21"/);
  });
});
