/** Pictures of a FastGen profile: a coloured letter grid for the terminal and an SVG heatmap (layers × KV heads). */
import type { ProfileReport } from '../generate/model.js';
import { policyLetter } from '../cache/head-policy.js';
import { esc } from '../eval/svg.js';

/** Cheapest to most expensive, as in the hybrid order; colours run cool → warm. */
const POLICY_COLORS: Record<string, { svg: string; ansi: number }> = {
  special: { svg: '#2c7bb6', ansi: 34 },
  punct: { svg: '#00a6ca', ansi: 36 },
  frequent: { svg: '#90d743', ansi: 32 },
  local: { svg: '#fdae61', ansi: 33 },
  full: { svg: '#d7191c', ansi: 31 },
};

/** The legend's order: the hybrid set, cheapest first. */
const LEGEND_ORDER = ['special', 'punct', 'frequent', 'local', 'full'];

function lastPart(name: string): string {
  return name === 'full' ? 'full' : name.split('+').pop()!;
}

export function profileGrid(report: ProfileReport, color: (code: number, s: string) => string): string {
  const lines: string[] = [];
  const nHeads = report.layers[0]?.length ?? 0;
  lines.push(`        ${Array.from({ length: nHeads }, (_, h) => String(h).padStart(2)).join(' ')}   (KV heads)`);
  report.layers.forEach((heads, l) => {
    const cells = heads.map((hp) => color(POLICY_COLORS[lastPart(hp.policy)]?.ansi ?? 37, policyLetter(hp.policy).padStart(2)));
    lines.push(`layer ${String(l).padStart(2)} ${cells.join(' ')}`);
  });
  lines.push('');
  lines.push(
    `legend: ${LEGEND_ORDER
      .map((p) => color(POLICY_COLORS[p].ansi, `${policyLetter(p === 'full' ? 'full' : p)}`) + `=${p === 'special' ? 'special' : p === 'full' ? 'full' : '…+' + p}`)
      .join('  ')}`,
  );
  return lines.join('\n');
}

/** Rough width of sans-serif text at `size` px (SVG has no layout engine: boxes are sized from this). */
function textWidth(s: string, size: number): number {
  return Math.ceil(s.length * size * 0.6);
}

export function profileSvg(report: ProfileReport, title: string): string {
  const nLayers = report.layers.length;
  const nHeads = report.layers[0]?.length ?? 0;
  const cell = 28;
  const left = 70;
  const top = 60;
  const margin = 20;
  const subtitle = `T = ${report.recovery}, ${report.promptTokens} prompt tokens, KV pruned ${(report.prunedRatio * 100).toFixed(1)} %`;
  // The legend flows left to right and wraps onto more rows when the figure is narrower than it.
  const legend = LEGEND_ORDER.map((p) => ({ p, label: p === 'special' || p === 'full' ? p : `…+${p}` }));
  const itemWidth = (label: string) => 18 + textWidth(label, 12) + 16;
  const gridRight = left + nHeads * cell;
  const width = Math.max(gridRight + margin, left + textWidth(title, 14) + margin, left + textWidth(subtitle, 12) + margin, left + Math.max(...legend.map((l) => itemWidth(l.label))) + margin, 320);
  const rows: { p: string; label: string; x: number }[][] = [[]];
  let x = left;
  for (const item of legend) {
    if (x + itemWidth(item.label) > width - margin && rows[rows.length - 1].length > 0) {
      rows.push([]);
      x = left;
    }
    rows[rows.length - 1].push({ ...item, x });
    x += itemWidth(item.label);
  }
  const legendTop = top + nLayers * cell + 20;
  const height = legendTop + rows.length * 22 + margin;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="100%" height="100%" fill="white"/>`);
  parts.push(`<text x="${left}" y="20" font-size="14" font-weight="bold">${esc(title)}</text>`);
  parts.push(`<text x="${left}" y="38">${esc(subtitle)}</text>`);
  for (let h = 0; h < nHeads; h++) parts.push(`<text x="${left + h * cell + cell / 2}" y="${top - 6}" text-anchor="middle">${h}</text>`);
  report.layers.forEach((heads, l) => {
    const y = top + l * cell;
    parts.push(`<text x="${left - 8}" y="${y + cell / 2 + 4}" text-anchor="end">layer ${l}</text>`);
    heads.forEach((hp, h) => {
      const x = left + h * cell;
      const fill = POLICY_COLORS[lastPart(hp.policy)]?.svg ?? '#999';
      const tip = `layer ${l} head ${h}: ${hp.policy}, kept ${hp.tokensKept}/${hp.promptTokens}\n` + hp.recoveries.map((r) => `${r.policy}: ${r.recovery.toFixed(4)}`).join('\n');
      parts.push(`<rect x="${x}" y="${y}" width="${cell - 2}" height="${cell - 2}" fill="${fill}"><title>${esc(tip)}</title></rect>`);
      parts.push(`<text x="${x + cell / 2 - 1}" y="${y + cell / 2 + 4}" text-anchor="middle" fill="white">${policyLetter(hp.policy)}</text>`);
    });
  });
  rows.forEach((row, r) => {
    const ly = legendTop + r * 22;
    for (const { p, label, x } of row) {
      parts.push(`<rect x="${x}" y="${ly}" width="14" height="14" fill="${POLICY_COLORS[p].svg}"/><text x="${x + 18}" y="${ly + 12}">${esc(label)}</text>`);
    }
  });
  parts.push('</svg>');
  return parts.join('\n');
}
