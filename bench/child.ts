// Running each engine in a child process, shared by the side-by-side benchmarks.
import { spawnSync } from 'node:child_process';

/** The last line of a child's stdout, parsed as JSON (benchmarks print their result last). */
export function lastJson<T>(stdout: string): T {
  const lines = stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]!) as T;
}

/** Runs `args` to completion and returns its stdout; a non-zero exit throws with its stderr. */
export function runChild(args: string[], env: NodeJS.ProcessEnv, what: string): string {
  const r = spawnSync(args[0]!, args.slice(1), { env, encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status}): ${r.stderr}`);
  return r.stdout;
}
