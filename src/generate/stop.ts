/**
 * Stop strings over streamed text. Text that might be the start of a stop string is held back until it is known not
 * to be, so a stop string never leaks into the output, even when it spans several tokens.
 */
export class StopStringMatcher {
  private pending = '';
  private readonly maxLen: number;
  constructor(private readonly stops: readonly string[]) {
    this.maxLen = stops.reduce((m, s) => Math.max(m, s.length), 0);
  }

  /** Feed new text; returns what can be emitted and whether a stop string was hit (text up to it is emitted). */
  push(text: string): { emit: string; stopped: boolean } {
    if (this.stops.length === 0) return { emit: text, stopped: false };
    this.pending += text;
    let cut = -1;
    for (const s of this.stops) {
      const i = this.pending.indexOf(s);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      const emit = this.pending.slice(0, cut);
      this.pending = '';
      return { emit, stopped: true };
    }
    // Hold back the longest suffix that is a proper prefix of some stop string.
    let hold = 0;
    for (let k = Math.min(this.maxLen - 1, this.pending.length); k > 0; k--) {
      const tail = this.pending.slice(this.pending.length - k);
      if (this.stops.some((s) => s.startsWith(tail))) {
        hold = k;
        break;
      }
    }
    const emit = this.pending.slice(0, this.pending.length - hold);
    this.pending = this.pending.slice(this.pending.length - hold);
    return { emit, stopped: false };
  }

  flush(): string {
    const rest = this.pending;
    this.pending = '';
    return rest;
  }
}
