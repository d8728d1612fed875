/**
 * SVG figures for the evaluation, written by hand (no plotting dependency):
 *   quality against KV budget per method (win rate, KL, ROUGE-L against KV kept %), one line per method;
 *   the share of each policy per layer at every T (the paper's Figure 3);
 *   decode-time attention recovery against what profiling promised, per (layer, KV head).
 */
import type { EvalReport, PointSummary } from './types.js';

const METHOD_COLORS: Record<string, string> = {
  fastgen: '#d62728',
  'fastgen-mean': '#9467bd',
  'fastgen-paper': '#8c564b',
  local: '#1f77b4',
  frequent: '#2ca02c',
  'local+frequent': '#ff7f0e',
  'sink+local': '#17becf',
  snapkv: '#e377c2',
  full: '#000000',
};

/** Hybrid-set policies, cheapest first, with the colours the profile view uses. */
const POLICY_ORDER = ['special', 'special+punct', 'special+punct+frequent', 'special+punct+frequent+local', 'full'];
const POLICY_COLORS = ['#2c7bb6', '#00a6ca', '#90d743', '#fdae61', '#d7191c'];
const POLICY_LABELS = ['special', '+punct', '+frequent', '+local', 'full'];
/** Colours for the lattice's other families (special+local, special+frequent, …), in name order. */
const OTHER_COLORS = ['#762a83', '#9970ab', '#c2a5cf', '#1b7837', '#5aae61', '#bf812d', '#8c510a', '#c51b7d', '#4d9221', '#35978f'];

/** Text for SVG/XML content and attributes. */
export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const f = (x: number) => (Math.round(x * 10) / 10).toString();

interface Axis {
  min: number;
  max: number;
  log?: boolean;
  ticks: number[];
  label: string;
  fmt: (v: number) => string;
}

function project(a: Axis, v: number, lo: number, hi: number): number {
  const t = a.log ? (Math.log10(v) - Math.log10(a.min)) / (Math.log10(a.max) - Math.log10(a.min)) : (v - a.min) / (a.max - a.min);
  return lo + Math.min(1.05, Math.max(-0.05, t)) * (hi - lo);
}

interface Series {
  name: string;
  color: string;
  points: { x: number; y: number; label?: string }[];
  dashed?: boolean;
}

function panel(x0: number, y0: number, w: number, h: number, title: string, xa: Axis, ya: Axis, series: Series[], refY?: number): string {
  const parts: string[] = [];
  const L = x0 + 48;
  const R = x0 + w - 10;
  const T = y0 + 24;
  const B = y0 + h - 36;
  parts.push(`<text x="${(L + R) / 2}" y="${y0 + 14}" text-anchor="middle" font-weight="bold">${esc(title)}</text>`);
  parts.push(`<rect x="${L}" y="${T}" width="${R - L}" height="${B - T}" fill="none" stroke="#999"/>`);
  for (const t of xa.ticks) {
    const x = project(xa, t, L, R);
    parts.push(`<line x1="${f(x)}" y1="${T}" x2="${f(x)}" y2="${B}" stroke="#eee"/>`);
    parts.push(`<text x="${f(x)}" y="${B + 14}" text-anchor="middle" font-size="10">${esc(xa.fmt(t))}</text>`);
  }
  for (const t of ya.ticks) {
    const y = project(ya, t, B, T);
    parts.push(`<line x1="${L}" y1="${f(y)}" x2="${R}" y2="${f(y)}" stroke="#eee"/>`);
    parts.push(`<text x="${L - 4}" y="${f(y + 3)}" text-anchor="end" font-size="10">${esc(ya.fmt(t))}</text>`);
  }
  if (refY !== undefined) {
    const y = project(ya, refY, B, T);
    parts.push(`<line x1="${L}" y1="${f(y)}" x2="${R}" y2="${f(y)}" stroke="#555" stroke-dasharray="4 3"/>`);
  }
  parts.push(`<text x="${(L + R) / 2}" y="${B + 30}" text-anchor="middle" font-size="11">${esc(xa.label)}</text>`);
  parts.push(`<text x="${x0 + 10}" y="${(T + B) / 2}" text-anchor="middle" font-size="11" transform="rotate(-90 ${x0 + 10} ${(T + B) / 2})">${esc(ya.label)}</text>`);
  for (const s of series) {
    const pts = s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y) && (!ya.log || p.y > 0)).sort((a, b) => a.x - b.x);
    if (pts.length === 0) continue;
    const xy = pts.map((p) => [project(xa, p.x, L, R), project(ya, p.y, B, T)]);
    if (xy.length > 1) {
      parts.push(
        `<polyline points="${xy.map(([x, y]) => `${f(x)},${f(y)}`).join(' ')}" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>`,
      );
    }
    pts.forEach((p, i) => {
      const [x, y] = xy[i];
      parts.push(`<circle cx="${f(x)}" cy="${f(y)}" r="3.5" fill="${s.color}"><title>${esc(`${s.name}${p.label ? ` ${p.label}` : ''}: KV kept ${p.x.toFixed(1)} %, ${ya.label} ${ya.fmt(p.y)}`)}</title></circle>`);
    });
  }
  return parts.join('\n');
}

function niceTicks(min: number, max: number, n = 5): number[] {
  const span = max - min || 1;
  const step0 = span / n;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) ?? mag * 10;
  const out: number[] = [];
  for (let v = Math.ceil(min / step) * step; v <= max + 1e-9; v += step) out.push(Math.round(v / step) * step);
  return out;
}

function logTicks(min: number, max: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++) out.push(10 ** e);
  return out;
}

/** Quality against KV kept (%) for FastGen (the T sweep) and every baseline at FastGen's memory. */
export function qualityVsKvSvg(report: EvalReport): string {
  const bySeries = new Map<string, PointSummary[]>();
  for (const p of report.points) {
    if (p.group === 'ablation') continue;
    const name = p.group === 'gqa-alt' ? 'fastgen-mean' : p.group === 'paper' ? 'fastgen-paper' : p.method;
    if (!bySeries.has(name)) bySeries.set(name, []);
    bySeries.get(name)!.push(p);
  }
  const kept = (p: PointSummary) => 100 * (1 - p.pruned);
  const all = report.points.filter((p) => p.group !== 'ablation');
  const xMin = Math.max(0, Math.floor(Math.min(...all.map(kept)) / 10) * 10);
  const xa: Axis = { min: xMin, max: 100, ticks: niceTicks(xMin, 100), label: 'KV kept, % of full (end of generation)', fmt: (v) => `${v}` };
  const mk = (metric: (p: PointSummary) => number, withFull?: number) =>
    [...bySeries.entries()].map(([name, pts]) => {
      const points = pts.map((p) => ({ x: kept(p), y: metric(p), label: `T=${p.T}` }));
      if (withFull !== undefined && !name.startsWith('fastgen')) points.push({ x: 100, y: withFull, label: 'full' });
      return { name, color: METHOD_COLORS[name] ?? '#666', points, dashed: name === 'fastgen-mean' || name === 'fastgen-paper' } as Series;
    });
  const klVals = all.map((p) => p.kl).filter((v) => v > 0);
  const klMin = klVals.length ? 10 ** Math.floor(Math.log10(Math.min(...klVals))) : 1e-3;
  const klMax = klVals.length ? 10 ** Math.ceil(Math.log10(Math.max(...klVals))) : 1;
  const W = 330;
  const H = 280;
  const parts: string[] = [];
  const width = 3 * W + 20;
  const height = H + 80;
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="100%" height="100%" fill="white"/>`);
  parts.push(
    `<text x="10" y="18" font-size="14" font-weight="bold">${esc(`${report.model.name}: quality against KV budget (${report.settings.prompts} prompts × ${report.settings.maxTokens} tokens, ${report.backend})`)}</text>`,
  );
  const winMax = Math.max(60, Math.ceil((100 * Math.max(...all.map((p) => p.win.rate).filter(Number.isFinite))) / 10) * 10);
  const winAxis: Axis = { min: 0, max: winMax, ticks: niceTicks(0, winMax), label: 'win rate vs full, % (50 = lossless)', fmt: (v) => `${v}` };
  parts.push(panel(0, 28, W, H, 'likelihood-judge win rate', xa, winAxis, mk((p) => 100 * p.win.rate, 50), 50));
  const klAxis: Axis = { min: klMin, max: klMax, log: true, ticks: logTicks(klMin, klMax), label: 'KL(full ‖ compressed), nats/token', fmt: (v) => (v >= 1 ? v.toFixed(0) : v.toPrecision(1)) };
  parts.push(panel(W, 28, W, H, 'teacher-forced KL (lower is better)', xa, klAxis, mk((p) => p.kl)));
  const rAxis: Axis = { min: 0, max: 1, ticks: [0, 0.2, 0.4, 0.6, 0.8, 1], label: 'ROUGE-L vs full greedy', fmt: (v) => v.toFixed(1) };
  parts.push(panel(2 * W, 28, W, H, 'greedy agreement', xa, rAxis, mk((p) => p.rougeL, 1)));
  let lx = 10;
  for (const name of bySeries.keys()) {
    parts.push(`<rect x="${lx}" y="${H + 52}" width="14" height="4" fill="${METHOD_COLORS[name] ?? '#666'}"/><text x="${lx + 18}" y="${H + 58}">${esc(name === 'fastgen-mean' ? 'fastgen (gqa mean)' : name === 'fastgen-paper' ? 'fastgen (paper)' : name)}</text>`);
    lx += 40 + name.length * 7;
  }
  parts.push('</svg>');
  return parts.join('\n');
}

/** Share of each hybrid-set policy per layer, one panel per T < 1 (the paper's Figure 3). */
export function policiesByLayerSvg(report: EvalReport): string {
  const pts = report.points.filter((p) => p.group === 'sweep' && p.T < 1 && p.policyShareByLayer).sort((a, b) => b.T - a.T);
  const nLayers = report.model.nLayers;
  const rowH = 18;
  const panelW = 230;
  const top = 50;
  const left = 60;
  const width = Math.max(720, left + pts.length * (panelW + 20) + 10);
  // Every family any head chose: the paper's chain in its order, then the others (the lattice's) by name.
  const present = new Set(pts.flatMap((p) => p.policyShareByLayer!.flatMap((shares) => Object.keys(shares))));
  const others = [...present].filter((n) => !POLICY_ORDER.includes(n)).sort();
  const order = [...POLICY_ORDER.filter((n) => present.has(n) || n === 'full'), ...others];
  const color = (n: string) => (POLICY_ORDER.includes(n) ? POLICY_COLORS[POLICY_ORDER.indexOf(n)] : OTHER_COLORS[others.indexOf(n) % OTHER_COLORS.length]);
  const label = (n: string) => (others.length === 0 ? POLICY_LABELS[POLICY_ORDER.indexOf(n)] : n);
  const perRow = others.length === 0 ? order.length : Math.max(1, Math.floor((width - left) / 240));
  const legendRows = Math.ceil(order.length / perRow);
  const height = top + nLayers * rowH + 70 + legendRows * 20;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="100%" height="100%" fill="white"/>`);
  parts.push(`<text x="10" y="18" font-size="14" font-weight="bold">${esc(`${report.model.name}: policy chosen per KV head, share by layer (${report.settings.prompts} prompts)`)}</text>`);
  for (let l = 0; l < nLayers; l++) parts.push(`<text x="${left - 6}" y="${top + l * rowH + 13}" text-anchor="end">layer ${l}</text>`);
  pts.forEach((p, i) => {
    const x0 = left + i * (panelW + 20);
    parts.push(`<text x="${x0 + panelW / 2}" y="${top - 8}" text-anchor="middle" font-weight="bold">T = ${p.T} (pruned ${(100 * p.pruned).toFixed(1)} %)</text>`);
    p.policyShareByLayer!.forEach((shares, l) => {
      let x = x0;
      for (const name of order) {
        const s = shares[name] ?? 0;
        if (s <= 0) continue;
        const w = s * panelW;
        parts.push(`<rect x="${f(x)}" y="${top + l * rowH}" width="${f(w)}" height="${rowH - 3}" fill="${color(name)}"><title>${esc(`T ${p.T}, layer ${l}: ${name} ${(100 * s).toFixed(0)} %`)}</title></rect>`);
        x += w;
      }
    });
  });
  const ly = top + nLayers * rowH + 20;
  order.forEach((name, k) => {
    const x = left + (k % perRow) * (others.length === 0 ? 95 : 240);
    const y = ly + Math.floor(k / perRow) * 20;
    parts.push(`<rect x="${x}" y="${y}" width="14" height="14" fill="${color(name)}"/><text x="${x + 18}" y="${y + 12}">${esc(label(name))}</text>`);
  });
  const ny = ly + legendRows * 20;
  parts.push(`<text x="${left}" y="${ny + 14}" font-size="11">${others.length === 0
    ? 'Hybrid set, cheapest first: special ⊂ +punct ⊂ +frequent ⊂ +local ⊂ full.'
    : 'Policy families; a lattice choice counts under its family whatever its sizes (special+frequent@0.1+local@0.2 → special+frequent+local).'}</text>`);
  parts.push(`<text x="${left}" y="${ny + 30}" font-size="11">Each bar: share of the layer's (prompt, KV head) pairs that chose each policy.</text>`);
  parts.push('</svg>');
  return parts.join('\n');
}

/**
 * Per (layer, KV head), averaged over prompts: attention recovery promised at profiling (x) against the recovery the
 * compressed cache actually achieved while decoding (y), one colour per T.
 */
export function recoverySvg(report: EvalReport): string {
  const sweep = report.points.filter((p) => p.group === 'sweep' && p.T < 1).sort((a, b) => b.T - a.T);
  const palette = ['#1b9e77', '#d95f02', '#7570b3', '#e7298a', '#66a61e', '#e6ab02'];
  const series: Series[] = sweep.map((p, i) => {
    const rows = report.prompts.map((pr) => pr.configs.find((c) => c.key === p.key)).filter((c) => c !== undefined);
    const n = rows[0]?.recovery.achieved.length ?? 0;
    const points = Array.from({ length: n }, (_, h) => {
      const a = rows.reduce((s, r) => s + r!.recovery.achieved[h], 0) / rows.length;
      const pr = rows.reduce((s, r) => s + (r!.recovery.promised?.[h] ?? 1), 0) / rows.length;
      return { x: 100 * pr, y: 100 * a, label: `layer ${Math.floor(h / report.model.nKvHeads)} head ${h % report.model.nKvHeads}` };
    });
    return { name: `T = ${p.T}`, color: palette[i % palette.length], points };
  });
  const xs = series.flatMap((s) => s.points.map((p) => p.x));
  const ys = series.flatMap((s) => s.points.map((p) => p.y));
  const floorTo = (v: number, step: number) => Math.max(0, Math.floor((v - 0.5) / step) * step);
  const xlo = floorTo(Math.min(99, ...xs), 2);
  const ylo = floorTo(Math.min(95, ...ys), 5);
  const W = 520;
  const H = 420;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H + 40}" viewBox="0 0 ${W} ${H + 40}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="100%" height="100%" fill="white"/>`);
  // Scatter: draw points only (no connecting lines) by giving each point its own series.
  const dots = series.flatMap((s) => s.points.map((p) => ({ ...s, points: [p] })));
  const xa: Axis = { min: xlo, max: 100, ticks: niceTicks(xlo, 100), label: 'promised at profiling (prompt attention), %', fmt: (v) => `${v}` };
  const ya: Axis = { min: ylo, max: 100, ticks: niceTicks(ylo, 100), label: 'achieved while decoding (full-model attention), %', fmt: (v) => `${v}` };
  parts.push(panel(0, 10, W, H, `${report.model.name}: recovery per KV head, mean over prompts`, xa, ya, dots));
  // The diagonal y = x (achieved = promised), clipped to the plot.
  const L = 48;
  const R = W - 10;
  const T = 34;
  const B = 10 + H - 36;
  const v0 = Math.max(xlo, ylo);
  parts.push(
    `<line x1="${f(project(xa, v0, L, R))}" y1="${f(project(ya, v0, B, T))}" x2="${f(project(xa, 100, L, R))}" y2="${f(project(ya, 100, B, T))}" stroke="#555" stroke-dasharray="4 3"><title>achieved = promised</title></line>`,
  );
  let lx = 10;
  for (const s of series) {
    parts.push(`<circle cx="${lx + 5}" cy="${H + 25}" r="4" fill="${s.color}"/><text x="${lx + 13}" y="${H + 29}">${esc(s.name)}</text>`);
    lx += 80;
  }
  parts.push('</svg>');
  return parts.join('\n');
}
