/**
 * stdout for a command whose reader may go away (`fastgen generate … | head -c 20`): EPIPE turns into the
 * `stdoutClosed` signal, which generation loops listen to, instead of an uncaught exception with a stack trace.
 */

/** Aborted when stdout's reader has gone: whatever writes to stdout should stop quietly. */
export const stdoutClosed = new AbortController();
let watching = false;

export function watchStdout(): void {
  if (watching) return;
  watching = true;
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE' || e.code === 'ERR_STREAM_DESTROYED') stdoutClosed.abort();
    else throw e;
  });
}

/** Write to stdout unless its reader has gone. */
export function write(s: string): void {
  if (!stdoutClosed.signal.aborted) process.stdout.write(s);
}
