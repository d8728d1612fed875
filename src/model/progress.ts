/**
 * A one-line progress bar for model loading. It draws only on an interactive terminal, so piped output, logs and
 * CI stay clean; anywhere else the callback does nothing.
 */

export type ProgressCallback = (loadedBytes: number, totalBytes: number, what: string) => void;

/** The part of a stream the bar needs (process.stderr by default; tests pass a fake). */
export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(chunk: string): unknown;
}

/** Redraw at most this often; loading issues a callback per chunk, which is far more than a terminal needs. */
const MIN_REDRAW_MS = 100;

function megabytes(bytes: number): string {
  return (bytes / 1e6).toFixed(1);
}

export function terminalProgress(label: string, stream: ProgressStream = process.stderr): ProgressCallback {
  if (!stream.isTTY) return () => {};
  let lastDraw = 0;
  let finishedShown = false; // loaders may report the end more than once (last chunk, then 'done')
  return (loaded, total, what) => {
    const finished = total > 0 && loaded >= total;
    if (finished && finishedShown) return;
    finishedShown = finished;
    const now = Date.now();
    if (!finished && now - lastDraw < MIN_REDRAW_MS) return;
    lastDraw = now;

    const fraction = total > 0 ? Math.min(1, loaded / total) : 0;
    const columns = stream.columns ?? 80;
    const width = Math.max(10, Math.min(30, columns - 50));
    const filled = Math.round(fraction * width);
    const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
    const pct = `${Math.floor(fraction * 100)}`.padStart(3);
    const line = `${label} [${bar}] ${pct}% ${megabytes(loaded)}/${megabytes(total)} MB ${finished ? '' : what}`;
    // \r returns to column 0, ESC[K clears what a longer previous line left behind; a finished bar keeps its line.
    stream.write(`\r${line.slice(0, Math.max(1, columns - 1))}\x1b[K${finished ? '\n' : ''}`);
    if (finished) lastDraw = 0; // a following phase starts drawing at once
  };
}
