/**
 * `fastgen generate` and `fastgen chat`. Text goes to stdout, timings and the KV summary to stderr, so pipes stay
 * clean; a pipe closed by the reader (`| head`) ends the generation quietly.
 */
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { cachePolicy } from '../cache/policies/index.js';
import { ContextOverflowError } from '../errors.js';
import { formatBytes } from '../format.js';
import { loadModel, type Model } from '../generate/model.js';
import type { GenerateOptions, GenerateResult } from '../generate/request.js';
import type { ChatMessage } from '../tokenizer/types.js';
import { stdoutClosed, watchStdout, write } from './stdout.js';
import { cacheOptions, modelOptions, newCommand, option, runCommand, samplingOptions, toGenerateOptions, toLoadOptions } from './args.js';

/** What generate and chat share: the model, sampling and cache flags. */
function generationOptions(cmd: Command): Command {
  return cacheOptions(samplingOptions(modelOptions(cmd)));
}

export function generateCli() {
  const cmd = newCommand('fastgen generate', 'Continue a prompt: the argument, or stdin when none is given.').argument('[prompt...]', 'the prompt (default: read from stdin)');
  generationOptions(cmd).addOption(option('--json', 'print the whole report (text, tokens, timings, KV use) as JSON instead of the text'));
  cmd.addHelpText('after', '\nThe text goes to stdout; timings (prefill and decode tok/s) and, with a cache policy, a KV summary go to stderr.');
  return cmd;
}

export function chatCli() {
  const cmd = newCommand('fastgen chat', "Chat with the model (its chat template when it has one). Type a message and press Enter; an empty line or Ctrl-D ends the chat, Ctrl-C stops a reply.");
  generationOptions(cmd).addOption(option('--system <text>', 'system message that starts the conversation'));
  cmd.addHelpText('after', '\nWhen the conversation no longer fits the context, the oldest turns are dropped (the system message stays), and the chat says so.');
  return cmd;
}

export async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) return '';
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function kvSummary(r: GenerateResult): string {
  const kv = r.kv;
  const heads = Object.entries(kv.headsPerPolicy)
    .map(([p, n]) => `${p}:${n}`)
    .join(' ');
  return (
    `kv: ${kv.policy} ${formatBytes(kv.kvBytes)} of ${formatBytes(kv.fullKvBytes)} full (${(kv.prunedRatio * 100).toFixed(1)} % pruned), ` +
    `peak ${formatBytes(kv.peakKvBytes)}; heads ${heads}` +
    (r.timings.profileMs > 0 ? `; ${cachePolicy(kv.policy).adaptive ? 'profiling' : 'selecting'} ${r.timings.profileMs.toFixed(1)} ms` : '')
  );
}

function timingLine(r: GenerateResult): string {
  const t = r.timings;
  return (
    `prefill: ${r.promptTokens} tokens in ${t.prefillMs.toFixed(1)} ms (${t.prefillTokensPerSecond.toFixed(1)} tok/s); ` +
    `decode: ${r.generatedTokens} tokens in ${t.decodeMs.toFixed(1)} ms (${t.decodeTokensPerSecond.toFixed(1)} tok/s); stop: ${r.stopReason}`
  );
}

export function generateCommand(args: string[]): Promise<number> {
  return runCommand(generateCli(), args, async ({ opts: o, args: words }) => {
    const opts = toGenerateOptions(o);
    let prompt = words.join(' ');
    if (!prompt) prompt = (await readStdin()).replace(/\n$/, '');
    const model = await loadModel(o.model, toLoadOptions(o));
    const controller = new AbortController();
    const stop = () => controller.abort();
    process.once('SIGINT', stop);
    stdoutClosed.signal.addEventListener('abort', stop);
    try {
      const gen = model.generate(prompt, { ...opts, signal: controller.signal });
      if (!o.json) {
        write(prompt);
        for await (const piece of gen) write(piece);
        write('\n');
      }
      const r = await gen.result;
      if (o.json) write(`${JSON.stringify({ prompt, ...r }, null, 2)}\n`);
      else {
        console.error(timingLine(r));
        if (opts.cache) console.error(kvSummary(r));
      }
      return 0;
    } finally {
      process.off('SIGINT', stop);
      stdoutClosed.signal.removeEventListener('abort', stop);
      model.dispose();
    }
  });
}

/**
 * Drop the oldest turns (never the system message) until the conversation plus room for a reply fits the context.
 * Returns how many messages were dropped.
 */
export function fitConversation(model: Model, messages: ChatMessage[], replyRoom: number): number {
  const ctx = model.config.maxSeqLen;
  const first = messages[0]?.role === 'system' ? 1 : 0;
  let dropped = 0;
  while (model.encodeChat(messages).length + replyRoom > ctx && messages.length - first > 1) {
    // A user turn and the reply to it go together, so the conversation still starts with a user message.
    const n = messages[first + 1]?.role === 'assistant' ? 2 : 1;
    messages.splice(first, Math.min(n, messages.length - first - 1));
    dropped += n;
  }
  return dropped;
}

export function chatCommand(args: string[]): Promise<number> {
  return runCommand(chatCli(), args, async ({ opts: o }) => {
    const opts: GenerateOptions = toGenerateOptions(o);
    const model = await loadModel(o.model, toLoadOptions(o));
    const messages: ChatMessage[] = o.system ? [{ role: 'system', content: o.system as string }] : [];
    if (model.tokenizer.chatTemplateError !== undefined) {
      model.dispose();
      model.renderChat([{ role: 'user', content: '' }]); // throws the template's parse error, with its file
    }
    if (!model.tokenizer.hasChatTemplate) console.error('(this model has no chat template: messages are continued as plain text)');
    const tty = !!process.stdin.isTTY && !!process.stdout.isTTY;
    // On a terminal readline gives line editing, arrow keys and history; piped input is read one line per turn.
    const rl = createInterface({ input: process.stdin, output: tty ? process.stdout : undefined, terminal: tty, historySize: 200 });
    let reply: AbortController | undefined;
    const interrupt = () => {
      if (reply) reply.abort(); // Ctrl-C during a reply: stop it, back to the prompt
      else rl.close(); // at the prompt: leave
    };
    rl.on('SIGINT', interrupt);
    process.on('SIGINT', interrupt);
    const prompt = () => {
      if (tty) {
        rl.setPrompt('> ');
        rl.prompt();
      } else process.stderr.write('> ');
    };
    const ctx = model.config.maxSeqLen;
    const replyRoom = Math.min(opts.maxTokens ?? 256, Math.floor(ctx / 2));
    try {
      prompt();
      // The async iterator buffers lines, so piped input with several messages is read one turn at a time.
      for await (const line of rl) {
        if (line.trim() === '') break;
        messages.push({ role: 'user', content: line });
        const dropped = fitConversation(model, messages, replyRoom);
        if (dropped > 0) console.error(`(context full: dropped the ${dropped} oldest message${dropped === 1 ? '' : 's'} to make room; ${ctx}-token context)`);
        let ids = model.encodeChat(messages);
        if (ids.length >= ctx) {
          // One message longer than the whole context: keep its end.
          console.error(`(your message is ${ids.length} tokens, more than the ${ctx}-token context: only its last tokens are used)`);
          ids = ids.slice(ids.length - Math.floor(ctx / 2));
        }
        reply = new AbortController();
        const stopReply = () => reply?.abort();
        stdoutClosed.signal.addEventListener('abort', stopReply);
        let text = '';
        try {
          const gen = model.generate(ids, { ...opts, signal: reply.signal });
          for await (const piece of gen) {
            text += piece;
            write(piece);
          }
          write('\n');
          const r = await gen.result;
          console.error(timingLine(r) + (r.stopReason === 'aborted' ? ' (interrupted)' : ''));
          if (opts.cache) console.error(kvSummary(r));
        } catch (e) {
          if (!(e instanceof ContextOverflowError)) throw e;
          console.error(`(${e.message})`);
          messages.pop();
        } finally {
          stdoutClosed.signal.removeEventListener('abort', stopReply);
          reply = undefined;
        }
        if (text) messages.push({ role: 'assistant', content: text });
        if (stdoutClosed.signal.aborted) break;
        prompt();
      }
      return 0;
    } finally {
      process.off('SIGINT', interrupt);
      rl.close();
      model.dispose();
    }
  });
}
