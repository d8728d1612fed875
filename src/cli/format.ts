/** Terminal colour for CLI reports. */

/** ANSI colour when the stream is a terminal and NO_COLOR is unset. */
export function colorizer(stream: { isTTY?: boolean }): (code: number, s: string) => string {
  const on = !!stream.isTTY && !process.env.NO_COLOR;
  return (code, s) => (on ? `\x1b[${code}m${s}\x1b[0m` : s);
}
