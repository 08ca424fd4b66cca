// Picks the backend tensors are made on: the native oneDNN addon when it loads, the reference
// TypeScript backend otherwise (with one warning that says why, never silently).
import type { Backend } from './types.js';
import { readEngineConfig, type EngineOptions } from './config.js';
import { NativeBackend } from './native.js';
import { ReferenceBackend } from './reference.js';

export type BackendName = 'native' | 'reference';

let reference: Backend | null = null;
let native: NativeBackend | null | undefined; // undefined: not tried yet; null: failed
let nativeError: Error | null = null;
let current: Backend | null = null;
let warned = false;

export function referenceBackend(): Backend {
  reference ??= new ReferenceBackend() as unknown as Backend;
  return reference;
}

// Importing native.js loads nothing: the addon is loaded by the first NativeBackend, so a machine
// without it can still import this module and fall back.
function tryNativeSync(options?: EngineOptions): Backend | null {
  const config = options && readEngineConfig(options); // a bad setting is an error, not a reason to fall back
  if (native === undefined) {
    try {
      native = new NativeBackend(config);
    } catch (e) {
      native = null;
      nativeError = e instanceof Error ? e : new Error(String(e));
    }
  } else if (native && config) {
    native.configure(config);
  }
  return native as unknown as Backend | null;
}

/** The native backend, or null when the addon cannot load (see nativeLoadError()). */
export async function tryNativeBackend(): Promise<Backend | null> {
  return tryNativeSync();
}

/** The load error, with the fix when the message does not already name it. */
function whyNativeFailed(): string {
  const msg = (nativeError?.message ?? 'unknown error').replace(/^residual: /, '');
  return /build:native/.test(msg) ? msg : `${msg}. Rebuild it with \`npm run build:native\` (needs apt-get install libdnnl-dev)`;
}

export function nativeLoadError(): Error | null {
  return nativeError;
}

/**
 * Chooses the default backend once, at start-up. RESIDUAL_BACKEND=reference forces the reference
 * backend; RESIDUAL_BACKEND=native makes a failed addon load an error instead of a fallback.
 * The native engine's configuration (src/backend/config.ts) is read here too, from the environment
 * and `options`; calling initBackend again with options reconfigures it (in-process A/B runs).
 */
export async function initBackend(name?: BackendName, options?: EngineOptions): Promise<Backend> {
  return initBackendSync(name, options);
}

/** initBackend() without the promise: what the first tensor made without a chosen backend calls. */
export function initBackendSync(name?: BackendName, options?: EngineOptions): Backend {
  const wanted = name ?? (process.env.RESIDUAL_BACKEND as BackendName | undefined);
  if (wanted !== undefined && wanted !== 'native' && wanted !== 'reference') {
    throw new Error(`RESIDUAL_BACKEND must be "native" or "reference", got "${wanted}"`);
  }
  if (wanted === 'reference') {
    current = referenceBackend();
    return current;
  }
  const { threads, ...engine } = options ?? {};
  if (threads !== undefined) {
    if (!Number.isInteger(threads) || threads < 1) throw new Error(`threads must be a positive integer, got ${threads}`);
    // OpenMP reads OMP_NUM_THREADS once, when the addon loads: the count every kernel thread starts with.
    if (native === undefined) process.env.OMP_NUM_THREADS = String(threads);
  }
  const nb = tryNativeSync(engine);
  if (nb) {
    current = nb;
  } else if (wanted === 'native') {
    throw new Error(`the native backend was requested but did not load: ${whyNativeFailed()}`);
  } else {
    if (!warned) {
      warned = true;
      process.emitWarning(`residual: using the slow reference backend because the native one did not load: ${whyNativeFailed()}`);
    }
    current = referenceBackend();
  }
  if (threads !== undefined) current!.setNumThreads?.(threads);
  return current;
}

/**
 * The backend new tensors are made on. The first call without initBackend() chooses as it would
 * (the native engine, or the reference one with a warning that says why), so a program that forgets
 * initBackend() is never silently 16x slower.
 */
export function defaultBackend(): Backend {
  return current ?? initBackendSync();
}

/** The backend chosen so far, or null before initBackend() or the first tensor. */
export function chosenBackend(): Backend | null {
  return current;
}

export function setDefaultBackend(b: Backend): void {
  current = b;
}

export type { Backend, BackendTensor, BackendInfo, ComputeDtype, PlanDtype, Shape } from './types.js';

/** ISAs (as BackendInfo.isa names them) that have bf16 dot products: AVX512-BF16, and AMX above it. */
const BF16_ISAS = new Set(['avx512_core_bf16', 'avx512_core_amx', 'avx512_core_amx_fp16', 'all']);

/**
 * Refuses bf16 mixed-precision training where it cannot run fast: the native backend on a CPU (or
 * under a DNNL_MAX_CPU_ISA cap) without AVX512-BF16, where oneDNN would emulate bf16 slower than f32.
 * The reference backend emulates bf16 exactly (for tests) and is never refused. `caller` prefixes the message.
 */
export function checkComputeDtype(caller: string, backend: Backend, dtype: string): void {
  if (dtype !== 'f32' && dtype !== 'bf16') throw new Error(`${caller}: dtype must be "f32" or "bf16", got "${dtype}"`);
  if (dtype !== 'bf16' || backend.name !== 'native') return;
  const isa = backend.info().isa ?? 'unknown';
  if (!BF16_ISAS.has(isa)) {
    throw new Error(`${caller}: bf16 training needs a CPU with AVX512-BF16 (or AMX), and oneDNN reports this one as ${isa} ` +
      `(no bf16 instructions${process.env.DNNL_MAX_CPU_ISA || process.env.ONEDNN_MAX_CPU_ISA ? '; DNNL_MAX_CPU_ISA caps it' : ''}): train with dtype f32`);
  }
}
