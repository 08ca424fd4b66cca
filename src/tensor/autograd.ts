// The backward pass over the tape that ops record (GradNode on each result tensor).
//
// Gradient handles may be shared: an add passes its incoming gradient to both inputs unchanged.
// A reference count per handle decides when accumulation may write in place and when a handle
// can be freed, so no gradient is copied unless two consumers need to diverge.
import type { BackendTensor } from '../backend/types.js';
import { Tensor, keep, shapeToString } from './tensor.js';

/** Tensors with a recorded op reachable from root, each after all of its consumers. */
function topologicalOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const visited = new Set<Tensor>();
  // Iterative post-order DFS: networks like ResNet-1202 are thousands of ops deep.
  const stack: { t: Tensor; next: number }[] = [{ t: root, next: 0 }];
  visited.add(root);
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    const inputs = top.t.gradNode?.inputs ?? [];
    if (top.next < inputs.length) {
      const child = inputs[top.next++];
      if (child.gradNode && !visited.has(child)) {
        visited.add(child);
        stack.push({ t: child, next: 0 });
      }
    } else {
      stack.pop();
      order.push(top.t);
    }
  }
  return order.reverse();
}

/**
 * Called with each leaf as soon as its gradient is final (every op that used it has run its
 * backward), while the rest of backward still runs: data-parallel training starts reducing a
 * bucket of gradients there. One hook at a time; returns the function that removes it.
 */
let gradReadyHook: ((leaf: Tensor) => void) | null = null;
export function onGradReady(hook: (leaf: Tensor) => void): () => void {
  if (gradReadyHook) throw new Error('onGradReady: a hook is already installed');
  gradReadyHook = hook;
  return () => { if (gradReadyHook === hook) gradReadyHook = null; };
}

export function runBackward(root: Tensor, gradient?: Tensor): void {
  if (!root.requiresGrad) {
    throw new Error(`backward(): tensor ${shapeToString(root.shape)} does not require grad ` +
      '(no input required grad, or it was computed inside noGrad)');
  }
  const backend = root.backend;
  let seed: BackendTensor;
  if (gradient) {
    if (gradient.shape.join(',') !== root.shape.join(',')) {
      throw new Error(`backward(): gradient ${shapeToString(gradient.shape)} does not match tensor ${shapeToString(root.shape)}`);
    }
    seed = backend.scale(gradient.handle, 1);
  } else {
    if (root.size !== 1) {
      throw new Error(`backward(): tensor ${shapeToString(root.shape)} is not a scalar; pass the gradient of the output`);
    }
    seed = backend.fromArray(new Float32Array([1]), root.shape);
  }

  const grads = new Map<Tensor, BackendTensor>();
  const refs = new Map<BackendTensor, number>();
  const ref = (h: BackendTensor) => refs.set(h, (refs.get(h) ?? 0) + 1);
  const unref = (h: BackendTensor) => {
    const n = (refs.get(h) ?? 0) - 1;
    if (n <= 0) {
      refs.delete(h);
      backend.dispose(h);
    } else {
      refs.set(h, n);
    }
  };
  const disposeIfUnowned = (h: BackendTensor) => {
    if (!refs.has(h)) backend.dispose(h);
  };
  const accumulate = (t: Tensor, g: BackendTensor) => {
    const existing = grads.get(t);
    if (existing === undefined) {
      grads.set(t, g);
      ref(g);
    } else if (refs.get(existing) === 1 && existing !== g) {
      backend.addInPlace(existing, g);
      disposeIfUnowned(g);
    } else {
      const sum = backend.add(existing, g);
      grads.set(t, sum);
      ref(sum);
      unref(existing);
      disposeIfUnowned(g);
    }
  };

  grads.set(root, seed);
  ref(seed);
  const leaves: Tensor[] = [];
  const seenLeaves = new Set<Tensor>();

  const finish = (leaf: Tensor) => {
    const g = grads.get(leaf);
    if (g === undefined) return;
    grads.delete(leaf);
    if (leaf.grad && !leaf.grad.isDisposed) {
      backend.addInPlace(leaf.grad.handle, g);
      unref(g);
    } else {
      // Give the leaf its own handle: copy when another leaf still shares it.
      const own = refs.get(g) === 1 ? g : backend.scale(g, 1);
      if (own === g) refs.delete(g); else unref(g);
      leaf.grad = keep(new Tensor(backend, own));
    }
    gradReadyHook?.(leaf);
  };

  try {
    const order = topologicalOrder(root);
    // With a hook, a leaf is finished as soon as the last op that reads it has run its backward.
    const uses = new Map<Tensor, number>();
    if (gradReadyHook) {
      for (const t of order) for (const input of t.gradNode?.inputs ?? []) if (!input.gradNode && input.requiresGrad) uses.set(input, (uses.get(input) ?? 0) + 1);
    }
    for (const t of order) {
      const node = t.gradNode;
      const g = grads.get(t);
      if (!node) {
        // The root itself is a leaf.
        if (!seenLeaves.has(t)) { seenLeaves.add(t); leaves.push(t); }
        continue;
      }
      if (g === undefined) continue;
      const inputGrads = node.backward(g);
      node.inputs.forEach((input, i) => {
        const ig = inputGrads[i];
        if (ig === undefined) return;
        if (!input.requiresGrad) {
          disposeIfUnowned(ig);
          return;
        }
        accumulate(input, ig);
        if (!input.gradNode && !seenLeaves.has(input)) {
          seenLeaves.add(input);
          leaves.push(input);
        }
      });
      if (gradReadyHook) {
        for (const input of node.inputs) {
          const n = uses.get(input);
          if (n === undefined) continue;
          if (n > 1) uses.set(input, n - 1);
          else { uses.delete(input); finish(input); }
        }
      }
      grads.delete(t);
      unref(g);
      t.releaseNode();
    }

    for (const leaf of leaves) finish(leaf);
  } finally {
    for (const h of refs.keys()) backend.dispose(h);
  }
}
