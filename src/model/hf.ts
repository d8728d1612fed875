/**
 * Hugging Face model folders: config.json (+ optional generation_config.json) and safetensors weights, either one
 * model.safetensors or shards listed in model.safetensors.index.json.
 *
 * Loading runs in two phases: first the config is parsed and every tensor we need is located in the shard headers and
 * checked (present, loadable dtype, shape implied by the config); only then are the bytes read. A bad checkpoint
 * therefore fails in milliseconds with a message naming the tensor and file, not after reading gigabytes.
 */
import { ModelLoadError } from '../errors.js';
import { asLoadError, bytesPerElement, elementCount, formatShape } from './binary-io.js';
import { baseName, readFolderFile, type ByteSource, type ModelFolder } from './files.js';
import { tensorToF32 } from './tensor.js';
import type { ProgressFn } from './llama2c.js';
import { readSafetensor, readSafetensorsHeader, tensorDtype, type SafetensorsEntry, type SafetensorsFile } from './safetensors.js';
import { MAX_CONTEXT, type Architecture, type DType, type LayerWeights, type LoadedCheckpoint, type ModelConfig, type RopeScaling, type Tensor } from './types.js';

const SUPPORTED_MODEL_TYPES: readonly Architecture[] = ['llama', 'mistral', 'qwen2', 'qwen3'];
const SUPPORTED_ROPE_TYPES = ['default', 'linear', 'llama3'] as const;

type Json = Record<string, unknown>;

function isObject(x: unknown): x is Json {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Config with everything but the on-disk dtype (known only once the weights are opened), plus loader-only flags. */
export interface HfConfig {
  config: Omit<ModelConfig, 'sourceDtype'>;
  /** attention_bias: true on llama/qwen3 also gives o_proj a bias, which we only accept when it is all zeros. */
  oProjBias: boolean;
}

// ---------------------------------------------------------------------------------------------------------------
// config.json

function configError(where: string, field: string, detail: string): ModelLoadError {
  return new ModelLoadError('CONFIG_ERROR', `${where}: field "${field}" ${detail}`, `${where}#${field}`);
}

function positiveInt(cfg: Json, key: string, where: string, fallback?: number): number {
  const v = cfg[key];
  if (v === undefined || v === null) {
    if (fallback !== undefined) return fallback;
    throw configError(where, key, 'is required but missing');
  }
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) {
    throw configError(where, key, `must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

function positiveNumber(obj: Json, key: string, where: string, fallback?: number): number {
  const v = obj[key];
  if (v === undefined || v === null) {
    if (fallback !== undefined) return fallback;
    throw configError(where, key, 'is required but missing');
  }
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw configError(where, key, `must be a positive number, got ${JSON.stringify(v)}`);
  return v;
}

function bool(cfg: Json, key: string, where: string, fallback: boolean): boolean {
  const v = cfg[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'boolean') throw configError(where, key, `must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** eos_token_id / bos_token_id: a number, a list of numbers, or null. */
function tokenIds(obj: Json, key: string, where: string): number[] {
  const v = obj[key];
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  if (!list.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0)) {
    throw configError(where, key, `must be a token id or a list of token ids, got ${JSON.stringify(v)}`);
  }
  return list as number[];
}

/**
 * RoPE settings come in two shapes:
 *  - older configs: top-level `rope_theta` and `rope_scaling: { rope_type | type, factor, ... } | null`;
 *  - transformers >= 5: `rope_parameters: { rope_type, rope_theta, factor, ... }`.
 */
function parseRope(cfg: Json, where: string): { ropeTheta: number; ropeScaling?: RopeScaling } {
  let params: Json | undefined;
  let field = 'rope_scaling';
  if (isObject(cfg.rope_parameters)) {
    params = cfg.rope_parameters;
    field = 'rope_parameters';
  } else if (isObject(cfg.rope_scaling)) {
    params = cfg.rope_scaling;
  }
  const ropeTheta = positiveNumber(params !== undefined && params.rope_theta != null ? params : cfg, 'rope_theta', where, 10000);
  const partial = params?.partial_rotary_factor ?? cfg.partial_rotary_factor;
  if (partial !== undefined && partial !== null && partial !== 1) {
    throw new ModelLoadError('UNSUPPORTED_MODEL', `${where}: partial_rotary_factor ${JSON.stringify(partial)} is not supported (only full rotary embeddings)`, where);
  }
  const type = params?.rope_type ?? params?.type ?? 'default';
  const fieldWhere = `${where} (${field})`;
  switch (type) {
    case 'default':
      return { ropeTheta };
    case 'linear':
      return { ropeTheta, ropeScaling: { type: 'linear', factor: positiveNumber(params!, 'factor', fieldWhere) } };
    case 'llama3':
      return {
        ropeTheta,
        ropeScaling: {
          type: 'llama3',
          factor: positiveNumber(params!, 'factor', fieldWhere),
          lowFreqFactor: positiveNumber(params!, 'low_freq_factor', fieldWhere),
          highFreqFactor: positiveNumber(params!, 'high_freq_factor', fieldWhere),
          originalMaxPositionEmbeddings: positiveInt(params!, 'original_max_position_embeddings', fieldWhere),
        },
      };
    default:
      throw new ModelLoadError(
        'UNSUPPORTED_MODEL',
        `${where}: RoPE type ${JSON.stringify(type)} (in "${field}") is not supported; fastgen supports ${SUPPORTED_ROPE_TYPES.join(', ')}`,
        `${where}#${field}`,
      );
  }
}

/** Turn parsed config.json (and generation_config.json, if any) into our ModelConfig. `where` names config.json. */
export function parseHfConfig(cfg: Json, generation: Json | undefined, name: string, where: string): HfConfig {
  const modelType = cfg.model_type;
  if (typeof modelType !== 'string') throw configError(where, 'model_type', 'is required but missing');
  if (!(SUPPORTED_MODEL_TYPES as readonly string[]).includes(modelType)) {
    throw new ModelLoadError(
      'UNSUPPORTED_MODEL',
      `${where}: model_type "${modelType}" is not supported; fastgen supports ${SUPPORTED_MODEL_TYPES.join(', ')}`,
      `${where}#model_type`,
    );
  }
  const architecture = modelType as Architecture;

  const act = cfg.hidden_act ?? 'silu';
  if (act !== 'silu') {
    throw new ModelLoadError('UNSUPPORTED_MODEL', `${where}: hidden_act ${JSON.stringify(act)} is not supported (only silu / SwiGLU)`, `${where}#hidden_act`);
  }
  if (bool(cfg, 'mlp_bias', where, false)) {
    throw new ModelLoadError('UNSUPPORTED_MODEL', `${where}: mlp_bias true is not supported (MLP projections without bias only)`, `${where}#mlp_bias`);
  }

  const dim = positiveInt(cfg, 'hidden_size', where);
  const nHeads = positiveInt(cfg, 'num_attention_heads', where);
  const nKvHeads = positiveInt(cfg, 'num_key_value_heads', where, nHeads);
  if (nHeads % nKvHeads !== 0) {
    throw configError(where, 'num_key_value_heads', `(${nKvHeads}) must divide num_attention_heads (${nHeads})`);
  }
  // head_dim is explicit in qwen3 (and in recent llama/mistral configs); otherwise it is hidden_size / heads.
  if ((cfg.head_dim === undefined || cfg.head_dim === null) && dim % nHeads !== 0) {
    throw configError(where, 'hidden_size', `(${dim}) is not a multiple of num_attention_heads (${nHeads}) and there is no head_dim`);
  }
  const headDim = positiveInt(cfg, 'head_dim', where, dim / nHeads);
  if (headDim % 2 !== 0) throw configError(where, 'head_dim', `(${headDim}) must be even for rotary embeddings`);

  let maxSeqLen = positiveInt(cfg, 'max_position_embeddings', where);
  if (maxSeqLen > MAX_CONTEXT) {
    throw configError(
      where,
      'max_position_embeddings',
      `(${maxSeqLen}) is beyond the ${MAX_CONTEXT}-token context fastgen supports (its RoPE tables and attention scratch grow with it); ` +
        'if the model was trained on fewer positions, set the real value in config.json',
    );
  }
  // Sliding-window attention equals full attention as long as the context never exceeds the window, so cap the
  // context there rather than approximate it.
  const slidingActive = architecture === 'mistral' ? cfg.sliding_window != null : bool(cfg, 'use_sliding_window', where, false);
  if (slidingActive && (architecture === 'mistral' || architecture === 'qwen2' || architecture === 'qwen3')) {
    maxSeqLen = Math.min(maxSeqLen, positiveInt(cfg, 'sliding_window', where));
  }

  const attentionBias = architecture !== 'mistral' && architecture !== 'qwen2' && bool(cfg, 'attention_bias', where, false);
  const eos = new Set([...tokenIds(cfg, 'eos_token_id', where), ...(generation ? tokenIds(generation, 'eos_token_id', 'generation_config.json') : [])]);
  const bos = tokenIds(cfg, 'bos_token_id', where)[0] ?? (generation ? tokenIds(generation, 'bos_token_id', 'generation_config.json')[0] : undefined);

  return {
    config: {
      architecture,
      name,
      dim,
      hiddenDim: positiveInt(cfg, 'intermediate_size', where),
      nLayers: positiveInt(cfg, 'num_hidden_layers', where),
      nHeads,
      nKvHeads,
      headDim,
      vocabSize: positiveInt(cfg, 'vocab_size', where),
      maxSeqLen,
      normEps: positiveNumber(cfg, 'rms_norm_eps', where, 1e-6),
      ...parseRope(cfg, where),
      tiedEmbeddings: bool(cfg, 'tie_word_embeddings', where, false),
      qkvBias: architecture === 'qwen2' || attentionBias,
      qkNorm: architecture === 'qwen3',
      bosTokenId: bos,
      eosTokenIds: [...eos],
    },
    oProjBias: attentionBias,
  };
}

/** A JSON file of the folder, parsed; undefined when the folder has no such file. */
async function readJson(folder: ModelFolder, file: string, code: 'CONFIG_ERROR' | 'CORRUPT_MODEL'): Promise<Json | undefined> {
  const path = folder.where(file);
  let bytes: Uint8Array | undefined;
  try {
    bytes = await readFolderFile(folder, file);
  } catch (err) {
    throw asLoadError(err, path, 'reading it');
  }
  if (bytes === undefined) return undefined;
  const text = new TextDecoder().decode(bytes);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new ModelLoadError(code, `${path} is not valid JSON (${(err as Error).message}); fix or re-download it`, path, { cause: err });
  }
  if (!isObject(parsed)) throw new ModelLoadError(code, `${path} must contain a JSON object`, path);
  return parsed;
}

async function readHfConfig(folder: ModelFolder): Promise<HfConfig> {
  const configPath = folder.where('config.json');
  const cfg = await readJson(folder, 'config.json', 'CONFIG_ERROR');
  if (cfg === undefined) throw new ModelLoadError('NOT_A_MODEL', `${configPath} does not exist; a Hugging Face model folder needs its config.json`, configPath);
  const generation = await readJson(folder, 'generation_config.json', 'CONFIG_ERROR');
  return parseHfConfig(cfg, generation, baseName(folder.name), configPath);
}

// ---------------------------------------------------------------------------------------------------------------
// safetensors files

interface Located {
  src: ByteSource;
  file: SafetensorsFile;
  entry: SafetensorsEntry;
}

interface OpenWeights {
  tensors: Map<string, Located>;
  /** Describes where tensors were looked for, for "missing tensor" messages. */
  description: string;
  close(): Promise<void>;
}

async function openSafetensorsFile(src: ByteSource, handles: ByteSource[]): Promise<{ src: ByteSource; file: SafetensorsFile }> {
  handles.push(src);
  return { src, file: await readSafetensorsHeader(src) };
}

/** Open model.safetensors, or every shard named by model.safetensors.index.json, and index their tensors by name. */
async function openWeights(folder: ModelFolder): Promise<OpenWeights> {
  const handles: ByteSource[] = [];
  const close = async (): Promise<void> => {
    await Promise.all(handles.map((h) => h.close().catch(() => undefined)));
  };
  const tensors = new Map<string, Located>();
  try {
    const single = await folder.open('model.safetensors');
    const indexPath = folder.where('model.safetensors.index.json');
    if (single !== undefined) {
      const { src, file } = await openSafetensorsFile(single, handles);
      for (const entry of file.tensors.values()) tensors.set(entry.name, { src, file, entry });
      return { tensors, description: single.name, close };
    }
    const index = await readJson(folder, 'model.safetensors.index.json', 'CORRUPT_MODEL');
    if (index !== undefined) {
      const weightMap = index.weight_map;
      if (!isObject(weightMap)) throw new ModelLoadError('CORRUPT_MODEL', `${indexPath} has no "weight_map" object`, indexPath);
      const shards = new Map<string, { src: ByteSource; file: SafetensorsFile }>();
      for (const [name, shardName] of Object.entries(weightMap)) {
        if (typeof shardName !== 'string' || shardName.includes('..') || shardName.startsWith('/')) {
          throw new ModelLoadError('CORRUPT_MODEL', `${indexPath}: weight_map entry "${name}" names an invalid file ${JSON.stringify(shardName)}`, indexPath);
        }
        let shard = shards.get(shardName);
        if (shard === undefined) {
          const shardSrc = await folder.open(shardName);
          if (shardSrc === undefined) {
            const shardPath = folder.where(shardName);
            throw new ModelLoadError('CORRUPT_MODEL', `shard ${shardPath}, listed in ${indexPath}, is missing; download it`, shardPath);
          }
          shard = await openSafetensorsFile(shardSrc, handles);
          shards.set(shardName, shard);
        }
        const entry = shard.file.tensors.get(name);
        if (entry === undefined) {
          throw new ModelLoadError('CORRUPT_MODEL', `${indexPath} places tensor "${name}" in ${shard.file.path}, but that file has no such tensor`, shard.file.path);
        }
        tensors.set(name, { ...shard, entry });
      }
      return { tensors, description: `the shards listed in ${indexPath}`, close };
    }
    throw await noWeightsError(folder);
  } catch (err) {
    await close();
    throw err;
  }
}

async function noWeightsError(folder: ModelFolder): Promise<ModelLoadError> {
  const dir = folder.name;
  let names: string[] = [];
  try {
    names = (await folder.list()) ?? [];
  } catch {
    // the message below is still right
  }
  const where = folder.where('model.safetensors');
  if (names.some((n) => n.endsWith('.bin') || n.endsWith('.pt') || n.endsWith('.pth'))) {
    return new ModelLoadError(
      'UNSUPPORTED_MODEL',
      `${dir} has PyTorch pickle weights but no model.safetensors; fastgen reads safetensors only (re-save with save_pretrained(..., safe_serialization=True))`,
      where,
    );
  }
  const others = names.filter((n) => n.endsWith('.safetensors'));
  return new ModelLoadError(
    'NOT_A_MODEL',
    `${dir} has config.json but no model.safetensors or model.safetensors.index.json` +
      (others.length > 0 ? ` (found ${others.join(', ')}; sharded weights need their index file)` : ''),
    where,
  );
}

// ---------------------------------------------------------------------------------------------------------------
// weights

/** The tensor names and shapes a config implies, in the HF naming scheme. */
function tensorPlan(c: Omit<ModelConfig, 'sourceDtype'>): Map<string, number[]> {
  const plan = new Map<string, number[]>();
  const qDim = c.nHeads * c.headDim;
  const kvDim = c.nKvHeads * c.headDim;
  plan.set('model.embed_tokens.weight', [c.vocabSize, c.dim]);
  for (let l = 0; l < c.nLayers; l++) {
    const p = `model.layers.${l}.`;
    plan.set(`${p}input_layernorm.weight`, [c.dim]);
    plan.set(`${p}self_attn.q_proj.weight`, [qDim, c.dim]);
    plan.set(`${p}self_attn.k_proj.weight`, [kvDim, c.dim]);
    plan.set(`${p}self_attn.v_proj.weight`, [kvDim, c.dim]);
    plan.set(`${p}self_attn.o_proj.weight`, [c.dim, qDim]);
    if (c.qkvBias) {
      plan.set(`${p}self_attn.q_proj.bias`, [qDim]);
      plan.set(`${p}self_attn.k_proj.bias`, [kvDim]);
      plan.set(`${p}self_attn.v_proj.bias`, [kvDim]);
    }
    if (c.qkNorm) {
      plan.set(`${p}self_attn.q_norm.weight`, [c.headDim]);
      plan.set(`${p}self_attn.k_norm.weight`, [c.headDim]);
    }
    plan.set(`${p}post_attention_layernorm.weight`, [c.dim]);
    plan.set(`${p}mlp.gate_proj.weight`, [c.hiddenDim, c.dim]);
    plan.set(`${p}mlp.up_proj.weight`, [c.hiddenDim, c.dim]);
    plan.set(`${p}mlp.down_proj.weight`, [c.dim, c.hiddenDim]);
  }
  plan.set('model.norm.weight', [c.dim]);
  // Tied models reuse the embedding; a stray lm_head.weight in a tied checkpoint is ignored, as transformers does.
  if (!c.tiedEmbeddings) plan.set('lm_head.weight', [c.vocabSize, c.dim]);
  return plan;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Locate and check every planned tensor before reading anything. */
function checkPlan(plan: Map<string, number[]>, weights: OpenWeights, configPath: string, tied: boolean): Map<string, { located: Located; dtype: DType }> {
  const out = new Map<string, { located: Located; dtype: DType }>();
  for (const [name, shape] of plan) {
    const located = weights.tensors.get(name);
    if (located === undefined) {
      const hint = name === 'lm_head.weight' && !tied ? ' (if this model shares its embedding with the output layer, set "tie_word_embeddings": true in config.json)' : '';
      throw new ModelLoadError('CORRUPT_MODEL', `tensor "${name}" is missing from ${weights.description}${hint}`, weights.description);
    }
    const dtype = tensorDtype(located.entry, located.file.path);
    if (!sameShape(located.entry.shape, shape)) {
      throw new ModelLoadError(
        'CORRUPT_MODEL',
        `tensor "${name}" in ${located.file.path} has shape ${formatShape(located.entry.shape)}, but ${configPath} implies ${formatShape(shape)}; the weights and config.json do not match`,
        located.file.path,
      );
    }
    out.set(name, { located, dtype });
  }
  return out;
}

/** The dtype holding most of the weights (checkpoints sometimes keep norms in f32 next to bf16 matrices). */
function dominantDtype(checked: Map<string, { located: Located; dtype: DType }>): DType {
  const counts = new Map<DType, number>();
  for (const { located, dtype } of checked.values()) counts.set(dtype, (counts.get(dtype) ?? 0) + elementCount(located.entry.shape));
  let best: DType = 'f32';
  let bestCount = -1;
  for (const [dtype, n] of counts) if (n > bestCount) [best, bestCount] = [dtype, n];
  return best;
}

/** Per-layer tensors present only for some architectures (qwen2 biases, qwen3 q/k norms); absent keys stay absent. */
const OPTIONAL_LAYER_TENSORS: [keyof LayerWeights, string][] = [
  ['bq', 'self_attn.q_proj.bias'],
  ['bk', 'self_attn.k_proj.bias'],
  ['bv', 'self_attn.v_proj.bias'],
  ['qNorm', 'self_attn.q_norm.weight'],
  ['kNorm', 'self_attn.k_norm.weight'],
];

/** A Hugging Face folder's config, checked against its safetensors headers: no weights are read. */
export async function inspectHfFolder(folder: ModelFolder): Promise<{ config: ModelConfig; weightBytes: number; source: LoadedCheckpoint['source'] }> {
  const dir = folder.name;
  const configPath = folder.where('config.json');
  const { config: partial } = await readHfConfig(folder);
  const weights = await openWeights(folder);
  try {
    const checked = checkPlan(tensorPlan(partial), weights, configPath, partial.tiedEmbeddings);
    const weightBytes = [...checked.values()].reduce((s, { located, dtype }) => s + elementCount(located.entry.shape) * bytesPerElement(dtype), 0);
    return { config: { ...partial, sourceDtype: dominantDtype(checked) }, weightBytes, source: { kind: 'hf', path: dir } };
  } catch (err) {
    throw asLoadError(err, dir, 'reading the weights\' headers');
  } finally {
    await weights.close();
  }
}

export async function loadHfFolder(folder: ModelFolder, onProgress?: ProgressFn): Promise<LoadedCheckpoint> {
  const dir = folder.name;
  const configPath = folder.where('config.json');
  const { config: partial, oProjBias } = await readHfConfig(folder);
  const weights = await openWeights(folder);
  try {
    const checked = checkPlan(tensorPlan(partial), weights, configPath, partial.tiedEmbeddings);
    const config: ModelConfig = { ...partial, sourceDtype: dominantDtype(checked) };

    const total = [...checked.values()].reduce((s, { located, dtype }) => s + elementCount(located.entry.shape) * bytesPerElement(dtype), 0);
    let loaded = 0;
    const tensors = new Map<string, Tensor>();
    for (const [name, { located }] of checked) {
      tensors.set(
        name,
        await readSafetensor(located.src, located.file, located.entry, (n) => {
          loaded += n;
          onProgress?.(loaded, total, name);
        }),
      );
    }
    if (oProjBias) await rejectNonZeroOProjBias(weights, config.nLayers);
    onProgress?.(total, total, 'done');

    const t = (name: string): Tensor => tensors.get(name)!;
    const layers: LayerWeights[] = Array.from({ length: config.nLayers }, (_, l) => {
      const p = `model.layers.${l}.`;
      const layer: LayerWeights = {
        attnNorm: t(`${p}input_layernorm.weight`),
        wq: t(`${p}self_attn.q_proj.weight`),
        wk: t(`${p}self_attn.k_proj.weight`),
        wv: t(`${p}self_attn.v_proj.weight`),
        wo: t(`${p}self_attn.o_proj.weight`),
        ffnNorm: t(`${p}post_attention_layernorm.weight`),
        wGate: t(`${p}mlp.gate_proj.weight`),
        wDown: t(`${p}mlp.down_proj.weight`),
        wUp: t(`${p}mlp.up_proj.weight`),
      };
      for (const [key, suffix] of OPTIONAL_LAYER_TENSORS) {
        const tensor = tensors.get(p + suffix);
        if (tensor !== undefined) layer[key] = tensor;
      }
      return layer;
    });
    const tokenEmbedding = t('model.embed_tokens.weight');
    return {
      config,
      weights: {
        tokenEmbedding,
        layers,
        finalNorm: t('model.norm.weight'),
        lmHead: config.tiedEmbeddings ? tokenEmbedding : t('lm_head.weight'),
      },
      source: { kind: 'hf', path: dir },
    };
  } catch (err) {
    throw asLoadError(err, dir, 'loading the weights');
  } finally {
    await weights.close();
  }
}

/**
 * With attention_bias, llama/qwen3 also put a bias on o_proj, which our layer format has no slot for. Such biases are
 * zero in every published checkpoint we know of; accept those and refuse the rest rather than silently drop them.
 */
async function rejectNonZeroOProjBias(weights: OpenWeights, nLayers: number): Promise<void> {
  for (let l = 0; l < nLayers; l++) {
    const name = `model.layers.${l}.self_attn.o_proj.bias`;
    const located = weights.tensors.get(name);
    if (located === undefined) continue;
    const values = tensorToF32(await readSafetensor(located.src, located.file, located.entry));
    if (values.some((v) => v !== 0)) {
      throw new ModelLoadError(
        'UNSUPPORTED_MODEL',
        `tensor "${name}" in ${located.file.path} is a non-zero output-projection bias, which fastgen does not support`,
        located.file.path,
      );
    }
  }
}
