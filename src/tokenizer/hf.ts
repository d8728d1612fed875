/**
 * Hugging Face tokenizers: `tokenizer.json` (through @huggingface/tokenizers) + `tokenizer_config.json` (special
 * tokens, add_bos_token, chat template rendered with @huggingface/jinja) + optional `generation_config.json` (extra
 * EOS ids, e.g. Llama-3-Instruct's <|eot_id|> and <|end_of_text|>).
 */
import { Template } from '@huggingface/jinja';
import { Tokenizer as HfLibTokenizer } from '@huggingface/tokenizers';
import { TokenizerError } from '../errors.js';
import { readFolderFile, type ModelFolder } from '../model/files.js';
import { createStreamDecoder } from './stream.js';
import type { SpaceScheme } from './token-classes.js';
import type { ChatMessage, EncodeOptions, StreamDecoder, Tokenizer } from './types.js';

type Json = Record<string, unknown>;


export interface HfTokenizerParts {
  /** Parsed tokenizer.json. */
  tokenizerJson: Json;
  /** Parsed tokenizer_config.json ({} when absent). */
  config?: Json;
  /** Parsed generation_config.json, if any (its eos_token_id adds EOS ids). */
  generationConfig?: Json;
  /** A chat template from elsewhere (chat_template.jinja / chat_template.json), used when the config has none. */
  chatTemplate?: string;
  /** The folder or file the parts came from (for messages). */
  where?: string;
}

/** A special-token entry in tokenizer_config.json is a string or an AddedToken object {content: ...}. */
function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as Json).content === 'string') return (v as Json).content as string;
  return undefined;
}

function hasComponent(node: unknown, type: string): boolean {
  if (!node || typeof node !== 'object') return false;
  const n = node as Json;
  if (n.type === type) return true;
  for (const key of ['pretokenizers', 'decoders', 'normalizers', 'processors']) {
    const list = n[key];
    if (Array.isArray(list) && list.some((x) => hasComponent(x, type))) return true;
  }
  return false;
}

function usesMetaspace(tj: Json): boolean {
  if (hasComponent(tj.pre_tokenizer, 'Metaspace') || hasComponent(tj.decoder, 'Metaspace')) return true;
  // Llama-2 / Mistral style: normalizer Replace(' ' -> '▁') and decoder Replace('▁' -> ' ').
  return JSON.stringify(tj.decoder ?? null).includes('\u2581') || JSON.stringify(tj.normalizer ?? null).includes('\u2581');
}

/** Stands in for an added token's text inside chat content while the template renders (private-use characters). */
const PLACEHOLDER = '\uE000';
const PLACEHOLDER_END = '\uE001';
const PLACEHOLDER_RE = /\uE000(\d+)\uE001/;

/** Marker-like strings in a chat template: <|...|>, <...> tags such as <start_of_turn>, [INST]-style and <<SYS>>. */
const TEMPLATE_MARKER_RE = /<\|[^|<>\s]{1,64}\|>|<<\/?[A-Za-z_]{1,32}>>|\[\/?[A-Z_]{2,32}\]|<\/?[A-Za-z_][A-Za-z0-9_.-]{0,40}>|<｜[^｜]{1,64}｜>/g;

export class HfTokenizer implements Tokenizer {
  readonly kind = 'hf' as const;
  readonly vocabSize: number;
  readonly bosId: number | undefined;
  readonly eosIds: readonly number[];
  readonly hasChatTemplate: boolean;
  /** How the vocabulary marks spaces: GPT-2 byte-to-unicode ('Ġ'), SentencePiece '▁', or not at all. */
  readonly spaceScheme: SpaceScheme;
  readonly where: string;
  /** Why the chat template could not be used (parse error), when there is one that does not parse. */
  readonly chatTemplateError: string | undefined;
  /** The chat template source, if any. */
  readonly chatTemplate: string | undefined;
  /** The underlying @huggingface/tokenizers instance. */
  readonly lib: HfLibTokenizer;

  private readonly config: Json;
  private readonly template: Template | undefined;
  private readonly specials: ReadonlySet<number>;
  private readonly idToToken: (string | undefined)[];
  private readonly postAddsBos: boolean;
  private readonly addBosDefault: boolean;
  private readonly cleanUpSpaces: boolean;
  private readonly bosToken: string | undefined;
  private readonly eosToken: string | undefined;
  private markerReCache: RegExp | undefined;

  constructor(parts: HfTokenizerParts) {
    const where = parts.where ?? 'tokenizer.json';
    this.where = where;
    const tj = parts.tokenizerJson;
    const config = parts.config ?? {};
    this.config = config;
    try {
      this.lib = new HfLibTokenizer(tj, config);
    } catch (e) {
      throw new TokenizerError(
        `cannot build the tokenizer from ${where}: ${(e as Error).message}. ` +
          'The tokenizer.json may be corrupt or use a component @huggingface/tokenizers does not support.',
        where,
        { cause: e },
      );
    }

    // Vocabulary (model vocab + added tokens); ids may have holes.
    const vocab = this.lib.get_vocab(true);
    let maxId = -1;
    for (const id of vocab.values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;
    this.idToToken = new Array<string | undefined>(this.vocabSize);
    for (const [tokStr, id] of vocab) if (this.idToToken[id] === undefined) this.idToToken[id] = tokStr;
    if (this.vocabSize === 0) throw new TokenizerError(`${where} has an empty vocabulary`, where);

    this.spaceScheme =
      hasComponent(tj.pre_tokenizer, 'ByteLevel') || hasComponent(tj.decoder, 'ByteLevel')
        ? 'byte-level'
        : usesMetaspace(tj)
          ? 'sentencepiece'
          : 'none';

    // BOS / EOS.
    const idOf = (s: string | undefined): number | undefined => (s === undefined ? undefined : this.lib.token_to_id(s));
    this.bosToken = tokenContent(config.bos_token);
    this.eosToken = tokenContent(config.eos_token);
    this.bosId = idOf(this.bosToken);
    const eos = new Set<number>();
    const eosFromConfig = idOf(this.eosToken);
    if (eosFromConfig !== undefined) eos.add(eosFromConfig);
    const genEos = parts.generationConfig?.eos_token_id;
    for (const v of Array.isArray(genEos) ? genEos : [genEos]) {
      if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < this.vocabSize) eos.add(v);
    }
    this.eosIds = [...eos];

    // Does the post-processor put BOS in front? (Encode the empty string with special tokens.)
    let post: number[] = [];
    try {
      post = this.lib.encode('', { add_special_tokens: true }).ids;
    } catch {
      post = [];
    }
    this.postAddsBos = this.bosId !== undefined && post[0] === this.bosId;
    this.addBosDefault = typeof config.add_bos_token === 'boolean' ? config.add_bos_token : this.postAddsBos;
    // transformers >= 4.45 defaults clean_up_tokenization_spaces to false (tokenizers.js defaults to true).
    this.cleanUpSpaces = config.clean_up_tokenization_spaces === true;

    // Chat template: tokenizer_config.chat_template (string, or a list of {name, template}), else the separate file.
    let templateSrc: string | undefined;
    const ct = config.chat_template;
    if (typeof ct === 'string') templateSrc = ct;
    else if (Array.isArray(ct)) {
      const named = ct as { name?: unknown; template?: unknown }[];
      const pick = named.find((t) => t.name === 'default') ?? named[0];
      if (pick && typeof pick.template === 'string') templateSrc = pick.template;
    }
    templateSrc ??= parts.chatTemplate;
    this.chatTemplate = templateSrc;
    let template: Template | undefined;
    let templateError: string | undefined;
    if (templateSrc !== undefined) {
      try {
        template = new Template(templateSrc);
      } catch (e) {
        templateError = (e as Error).message;
      }
    }
    this.template = template;
    this.chatTemplateError = templateError;
    this.hasChatTemplate = template !== undefined;

    // Special ids: added tokens flagged special, additional_special_tokens, BOS/EOS, and vocabulary tokens that the
    // chat template writes as control markers.
    const specials = new Set<number>();
    for (const [id, t] of this.lib.get_added_tokens_decoder()) if (t.special) specials.add(id);
    const extra = config.additional_special_tokens;
    if (Array.isArray(extra)) for (const t of extra) {
      const id = idOf(tokenContent(t));
      if (id !== undefined) specials.add(id);
    }
    if (this.bosId !== undefined) specials.add(this.bosId);
    for (const id of this.eosIds) specials.add(id);
    if (templateSrc !== undefined) {
      for (const [id, t] of this.lib.get_added_tokens_decoder()) if (templateSrc.includes(t.content)) specials.add(id);
      for (const m of templateSrc.matchAll(TEMPLATE_MARKER_RE)) {
        const id = this.lib.token_to_id(m[0]);
        if (id !== undefined) specials.add(id);
      }
    }
    this.specials = specials;
  }

  /**
   * Load from a model folder (on disk, picked in a page, or at a URL): tokenizer.json (required),
   * tokenizer_config.json, generation_config.json, chat_template.jinja / chat_template.json (optional).
   */
  static async fromFolder(folder: ModelFolder): Promise<HfTokenizer> {
    const readText = async (name: string): Promise<string | undefined> => {
      const bytes = await readFolderFile(folder, name).catch(() => undefined);
      return bytes === undefined ? undefined : new TextDecoder().decode(bytes);
    };
    const tokPath = folder.where('tokenizer.json');
    const tokText = await readText('tokenizer.json');
    if (tokText === undefined) {
      const hasSp = (await folder.open('tokenizer.model').catch(() => undefined)) !== undefined;
      throw new TokenizerError(
        `no tokenizer.json in ${folder.name}. fastgen needs the Hugging Face "fast" tokenizer file tokenizer.json` +
          (hasSp ? ' (this folder only has the SentencePiece tokenizer.model)' : '') +
          '; download it with the model, or create it with transformers: ' +
          'AutoTokenizer.from_pretrained(dir).save_pretrained(dir).',
        tokPath,
      );
    }
    const tokenizerJson = parseJson(tokText, tokPath, true)!;
    const readOptional = async (name: string): Promise<Json | undefined> => {
      const text = await readText(name);
      return text === undefined ? undefined : parseJson(text, folder.where(name), false);
    };
    const config = (await readOptional('tokenizer_config.json')) ?? {};
    const generationConfig = await readOptional('generation_config.json');
    let chatTemplate = await readText('chat_template.jinja');
    if (chatTemplate === undefined) {
      const ctj = await readOptional('chat_template.json');
      if (ctj && typeof ctj.chat_template === 'string') chatTemplate = ctj.chat_template;
    }
    return new HfTokenizer({ tokenizerJson, config, generationConfig, chatTemplate, where: folder.name });
  }

  // ---------------------------------------------------------------- encode / decode

  /**
   * Encode. `addBos` undefined: the tokenizer's own habit (tokenizer_config add_bos_token, else the post-processor).
   * A text that already starts with the BOS token text (e.g. a rendered chat template) does not get a second BOS.
   */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const wantBos = opts.addBos ?? this.addBosDefault;
    let ids: number[];
    if (opts.addBos === undefined && typeof this.config.add_bos_token !== 'boolean') {
      ids = this.lib.encode(text, { add_special_tokens: true }).ids; // exactly HF's default
    } else {
      ids = this.lib.encode(text, { add_special_tokens: !this.postAddsBos }).ids;
      if (wantBos && this.bosId !== undefined && ids[0] !== this.bosId) ids.unshift(this.bosId);
    }
    if (
      wantBos &&
      this.bosId !== undefined &&
      this.bosToken !== undefined &&
      ids.length >= 2 &&
      ids[0] === this.bosId &&
      ids[1] === this.bosId &&
      text.startsWith(this.bosToken)
    ) {
      ids.shift();
    }
    return ids;
  }

  private checkIds(ids: readonly number[]): void {
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new TokenizerError(`token id ${id} is outside the vocabulary of ${this.where} (0..${this.vocabSize - 1})`, this.where);
      }
    }
  }

  decode(ids: readonly number[], opts: { skipSpecial?: boolean } = {}): string {
    if (ids.length === 0) return '';
    this.checkIds(ids);
    return this.lib.decode(ids as number[], {
      skip_special_tokens: opts.skipSpecial ?? true,
      clean_up_tokenization_spaces: this.cleanUpSpaces,
    });
  }

  tokenString(id: number): string {
    this.checkIds([id]);
    return this.idToToken[id] ?? '';
  }

  specialIds(): ReadonlySet<number> {
    return this.specials;
  }

  applyChatTemplate(messages: readonly ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): string {
    const cfgPath = `${this.where}/tokenizer_config.json`;
    if (!this.template) {
      throw new TokenizerError(
        this.chatTemplateError !== undefined
          ? `the chat template of ${this.where} cannot be parsed (${this.chatTemplateError}); pass the prompt as plain text instead.`
          : `the tokenizer in ${this.where} has no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja); pass the prompt as plain text instead.`,
        cfgPath,
      );
    }
    const ctx: Record<string, unknown> = {
      messages: messages.map((m) => ({ ...m })),
      add_generation_prompt: opts.addGenerationPrompt ?? true,
    };
    // raise_exception and strftime_now are @huggingface/jinja globals (they cannot be overridden).
    // Special tokens as transformers passes them (bos_token, eos_token, unk_token, pad_token, ...).
    for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token', 'sep_token', 'cls_token', 'mask_token']) {
      const v = tokenContent(this.config[key]);
      if (v !== undefined) ctx[key] = v;
    }
    try {
      return this.template.render(ctx);
    } catch (e) {
      // Includes the template's own raise_exception('...') messages (e.g. "roles must alternate").
      throw new TokenizerError(`rendering the chat template of ${this.where} failed: ${(e as Error).message}`, cfgPath, { cause: e });
    }
  }

  /**
   * The chat prompt's ids. Each message's content has the text of every special added token (and the placeholder
   * characters themselves) swapped for a private-use placeholder before rendering; the rendered text is encoded as usual
   * (its markers become special tokens) piece by piece between placeholders, and each placeholder is encoded as the
   * plain text it stands for. The text around a marker is split there exactly as the tokenizer splits at added tokens,
   * so content without markers encodes exactly as before.
   */
  encodeChat(messages: readonly ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): number[] {
    const literals: string[] = [];
    const escape = (text: string) =>
      text.replace(this.markerRe, (m) => {
        literals.push(m);
        return `${PLACEHOLDER}${literals.length - 1}${PLACEHOLDER_END}`;
      });
    const rendered = this.applyChatTemplate(
      messages.map((m) => ({ ...m, content: escape(m.content) })),
      opts,
    );
    const parts = rendered.split(PLACEHOLDER_RE);
    const ids: number[] = [];
    for (let i = 0; i < parts.length; i++) {
      if (i % 2 === 0) {
        // The template carries its own BOS when it wants one.
        if (parts[i]) ids.push(...this.lib.encode(parts[i], { add_special_tokens: false }).ids);
      } else ids.push(...this.encodeLiteral(literals[Number(parts[i])] ?? ''));
    }
    return ids;
  }

  /**
   * Special added tokens' texts (longest first) and the placeholder characters: what content may not carry as-is.
   * Non-special added tokens (e.g. Qwen3's <think>) stay as they are: templates read them in content.
   */
  private get markerRe(): RegExp {
    if (!this.markerReCache) {
      const texts = [...this.lib.get_added_tokens_decoder().values()].filter((t) => t.special).map((t) => t.content).filter((c) => c.length > 0);
      texts.sort((a, b) => b.length - a.length);
      const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      this.markerReCache = new RegExp([...texts.map(esc), PLACEHOLDER, PLACEHOLDER_END].join('|'), 'gu');
    }
    return this.markerReCache;
  }

  /**
   * Encode `text` as plain text, never as an added token: the pre-tokenizer and model alone (as the library does for
   * the text between added tokens), with a character-by-character fallback should a merge still spell a special.
   */
  private encodeLiteral(text: string): number[] {
    const lib = this.lib as unknown as {
      normalizer: ((t: string) => string) | null;
      pre_tokenizer: ((t: string, o?: { section_index: number }) => string[]) | null;
      model: ((t: string[]) => string[]) & { tokens_to_ids: Map<string, number>; unk_token_id?: number };
    };
    const encode = (t: string): number[] => {
      const normalized = lib.normalizer ? lib.normalizer(t) : t;
      const pieces = lib.pre_tokenizer ? lib.pre_tokenizer(normalized, { section_index: 1 }) : [normalized];
      return lib.model(pieces).map((tok) => lib.model.tokens_to_ids.get(tok) ?? lib.model.unk_token_id ?? 0);
    };
    const ids = encode(text);
    if (!ids.some((id) => this.specials.has(id))) return ids;
    return [...text].flatMap((ch) => encode(ch).filter((id) => !this.specials.has(id)));
  }

  /**
   * Incremental decoder. `context`: ids preceding the stream (e.g. the prompt), used only as decoding context.
   */
  streamDecoder(opts: { skipSpecial?: boolean; context?: readonly number[] } = {}): StreamDecoder {
    const skipSpecial = opts.skipSpecial ?? true;
    return createStreamDecoder((ids) => this.decode(ids, { skipSpecial }), { context: opts.context });
  }
}

function parseJson(text: string, path: string, required: boolean): Json | undefined {
  try {
    const v: unknown = JSON.parse(text);
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Json;
  } catch (e) {
    throw new TokenizerError(
      `${path} is not valid JSON (${(e as Error).message}); re-download it or remove it.`,
      path,
      { cause: e },
    );
  }
}
