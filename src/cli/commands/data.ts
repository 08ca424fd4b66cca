import { downloadCifar, type CifarName } from '../../data/index.js';
import { parse } from '../args.js';

export const summary = 'download CIFAR-10/100 (checksum verified)';

const usage = `usage: residual data download cifar10|cifar100 [--dir data] [--url URL]

Fetches the official binary archive, verifies its published MD5, and unpacks it into DIR
(then train with --data cifar10:DIR). --url (or RESIDUAL_CIFAR_URL) points at a mirror.`;

export async function run(argv: string[]): Promise<number> {
  const { values: v, positionals } = parse('data', argv, { dir: { type: 'string' }, url: { type: 'string' } }, true);
  if (v.help) {
    console.log(usage);
    return 0;
  }
  const [action, which] = positionals;
  if (action !== 'download' || (which !== 'cifar10' && which !== 'cifar100') || positionals.length !== 2) {
    console.error(usage);
    return 2;
  }
  const dir = v.dir ?? 'data';
  let last = -1;
  const path = await downloadCifar(which as CifarName, dir, {
    url: v.url,
    onProgress: (got: number, total: number | null) => {
      if (!process.stderr.isTTY || !total) return;
      const pct = Math.floor((100 * got) / total);
      if (pct !== last) { last = pct; process.stderr.write(`\rdownloading ${which}: ${pct}%`); }
    },
  });
  if (process.stderr.isTTY) process.stderr.write('\n');
  console.log(`${which} is in ${path}; train with --data ${which}:${dir}`);
  return 0;
}
