/**
 * One generation step, the only forward → sample → stop loop body in fastgen: the library's `generate`, the server's
 * continuous-batching scheduler, the evaluator and `bench` all advance their requests through it.
 *
 * Every request that is not done pushes its next input (its prompt the first time, then its last token) through one
 * batched forward pass; then each samples from its own logits (or takes the token a backend that samples on its device
 * drew for it: `Backend.forwardSampled`), checks its stop conditions and books the step's time as prefill or decode. A request resumed from a shared prefill samples from the logits it was given, with no forward (by the
 * device's rule, sample-rule.ts, when the backend samples on its device: a forked choice picks what it would alone).
 */
import type { Backend } from '../backend/types.js';
import type { GenerationRequest } from './request.js';
import { sampleWithUniform } from './sample-rule.js';

/** What one request got from a step: its newly printable text, or the error its sampling threw (its alone). */
export type StepOutcome = { piece: string; error?: undefined } | { piece: ''; error: unknown };

/**
 * Advance every request by one token. A failing forward pass rejects (every request of the batch may be half-updated:
 * the caller decides what to restart); a failing sample fails only its own request's outcome.
 */
export async function step(backend: Backend, requests: readonly GenerationRequest[]): Promise<StepOutcome[]> {
  const live = requests.map((r) => !r.checkAbort());
  const forwarded = requests.filter((r, i) => live[i] && r.pendingLogits === undefined);
  const vocab = backend.config.vocabSize;
  const t0 = performance.now();
  // On a backend that samples on its device, each request that can be sampled there gets its token back instead of
  // its logits (src/generate/sample-rule.ts); the others (penalties, logprobs, a prefill to fork) get logits.
  const samples = backend.forwardSampled ? forwarded.map((r) => r.deviceSample()) : [];
  let outputs: (Float32Array | number | Error)[] = [];
  if (forwarded.length > 0) {
    const items = forwarded.map((r, i) => ({ kv: r.kv, tokens: r.input(), logits: 'last' as const, out: samples[i] ? undefined : r.logitsBuffer(vocab), sample: samples[i] }));
    outputs = samples.some((s) => s) ? await backend.forwardSampled!(items) : await backend.forward(items);
    if (outputs.length !== forwarded.length) throw new Error(`internal: the backend returned ${outputs.length} results for ${forwarded.length} sequences`);
  }
  const forwardMs = performance.now() - t0;
  let k = 0;
  return requests.map((r, i): StepOutcome => {
    if (!live[i]) return { piece: '' };
    const pending = r.pendingLogits;
    const own = pending ?? outputs[k++];
    const t1 = performance.now();
    if (own instanceof Error) return { piece: '', error: own };
    try {
      // A choice resumed from a forked prefill on a backend that samples on its device: the device's rule, here.
      const rule = pending && backend.forwardSampled ? r.deviceSample() : undefined;
      const piece = typeof own === 'number' ? r.acceptToken(own) : rule ? r.acceptToken(sampleWithUniform(own, rule).token) : r.accept(own);
      r.recordStep((pending ? 0 : forwardMs) + (performance.now() - t1));
      return { piece };
    } catch (error) {
      return { piece: '', error };
    }
  });
}
