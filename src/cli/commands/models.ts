// `residual models`: every model the registry knows, with its input, parameters and MACs.
import { listModels, modelFigures } from '../../models/index.js';
import { parse } from '../args.js';
import { formatTable, groupDigits, humanMacs } from './summary.js';

export const summary = 'list the models with their parameters and MACs';

export async function run(argv: string[]): Promise<number> {
  const { values } = parse('models', argv, { json: { type: 'boolean' } });
  if (values.help) {
    console.log('usage: residual models [--json]\n\n  MACs are multiply-accumulates of convolutions and linear layers at the model\'s input, batch 1.');
    return 0;
  }
  const figures = listModels().map((e) => modelFigures(e.name));
  if (values.json) {
    console.log(JSON.stringify(figures));
    return 0;
  }
  const rows = figures.map((f) => [f.name, f.family, f.input.join('x'), groupDigits(f.params), humanMacs(f.macs), f.description]);
  console.log(formatTable(['model', 'family', 'input', 'params', 'MACs', 'description'], rows, ['l', 'l', 'l', 'r', 'r', 'l']));
  return 0;
}
