/**
 * A fixed per-head assignment: head (layer, kvHead) follows `assign(layer, kvHead)` from the first token on (the uniform
 * baselines are the case of one policy for all heads). Not in the
 * registry (it takes a function, not options): for tests that put chosen policies on chosen heads, and for speed runs
 * on random weights, whose attention gives FastGen nothing real to profile, with a policy mix taken from a real run.
 */
import { usesScores, type HeadPolicy } from '../head-policy.js';
import type { KvShape, SequencePolicy } from './types.js';

export function assignedHeads(shape: KvShape, assign: (layer: number, kvHead: number) => HeadPolicy): SequencePolicy {
  const heads: HeadPolicy[] = [];
  for (let l = 0; l < shape.nLayers; l++) for (let h = 0; h < shape.nKvHeads; h++) heads.push(assign(l, h));
  const needs = Array.from({ length: shape.nLayers }, (_, l) => ({
    scores: heads.slice(l * shape.nKvHeads, (l + 1) * shape.nKvHeads).map(usesScores),
    stats: null,
  }));
  const seq: SequencePolicy = {
    head: (l, h) => heads[l * shape.nKvHeads + h],
    needs: (l) => needs[l],
    afterAttention(kv, pass) {
      for (let h = 0; h < shape.nKvHeads; h++) kv.apply(pass.layer, h, heads[pass.layer * shape.nKvHeads + h], pass.startPos + pass.n - 1);
    },
    evicts: heads.some((p) => !p.full),
    fork: () => seq,
    decideMs: 0,
  };
  return seq;
}
