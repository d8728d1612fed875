/**
 * Progress bar with ETA for long evaluations, on stderr. On a terminal it redraws one line; elsewhere (CI, pipes)
 * it prints a plain line per finished prompt so logs show how far a run got, or nothing when `quiet`.
 * Work is counted in estimated decode-token equivalents (see runner.estimateCost), so the ETA tracks the real cost
 * of long prompts and many configurations rather than the prompt count.
 */
import type { ProgressStream } from '../model/progress.js';

function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '?';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

export class EvalProgress {
  private done = 0;
  private prompts = 0;
  private lastDraw = 0;
  private readonly t0 = Date.now();

  constructor(
    private readonly total: number,
    private readonly promptCount: number,
    private readonly label: string,
    private readonly stream: ProgressStream = process.stderr,
    private readonly quiet = false,
  ) {}

  /** Work finished (estimated cost units). */
  add(cost: number): void {
    this.done = Math.min(this.total, this.done + cost);
    if (this.stream.isTTY && !this.quiet) this.draw(false);
  }

  promptDone(what: string): void {
    this.prompts++;
    if (this.quiet) return;
    if (this.stream.isTTY) this.draw(false, true);
    else this.stream.write(`${this.label}: prompt ${this.prompts}/${this.promptCount} done (${what}), ${this.status()}\n`);
  }

  finish(): void {
    if (this.stream.isTTY && !this.quiet) this.stream.write(`\r\x1b[K`);
  }

  elapsedMs(): number {
    return Date.now() - this.t0;
  }

  private status(): string {
    const elapsed = this.elapsedMs();
    const frac = this.total > 0 ? this.done / this.total : 0;
    const eta = frac > 0 ? (elapsed * (1 - frac)) / frac : NaN;
    return `${Math.floor(frac * 100)} %, elapsed ${formatDuration(elapsed)}, ETA ${frac > 0 ? formatDuration(eta) : '…'}`;
  }

  private draw(force: boolean, always = false): void {
    const now = Date.now();
    if (!force && !always && now - this.lastDraw < 200) return;
    this.lastDraw = now;
    const columns = this.stream.columns ?? 80;
    const width = Math.max(10, Math.min(30, columns - 60));
    const frac = this.total > 0 ? this.done / this.total : 0;
    const filled = Math.round(frac * width);
    const line = `${this.label} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] prompts ${this.prompts}/${this.promptCount} ${this.status()}`;
    this.stream.write(`\r${line.slice(0, Math.max(1, columns - 1))}\x1b[K`);
  }
}
