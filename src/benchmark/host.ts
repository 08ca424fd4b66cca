// What machine a benchmark ran on, recorded beside every figure.
//
// Why: the machines this project runs on are not one CPU. On 2026-11-28 and 2026-12-05 they were
// AMD family 26 (Zen 5: full-width AVX-512, one core measured 205-217 GFLOP/s of f32 FMA); on
// 2026-12-04 a Zen 4 (AVX-512 split into two 256-bit halves: 115-117 GFLOP/s). Our engine runs its
// convolutions near that peak, so its times move with it (the Fashion-MNIST epoch 48 s vs 89-102 s),
// while PyTorch's, further from the peak, move less (BENCHMARKS.md, issue #17). A figure without its
// CPU cannot be compared with another.
import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';

export interface HostInfo {
  /** /proc/cpuinfo's model name, vendor and family/model numbers (null where not Linux). */
  cpu: string | null;
  vendor: string | null;
  family: number | null;
  model: number | null;
  /** A name for the core generation where we know it ("Zen 4", "Zen 5"), else null. */
  microarchitecture: string | null;
  /** The SIMD features our kernels choose by (present ones only). */
  features: string[];
  logical_cpus: number;
  load_1min: number;
}

const FEATURES = ['avx2', 'avx512f', 'avx512_bf16', 'avx512_vnni', 'avx_vnni', 'avx512_vp2intersect', 'amx_bf16', 'amx_int8'];

/** The fields of the first processor in a /proc/cpuinfo text. */
export function parseCpuinfo(text: string): Omit<HostInfo, 'logical_cpus' | 'load_1min'> {
  const first = text.split(/\n\s*\n/)[0] ?? '';
  const field = (name: string): string | null => {
    const m = first.match(new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm'));
    return m ? m[1]!.trim() : null;
  };
  const num = (name: string): number | null => {
    const v = field(name);
    return v !== null && /^\d+$/.test(v) ? Number(v) : null;
  };
  const vendor = field('vendor_id');
  const family = num('cpu family');
  const flags = new Set((field('flags') ?? '').split(/\s+/));
  const features = FEATURES.filter((f) => flags.has(f));
  return { cpu: field('model name'), vendor, family, model: num('model'), microarchitecture: microarchitecture(vendor, family, flags), features };
}

/** AMD's family numbers: 25 (0x19) is Zen 3 or Zen 4 (Zen 4 has AVX-512), 26 (0x1A) is Zen 5. */
function microarchitecture(vendor: string | null, family: number | null, flags: Set<string>): string | null {
  if (vendor !== 'AuthenticAMD' || family === null) return null;
  if (family === 26) return 'Zen 5';
  if (family === 25) return flags.has('avx512f') ? 'Zen 4' : 'Zen 3';
  return null;
}

/** This machine, now. */
export function hostInfo(): HostInfo {
  let cpu: Omit<HostInfo, 'logical_cpus' | 'load_1min'> = { cpu: null, vendor: null, family: null, model: null, microarchitecture: null, features: [] };
  try {
    cpu = parseCpuinfo(readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    // not Linux: the CPU fields stay null
  }
  return { ...cpu, logical_cpus: availableParallelism(), load_1min: +loadavg()[0]!.toFixed(2) };
}
