import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadTokenizer, BertTokenizer } from '../src/semantic/tokenizer.js';
import { CalibscopeError } from '../src/util/errors.js';

// dist/test → repository root
const ROOT = path.join(__dirname, '..', '..');
const REF_DIR = path.join(ROOT, 'test', 'fixtures', 'reference', 'bert-tiny-a');
const MODEL_DIR = path.join(REF_DIR, 'model');
const ST_DIR = path.join(REF_DIR, 'sentence_transformer');

interface RefQuery {
  query: string;
  input_ids: number[];
  tokens: string[];
}

const reference = JSON.parse(readFileSync(path.join(REF_DIR, 'reference.json'), 'utf8')) as { queries: RefQuery[] };
const queries = readFileSync(path.join(REF_DIR, 'queries.txt'), 'utf8').split('\n').filter((l) => l !== '');

let tmpRoot: string;
let tmpCount = 0;
async function tmpDir(): Promise<string> {
  const d = path.join(tmpRoot, `t${tmpCount++}`);
  await fs.mkdir(d);
  return d;
}

async function expectCode(p: Promise<unknown> | (() => unknown), code: string): Promise<CalibscopeError> {
  let caught: unknown;
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof CalibscopeError, `expected a CalibscopeError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  return caught;
}

interface SyntheticOptions {
  words?: string[];
  normalizer?: Record<string, unknown> | null;
  addedTokens?: unknown[];
  maxInputCharsPerWord?: number;
}

const SPECIALS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'];

/** A small tokenizer.json: ids follow the list order, specials first. */
function syntheticTokenizerJson(o: SyntheticOptions = {}): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  [...SPECIALS, ...(o.words ?? [])].forEach((w, i) => (vocab[w] = i));
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens:
      o.addedTokens ??
      SPECIALS.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer:
      o.normalizer === null
        ? null
        : { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true, ...o.normalizer },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } }],
      pair: [],
      special_tokens: {
        '[CLS]': { id: '[CLS]', ids: [2], tokens: ['[CLS]'] },
        '[SEP]': { id: '[SEP]', ids: [3], tokens: ['[SEP]'] },
      },
    },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: o.maxInputCharsPerWord ?? 100, vocab },
  };
}

async function synthetic(o: SyntheticOptions = {}): Promise<BertTokenizer> {
  const d = await tmpDir();
  await fs.writeFile(path.join(d, 'tokenizer.json'), JSON.stringify(syntheticTokenizerJson(o)));
  return loadTokenizer(d);
}

/** Tokens without [CLS]/[SEP]. */
function inner(t: BertTokenizer, text: string): string[] {
  return t.encode(text).tokens.slice(1, -1);
}

before(async () => {
  tmpRoot = await fs.mkdtemp(path.join(os.tmpdir(), 'calibscope-tokenizer-'));
});
after(async () => {
  await fs.rm(tmpRoot, { recursive: true, force: true });
});

describe('reference parity with Hugging Face (bert-tiny-a)', () => {
  test('queries.txt and reference.json list the same queries', () => {
    assert.equal(queries.length, reference.queries.length);
    queries.forEach((q, i) => assert.equal(q, reference.queries[i]!.query));
  });

  const sources: [string, () => Promise<string>][] = [
    ['model/ (tokenizer.json)', async () => MODEL_DIR],
    ['sentence_transformer/ (tokenizer.json)', async () => ST_DIR],
    [
      'vocab.txt + tokenizer_config.json only',
      async () => {
        const d = await tmpDir();
        for (const f of ['vocab.txt', 'tokenizer_config.json', 'config.json']) await fs.copyFile(path.join(MODEL_DIR, f), path.join(d, f));
        return d;
      },
    ],
  ];
  for (const [name, dirOf] of sources) {
    test(`every query from ${name}`, async () => {
      const tok = await loadTokenizer(await dirOf());
      assert.equal(tok.maxLength, 128);
      const encoded = tok.encodeBatch(queries);
      queries.forEach((q, i) => {
        const ref = reference.queries[i]!;
        assert.deepEqual(encoded[i]!.tokens, ref.tokens, `tokens of ${JSON.stringify(q)}`);
        assert.deepEqual(encoded[i]!.ids, ref.input_ids, `ids of ${JSON.stringify(q)}`);
        assert.equal(encoded[i]!.truncated, q.startsWith('A very long query'), `truncated flag of ${JSON.stringify(q)}`);
      });
    });
  }

  test('the long query is truncated at 128 with [SEP] last', async () => {
    const tok = await loadTokenizer(MODEL_DIR);
    const long = queries.find((q) => q.startsWith('A very long query'))!;
    const e = tok.encode(long);
    assert.equal(e.truncated, true);
    assert.equal(e.ids.length, 128);
    assert.equal(e.tokens[0], '[CLS]');
    assert.equal(e.tokens[127], '[SEP]');
    assert.equal(e.ids[127], 13);
    assert.equal(tok.encode('why is the sky blue').truncated, false);
  });

  test('a duplicated vocab.txt line takes its later index, as transformers does', async () => {
    const d = await tmpDir();
    await fs.copyFile(path.join(MODEL_DIR, 'vocab.txt'), path.join(d, 'vocab.txt'));
    const tok = await loadTokenizer(d);
    // "##s" is on lines 104 and 122 of vocab.txt.
    assert.deepEqual(tok.encode('reset').ids, [12, 1288, 121, 89, 104, 13]);
  });

  test('a literal special token in the text stays one token; a lower-cased one does not', async () => {
    const tok = await loadTokenizer(MODEL_DIR);
    const e = tok.encode('the [MASK] of France');
    assert.equal(e.tokens[2], '[MASK]');
    assert.equal(e.ids[2], 14);
    assert.deepEqual(inner(tok, '[mask]').slice(0, 1), ['[']);
  });

  test('encodeBatch equals encode one by one', async () => {
    const tok = await loadTokenizer(ST_DIR);
    const texts = ['a', '', 'Tokyo 東京', 'HELLO WORLD IN ALL CAPS'];
    assert.deepEqual(tok.encodeBatch(texts), texts.map((t) => tok.encode(t)));
    assert.deepEqual(tok.encode(''), { ids: [12, 13], tokens: ['[CLS]', '[SEP]'], truncated: false });
  });
});

describe('normalization', () => {
  test('accents are stripped (NFD, Mn removed) when lower-casing', async () => {
    const tok = await loadTokenizer(MODEL_DIR);
    assert.deepEqual(tok.encode('Café naïve Zürich'), tok.encode('cafe naive zurich'));
    // Precomposed and decomposed input give the same result.
    assert.deepEqual(tok.encode('Cafe\u0301'), tok.encode('Caf\u00e9'));
  });

  test('strip_accents null follows lowercase; an explicit false keeps accents', async () => {
    const words = ['cafe', 'café', 'Café', 'Cafe'];
    assert.deepEqual(inner(await synthetic({ words }), 'Café'), ['cafe']);
    assert.deepEqual(inner(await synthetic({ words, normalizer: { strip_accents: false } }), 'Café'), ['café']);
    assert.deepEqual(inner(await synthetic({ words, normalizer: { lowercase: false } }), 'Café'), ['Café']);
    assert.deepEqual(inner(await synthetic({ words, normalizer: { lowercase: false, strip_accents: true } }), 'Café'), ['Cafe']);
  });

  test('capital sigma lower-cases character by character (σ, not a final ς)', async () => {
    const tok = await synthetic({ words: ['οδοσ', 'οδος'] });
    assert.deepEqual(inner(tok, 'ΟΔΟΣ'), ['οδοσ']);
  });

  test('CJK ideographs become single tokens; kana and hangul do not', async () => {
    // Accent stripping's NFD also splits hangul syllables into jamo, as in HF.
    const tok = await synthetic({ words: ['ab', 'cd', '東', '京', 'とうきょう', '서울'.normalize('NFD')] });
    assert.deepEqual(inner(tok, 'ab東京cd'), ['ab', '東', '京', 'cd']);
    assert.deepEqual(inner(tok, 'とうきょう'), ['とうきょう']);
    assert.deepEqual(inner(tok, '서울'), ['서울'.normalize('NFD')]);
    // Extension B, outside the BMP.
    assert.deepEqual(inner(tok, 'ab\u{20000}cd'), ['ab', '[UNK]', 'cd']);
    const off = await synthetic({ words: ['ab', '東', '京', '東京'], normalizer: { handle_chinese_chars: false } });
    assert.deepEqual(inner(off, '東京'), ['東京']);
    const fixture = await loadTokenizer(MODEL_DIR);
    assert.deepEqual(inner(fixture, 'Tokyo東京'), ['to', '##k', '##y', '##o', '東', '京']);
  });

  test('control characters, U+0000 and U+FFFD are removed; tab/newline/NBSP are whitespace', async () => {
    const tok = await synthetic({ words: ['ab', 'cd', 'a', '##b'] });
    assert.deepEqual(inner(tok, 'a\u0000b'), ['ab']);
    assert.deepEqual(inner(tok, 'a\ufffdb'), ['ab']);
    assert.deepEqual(inner(tok, 'a\u0007b'), ['ab']);
    assert.deepEqual(inner(tok, 'a\u200bb'), ['ab']); // zero-width space is Cf
    assert.deepEqual(inner(tok, 'a\u00adb'), ['ab']); // soft hyphen is Cf
    assert.deepEqual(inner(tok, 'ab\tcd\nab\r\ncd\u00a0ab\u3000cd'), ['ab', 'cd', 'ab', 'cd', 'ab', 'cd']);
    assert.deepEqual(inner(tok, '   \t\n '), []);
  });
});

describe('pre-tokenization and WordPiece', () => {
  test('ASCII and Unicode punctuation are split into their own tokens', async () => {
    const tok = await synthetic({ words: ['hello', 'world', 'a', 'b', '€5', ',', '!', '$', '^', '`', '~', '+', '¿', '«', '»', '—', '、'] });
    assert.deepEqual(inner(tok, 'hello,world!'), ['hello', ',', 'world', '!']);
    assert.deepEqual(inner(tok, 'a$b^a`b~a+b'), ['a', '$', 'b', '^', 'a', '`', 'b', '~', 'a', '+', 'b']);
    assert.deepEqual(inner(tok, '¿hello?'), ['¿', 'hello', '[UNK]']);
    assert.deepEqual(inner(tok, '«a»—b、'), ['«', 'a', '»', '—', 'b', '、']);
    // Currency and other symbols outside ASCII are not punctuation.
    assert.deepEqual(inner(tok, '€5'), ['€5']);
  });

  test('greedy longest match first, with ## continuations', async () => {
    const tok = await synthetic({ words: ['un', 'unaff', '##aff', '##able', '##a', '##ble'] });
    assert.deepEqual(inner(tok, 'unaffable'), ['unaff', '##able']);
  });

  test('a word with an unmatched rest becomes one [UNK]', async () => {
    const tok = await synthetic({ words: ['ab', '##c', 'x'] });
    assert.deepEqual(inner(tok, 'abc abd x'), ['ab', '##c', '[UNK]', 'x']);
    assert.deepEqual(tok.encode('abd').ids, [2, 1, 3]);
  });

  test('words longer than max_input_chars_per_word become [UNK]', async () => {
    const tok = await synthetic({ words: ['a', '##a'], maxInputCharsPerWord: 10 });
    assert.equal(inner(tok, 'a'.repeat(10)).length, 10);
    assert.deepEqual(inner(tok, 'a'.repeat(11)), ['[UNK]']);
    // Counted in characters, not UTF-16 units.
    const astral = await synthetic({ words: ['\u{1d400}', '##\u{1d400}'], maxInputCharsPerWord: 3, normalizer: { lowercase: false } });
    assert.deepEqual(inner(astral, '\u{1d400}'.repeat(3)), ['\u{1d400}', '##\u{1d400}', '##\u{1d400}']);
    const fixture = await loadTokenizer(MODEL_DIR);
    assert.deepEqual(inner(fixture, 'a'.repeat(101)), ['[UNK]']);
  });
});

describe('maximum length', () => {
  async function copyModel(extra: Record<string, unknown>): Promise<string> {
    const d = await tmpDir();
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'config.json']) await fs.copyFile(path.join(MODEL_DIR, f), path.join(d, f));
    for (const [name, content] of Object.entries(extra)) await fs.writeFile(path.join(d, name), JSON.stringify(content));
    return d;
  }

  test('the smallest of model_max_length, max_position_embeddings and max_seq_length', async () => {
    const config = JSON.parse(await fs.readFile(path.join(MODEL_DIR, 'config.json'), 'utf8'));
    const d1 = await copyModel({ 'config.json': { ...config, max_position_embeddings: 512 }, 'tokenizer_config.json': { model_max_length: 64 } });
    assert.equal((await loadTokenizer(d1)).maxLength, 64);
    const d2 = await copyModel({ 'sentence_bert_config.json': { max_seq_length: 32, do_lower_case: false } });
    const t2 = await loadTokenizer(d2);
    assert.equal(t2.maxLength, 32);
    const long = t2.encode(queries.find((q) => q.startsWith('A very long'))!);
    assert.equal(long.ids.length, 32);
    assert.equal(long.tokens[31], '[SEP]');
    assert.equal(long.truncated, true);
    // A query that needs exactly the room left is not truncated.
    const exact = t2.encode(Array(30).fill('a').join(' '));
    assert.equal(exact.ids.length, 32);
    assert.equal(exact.truncated, false);
  });

  test('tokenizer.json truncation.max_length is not a limit (transformers replaces it on every call)', async () => {
    const tj = JSON.parse(await fs.readFile(path.join(MODEL_DIR, 'tokenizer.json'), 'utf8'));
    const d = await copyModel({ 'tokenizer.json': { ...tj, truncation: { direction: 'Right', max_length: 16, strategy: 'LongestFirst', stride: 0 } } });
    assert.equal((await loadTokenizer(d)).maxLength, (await loadTokenizer(MODEL_DIR)).maxLength);
  });

  test('sentence-transformers do_lower_case lower-cases before a cased tokenizer', async () => {
    const d = await tmpDir();
    await fs.writeFile(path.join(d, 'tokenizer.json'), JSON.stringify(syntheticTokenizerJson({ words: ['hello', 'Hello'], normalizer: { lowercase: false } })));
    assert.deepEqual(inner(await loadTokenizer(d), 'Hello'), ['Hello']);
    await fs.writeFile(path.join(d, 'sentence_bert_config.json'), JSON.stringify({ max_seq_length: 256, do_lower_case: true }));
    assert.deepEqual(inner(await loadTokenizer(d), 'Hello'), ['hello']);
  });

  test('an older sentence-transformers folder with the tokenizer in 0_Transformer/', async () => {
    const d = await tmpDir();
    await fs.mkdir(path.join(d, '0_Transformer'));
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'config.json']) await fs.copyFile(path.join(MODEL_DIR, f), path.join(d, '0_Transformer', f));
    await fs.writeFile(path.join(d, '0_Transformer', 'sentence_bert_config.json'), JSON.stringify({ max_seq_length: 20 }));
    await fs.writeFile(
      path.join(d, 'modules.json'),
      JSON.stringify([
        { idx: 0, name: '0', path: '0_Transformer', type: 'sentence_transformers.models.Transformer' },
        { idx: 1, name: '1', path: '1_Pooling', type: 'sentence_transformers.models.Pooling' },
      ]),
    );
    const tok = await loadTokenizer(d);
    assert.equal(tok.maxLength, 20);
    assert.deepEqual(tok.encode(queries[0]!).ids, reference.queries[0]!.input_ids);
  });
});

describe('errors', () => {
  test('a missing folder, or one with no tokenizer files, is E_NOT_FOUND', async () => {
    await expectCode(loadTokenizer(path.join(tmpRoot, 'does-not-exist')), 'E_NOT_FOUND');
    const d = await tmpDir();
    await fs.copyFile(path.join(MODEL_DIR, 'config.json'), path.join(d, 'config.json'));
    const err = await expectCode(loadTokenizer(d), 'E_NOT_FOUND');
    assert.match(err.message, /tokenizer\.json or vocab\.txt/);
  });

  test('bad arguments are E_BAD_ARGUMENT', async () => {
    await expectCode(loadTokenizer(''), 'E_BAD_ARGUMENT');
    await expectCode(loadTokenizer(path.join(MODEL_DIR, 'config.json')), 'E_BAD_ARGUMENT');
    const tok = await loadTokenizer(MODEL_DIR);
    await expectCode(() => tok.encode(42 as unknown as string), 'E_BAD_ARGUMENT');
    await expectCode(() => tok.encodeBatch('abc' as unknown as string[]), 'E_BAD_ARGUMENT');
  });

  async function withTokenizerJson(content: string | Buffer): Promise<string> {
    const d = await tmpDir();
    await fs.writeFile(path.join(d, 'tokenizer.json'), content);
    return d;
  }

  test('malformed tokenizer.json is E_BAD_CHECKPOINT naming the file', async () => {
    const err = await expectCode(loadTokenizer(await withTokenizerJson('{"model": {')), 'E_BAD_CHECKPOINT');
    assert.match(err.message, /tokenizer\.json/);
    await expectCode(loadTokenizer(await withTokenizerJson('[]')), 'E_BAD_CHECKPOINT');
    await expectCode(loadTokenizer(await withTokenizerJson('{"version": "1.0"}')), 'E_BAD_CHECKPOINT');
    const bpe = { ...syntheticTokenizerJson(), model: { type: 'BPE', vocab: {}, merges: [] } };
    await expectCode(loadTokenizer(await withTokenizerJson(JSON.stringify(bpe))), 'E_BAD_CHECKPOINT');
    const badVocab = syntheticTokenizerJson();
    (badVocab.model as Record<string, unknown>).vocab = { '[UNK]': 'one' };
    await expectCode(loadTokenizer(await withTokenizerJson(JSON.stringify(badVocab))), 'E_BAD_CHECKPOINT');
    const noUnk = syntheticTokenizerJson();
    (noUnk.model as Record<string, unknown>).unk_token = '<unk>';
    await expectCode(loadTokenizer(await withTokenizerJson(JSON.stringify(noUnk))), 'E_BAD_CHECKPOINT');
    const badNorm = syntheticTokenizerJson({ normalizer: { type: 'Precompiled' } });
    await expectCode(loadTokenizer(await withTokenizerJson(JSON.stringify(badNorm))), 'E_BAD_CHECKPOINT');
    const badTemplate = syntheticTokenizerJson();
    (badTemplate.post_processor as Record<string, unknown>).special_tokens = {};
    await expectCode(loadTokenizer(await withTokenizerJson(JSON.stringify(badTemplate))), 'E_BAD_CHECKPOINT');
    await expectCode(loadTokenizer(await withTokenizerJson(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]))), 'E_BAD_CHECKPOINT');
  });

  test('malformed companion files are E_BAD_CHECKPOINT', async () => {
    const d1 = await tmpDir();
    await fs.copyFile(path.join(MODEL_DIR, 'vocab.txt'), path.join(d1, 'vocab.txt'));
    await fs.writeFile(path.join(d1, 'tokenizer_config.json'), '{ do_lower_case: true }');
    await expectCode(loadTokenizer(d1), 'E_BAD_CHECKPOINT');

    const d2 = await tmpDir();
    await fs.copyFile(path.join(MODEL_DIR, 'tokenizer.json'), path.join(d2, 'tokenizer.json'));
    await fs.writeFile(path.join(d2, 'config.json'), JSON.stringify({ max_position_embeddings: 'many' }));
    await expectCode(loadTokenizer(d2), 'E_BAD_CHECKPOINT');

    const d3 = await tmpDir();
    await fs.writeFile(path.join(d3, 'vocab.txt'), '[PAD]\n[UNK]\nhello\n');
    const err = await expectCode(loadTokenizer(d3), 'E_BAD_CHECKPOINT');
    assert.match(err.message, /\[CLS\]/);

    const d4 = await tmpDir();
    await fs.writeFile(path.join(d4, 'vocab.txt'), '');
    await expectCode(loadTokenizer(d4), 'E_BAD_CHECKPOINT');

    const d5 = await tmpDir();
    await fs.mkdir(path.join(d5, 'tokenizer.json'));
    await expectCode(loadTokenizer(d5), 'E_BAD_CHECKPOINT');
  });
});
