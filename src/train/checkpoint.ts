// Training checkpoints: one folder per save, <run>/checkpoints/epoch-0003[-batch-000120]/ (the layout is
// src/io/run_folder.ts's) holding
//   model.safetensors      the weights (loadable by PyTorch, by `residual eval`, `infer`, `predict`)
//   optimizer.safetensors  the momentum buffers
//   state.json             epoch, batch, iteration, schedule, seeds, metrics so far
// A save writes a temporary folder, syncs it, and renames it into place: the rename is atomic, so a
// kill -9 at any moment leaves the previous checkpoint whole and loadable. Older ones are pruned.
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, checkpointName, checkpointsDir, listCheckpointDirs, loadStateDictFile, saveStateDictFile, type StateDict,
} from '../io/index.js';

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

function syncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Complete checkpoints in a run folder, oldest first. */
export function listCheckpoints(runDir: string): string[] {
  return listCheckpointDirs(runDir, STATE_FILE);
}

/**
 * Saves a checkpoint atomically. `modelMetadata` goes into model.safetensors' `__metadata__` (the
 * model card), so the weights file alone says what it is once copied out of the run.
 */
export function saveCheckpoint(runDir: string, state: CheckpointState, model: StateDict, optimizer: StateDict, keep = 2,
  modelMetadata: Readonly<Record<string, string>> = {}): string {
  const root = checkpointsDir(runDir);
  mkdirSync(root, { recursive: true });
  const final = join(root, checkpointName(state.epoch, state.batch));
  const tmp = join(root, `.tmp-${process.pid}-${Date.now()}`);
  mkdirSync(tmp);
  try {
    saveStateDictFile(join(tmp, MODEL_FILE), model, { format: 'pt', residual_epoch: String(state.epoch), ...modelMetadata });
    saveStateDictFile(join(tmp, OPTIMIZER_FILE), optimizer);
    const statePath = join(tmp, STATE_FILE);
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
  if (!existsSync(join(path, STATE_FILE))) {
    const all = listCheckpoints(path);
    if (all.length === 0) throw new Error(`no checkpoint in ${path}: expected ${join(checkpointsDir(path), 'epoch-NNNN')}/${STATE_FILE}`);
    dir = all[all.length - 1];
  }
  let state: CheckpointState;
  try {
    state = JSON.parse(readFileSync(join(dir, STATE_FILE), 'utf8')) as CheckpointState;
  } catch (e) {
    throw new Error(`checkpoint ${dir}: state.json is unreadable (${(e as Error).message})`);
  }
  if (!Number.isInteger(state.epoch) || !Number.isInteger(state.batch) || !Number.isInteger(state.iteration)) {
    throw new Error(`checkpoint ${dir}: state.json lacks epoch, batch or iteration`);
  }
  return {
    dir,
    state,
    model: loadStateDictFile(join(dir, MODEL_FILE)),
    optimizer: loadStateDictFile(join(dir, OPTIMIZER_FILE)),
  };
}
