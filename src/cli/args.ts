// Option parsing shared by the commands: node's parseArgs with errors that name the command.
import { parseArgs, type ParseArgsConfig } from 'node:util';

export type Options = NonNullable<ParseArgsConfig['options']>;

const helpOption = { help: { type: 'boolean', short: 'h' } } as const;

type Value<T> = T extends { type: 'boolean' } ? (T extends { multiple: true } ? boolean[] : boolean)
  : (T extends { multiple: true } ? string[] : string);
export type Values<O extends Options> = { [K in keyof O]?: Value<O[K]> } & { help?: boolean };

export function parse<O extends Options>(command: string, argv: string[], options: O, allowPositionals = false):
  { values: Values<O>; positionals: string[] } {
  try {
    const r = parseArgs({ args: argv, options: { ...helpOption, ...options }, allowPositionals, strict: true });
    return r as unknown as { values: Values<O>; positionals: string[] };
  } catch (e) {
    throw new Error(`${command}: ${(e as Error).message}. See residual ${command} --help`);
  }
}

/** A positive integer option, or the fallback when absent. */
export function intOption(command: string, name: string, v: string | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${command}: --${name} must be a positive integer, got "${v}"`);
  return n;
}

/** A finite number option, or the fallback when absent. */
export function numberOption(command: string, name: string, v: string | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`${command}: --${name} must be a number, got "${v}"`);
  return n;
}

/** The `--dtype` values of the training commands, and of the inference ones. */
export const TRAIN_DTYPES = ['f32', 'bf16'] as const;
export const PLAN_DTYPES = ['f32', 'bf16', 'int8'] as const;

/** `--dtype`: one of `allowed`, or undefined when absent (the command's default applies). */
export function dtypeOption<T extends string>(command: string, v: string | undefined, allowed: readonly T[]): T | undefined {
  if (v === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(v)) {
    const names = allowed.length > 1 ? `${allowed.slice(0, -1).join(', ')} or ${allowed[allowed.length - 1]}` : allowed[0];
    throw new Error(`${command}: --dtype must be ${names}, got "${v}"`);
  }
  return v as T;
}

/** "3x224x224" -> [3, 224, 224]. */
export function shapeOption(command: string, name: string, v: string): number[] {
  const dims = v.split('x').map(Number);
  if (dims.length !== 3 || dims.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new Error(`${command}: --${name} must look like 3x224x224 (channels x height x width), got "${v}"`);
  }
  return dims;
}

/**
 * `--threads N|auto`: N is fixed (pass it to initBackend as `threads`); auto means a ThreadGovernor
 * picks the count while training runs.
 */
export function threadsOption(command: string, v: string | undefined): { auto: boolean; fixed?: number } {
  if (v === undefined) return { auto: false };
  if (v === 'auto') return { auto: true };
  if (!/^[1-9]\d*$/.test(v)) throw new Error(`${command}: --threads must be a positive integer or auto, got "${v}"`);
  return { auto: false, fixed: Number(v) };
}
