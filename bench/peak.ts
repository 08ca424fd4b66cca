// The measured multiply-add peaks of one core of this machine (bench/peak/peak.cc), so a benchmark
// can state each figure as a fraction of the peak of its precision on the host it ran on: the hosts
// differ (Zen 4: f32 ~116 GFLOP/s per core; Zen 5: ~205-217), and a fixed number would mislead.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Peaks {
  /** GFLOP/s of one core (a multiply-add = 2): f32 FMA, bf16 dot products, int8 VNNI dot products. */
  f32: number;
  bf16: number;
  int8: number;
  method: string;
}

const source = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'peak', 'peak.cc');

/** Builds peak.cc with g++ and keeps the best of `repeats` runs of each probe; null if it cannot build or run. */
export function measurePeaks(repeats = 3): Peaks | null {
  const dir = mkdtempSync(join(tmpdir(), 'residual-peak-'));
  try {
    const exe = join(dir, 'peak');
    const build = spawnSync('g++', ['-O2', '-mavx512f', '-mavx512bf16', '-mavx512vnni', source, '-o', exe], { encoding: 'utf8' });
    if (build.status !== 0) return null;
    let best = { f32: 0, bf16: 0, int8: 0 };
    for (let i = 0; i < repeats; i++) {
      const r = spawnSync(exe, [], { encoding: 'utf8' });
      if (r.status !== 0) return null;
      const p = JSON.parse(r.stdout) as { f32_fma_gflops: number; bf16_dpbf16ps_gflops: number; int8_vpdpbusd_gops: number };
      best = { f32: Math.max(best.f32, p.f32_fma_gflops), bf16: Math.max(best.bf16, p.bf16_dpbf16ps_gflops), int8: Math.max(best.int8, p.int8_vpdpbusd_gops) };
    }
    return { ...best, method: `bench/peak/peak.cc, best of ${repeats} runs, per second of the probe thread's CPU time` };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
