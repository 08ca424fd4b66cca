// A training run's folder: <run>/checkpoints/epoch-0003[-batch-000120]/, each checkpoint holding
// model.safetensors, optimizer.safetensors and state.json. src/train/checkpoint.ts writes it; weight
// loading (`loadModel`, every command's `--weights RUN`) reads it. The layout is defined here once, on
// the file floor, because loading a model sits below training and must not import it.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

export const CHECKPOINTS_DIR = 'checkpoints';
export const MODEL_FILE = 'model.safetensors';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const STATE_FILE = 'state.json';

const CHECKPOINT_NAME = /^epoch-(\d+)(?:-batch-(\d+))?$/;

/** A checkpoint's folder name: zero-padded, so names sort by epoch, then batch. */
export function checkpointName(epoch: number, batch: number): string {
  const e = `epoch-${String(epoch).padStart(4, '0')}`;
  return batch > 0 ? `${e}-batch-${String(batch).padStart(6, '0')}` : e;
}

/** The folder a run's checkpoints live in. */
export function checkpointsDir(runDir: string): string {
  return join(runDir, CHECKPOINTS_DIR);
}

/** A run's checkpoint folders that hold `file` (by default state.json, i.e. resumable), oldest first. */
export function listCheckpointDirs(runDir: string, file: string = STATE_FILE): string[] {
  const root = checkpointsDir(runDir);
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((n) => CHECKPOINT_NAME.test(n) && existsSync(join(root, n, file)))
    .sort()
    .map((n) => join(root, n));
}

/**
 * The weight file an existing path names: a file is itself; a folder its model.safetensors (an
 * export, or one checkpoint); a run folder its newest checkpoint's. Null for a folder with none.
 */
export function weightsFileOf(path: string): string | null {
  if (!statSync(path).isDirectory()) return path;
  const direct = join(path, MODEL_FILE);
  if (existsSync(direct)) return direct;
  const newest = listCheckpointDirs(path, MODEL_FILE).pop();
  return newest ? join(newest, MODEL_FILE) : null;
}
