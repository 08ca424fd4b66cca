// One training run per run folder: a second `residual train --out DIR` while the first still runs
// would interleave both runs' metrics and overwrite each other's checkpoints. The lock is a file
// holding the owner's pid; a lock whose process is gone (kill -9, a crash) is taken over.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

interface LockInfo {
  pid: number;
  host: string;
  started: string;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by someone else
  }
}

/** Takes the run folder's lock or throws naming the run that holds it; returns the release function. */
export function lockRunFolder(dir: string): () => void {
  const path = join(dir, '.lock');
  const mine: LockInfo = { pid: process.pid, host: hostname(), started: new Date().toISOString() };
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(path, JSON.stringify(mine), { flag: 'wx' });
      return () => {
        try {
          if ((JSON.parse(readFileSync(path, 'utf8')) as LockInfo).pid === process.pid) rmSync(path, { force: true });
        } catch { /* already gone */ }
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    let held: Partial<LockInfo> = {};
    try {
      held = JSON.parse(readFileSync(path, 'utf8')) as LockInfo;
    } catch { /* half-written or damaged: treated as stale */ }
    const sameHost = held.host === undefined || held.host === mine.host;
    if (typeof held.pid === 'number' && held.pid !== process.pid && (!sameHost || alive(held.pid))) {
      throw new Error(`${dir} is in use by another training run (pid ${held.pid}${sameHost ? '' : ` on ${held.host}`}, started ${held.started ?? '?'}); ` +
        `wait for it or stop it, or give another --out. If no such run exists, delete ${path}`);
    }
    rmSync(path, { force: true }); // stale: its process is gone
  }
  throw new Error(`${dir}: could not take the run lock ${path}`);
}
