/**
 * `fastgen bench --svg FILE`: the table as horizontal bars (mean ± sd), one panel for decode rows and one for prefill
 * rows (their scales differ ~5×), with llama2.c's rows as reference lines on the decode panel. Hand-written SVG, no
 * plotting dependency.
 */
import type { BenchRow } from './bench.js';
import { esc } from '../eval/svg.js';

const DTYPE_COLORS: Record<string, string> = { f32: '#1f77b4', f16: '#2ca02c', q8_0: '#d62728' };
const BAR = 14;
const GAP = 4;
const LABEL_W = 250;
const PLOT_W = 420;


function niceMax(v: number): number {
  const mag = 10 ** Math.floor(Math.log10(Math.max(v, 1e-9)));
  return ([1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10].find((m) => m * mag >= v) ?? 10) * mag;
}

/** One panel: bars for `rows`, vertical reference lines for `refs`. Returns the SVG fragment and its height. */
function panel(y0: number, title: string, rows: BenchRow[], refs: BenchRow[]): { svg: string; height: number } {
  const parts: string[] = [];
  const top = y0 + 22;
  const max = niceMax(Math.max(...rows.map((r) => r.tokensPerSecond + r.stddev), ...refs.map((r) => r.tokensPerSecond)));
  const x = (v: number) => LABEL_W + (v / max) * PLOT_W;
  const plotH = rows.length * (BAR + GAP);
  parts.push(`<text x="${LABEL_W}" y="${y0 + 14}" font-weight="bold">${esc(title)}</text>`);
  for (let i = 0; i <= 5; i++) {
    const v = (max * i) / 5;
    parts.push(`<line x1="${x(v).toFixed(1)}" y1="${top}" x2="${x(v).toFixed(1)}" y2="${top + plotH}" stroke="#eee"/>`);
    parts.push(`<text x="${x(v).toFixed(1)}" y="${top + plotH + 12}" text-anchor="middle" font-size="10">${Math.round(v)}</text>`);
  }
  rows.forEach((r, i) => {
    const y = top + i * (BAR + GAP);
    const fastgen = r.cache.startsWith('fastgen');
    const color = DTYPE_COLORS[r.dtype] ?? '#7f7f7f';
    const label = `${r.dtype} ${r.cache} · ${r.test}`;
    parts.push(`<text x="${LABEL_W - 6}" y="${y + BAR - 3}" text-anchor="end" font-size="11">${esc(label)}</text>`);
    parts.push(`<rect x="${LABEL_W}" y="${y}" width="${(x(r.tokensPerSecond) - LABEL_W).toFixed(1)}" height="${BAR}" fill="${color}" fill-opacity="${fastgen ? 1 : 0.5}"><title>${esc(`${label}: ${r.tokensPerSecond.toFixed(1)} ± ${r.stddev.toFixed(1)} t/s`)}</title></rect>`);
    if (r.stddev > 0) {
      const a = x(Math.max(0, r.tokensPerSecond - r.stddev));
      const b = x(r.tokensPerSecond + r.stddev);
      parts.push(`<line x1="${a.toFixed(1)}" y1="${y + BAR / 2}" x2="${b.toFixed(1)}" y2="${y + BAR / 2}" stroke="#333"/>`);
    }
    parts.push(`<text x="${(x(r.tokensPerSecond + r.stddev) + 4).toFixed(1)}" y="${y + BAR - 3}" font-size="10">${Math.round(r.tokensPerSecond)}</text>`);
  });
  refs.forEach((r, i) => {
    const xv = x(r.tokensPerSecond).toFixed(1);
    parts.push(`<line x1="${xv}" y1="${top - 4}" x2="${xv}" y2="${top + plotH}" stroke="#000" stroke-dasharray="4 3"/>`);
    parts.push(`<text x="${xv}" y="${top + plotH + 24 + 12 * i}" text-anchor="middle" font-size="10">${esc(`${r.backend}, ${r.threads} thread${r.threads > 1 ? 's' : ''}: ${Math.round(r.tokensPerSecond)}`)}</text>`);
  });
  return { svg: parts.join('\n'), height: 22 + plotH + 28 + 12 * refs.length };
}

/** The whole figure; `caption` goes under the title (machine, date). */
export function benchSvg(rows: BenchRow[], caption: string): string {
  const refs = rows.filter((r) => r.backend === 'llama2.c run');
  const ours = rows.filter((r) => r.backend !== 'llama2.c run');
  const decode = ours.filter((r) => !r.test.startsWith('pp'));
  const prefill = ours.filter((r) => r.test.startsWith('pp'));
  const parts: string[] = [];
  let y = 44;
  if (decode.length > 0) {
    const p = panel(y, 'decode, tokens/s (mean ± sd)', decode, refs);
    parts.push(p.svg);
    y += p.height + 16;
  }
  if (prefill.length > 0) {
    const p = panel(y, 'prefill, tokens/s (mean ± sd)', prefill, []);
    parts.push(p.svg);
    y += p.height + 16;
  }
  const model = ours[0]?.model ?? refs[0]?.model ?? '';
  const width = LABEL_W + PLOT_W + 60;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" font-family="sans-serif" font-size="12">
<text x="10" y="18" font-weight="bold" font-size="14">${esc(`fastgen bench — ${model}`)}</text>
<text x="10" y="34" font-size="11" fill="#555">${esc(`${caption}; pale bars: full cache, solid: FastGen; colour: weight dtype`)}</text>
${parts.join('\n')}
</svg>
`;
}
