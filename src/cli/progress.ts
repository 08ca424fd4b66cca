// Progress lines for terminals: the training bar, and weight downloads.
import type { DownloadProgress } from '../pretrained/index.js';
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

function megabytes(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

/**
 * Reports a weights download on stderr for `command`: on a terminal one line redrawn as bytes
 * arrive; when stderr is a file or pipe (logs, CI), one line at the start and one at the end.
 */
export function downloadProgress(command: string): DownloadProgress {
  const tty = process.stderr.isTTY === true;
  let lastDraw = 0;
  return (bytes, total, { url, path, phase }) => {
    const size = total === null ? megabytes(bytes) : `${megabytes(bytes)} of ${megabytes(total)}`;
    if (phase === 'start') {
      process.stderr.write(`${command}: downloading ${url}${total === null ? '' : ` (${megabytes(total)})`} to ${path}\n`);
    } else if (phase === 'data' && tty) {
      const now = Date.now();
      if (now - lastDraw < 100) return; // a redraw per chunk would cost more than the download
      lastDraw = now;
      const pct = total ? ` ${Math.floor((100 * bytes) / total)}%` : '';
      process.stderr.write(`\r\x1b[K${command}: ${size}${pct}`);
    } else if (phase === 'done') {
      process.stderr.write(`${tty ? '\r\x1b[K' : ''}${command}: downloaded ${megabytes(bytes)}, sha256 verified\n`);
    } else if (phase === 'failed' && tty) {
      process.stderr.write('\r\x1b[K');
    }
  };
}
