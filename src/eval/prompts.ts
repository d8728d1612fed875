/**
 * The evaluation's prompts, each with a reference continuation for teacher forcing. Deterministic: the same data, model
 * and seed give the same prompts.
 *
 * Categories (cycled in this order, so any prefix of the set mixes them):
 *   story       in-domain: a TinyStories story cut after a sentence; the reference is the rest of the story.
 *               The sample file holds five stories; once their cut points run out, more prompts are made from
 *               full-cache generations with fixed seeds (an opening sentence of a sample story, sampled on at
 *               temperature 0.8 / top-p 0.95): the prompt is the start of the generation, the reference its next tokens.
 *   ood         out-of-domain: a Shakespeare passage (tinyshakespeare.txt, passages evenly spread over the play
 *               texts), medium length; every other one is long (`ood-long`).
 *   story-long  in-domain stories run together until the prompt fills most of the context (context − generation
 *               − 4 tokens), so that prompt + generation fills the model's context.
 *
 * Any other folder (--data DIR without those two files): every `.txt` file in it (UTF-8, passages separated by blank
 * lines) is a source; prompts take turns over the files, passages evenly spread over each, alternating medium
 * (`text`, 64 tokens) and long (`text-long`, context − generation − 4 tokens) prompts; the reference is the next
 * tokens of the same text.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidOptionError } from '../errors.js';
import type { Model } from '../generate/model.js';

export type PromptCategory = 'story' | 'story-long' | 'ood' | 'ood-long' | 'text' | 'text-long';

export interface EvalPrompt {
  id: string;
  category: PromptCategory;
  /** Where it came from, e.g. 'tinystories_sample.txt story 2 after sentence 3' or 'generated seed 7'. */
  source: string;
  /** Prompt token ids (BOS first when the tokenizer adds one). */
  ids: number[];
  /** Reference continuation for teacher forcing (exactly `maxTokens` tokens). */
  reference: number[];
  /** The start of the prompt's text, for reports. */
  preview: string;
}

export interface PromptSetOptions {
  count: number;
  /** Tokens generated per prompt (and the reference length). */
  maxTokens: number;
  /** Folder with tinystories_sample.txt and tinyshakespeare.txt. */
  dataDir: string;
  seed: number;
  /** Called after each generation made for synthetic story prompts (slow on the reference backend). */
  onGenerated?: (done: number) => void;
}

const CYCLE: ('story' | 'ood' | 'story-long')[] = ['story', 'ood', 'story-long', 'story'];
export const STORIES_FILE = 'tinystories_sample.txt';
export const OOD_FILE = 'tinyshakespeare.txt';
const MIN_PROMPT = 16;
const MAX_CUTS = 3;

/** Longest prompt that still leaves room for the generation: context − maxTokens − 4. */
function longPromptLength(contextLength: number, maxTokens: number): number {
  return contextLength - maxTokens - 4;
}

/** Check that `maxTokens` leaves room for a prompt in this context; throw a clear error otherwise. */
export function checkMaxTokens(contextLength: number, maxTokens: number): void {
  if (!Number.isInteger(maxTokens) || maxTokens < 2) throw new InvalidOptionError(`--max-tokens must be an integer ≥ 2, got ${maxTokens}`, '--max-tokens');
  if (longPromptLength(contextLength, maxTokens) < 2 * MIN_PROMPT) {
    throw new InvalidOptionError(
      `--max-tokens ${maxTokens} leaves no room for prompts in this model's ${contextLength}-token context; use at most ${contextLength - 4 - 2 * MIN_PROMPT}`,
      '--max-tokens',
    );
  }
}

/** The `.txt` files of a folder that is not the standard data set, by name. */
function readTextFolder(dataDir: string): { name: string; text: string }[] {
  if (!existsSync(dataDir)) {
    throw new InvalidOptionError(
      `eval data not found: ${dataDir}; pass --data DIR with ${STORIES_FILE} and ${OOD_FILE} (the repository keeps them in ../shared/data), or any folder of .txt files`,
      '--data',
    );
  }
  const names = readdirSync(dataDir).filter((f) => f.toLowerCase().endsWith('.txt')).sort();
  const files = names.map((name) => ({ name, text: readFileSync(join(dataDir, name), 'utf8') })).filter((f) => f.text.trim().length > 0);
  if (files.length === 0) {
    throw new InvalidOptionError(`${dataDir} holds no non-empty .txt file; --data takes ${STORIES_FILE} + ${OOD_FILE}, or any folder of .txt files`, '--data');
  }
  return files;
}

function isStandardData(dataDir: string): boolean {
  return existsSync(join(dataDir, STORIES_FILE)) && existsSync(join(dataDir, OOD_FILE));
}

function readEvalData(dataDir: string): { stories: string[]; shakespeare: string } {
  const sp = join(dataDir, STORIES_FILE);
  const op = join(dataDir, OOD_FILE);
  const stories = readFileSync(sp, 'utf8')
    .split('<|endoftext|>')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  return { stories, shakespeare: readFileSync(op, 'utf8') };
}

/** Token indices i such that ids[0..i] ends a sentence (the token's text ends with . ! or ?, possibly closing quotes). */
function sentenceEnds(model: Model, ids: readonly number[]): number[] {
  const out: number[] = [];
  for (let i = 1; i < ids.length; i++) {
    const s = model.tokenizer.tokenString(ids[i]).replace(/[\s▁"”'’]+$/u, '');
    if (/[.!?]$/.test(s)) out.push(i);
  }
  return out;
}

function preview(model: Model, ids: readonly number[]): string {
  const text = model.tokenizer.decode(ids, { skipSpecial: true }).replace(/\s+/g, ' ').trim();
  return text.length > 70 ? `${text.slice(0, 67)}...` : text;
}

export async function buildPrompts(model: Model, opts: PromptSetOptions): Promise<EvalPrompt[]> {
  const C = model.config.maxSeqLen;
  const G = opts.maxTokens;
  checkMaxTokens(C, G);
  const longP = longPromptLength(C, G);
  const mediumP = Math.min(64, longP);
  if (!isStandardData(opts.dataDir)) {
    const files = readTextFolder(opts.dataDir);
    return textPromptsFor(model, files, opts.count, G, mediumP, longP).map((p, i) => ({ ...p, id: `p${String(i).padStart(2, '0')}-${p.category}` }));
  }
  const { stories, shakespeare } = readEvalData(opts.dataDir);
  if (stories.length === 0) throw new InvalidOptionError(`${STORIES_FILE} holds no stories`, '--data');

  const kinds = Array.from({ length: opts.count }, (_, i) => CYCLE[i % CYCLE.length]);
  const nStory = kinds.filter((k) => k === 'story').length;
  const nOod = kinds.filter((k) => k === 'ood').length;
  const nLong = kinds.filter((k) => k === 'story-long').length;

  const storyPrompts = await storyPromptsFor(model, stories, nStory, G, opts);
  const oodPrompts = oodPromptsFor(model, shakespeare, nOod, G, mediumP, longP);
  const longPrompts = longStoryPrompts(model, stories, nLong, G, longP);

  const counters = { story: 0, ood: 0, 'story-long': 0 };
  return kinds.map((k, i) => {
    const p = (k === 'story' ? storyPrompts : k === 'ood' ? oodPrompts : longPrompts)[counters[k]++];
    return { ...p, id: `p${String(i).padStart(2, '0')}-${p.category}` };
  });
}

type Draft = Omit<EvalPrompt, 'id'>;

async function storyPromptsFor(model: Model, stories: string[], count: number, G: number, opts: PromptSetOptions): Promise<Draft[]> {
  const out: Draft[] = [];
  if (count === 0) return out;
  // Natural cuts: after a sentence, with at least MIN_PROMPT tokens of prompt and G tokens of the story left.
  // Successive cuts of one story are at least 24 tokens apart, at most MAX_CUTS per story (more would be near
  // copies of each other); stories take turns.
  const perStory = stories.map((text, s) => {
    const ids = model.encode(text);
    const cuts: number[] = [];
    for (const e of sentenceEnds(model, ids)) {
      const P = e + 1;
      if (P < MIN_PROMPT || ids.length - P < G) continue;
      if (cuts.length && P - cuts[cuts.length - 1] < 24) continue;
      if (cuts.length < MAX_CUTS) cuts.push(P);
    }
    return { s, ids, cuts };
  });
  for (let round = 0; out.length < count; round++) {
    let any = false;
    for (const st of perStory) {
      if (round >= st.cuts.length || out.length >= count) continue;
      any = true;
      const P = st.cuts[round];
      out.push({
        category: 'story',
        source: `${STORIES_FILE} story ${st.s + 1}, cut at token ${P}`,
        ids: st.ids.slice(0, P),
        reference: st.ids.slice(P, P + G),
        preview: preview(model, st.ids.slice(0, P)),
      });
    }
    if (!any) break;
  }
  // More from full-cache generations with fixed seeds.
  const openings = perStory.map((st) => {
    const first = sentenceEnds(model, st.ids)[0];
    return st.ids.slice(0, first !== undefined && first + 1 >= 4 ? first + 1 : Math.min(st.ids.length, MIN_PROMPT));
  });
  let generated = 0;
  for (let j = 0; out.length < count && j < count * 8; j++) {
    const opening = openings[j % openings.length];
    const target = Math.max(opening.length + 8, 48 + ((j * 16) % 48));
    const seed = opts.seed + 7919 * (j + 1);
    const r = await model.complete(opening, {
      temperature: 0.8,
      topP: 0.95,
      seed,
      maxTokens: target - opening.length + G,
      cache: { policy: 'full' },
    });
    generated++;
    opts.onGenerated?.(generated);
    const all = [...opening, ...r.tokens];
    if (all.length < target + G) continue; // the story ended too early; try the next seed
    out.push({
      category: 'story',
      source: `full-cache generation, seed ${seed}, from the opening of story ${(j % openings.length) + 1}`,
      ids: all.slice(0, target),
      reference: all.slice(target, target + G),
      preview: preview(model, all.slice(0, target)),
    });
  }
  if (out.length < count) throw new Error(`internal: could only build ${out.length} of ${count} story prompts`);
  return out;
}

function oodPromptsFor(model: Model, text: string, count: number, G: number, mediumP: number, longP: number): Draft[] {
  return Array.from({ length: count }, (_, j) => passagePrompt(model, OOD_FILE, text, j, count, G, j % 2 === 1 ? longP : mediumP, j % 2 === 1 ? 'ood-long' : 'ood'));
}

/** Prompts from a folder of text files: files take turns; within a file, passages evenly spread; medium and long alternate. */
function textPromptsFor(model: Model, files: { name: string; text: string }[], count: number, G: number, mediumP: number, longP: number): Draft[] {
  return Array.from({ length: count }, (_, j) => {
    const f = files[j % files.length];
    const k = Math.floor(j / files.length); // this file's k-th prompt of `per`
    const per = Math.ceil((count - (j % files.length)) / files.length);
    const long = j % 2 === 1;
    return passagePrompt(model, f.name, f.text, k, per, G, long ? longP : mediumP, long ? 'text-long' : 'text');
  });
}

/** The j-th of `count` passages evenly spread over `text` (blank-line separated): P prompt tokens, then G of reference. */
function passagePrompt(model: Model, name: string, text: string, j: number, count: number, G: number, P: number, category: PromptCategory): Draft {
  const blocks = text.split(/\n\s*\n/).filter((b) => b.trim().length > 0);
  const start = Math.floor(((j + 0.5) * blocks.length) / Math.max(1, count));
  let b = start;
  let chunk = '';
  while (b < blocks.length && chunk.length < (P + G) * 8) chunk += (chunk ? '\n\n' : '') + blocks[b++];
  let ids = model.encode(chunk);
  if (ids.length < P + G) {
    // Near the end of a short file: take the text's last P + G tokens instead.
    ids = model.encode(text);
    if (ids.length < P + G) throw new InvalidOptionError(`${name} is too short for a ${P + G}-token passage (${ids.length} tokens)`, '--data');
    ids = ids.slice(ids.length - P - G);
  }
  return {
    category,
    source: `${name} from passage ${start} of ${blocks.length}`,
    ids: ids.slice(0, P),
    reference: ids.slice(P, P + G),
    preview: preview(model, ids.slice(0, P)),
  };
}

function longStoryPrompts(model: Model, stories: string[], count: number, G: number, longP: number): Draft[] {
  const out: Draft[] = [];
  for (let j = 0; j < count; j++) {
    const first = j % stories.length;
    const skip = Math.floor(j / stories.length); // later rounds start a few sentences into the first story
    const sentences = stories[first].split(/(?<=[.!?]["”]?)\s+/);
    const parts = [sentences.slice(Math.min(skip, sentences.length - 1)).join(' ')];
    let k = first;
    let text = parts[0];
    let ids = model.encode(text);
    // Run the stories on (cycling) until prompt + reference fit.
    while (ids.length < longP + G) {
      k = (k + 1) % stories.length;
      text += '\n' + stories[k];
      ids = model.encode(text);
    }
    out.push({
      category: 'story-long',
      source: `${STORIES_FILE} stories from ${first + 1}${skip ? ` (sentence ${skip + 1} on)` : ''}, run together`,
      ids: ids.slice(0, longP),
      reference: ids.slice(longP, longP + G),
      preview: preview(model, ids.slice(0, longP)),
    });
  }
  return out;
}
