import { strict as assert } from 'node:assert';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { TokenizerError } from '../src/errors.js';
import { HfTokenizer } from '../src/tokenizer/hf.js';
import { nodeFolder } from '../src/model/node-files.js';
import { loadTokenizer } from '../src/tokenizer/load-tokenizer.js';
import { computeTokenClasses } from '../src/tokenizer/token-classes.js';

// Compiled tests run from dist/test: the repo root is two levels up, shared/ sits next to it.
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const shared = resolve(repoRoot, '../shared');
const fixture = join(shared, 'fixtures/tokenizer-bpe512');
const noShared = existsSync(fixture) ? false : `${fixture} not found: skipping tests that need the shared fixtures`;

interface Reference {
  encodings: { text: string; ids: number[] }[];
  chat: { messages: { role: string; content: string }[]; rendered: string; ids: number[] };
}
const reference = (): Reference => JSON.parse(readFileSync(join(fixture, 'reference.json'), 'utf8')) as Reference;

const tmpDirs: string[] = [];
after(() => {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});
/** A temp model folder with the fixture's tokenizer.json (optionally edited) and the given tokenizer_config.json. */
function tempTokenizerDir(config: object | undefined, edit?: (tj: Record<string, unknown>) => void): string {
  const dir = mkdtempSync(join(tmpdir(), 'fastgen-tok-'));
  tmpDirs.push(dir);
  const tj = JSON.parse(readFileSync(join(fixture, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
  edit?.(tj);
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tj));
  if (config) writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  return dir;
}

describe('HF tokenizer: tokenizer-bpe512 fixture', { skip: noShared }, () => {
  test('every reference encoding, and decode back', async () => {
    const t = await HfTokenizer.fromFolder(nodeFolder(fixture));
    for (const e of reference().encodings) {
      assert.deepEqual(t.encode(e.text), e.ids, JSON.stringify(e.text));
      assert.equal(t.decode(e.ids), e.text);
      assert.equal(t.decode(e.ids, { skipSpecial: false }), '<|begin_of_text|>' + e.text);
      assert.deepEqual(t.encode(e.text, { addBos: false }), e.ids.slice(1));
      assert.deepEqual(t.encode(e.text, { addBos: true }), e.ids);
    }
  });

  test('chat template renders exactly, and its encoding matches', async () => {
    const t = await HfTokenizer.fromFolder(nodeFolder(fixture));
    const ref = reference();
    assert.equal(t.hasChatTemplate, true);
    const rendered = t.applyChatTemplate(ref.chat.messages);
    assert.equal(rendered, ref.chat.rendered);
    assert.deepEqual(t.encode(rendered, { addBos: false }), ref.chat.ids);
    // The rendered text starts with BOS: the default encode does not add a second one.
    assert.deepEqual(t.encode(rendered), ref.chat.ids);
    const noPrompt = t.applyChatTemplate(ref.chat.messages, { addGenerationPrompt: false });
    assert.equal(noPrompt, ref.chat.rendered.replace(/<\|start_header_id\|>assistant<\|end_header_id\|>\n\n$/, ''));
  });

  test('special tokens, BOS, EOS, vocabulary', async () => {
    const t = await HfTokenizer.fromFolder(nodeFolder(fixture));
    assert.equal(t.kind, 'hf');
    assert.equal(t.vocabSize, 512);
    assert.equal(t.bosId, 0);
    assert.deepEqual(t.eosIds, [4]);
    assert.deepEqual([...t.specialIds()].sort((a, b) => a - b), [0, 1, 2, 3, 4]);
    assert.equal(t.tokenString(225), 'Ġ');
    assert.equal(t.tokenString(4), '<|eot_id|>');
    assert.equal(t.spaceScheme, 'byte-level');
    assert.throws(() => t.decode([512]), TokenizerError);
    assert.equal(t.decode([]), '');
  });

  test('stream decoder holds back split UTF-8 and concatenates to decode(all)', async () => {
    const t = await HfTokenizer.fromFolder(nodeFolder(fixture));
    const texts = [...reference().encodings.map((e) => e.text), 'Ωμέγα 日本語 👩‍💻 🇫🇷 — “x”\n\tend', '🙂🙂🙂'];
    for (const text of texts) {
      const ids = t.encode(text);
      for (const skipSpecial of [true, false]) {
        const sd = t.streamDecoder({ skipSpecial });
        let out = '';
        for (const id of ids) {
          const piece = sd.push(id);
          assert.ok(!piece.includes('\ufffd'), `partial character streamed for ${JSON.stringify(text)}`);
          out += piece;
        }
        out += sd.flush();
        assert.equal(out, t.decode(ids, { skipSpecial }));
      }
    }
    // '🙂' is split over several byte-level tokens: nothing is emitted until it is complete.
    const ids = t.encode('🙂', { addBos: false });
    assert.ok(ids.length > 1);
    const sd = t.streamDecoder();
    const pieces = ids.map((id) => sd.push(id));
    assert.deepEqual(pieces, [...Array(ids.length - 1).fill(''), '🙂']);
  });

  test('token classes', async () => {
    const t = await HfTokenizer.fromFolder(nodeFolder(fixture));
    const c = computeTokenClasses(t);
    assert.equal(c.special.length, 512);
    const id = (s: string): number => {
      const i = [...Array(t.vocabSize).keys()].find((k) => t.tokenString(k) === s);
      assert.ok(i !== undefined, `no token ${s}`);
      return i;
    };
    for (const s of ['.', ',', 'Ċ', 'Ġ', 'ĉ', "Ġ'", '!', '$']) assert.equal(c.punct[id(s)], 1, s);
    for (const s of ['Ġthe', 'he', 'a', '0', 'Ã', 'â', 'Ġa']) assert.equal(c.punct[id(s)], 0, s);
    for (let i = 0; i <= 4; i++) {
      assert.equal(c.special[i], 1);
      assert.equal(c.punct[i], 0);
    }
  });

  test('loadTokenizer checks the fit against the model vocabulary', async () => {
    const t = await loadTokenizer({ kind: 'hf', folder: nodeFolder(fixture) }, 512);
    assert.equal(t.vocabSize, 512);
    // A model embedding table padded beyond the tokenizer is fine.
    assert.equal((await loadTokenizer({ kind: 'hf', folder: nodeFolder(fixture) }, 640)).vocabSize, 512);
    await assert.rejects(loadTokenizer({ kind: 'hf', folder: nodeFolder(fixture) }, 256), (e: unknown) => {
      assert.ok(e instanceof TokenizerError);
      assert.match(e.message, /512/);
      assert.match(e.message, /256/);
      assert.match(e.message, /tokenizer-bpe512/);
      return true;
    });
  });

  test('template control markers count as special; raise_exception; no template', async () => {
    const template =
      "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}" +
      "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>{{ m['content'] }}<|end_of_text|>{% endfor %}";
    const unmark = (tj: Record<string, unknown>): void => {
      for (const a of tj.added_tokens as { content: string; special: boolean }[]) if (a.content === '<|end_of_text|>') a.special = false;
    };
    const cfg = { bos_token: '<|begin_of_text|>', eos_token: '<|eot_id|>' };
    const withT = await HfTokenizer.fromFolder(nodeFolder(tempTokenizerDir({ ...cfg, chat_template: template }, unmark)));
    assert.ok(withT.specialIds().has(1), 'a token the template writes as a marker is special');
    assert.equal(withT.applyChatTemplate([{ role: 'user', content: 'hi' }], { addGenerationPrompt: false }),
      '<|begin_of_text|><|start_header_id|>user<|end_header_id|>hi<|end_of_text|>');
    assert.throws(() => withT.applyChatTemplate([{ role: 'system', content: 'x' }]),
      (e: unknown) => e instanceof TokenizerError && /first message must be from the user/.test(e.message));

    const without = await HfTokenizer.fromFolder(nodeFolder(tempTokenizerDir(cfg, unmark)));
    assert.equal(without.specialIds().has(1), false);
    assert.equal(without.hasChatTemplate, false);
    assert.throws(() => without.applyChatTemplate([{ role: 'user', content: 'hi' }]), (e: unknown) => e instanceof TokenizerError && /no chat template/.test(e.message));

    // Template in a separate chat_template.jinja (newer transformers), list-of-templates form in the config.
    const dir = tempTokenizerDir(cfg);
    writeFileSync(join(dir, 'chat_template.jinja'), '{% for m in messages %}[{{ m.content }}]{% endfor %}');
    assert.equal((await HfTokenizer.fromFolder(nodeFolder(dir))).applyChatTemplate([{ role: 'user', content: 'a' }]), '[a]');
    const listed = await HfTokenizer.fromFolder(nodeFolder(tempTokenizerDir({ ...cfg, chat_template: [{ name: 'tool_use', template: 'T' }, { name: 'default', template: 'D' }] })));
    assert.equal(listed.applyChatTemplate([]), 'D');

    // A template that does not parse: no usable template, a clear error when asked to render.
    const broken = await HfTokenizer.fromFolder(nodeFolder(tempTokenizerDir({ ...cfg, chat_template: '{% for m in messages %}' })));
    assert.equal(broken.hasChatTemplate, false);
    assert.throws(() => broken.applyChatTemplate([]), (e: unknown) => e instanceof TokenizerError && /cannot be parsed/.test(e.message));
  });

  test('add_bos_token and generation_config EOS ids are honoured', async () => {
    const noBos = await HfTokenizer.fromFolder(nodeFolder(tempTokenizerDir({ bos_token: '<|begin_of_text|>', add_bos_token: false })));
    assert.deepEqual(noBos.encode('a b'), noBos.encode('a b', { addBos: false }));
    assert.notEqual(noBos.encode('a b')[0], 0);
    assert.equal(noBos.encode('a b', { addBos: true })[0], 0);
    const dir = tempTokenizerDir({ bos_token: '<|begin_of_text|>', eos_token: { content: '<|eot_id|>', __type: 'AddedToken' } });
    writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [1, 4] }));
    const t = await HfTokenizer.fromFolder(nodeFolder(dir));
    assert.deepEqual([...t.eosIds].sort(), [1, 4]);
  });
});

describe('HF tokenizer: missing or broken files', () => {
  test('missing tokenizer.json names the folder', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fastgen-empty-'));
    tmpDirs.push(dir);
    await assert.rejects(loadTokenizer({ kind: 'hf', folder: nodeFolder(dir) }, 512), (e: unknown) => {
      assert.ok(e instanceof TokenizerError);
      assert.equal(e.code, 'TOKENIZER_ERROR');
      assert.ok(e.message.includes(dir), e.message);
      assert.match(e.message, /tokenizer\.json/);
      return true;
    });
    await assert.rejects(HfTokenizer.fromFolder(nodeFolder(join(dir, 'nope'))), (e: unknown) => e instanceof TokenizerError && /no tokenizer\.json/.test(e.message));
  });

  test('corrupt tokenizer.json', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fastgen-bad-'));
    tmpDirs.push(dir);
    writeFileSync(join(dir, 'tokenizer.json'), '{"model": ');
    await assert.rejects(HfTokenizer.fromFolder(nodeFolder(dir)), (e: unknown) => e instanceof TokenizerError && /not valid JSON/.test(e.message));
  });
});
