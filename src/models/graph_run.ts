// Runs a lowered graph eagerly, node by node, with the modules its nodes name: the network exactly as
// the graph describes it, with every intermediate value at hand. It proves the lowering (its output
// must be the module's own forward) and measures what the graph's other readers need to know about the
// values (the ranges an int8 or QDQ export quantizes with).
import type { Module } from '../nn/index.js';
import { Tensor, add, concatChannels, reshape, relu, shortcutA } from '../tensor/index.js';
import { inputsOf, readerCounts, type Graph, type GraphNode, type ValueId } from './graph.js';

type Forward = Module & { forward(x: Tensor): Tensor };

/**
 * The graph's output for input `x` (its value 0), computing each node with the module at its path
 * (conv and its BN, pools, the classifier) or the tensor op it stands for (ReLU, sums, option A,
 * flatten, concatenation). `visit` sees every value as it is made; a value is disposed once its last
 * reader has run (the input and the output are not).
 */
export function runGraph(g: Graph, model: Module, x: Tensor, visit?: (id: ValueId, node: GraphNode, value: Tensor) => void): Tensor {
  const modules = new Map(model.namedModules());
  const at = (path: string): Forward => {
    const m = modules.get(path) as Forward | undefined;
    if (!m || typeof m.forward !== 'function') throw new Error(`runGraph: ${g.name} has no module at ${path}`);
    return m;
  };
  const reads = readerCounts(g);
  const values = new Map<ValueId, Tensor>([[0, x]]);
  const get = (v: ValueId): Tensor => values.get(v)!;
  g.nodes.forEach((n, i) => {
    const id = i + 1;
    let y: Tensor;
    switch (n.op) {
      case 'conv': {
        const c = at(n.path).forward(get(n.src));
        y = n.bn ? at(n.bn).forward(c) : c;
        if (n.bn) c.dispose();
        break;
      }
      case 'batchnorm':
      case 'maxpool':
      case 'avgpool':
      case 'gap':
      case 'linear': y = at(n.path).forward(get(n.src)); break;
      case 'relu': y = relu(get(n.src)); break;
      case 'add': y = add(get(n.src), get(n.other)); break;
      case 'shortcutA': y = shortcutA(get(n.src), n.out[0]!, n.stride); break;
      case 'flatten': {
        const s = get(n.src);
        y = reshape(s, [s.shape[0]!, n.out[0]!]);
        break;
      }
      case 'concat': y = concatChannels(n.srcs.map(get)); break;
    }
    values.set(id, y);
    visit?.(id, n, y);
    for (const v of inputsOf(n)) {
      if (--reads[v]! === 0 && v !== 0 && v !== g.output) {
        values.get(v)!.dispose();
        values.delete(v);
      }
    }
  });
  return get(g.output);
}
