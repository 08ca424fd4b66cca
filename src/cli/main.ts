#!/usr/bin/env node
// The `residual` command: a thin dispatcher. Each command lives in commands/<name>.ts, exports
// `summary` (one line for the help) and `run(argv)`, and calls the library to do the work.
import { pathToFileURL } from 'node:url';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { printableLines } from '../io/printable.js';

export interface Command {
  summary: string;
  /** Runs the command; the resolved number is the exit code. */
  run(argv: string[]): Promise<number>;
}

const here = dirname(fileURLToPath(import.meta.url));
const order = ['info', 'models', 'weights', 'summary', 'infer', 'train', 'eval', 'predict', 'embed', 'plot', 'data', 'export', 'bench', 'serve', 'experiment'];

function available(): string[] {
  return order.filter((name) => existsSync(join(here, 'commands', `${name}.js`)));
}

async function load(name: string): Promise<Command> {
  return (await import(pathToFileURL(join(here, 'commands', `${name}.js`)).href)) as Command;
}

async function help(): Promise<void> {
  const lines = ['residual: ResNet and ResNeXt for TypeScript', '', 'usage: residual <command> [options]   (residual <command> --help for its options)', ''];
  for (const name of available()) lines.push(`  ${name.padEnd(11)} ${(await load(name)).summary}`);
  console.log(lines.join('\n'));
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    await help();
    return name ? 0 : 1;
  }
  if (!available().includes(name)) {
    console.error(`residual: unknown command "${name}". Commands: ${available().join(', ')}`);
    return 2;
  }
  return (await load(name)).run(rest);
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    // Errors a person can act on: print the message, not a stack (RESIDUAL_DEBUG=1 shows it).
    const e = err instanceof Error ? err : new Error(String(err));
    // Messages quote names read from files: never let their control characters reach the terminal.
    console.error(`residual: ${printableLines(process.env.RESIDUAL_DEBUG ? e.stack ?? e.message : e.message)}`);
    process.exitCode = 1;
  },
);
