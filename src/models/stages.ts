// The network described the way the ResNet paper's Table 1 (and many tutorials) do: stages, each a
// "convolution block" whose shortcut changes shape, followed by "identity blocks". ResNet-101 is then
// five stages: conv1 (the stem), and conv2_x..conv5_x holding 3, 4, 23 and 3 bottleneck blocks.
import type { NetSpec } from './net.js';
import type { TraceResult } from './trace.js';

export interface StageRow {
  /** The paper's name (conv1, conv2_x, ...) and ours (the stem, layer1, ...). */
  stage: string;
  module: string;
  /** Per block: conv (projection shortcut), A (option-A shortcut), identity, or plain (no shortcut). */
  blocks: (typeof BLOCK_NAME)[keyof typeof BLOCK_NAME][];
  outShape: number[];
  params: number;
  macs: number;
}

const BLOCK_NAME = { projection: 'conv', avgProjection: 'avg-pool conv', optionA: 'A', identity: 'identity', none: 'plain' } as const;

/** Stage rows of a traced network (the head, avgpool and fc, as a last row). */
export function stageView(spec: NetSpec, trace: TraceResult): StageRow[] {
  const sum = (prefixes: string[]) => {
    const ls = trace.layers.filter((l) => prefixes.some((p) => l.name === p || l.name.startsWith(`${p}.`)));
    return { params: ls.reduce((a, l) => a + l.params, 0), macs: ls.reduce((a, l) => a + l.macs, 0), outShape: ls.length ? ls[ls.length - 1]!.outShape : [] };
  };
  const rows: StageRow[] = [{ stage: 'conv1', module: 'stem', blocks: [], ...sum(['conv1', 'bn1', 'relu', 'maxpool']) }];
  // relu is shared by name with every block's relu; the stem's is the one before layer1.
  const stem = trace.layers.findIndex((l) => l.name.startsWith('layer1'));
  const stemLayers = trace.layers.slice(0, stem === -1 ? trace.layers.length : stem);
  rows[0]!.params = stemLayers.reduce((a, l) => a + l.params, 0);
  rows[0]!.macs = stemLayers.reduce((a, l) => a + l.macs, 0);
  rows[0]!.outShape = stemLayers[stemLayers.length - 1]?.outShape ?? [];
  spec.stages.forEach((blocks, i) => {
    rows.push({ stage: `conv${i + 2}_x`, module: `layer${i + 1}`, blocks: blocks.map((b) => BLOCK_NAME[b.shortcut]), ...sum([`layer${i + 1}`]) });
  });
  rows.push({ stage: 'head', module: 'avgpool, fc', blocks: [], ...sum(['avgpool', 'fc']) });
  return rows;
}

/** "conv + 22 identity" for a stage's blocks. */
export function describeBlocks(blocks: StageRow['blocks']): string {
  const out: string[] = [];
  for (let i = 0; i < blocks.length;) {
    let j = i;
    while (j < blocks.length && blocks[j] === blocks[i]) j++;
    out.push(j - i === 1 ? blocks[i]! : `${j - i} ${blocks[i]}`);
    i = j;
  }
  return out.join(' + ');
}
