/** The profile figure: every legend entry inside the picture, whatever the number of heads. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { profileSvg } from '../src/cli/profile-view.js';
import type { ProfileReport } from '../src/generate/model.js';

function report(nLayers: number, nHeads: number): ProfileReport {
  const policies = ['special', 'special+punct', 'special+punct+frequent', 'special+punct+frequent+local', 'full'];
  const layers = Array.from({ length: nLayers }, (_, l) =>
    Array.from({ length: nHeads }, (_, h) => ({ policy: policies[(l + h) % policies.length], tokensKept: 3, promptTokens: 12, recoveries: [{ policy: 'full', recovery: 1 }] })),
  );
  return { promptTokens: 12, recovery: 0.95, gqa: 'mean', layers, headsPerPolicy: {}, kvBytes: 1, fullKvBytes: 2, prunedRatio: 0.5, profileMs: 1, prefillMs: 2 } as unknown as ProfileReport;
}

test('profile SVG: the legend (all five policies) and the titles fit inside the figure for 1, 6 and 32 heads', () => {
  for (const heads of [1, 6, 32]) {
    const svg = profileSvg(report(3, heads), 'FastGen profile: a model with a fairly long name');
    const width = Number(/<svg [^>]*width="(\d+)"/.exec(svg)![1]);
    const height = Number(/<svg [^>]*height="(\d+)"/.exec(svg)![1]);
    for (const label of ['special', '…+punct', '…+frequent', '…+local', 'full']) {
      const m = new RegExp(`<text x="(\\d+)" y="(\\d+)">${label.replace('+', '\\+')}</text>`).exec(svg);
      assert.ok(m, `${heads} heads: legend entry ${label}`);
      const right = Number(m[1]) + label.length * 7.2;
      assert.ok(right <= width, `${heads} heads: ${label} ends at ${right} > width ${width}`);
      assert.ok(Number(m[2]) <= height, `${heads} heads: ${label} below the figure`);
    }
  }
});
