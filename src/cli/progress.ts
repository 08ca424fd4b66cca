// A one-line progress bar for terminals.
import type { BatchProgress } from '../train/trainer.js';

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '--:--';
  const t = Math.max(0, Math.round(s));
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = String(t % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

export function progressLine(p: BatchProgress, epochs: number, width = 24): string {
  const frac = p.batch / p.batches;
  const filled = Math.round(frac * width);
  const bar = '='.repeat(Math.max(0, filled - 1)) + (filled > 0 ? '>' : '') + ' '.repeat(width - filled);
  return `epoch ${p.epoch + 1}/${epochs} [${bar}] ${p.batch}/${p.batches} loss ${p.loss.toFixed(4)} acc ${(100 * p.acc).toFixed(1)}% ` +
    `lr ${p.lr.toPrecision(3)} ${p.imagesPerSecond.toFixed(0)} img/s ETA ${formatSeconds(p.etaSeconds)}`;
}
