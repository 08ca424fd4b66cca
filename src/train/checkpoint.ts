// Training checkpoints: one folder per save, <run>/checkpoints/epoch-0003[-batch-00120]/ holding
//   model.safetensors      the weights (loadable by PyTorch, by `residual eval`, `infer`, `predict`)
//   optimizer.safetensors  the momentum buffers
//   state.json             epoch, batch, iteration, schedule, seeds, metrics so far
// A save writes a temporary folder, syncs it, and renames it into place: the rename is atomic, so a
// kill -9 at any moment leaves the previous checkpoint whole and loadable. Older ones are pruned.
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadStateDictFile, saveStateDictFile, type StateDict } from '../io/index.js';

export interface CheckpointState {
  /** The epoch this checkpoint resumes (0-based), and the batch within it (0 for an epoch boundary). */
  epoch: number;
  batch: number;
  iteration: number;
  /** Free-form: the run's configuration, metrics history, running sums of a part-done epoch. */
  [key: string]: unknown;
}

export interface Checkpoint {
  dir: string;
  state: CheckpointState;
  model: StateDict;
  optimizer: StateDict;
}

const pattern = /^epoch-(\d+)(?:-batch-(\d+))?$/;

function syncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function name(epoch: number, batch: number): string {
  const e = `epoch-${String(epoch).padStart(4, '0')}`;
  return batch > 0 ? `${e}-batch-${String(batch).padStart(6, '0')}` : e;
}

/** Complete checkpoints in a run folder, oldest first. */
export function listCheckpoints(runDir: string): string[] {
  const root = join(runDir, 'checkpoints');
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((n) => pattern.test(n) && existsSync(join(root, n, 'state.json')))
    .sort()
    .map((n) => join(root, n));
}

/**
 * Saves a checkpoint atomically. `modelMetadata` goes into model.safetensors' `__metadata__` (the
 * model card), so the weights file alone says what it is once copied out of the run.
 */
export function saveCheckpoint(runDir: string, state: CheckpointState, model: StateDict, optimizer: StateDict, keep = 2,
  modelMetadata: Readonly<Record<string, string>> = {}): string {
  const root = join(runDir, 'checkpoints');
  mkdirSync(root, { recursive: true });
  const final = join(root, name(state.epoch, state.batch));
  const tmp = join(root, `.tmp-${process.pid}-${Date.now()}`);
  mkdirSync(tmp);
  try {
    saveStateDictFile(join(tmp, 'model.safetensors'), model, { format: 'pt', residual_epoch: String(state.epoch), ...modelMetadata });
    saveStateDictFile(join(tmp, 'optimizer.safetensors'), optimizer);
    const statePath = join(tmp, 'state.json');
    writeFileSync(statePath, JSON.stringify(state, null, 1));
    const fd = openSync(statePath, 'r');
    fsyncSync(fd);
    closeSync(fd);
    syncDir(tmp);
    if (existsSync(final)) rmSync(final, { recursive: true, force: true });
    renameSync(tmp, final);
    syncDir(root);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  // Prune older checkpoints and the leftovers of interrupted saves.
  for (const old of listCheckpoints(runDir).slice(0, -keep)) rmSync(old, { recursive: true, force: true });
  for (const n of readdirSync(root)) if (n.startsWith('.tmp-') && !n.startsWith(`.tmp-${process.pid}-`)) rmSync(join(root, n), { recursive: true, force: true });
  return final;
}

/** Loads a checkpoint folder, or the newest one in a run folder. */
export function loadCheckpoint(path: string): Checkpoint {
  let dir = path;
  if (!existsSync(join(path, 'state.json'))) {
    const all = listCheckpoints(path);
    if (all.length === 0) throw new Error(`no checkpoint in ${path}: expected ${join(path, 'checkpoints', 'epoch-NNNN')}/state.json`);
    dir = all[all.length - 1];
  }
  let state: CheckpointState;
  try {
    state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as CheckpointState;
  } catch (e) {
    throw new Error(`checkpoint ${dir}: state.json is unreadable (${(e as Error).message})`);
  }
  if (!Number.isInteger(state.epoch) || !Number.isInteger(state.batch) || !Number.isInteger(state.iteration)) {
    throw new Error(`checkpoint ${dir}: state.json lacks epoch, batch or iteration`);
  }
  return {
    dir,
    state,
    model: loadStateDictFile(join(dir, 'model.safetensors')),
    optimizer: loadStateDictFile(join(dir, 'optimizer.safetensors')),
  };
}
