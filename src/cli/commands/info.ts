import { initBackend } from '../../backend/index.js';
import { parse } from '../args.js';

export const summary = 'the backend in use, oneDNN version, CPU ISA and threads';

export async function run(argv: string[]): Promise<number> {
  const { values } = parse('info', argv, { json: { type: 'boolean' } });
  if (values.help) {
    console.log('usage: residual info [--json]');
    return 0;
  }
  const info = (await initBackend()).info();
  if (values.json) {
    console.log(JSON.stringify(info));
  } else {
    console.log(`backend: ${info.backend}\noneDNN: ${info.onednnVersion ?? '-'}\nISA: ${info.isa ?? '-'}\nthreads: ${info.threads}`);
  }
  return 0;
}
