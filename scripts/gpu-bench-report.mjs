// The table and plot of scripts/gpu-bench.sh's run: node gpu-bench-report.mjs OUT_DIR > table.md (writes OUT_DIR/plot.svg).
// Reads OUT_DIR/fastgen_*.out (`fastgen bench --synthetic … --json`) and OUT_DIR/hf.json (hf_bench.py).
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2];
const fg = [];
for (const f of readdirSync(dir).filter((x) => /^fastgen_.*\.out$/.test(x)).sort()) {
  try { fg.push(...JSON.parse(readFileSync(join(dir, f), 'utf8')).rows.map((r) => ({ ...r, file: f }))); } catch { /* a step that failed: its .err says why */ }
}
const hf = existsSync(join(dir, 'hf.json')) ? JSON.parse(readFileSync(join(dir, 'hf.json'), 'utf8')) : { rows: [], meta: {} };
const env = existsSync(join(dir, 'env.txt')) ? readFileSync(join(dir, 'env.txt'), 'utf8').trim() : '';
const f2 = (x) => (x === undefined ? '—' : x.toFixed(2));
const cell = (ms, bs) => (ms ? `${f2(ms)} (${(1000 * bs / ms).toFixed(0)})` : '—');
const main = fg.filter((r) => !r.budget && r.model === 'synthetic llama2-7b' && r.dtype === 'f16' && r.test.startsWith('tg'));
const isMix = (r) => r.cache.startsWith('fastgen');
const keys = [...new Set(main.map((r) => `${r.batch}|${r.depth}`))].map((k) => k.split('|').map(Number)).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
const hfRow = (impl, b, d) => hf.rows.find((r) => r.impl === impl && r.batch === b && r.depth === d && r.stepMs);
const out = [];
out.push(`${env.split('\n').join(' · ')}`, '');
const kvOf = (r) => (/\(f16 KV\)/.test(r.cache) ? 'f16' : 'f32');
const kvs = [...new Set(main.map(kvOf))].join(' and ') || 'f32';
out.push(`Decode step time, ms (tokens/s in brackets), Llama-2-7B shape, random f16 weights; fastgen: WebGPU, ${kvs} KV, greedy on the GPU; HF: fp16, greedy.`, '');
out.push('| batch | depth | fastgen full | fastgen FastGen mix | FastGen vs full | HF eager | HF sdpa | HF static + compile |', '|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const [b, d] of keys) {
  const full = main.find((r) => r.batch === b && r.depth === d && !isMix(r));
  const mix = main.find((r) => r.batch === b && r.depth === d && isMix(r));
  const v = (r) => (r?.error ? 'does not fit' : cell(r?.stepMs, b));
  const lower = full?.stepMs && mix?.stepMs ? 100 * (1 - mix.stepMs / full.stepMs) : undefined;
  const ratio = lower === undefined ? '—' : lower >= 0 ? `${lower.toFixed(0)} % lower` : `${(-lower).toFixed(0)} % higher`;
  out.push(`| ${b} | ${d} | ${v(full)} | ${v(mix)} | ${ratio} | ${cell(hfRow('eager', b, d)?.stepMs, b)} | ${cell(hfRow('sdpa', b, d)?.stepMs, b)} | ${cell(hfRow('static+compile', b, d)?.stepMs, b)} |`);
}
// Prefill: fastgen's ppN rows against HF's prompt of the same length (its generate() of 2 tokens, so an upper bound).
for (const r of fg.filter((x) => !x.budget && x.test.startsWith('pp') && x.tokensPerSecond)) {
  const n = Number(r.test.slice(2).split(/\D/)[0]);
  const hfs = hf.rows.filter((h) => h.batch === 1 && h.depth === n && h.prefillMs).map((h) => `${h.impl} ${(1000 * n / h.prefillMs).toFixed(0)} tokens/s`);
  out.push('', `Prefill of ${n} tokens: fastgen ${r.cache} ${r.tokensPerSecond.toFixed(0)} tokens/s; HF (prompt + 2 generated tokens): ${hfs.join(', ') || 'not measured at this length'}.`);
}
const skipped = hf.rows.filter((r) => r.skipped || r.error);
if (skipped.length) out.push('', `HF not measured: ${skipped.map((r) => `${r.impl} b${r.batch} d${r.depth} (${r.skipped ?? r.error})`).join('; ')}`);

out.push('', 'Where a fastgen step goes (one step timed dispatch by dispatch, GPU ms; the sum leaves out gaps between dispatches) and memory:', '');
out.push('| model | dtype | cache | test | ms/step (median) | t/s (mean) | GPU weights | attention | policy | other | dispatches | CPU encode (prepare) | CPU after | KV / row | weights |', '|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
const gib = (x) => `${(x / 2 ** 30).toFixed(2)} GiB`;
for (const r of fg.filter((x) => !x.budget)) {
  if (r.error) { out.push(`| ${r.model} | ${r.dtype} | ${r.cache} | ${r.test} | does not fit: ${r.error.slice(0, 80)}… | | | | | | | | | | |`); continue; }
  const s = r.split;
  out.push(`| ${r.model} | ${r.dtype} | ${r.cache} | ${r.test} | ${f2(r.stepMs)} | ${r.tokensPerSecond.toFixed(1)} | ${f2(s?.weightsMs)} | ${f2(s?.attentionMs)} | ${f2(s?.policyMs)} | ${f2(s?.otherMs)} | ${s?.dispatches ?? '—'} | ${f2(r.cpuEncodeMs)} (${f2(r.cpuPrepareMs)}) | ${f2(r.cpuAfterMs)} | ${gib(r.kvBytesPerRow)} | ${gib(r.weightBytes)} |`);
}
const budget = fg.filter((r) => r.budget);
if (budget.length) {
  out.push('', 'Memory budget (admission by the server\'s rule, then all admitted decode together):', '');
  out.push('| cache | test | offered | admitted | pages reserved / used / budget | t/s |', '|---|---|---:|---:|---:|---:|');
  for (const r of budget) out.push(`| ${r.cache} | ${r.test} | ${r.budget.offered} | ${r.budget.admitted} | ${r.budget.reservedPages} / ${r.budget.peakPages} / ${r.budget.budgetPages} | ${r.budget.error ? `failed: ${r.budget.error}` : r.tokensPerSecond.toFixed(1)} |`);
}
console.log(out.join('\n'));

// Plot: step time against depth, batch 1 and batch 8 side by side.
// A panel per batch size with fastgen rows (1 and 8 when both ran).
const panels = [1, 8].filter((b) => main.some((r) => r.batch === b && r.stepMs));
const W = 70 + panels.length * 460, H = 420, panel = 400, top = 50, left = 70, ph = 300;
const series = [
  { name: 'fastgen full', color: '#1f77b4', dash: '', pts: (b) => main.filter((r) => r.batch === b && !isMix(r) && r.stepMs).map((r) => [r.depth, r.stepMs]) },
  { name: 'fastgen FastGen mix', color: '#2ca02c', dash: '', pts: (b) => main.filter((r) => r.batch === b && isMix(r) && r.stepMs).map((r) => [r.depth, r.stepMs]) },
  { name: 'HF eager', color: '#d62728', dash: '6 4', pts: (b) => hf.rows.filter((r) => r.impl === 'eager' && r.batch === b && r.stepMs).map((r) => [r.depth, r.stepMs]) },
  { name: 'HF sdpa', color: '#ff7f0e', dash: '6 4', pts: (b) => hf.rows.filter((r) => r.impl === 'sdpa' && r.batch === b && r.stepMs).map((r) => [r.depth, r.stepMs]) },
  { name: 'HF static cache + compile', color: '#9467bd', dash: '2 3', pts: (b) => hf.rows.filter((r) => r.impl === 'static+compile' && r.batch === b && r.stepMs).map((r) => [r.depth, r.stepMs]) },
];
const svg = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H + 70}" font-family="sans-serif" font-size="12">`, `<rect width="100%" height="100%" fill="white"/>`,
  `<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">Decode step time vs context depth — Llama-2-7B shape, one H200</text>`];
panels.forEach((b, pi) => {
  const x0 = left + pi * (panel + 60);
  const all = series.flatMap((s) => s.pts(b));
  const ymax = Math.max(10, ...all.map((p) => p[1])) * 1.1;
  const lx = (d) => x0 + (Math.log2(Math.max(d, 16)) - 4) / (12 - 4) * panel; // 16 … 4096
  const ly = (v) => top + ph - (v / ymax) * ph;
  svg.push(`<text x="${x0 + panel / 2}" y="${top - 10}" text-anchor="middle" font-size="13">batch ${b}</text>`);
  svg.push(`<line x1="${x0}" y1="${top + ph}" x2="${x0 + panel}" y2="${top + ph}" stroke="#333"/><line x1="${x0}" y1="${top}" x2="${x0}" y2="${top + ph}" stroke="#333"/>`);
  for (const d of [32, 128, 512, 2048, 4096]) svg.push(`<line x1="${lx(d)}" y1="${top + ph}" x2="${lx(d)}" y2="${top + ph + 5}" stroke="#333"/><text x="${lx(d)}" y="${top + ph + 18}" text-anchor="middle">${d}</text>`);
  const stepY = ymax > 100 ? 50 : ymax > 40 ? 10 : 5;
  for (let v = 0; v <= ymax; v += stepY) svg.push(`<line x1="${x0}" y1="${ly(v)}" x2="${x0 + panel}" y2="${ly(v)}" stroke="#eee"/><text x="${x0 - 6}" y="${ly(v) + 4}" text-anchor="end">${v}</text>`);
  svg.push(`<text x="${x0 + panel / 2}" y="${top + ph + 36}" text-anchor="middle">context depth (tokens, log scale)</text>`);
  svg.push(`<text transform="translate(${x0 - 45},${top + ph / 2}) rotate(-90)" text-anchor="middle">ms per decode step</text>`);
  for (const s of series) {
    const pts = s.pts(b).sort((p, q) => p[0] - q[0]);
    if (pts.length === 0) continue;
    svg.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2" ${s.dash ? `stroke-dasharray="${s.dash}"` : ''} points="${pts.map(([d, v]) => `${lx(d).toFixed(1)},${ly(v).toFixed(1)}`).join(' ')}"/>`);
    for (const [d, v] of pts) svg.push(`<circle cx="${lx(d).toFixed(1)}" cy="${ly(v).toFixed(1)}" r="3.5" fill="${s.color}"/>`);
  }
});
series.forEach((s, i) => {
  const x = left + (i % 3) * 170;
  const yl = H + 20 + Math.floor(i / 3) * 18;
  svg.push(`<line x1="${x}" y1="${yl}" x2="${x + 28}" y2="${yl}" stroke="${s.color}" stroke-width="2" ${s.dash ? `stroke-dasharray="${s.dash}"` : ''}/><text x="${x + 34}" y="${yl + 4}">${s.name}</text>`);
});
svg.push('</svg>');
writeFileSync(join(dir, 'plot.svg'), svg.join('\n'));
