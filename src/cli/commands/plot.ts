// `residual plot RUN_DIR`: a run's training curves (loss and error % against epoch) as a PNG.
import { plotRun } from '../../report/runplot.js';
import { intOption, parse } from '../args.js';

export const summary = 'plot a run\'s training curves (loss, error %) from its metrics.jsonl';

const usage = `usage: residual plot RUN_DIR [--out FILE] [--title TEXT] [--scale N]

  Reads RUN_DIR/metrics.jsonl and writes RUN_DIR/curves.png (or FILE; a .svg name writes SVG):
  loss on the left, error % on the right, train dashed, test solid. --scale 2 renders at twice
  the pixel size for sharper images.`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parse('plot', argv, {
    out: { type: 'string', short: 'o' },
    title: { type: 'string' },
    scale: { type: 'string' },
  }, true);
  if (values.help) {
    console.log(usage);
    return 0;
  }
  if (positionals.length !== 1) {
    console.error(`plot: expected one RUN_DIR, got ${positionals.length}\n${usage}`);
    return 2;
  }
  const scale = intOption('plot', 'scale', values.scale, 1);
  const written = await plotRun(positionals[0], { out: values.out, title: values.title, scale });
  console.log(written);
  return 0;
}
