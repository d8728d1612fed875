/**
 * Tokenising large prompts off the main thread: a worker thread with its own copy of a Hugging Face tokenizer (loaded
 * from the same folder, so its ids are the same), so that megabytes of text do not hold the event loop — and every
 * other client — for seconds. Small texts are tokenised in place; they cost less than a message round trip.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { TokenizerError } from '../errors.js';
import { HfTokenizer } from '../tokenizer/hf.js';
import { nodeFolder } from '../model/node-files.js';
import type { ChatMessage } from '../tokenizer/types.js';

type Request = { id: number; text: string; addBos?: boolean } | { id: number; messages: ChatMessage[] };
type Reply = { id: number; ids: number[] } | { id: number; error: string; tokenizerError: boolean };

/** One worker, started on first use; requests are answered in order. */
export class OffThreadTokenizer {
  private worker: Worker | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (ids: number[]) => void; reject: (e: Error) => void }>();
  /** Texts tokenised by the worker so far. */
  count = 0;

  constructor(private readonly dir: string) {}

  encode(text: string, addBos?: boolean): Promise<number[]> {
    return this.call({ id: 0, text, addBos });
  }

  /** The chat template's ids (Tokenizer.encodeChat, with the generation prompt). */
  encodeChat(messages: ChatMessage[]): Promise<number[]> {
    return this.call({ id: 0, messages });
  }

  close(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    return w ? w.terminate().then(() => {}) : Promise.resolve();
  }

  private call(req: Request): Promise<number[]> {
    this.count++;
    const w = (this.worker ??= this.start());
    req.id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(req.id, { resolve, reject });
      w.postMessage(req);
    });
  }

  private start(): Worker {
    const w = new Worker(new URL(import.meta.url), { workerData: { dir: this.dir } });
    w.unref(); // an idle tokenizer never keeps the process alive
    w.on('message', (m: Reply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if ('ids' in m) p.resolve(m.ids);
      else p.reject(m.tokenizerError ? new TokenizerError(m.error) : new Error(m.error));
    });
    const failAll = (e: Error) => {
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
      if (this.worker === w) this.worker = undefined;
    };
    w.on('error', failAll);
    w.on('exit', (code) => failAll(new Error(`the tokenizer worker exited (code ${code})`)));
    return w;
  }
}

if (!isMainThread && parentPort && (workerData as { dir?: unknown })?.dir) {
  const port = parentPort;
  const ready = HfTokenizer.fromFolder(nodeFolder((workerData as { dir: string }).dir));
  port.on('message', async (m: Request) => {
    try {
      const tok = await ready;
      const ids = 'messages' in m ? tok.encodeChat(m.messages, { addGenerationPrompt: true }) : tok.encode(m.text, { addBos: m.addBos });
      port.postMessage({ id: m.id, ids } satisfies Reply);
    } catch (e) {
      port.postMessage({ id: m.id, error: e instanceof Error ? e.message : String(e), tokenizerError: e instanceof TokenizerError } satisfies Reply);
    }
  });
}
