/** What the engine needs from a tokenizer, whichever format it was loaded from. */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | string;
  content: string;
}

export interface EncodeOptions {
  /** Prepend BOS (llama2.c style). Default: the tokenizer's own habit (true for llama2.c; per tokenizer.json post-processor for HF). */
  addBos?: boolean;
}

export interface Tokenizer {
  readonly kind: 'llama2c' | 'hf';
  /** Number of entries in the vocabulary (ids 0..vocabSize-1). */
  readonly vocabSize: number;
  readonly bosId: number | undefined;
  readonly eosIds: readonly number[];
  encode(text: string, opts?: EncodeOptions): number[];
  /** Decode a whole id sequence to text (special tokens skipped unless asked). */
  decode(ids: readonly number[], opts?: { skipSpecial?: boolean }): string;
  /** The raw vocabulary string of one id (e.g. '▁the', 'Ġthe', '<0x0A>', '<|eot_id|>'). */
  tokenString(id: number): string;
  /** Ids of special tokens: BOS/EOS, added/control tokens, chat-template markers. */
  specialIds(): ReadonlySet<number>;
  /** True when the tokenizer carries a chat template. */
  readonly hasChatTemplate: boolean;
  /** Why the chat template the tokenizer ships could not be parsed (then hasChatTemplate is false). */
  readonly chatTemplateError?: string;
  /** Render messages with the chat template (adds the generation prompt by default). */
  applyChatTemplate(messages: readonly ChatMessage[], opts?: { addGenerationPrompt?: boolean }): string;
  /**
   * The ids of the rendered chat: the template's own markers become special tokens, message content is always text
   * (a special token's text typed into a message does not become that token: no role spoofing).
   */
  encodeChat(messages: readonly ChatMessage[], opts?: { addGenerationPrompt?: boolean }): number[];
  /**
   * Incremental decoder for streaming: push ids, get printable text, holding back incomplete UTF-8. `context` = the
   * ids already in the sequence (the prompt), so the first pieces decode as they would inside the whole sequence.
   */
  streamDecoder(opts?: { skipSpecial?: boolean; context?: readonly number[] }): StreamDecoder;
}

export interface StreamDecoder {
  /** Feed one generated id; returns the new printable text (possibly ''). */
  push(id: number): string;
  /** Whatever is still held back (end of stream). */
  flush(): string;
}
