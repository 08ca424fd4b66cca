// Tensor: a logical NCHW shape, a dtype and a backend handle, plus what autograd needs.
//
// Memory is released deterministically: `dispose()`, or `tidy(fn)`, which frees every tensor made
// inside fn except what fn returns. A FinalizationRegistry frees what a caller forgot, as a backstop.
import { defaultBackend } from '../backend/index.js';
import type { Backend, BackendTensor, DType, Shape } from '../backend/types.js';
import { runBackward } from './autograd.js';

/** One recorded op: how to turn the gradient of its output into gradients of its inputs. */
export interface GradNode {
  readonly op: string;
  readonly inputs: readonly Tensor[];
  /** Gradients for each input (undefined where an input needs none). May return `gradOut` itself. */
  backward(gradOut: BackendTensor): (BackendTensor | undefined)[];
  /** Frees backend memory the node saved for backward (argmax, batch statistics...). */
  release(): void;
}

let gradEnabled = true;

/** Whether ops record the tape now (false inside noGrad). */
export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs fn with the tape off: ops record nothing and their results do not require grad. */
export function noGrad<R>(fn: () => R): R {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

// ---- scopes ----

const scopes: Set<Tensor>[] = [];

function track(t: Tensor): void {
  const s = scopes[scopes.length - 1];
  if (s) s.add(t);
}

/** Removes tensors from the enclosing scopes, so tidy() leaves them alive. Returns its argument. */
export function keep<T extends Tensor | Tensor[]>(t: T): T {
  for (const x of Array.isArray(t) ? t : [t]) for (const s of scopes) s.delete(x);
  return t;
}

function collectTensors(r: unknown): Tensor[] {
  if (r instanceof Tensor) return [r];
  if (Array.isArray(r)) return r.filter((x): x is Tensor => x instanceof Tensor);
  if (r instanceof Map) return [...r.values()].filter((x): x is Tensor => x instanceof Tensor);
  if (r && typeof r === 'object' && !ArrayBuffer.isView(r)) return Object.values(r).filter((x): x is Tensor => x instanceof Tensor);
  return [];
}

/**
 * Runs fn and disposes every tensor created inside it, except the tensors it returns (a tensor, an
 * array, a Map or a plain object of tensors), which move to the enclosing scope. fn must be synchronous.
 */
export function tidy<R>(fn: () => R): R {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: R;
  try {
    result = fn();
  } catch (e) {
    scopes.pop();
    for (const t of scope) t.dispose();
    throw e;
  }
  scopes.pop();
  const kept = collectTensors(result);
  for (const t of kept) scope.delete(t);
  for (const t of scope) t.dispose();
  const parent = scopes[scopes.length - 1];
  if (parent) for (const t of kept) if (!t.isDisposed) parent.add(t);
  return result;
}

// ---- finalization backstop ----

interface Held {
  backend: Backend;
  handle: BackendTensor;
}

const finalizer = new FinalizationRegistry<Held>((h) => {
  try {
    h.backend.dispose(h.handle);
  } catch {
    // The process may be shutting down; nothing useful to report from a finalizer.
  }
});

// ---- the tensor ----

export function shapeToString(shape: Shape): string {
  return `[${shape.join(',')}]`;
}

export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function checkShape(shape: Shape, what: string): void {
  if (!Array.isArray(shape)) throw new Error(`${what}: shape must be an array of sizes, got ${String(shape)}`);
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isInteger(d) || d <= 0) {
      throw new Error(`${what}: shape ${shapeToString(shape)} must hold positive integers (got ${String(d)})`);
    }
  }
}

export class Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType = 'float32';
  readonly backend: Backend;
  /** Set on leaves by the user (parameters); on results, true when any input required grad. */
  requiresGrad: boolean;
  /** Accumulated gradient of a leaf after backward(). */
  grad: Tensor | null = null;
  /** The op that made this tensor, when it was recorded on the tape. */
  gradNode: GradNode | null;
  private handleRef: BackendTensor | null;
  private held: Held;

  /** Wraps a backend handle. Prefer the factories (tensor(), zeros()) and ops. */
  constructor(backend: Backend, handle: BackendTensor, opts: { requiresGrad?: boolean; gradNode?: GradNode | null } = {}) {
    this.backend = backend;
    this.handleRef = handle;
    this.shape = Object.freeze([...handle.shape]);
    this.gradNode = opts.gradNode ?? null;
    this.requiresGrad = opts.requiresGrad ?? this.gradNode !== null;
    this.held = { backend, handle };
    finalizer.register(this, this.held, this);
    track(this);
  }

  static fromArray(data: Float32Array | readonly number[], shape: Shape,
    opts: { requiresGrad?: boolean; backend?: Backend } = {}): Tensor {
    checkShape(shape, 'tensor');
    const arr = data instanceof Float32Array ? data : Float32Array.from(data);
    if (arr.length !== numel(shape)) {
      throw new Error(`tensor: ${arr.length} values do not fill shape ${shapeToString(shape)} (${numel(shape)} elements)`);
    }
    const b = opts.backend ?? defaultBackend();
    return new Tensor(b, b.fromArray(arr, shape), { requiresGrad: opts.requiresGrad });
  }

  static zeros(shape: Shape, opts: { requiresGrad?: boolean; backend?: Backend } = {}): Tensor {
    checkShape(shape, 'zeros');
    const b = opts.backend ?? defaultBackend();
    return new Tensor(b, b.zeros(shape), { requiresGrad: opts.requiresGrad });
  }

  get isDisposed(): boolean {
    return this.handleRef === null;
  }

  /** The backend handle; throws if the tensor was disposed. */
  get handle(): BackendTensor {
    if (this.handleRef === null) {
      throw new Error(`tensor ${shapeToString(this.shape)} was disposed and cannot be used again`);
    }
    return this.handleRef;
  }

  get size(): number {
    return numel(this.shape);
  }

  /** A logical row-major copy of the values. */
  toArray(): Float32Array {
    return this.backend.read(this.handle);
  }

  /** The value of a one-element tensor. */
  item(): number {
    if (this.size !== 1) throw new Error(`item(): tensor ${shapeToString(this.shape)} has ${this.size} elements, not 1`);
    return this.toArray()[0];
  }

  /** Frees the memory now (and the gradient and tape node it holds). Safe to call twice. */
  dispose(): void {
    if (this.handleRef === null) return;
    finalizer.unregister(this);
    this.backend.dispose(this.handleRef);
    this.handleRef = null;
    this.releaseNode();
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }

  /** Frees what the recorded op saved for backward; the tensor stays usable as a value. */
  releaseNode(): void {
    if (this.gradNode) {
      this.gradNode.release();
      this.gradNode = null;
    }
  }

  /**
   * Replaces the values in place, keeping this tensor's identity (optimizers and modules that hold
   * it see the new values). Used to load weights.
   */
  assign(data: Float32Array): void {
    if (data.length !== this.size) {
      throw new Error(`assign: ${data.length} values do not fill tensor ${shapeToString(this.shape)} (${this.size} elements)`);
    }
    const old = this.handle;
    const fresh = this.backend.fromArray(data, this.shape);
    finalizer.unregister(this);
    this.backend.dispose(old);
    this.handleRef = fresh;
    this.held = { backend: this.backend, handle: fresh };
    finalizer.register(this, this.held, this);
  }

  /** A detached copy that shares no tape. */
  detach(): Tensor {
    return new Tensor(this.backend, this.backend.scale(this.handle, 1));
  }

  /**
   * Reverse-mode autodiff from this tensor: fills `.grad` of every leaf that requires grad,
   * accumulating into an existing `.grad` as PyTorch does. A non-scalar root needs `gradient`.
   * The tape is freed afterwards (PyTorch's retain_graph=False).
   */
  backward(gradient?: Tensor): void {
    runBackward(this, gradient);
  }

  toString(): string {
    return `Tensor(${shapeToString(this.shape)}, ${this.dtype}, ${this.backend.name}${this.requiresGrad ? ', requiresGrad' : ''})`;
  }
}

/** Creates a tensor from values and a shape on the default backend. */
export function tensor(data: Float32Array | readonly number[], shape: Shape, opts: { requiresGrad?: boolean } = {}): Tensor {
  return Tensor.fromArray(data, shape, opts);
}
