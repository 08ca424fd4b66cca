// `residual summary <model>`: the layer table of a model from the analytic walk (no weights, no
// forward pass), with output shapes, parameters and multiply-accumulates per layer.
import { describeBlocks, groupByDepth, stageView, traceModel, getModel, type LayerRecord } from '../../models/index.js';
import { intOption, parse, shapeOption } from '../args.js';

export const summary = 'layer table of a model: output shapes, params and MACs per layer';

const usage = `usage: residual summary <model> [--input 3x224x224] [--depth N | --stages] [--num-classes K] [--json]

  <model>          a name from \`residual models\`
  --input CxHxW    input shape, batch 1 (default: the model's own, e.g. 3x224x224 or 3x32x32);
                   C sets the model's input channels
  --depth N        one row per module N levels deep (1: conv1, layer1, ...; 2: layer1.0, ...);
                   default: every layer
  --stages         one row per stage, as the ResNet paper's Table 1: conv1 (the stem), conv2_x.. with
                   their blocks as "conv" (projection shortcut: the block that changes shape), "A"
                   (option-A shortcut), "identity" or "plain" (no shortcut)
  --num-classes K  classifier outputs (default: the model's own)
  --json           print JSON instead of a table`;

/** 1234567 -> "1,234,567". */
export function groupDigits(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** MACs in the unit that reads best: "1.814 G", "40.6 M". */
export function humanMacs(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(3)} G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} K`;
  return String(n);
}

/** A plain text table: numeric columns (align 'r') right-aligned, a rule under the header. */
export function formatTable(header: string[], rows: string[][], align: ('l' | 'r')[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (align[i] === 'r' ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

const shapeText = (s: readonly number[]) => `[${s.join(', ')}]`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parse('summary', argv, {
    input: { type: 'string' }, depth: { type: 'string' }, stages: { type: 'boolean' }, 'num-classes': { type: 'string' }, json: { type: 'boolean' },
  }, true);
  if (values.help) {
    console.log(usage);
    return 0;
  }
  if (positionals.length !== 1) {
    console.error(`summary: name one model (got ${positionals.length ? positionals.join(' ') : 'none'})\n${usage}`);
    return 2;
  }
  const name = positionals[0];
  const entry = getModel(name);
  const input = values.input ? shapeOption('summary', 'input', values.input) : [...entry.defaultInput];
  const numClasses = values['num-classes'] === undefined ? undefined : intOption('summary', 'num-classes', values['num-classes'], 1);
  const depth = values.depth === undefined ? undefined : intOption('summary', 'depth', values.depth, 1);
  const trace = traceModel(name, input, { inChannels: input[0], numClasses });
  if (values.stages) {
    if (depth !== undefined) throw new Error('summary: --stages and --depth are two different views; give one');
    const stages = stageView(entry.spec({ inChannels: input[0], numClasses }), trace);
    if (values.json) {
      console.log(JSON.stringify({ model: name, input, params: trace.params, macs: trace.macs, stages }));
      return 0;
    }
    console.log(`${name}: ${entry.description}; input ${shapeText([1, ...input])}\n`);
    console.log(formatTable(['stage', 'module', 'blocks', 'output', 'params', 'MACs'],
      stages.map((s) => [s.stage, s.module, s.blocks.length ? `${s.blocks.length}: ${describeBlocks(s.blocks)}` : '-', shapeText(s.outShape), groupDigits(s.params), humanMacs(s.macs)]),
      ['l', 'l', 'l', 'l', 'r', 'r']));
    console.log(`\ntotal params: ${groupDigits(trace.params)}\ntotal MACs:   ${groupDigits(trace.macs)} (${humanMacs(trace.macs)})`);
    return 0;
  }
  const layers: LayerRecord[] = depth === undefined ? trace.layers : groupByDepth(trace.layers, depth, trace.containers);
  if (values.json) {
    console.log(JSON.stringify({
      model: name, input, output: trace.outputShape.slice(1), params: trace.params, macs: trace.macs,
      layers: layers.map((l) => ({ name: l.name, type: l.type, detail: l.detail, output: l.outShape, params: l.params, macs: l.macs })),
    }));
    return 0;
  }
  const rows = layers.map((l) => [l.name, l.detail ? `${l.type} ${l.detail}` : l.type, shapeText(l.outShape), l.params ? groupDigits(l.params) : '-', l.macs ? groupDigits(l.macs) : '-']);
  console.log(`${name}: ${entry.description}; input ${shapeText([1, ...input])}\n`);
  console.log(formatTable(['layer', 'type', 'output', 'params', 'MACs'], rows, ['l', 'l', 'l', 'r', 'r']));
  console.log(`\ntotal params: ${groupDigits(trace.params)}\ntotal MACs:   ${groupDigits(trace.macs)} (${humanMacs(trace.macs)}, convolutions and linear layers, batch 1)`);
  return 0;
}
