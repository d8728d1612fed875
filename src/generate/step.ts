/**
 * One generation step, the only forward → sample → stop loop body in fastgen: the library's `generate`, the server's
 * continuous-batching scheduler, the evaluator and `bench` all advance their requests through it.
 *
 * Every request that is not done pushes its next input (its prompt the first time, then its last token) through one
 * batched forward pass; then each samples from its own logits, checks its stop conditions and books the step's time
 * as prefill or decode. A request resumed from a shared prefill samples from the logits it was given, with no forward.
 */
import type { Backend } from '../backend/types.js';
import type { GenerationRequest } from './request.js';

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
  let logits: Float32Array[] = [];
  if (forwarded.length > 0) {
    logits = await backend.forward(forwarded.map((r) => ({ kv: r.kv, tokens: r.input(), logits: 'last' as const, out: r.logitsBuffer(vocab) })));
    if (logits.length !== forwarded.length) throw new Error(`internal: the backend returned ${logits.length} logits for ${forwarded.length} sequences`);
  }
  const forwardMs = performance.now() - t0;
  let k = 0;
  return requests.map((r, i): StepOutcome => {
    if (!live[i]) return { piece: '' };
    const pending = r.pendingLogits;
    const own = pending ?? logits[k++];
    const t1 = performance.now();
    try {
      const piece = r.accept(own);
      r.recordStep((pending ? 0 : forwardMs) + (performance.now() - t1));
      return { piece };
    } catch (error) {
      return { piece: '', error };
    }
  });
}
