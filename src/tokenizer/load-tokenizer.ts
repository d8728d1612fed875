/**
 * Load a tokenizer for a model and check that it fits the model's vocabulary.
 */
import { TokenizerError } from '../errors.js';
import type { ModelFolder } from '../model/files.js';
import { HfTokenizer } from './hf.js';
import { Llama2cTokenizer } from './llama2c.js';
import type { Tokenizer } from './types.js';

export type TokenizerSource =
  /** A llama2.c tokenizer.bin already read into memory; `path` names it in messages. */
  | { kind: 'llama2c'; bytes: Uint8Array; path: string }
  /** A Hugging Face model folder holding tokenizer.json (+ tokenizer_config.json, generation_config.json). */
  | { kind: 'hf'; folder: ModelFolder };

export async function loadTokenizer(source: TokenizerSource, modelVocabSize: number): Promise<Tokenizer> {
  let tok: Tokenizer;
  let where: string;
  if (source.kind === 'llama2c') {
    where = source.path;
    tok = Llama2cTokenizer.fromBytes(source.bytes, source.path);
  } else if (source.kind === 'hf') {
    where = source.folder.name;
    tok = await HfTokenizer.fromFolder(source.folder);
  } else {
    throw new TokenizerError(`unknown tokenizer source kind ${JSON.stringify((source as { kind?: unknown }).kind)}`);
  }
  checkTokenizerFits(tok, modelVocabSize, where);
  return tok;
}

/**
 * Throws a TokenizerError when the tokenizer cannot be used with a model whose embedding table has `modelVocabSize`
 * rows: any tokenizer id beyond it (the model could not embed it). A smaller HF tokenizer is fine (checkpoints often
 * pad the embedding table to a multiple of 64/128). llama2.c has no padding: run.c reads exactly vocab_size entries
 * of tokenizer.bin, so there the counts must be equal — a different count means a tokenizer from another model.
 */
function checkTokenizerFits(tok: Tokenizer, modelVocabSize: number, where: string): void {
  if (!Number.isInteger(modelVocabSize) || modelVocabSize <= 0) {
    throw new TokenizerError(`model vocabulary size must be a positive integer, got ${modelVocabSize}`, where);
  }
  if (tok.kind === 'llama2c' && tok.vocabSize !== modelVocabSize) {
    throw new TokenizerError(
      `the llama2.c tokenizer ${where} has ${tok.vocabSize} tokens but the model's vocabulary has ${modelVocabSize}; ` +
        'llama2.c tokenizers must match their checkpoint exactly. Use the tokenizer.bin exported with this model ' +
        '(e.g. tok512.bin for stories260K, the default tokenizer.bin for the 32000-token stories models).',
      where,
    );
  }
  if (tok.vocabSize > modelVocabSize) {
    throw new TokenizerError(
      `the tokenizer in ${where} has ${tok.vocabSize} token ids (0..${tok.vocabSize - 1}) but the model's embedding ` +
        `table has only ${modelVocabSize} rows, so ids ${modelVocabSize}..${tok.vocabSize - 1} could not be embedded. ` +
        'The tokenizer belongs to a different model: use the tokenizer files shipped with this checkpoint.',
      where,
    );
  }
}
