// BERT WordPiece tokenizer for semantic validation. It must give exactly the ids that Hugging Face's
// BertTokenizer gives (transformers 5, i.e. the Rust `tokenizers` backend), because the correlation
// between FP16 and quantized embeddings is only meaningful when both see the model's real inputs.
// Where the Rust backend and the old Python BertTokenizer disagree (which control characters are
// dropped, the CJK range table, per-character lower-casing), this follows the Rust backend.

import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { CalibscopeError } from '../util/errors.js';

export interface EncodedText {
  ids: number[];
  tokens: string[];
  /** The text gave more word pieces than fit in `maxLength` (special tokens included). */
  truncated: boolean;
}

export interface BertNormalizerOptions {
  cleanText: boolean;
  handleChineseChars: boolean;
  stripAccents: boolean;
  lowercase: boolean;
}

export interface AddedTokenSpec {
  id: number;
  content: string;
  singleWord: boolean;
  lstrip: boolean;
  rstrip: boolean;
  /** Matched in the normalized text (true) or in the raw input (false). */
  normalized: boolean;
  special: boolean;
}

export interface SpecialPiece {
  id: number;
  token: string;
}

/** Everything the tokenizer needs, independent of which files it came from. */
export interface BertTokenizerSpec {
  vocab: ReadonlyMap<string, number>;
  unkToken: string;
  continuingSubwordPrefix: string;
  maxInputCharsPerWord: number;
  normalizer: BertNormalizerOptions | null;
  /** BertPreTokenizer (whitespace split, punctuation isolated) or none. */
  bertPreTokenizer: boolean;
  addedTokens: readonly AddedTokenSpec[];
  /** Special tokens put before / after the text: [CLS] / [SEP] for BERT. */
  prefix: readonly SpecialPiece[];
  suffix: readonly SpecialPiece[];
  /** Total length, special tokens included. */
  maxLength: number;
  truncationSide: 'right' | 'left';
  /** sentence-transformers' own `do_lower_case`, applied to the text before the tokenizer. */
  lowercaseInput: boolean;
  padId: number;
  /** The file the tokenizer was read from, for messages. */
  source: string;
}

// Used when no file states a limit: BERT-family position tables have 512 entries.
const DEFAULT_MAX_LENGTH = 512;
// transformers writes int(1e30) as model_max_length when the tokenizer has no limit of its own.
const UNSET_MODEL_MAX_LENGTH = 1e12;

// ---------------------------------------------------------------------------------------------
// Character classes (as the Rust backend's BertNormalizer / BertPreTokenizer define them)

// `unicode_categories`' is_other(): Cc, Cf and Co; unassigned code points are kept.
const CONTROL_RE = /[\p{Cc}\p{Cf}\p{Co}]/u;
const WHITESPACE_RE = /\p{White_Space}/u;
const PUNCT_RE = /\p{P}/u;
const MN_RE = /\p{Mn}/gu;
const WORD_CHAR_RE = /[\p{L}\p{N}\p{M}\p{Pc}\u200c\u200d]/u;

function isWhitespace(ch: string): boolean {
  return ch === '\t' || ch === '\n' || ch === '\r' || WHITESPACE_RE.test(ch);
}

function isControl(ch: string): boolean {
  if (ch === '\t' || ch === '\n' || ch === '\r') return false;
  return CONTROL_RE.test(ch);
}

export function isBertPunctuation(ch: string): boolean {
  const cp = ch.codePointAt(0)!;
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126)) {
    return true;
  }
  return PUNCT_RE.test(ch);
}

// The Rust table starts Extension E at 0x2B920 (the Python one at 0x2B820); the Rust one is what
// transformers 5 runs.
export function isChineseChar(cp: number): boolean {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b920 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0x2f800 && cp <= 0x2fa1f)
  );
}

function normalizeBert(text: string, o: BertNormalizerOptions): string {
  let s = text;
  if (o.cleanText) {
    let out = '';
    for (const ch of s) {
      const cp = ch.codePointAt(0)!;
      if (cp === 0 || cp === 0xfffd || isControl(ch)) continue;
      out += isWhitespace(ch) ? ' ' : ch;
    }
    s = out;
  }
  if (o.handleChineseChars) {
    let out = '';
    for (const ch of s) out += isChineseChar(ch.codePointAt(0)!) ? ` ${ch} ` : ch;
    s = out;
  }
  if (o.stripAccents) s = s.normalize('NFD').replace(MN_RE, '');
  if (o.lowercase) s = lowercasePerChar(s);
  return s;
}

// The Rust backend lower-cases character by character, so a word-final capital sigma becomes σ,
// not the ς that String#toLowerCase's context rule gives. Sigma is the only context rule there.
function lowercasePerChar(s: string): string {
  if (!s.includes('\u03a3')) return s.toLowerCase();
  let out = '';
  for (const ch of s) out += ch.toLowerCase();
  return out;
}

/** Splits on whitespace (dropped) and isolates every punctuation character. */
function bertPreTokenize(text: string): string[] {
  const words: string[] = [];
  let cur = '';
  for (const ch of text) {
    if (isWhitespace(ch)) {
      if (cur) words.push(cur);
      cur = '';
    } else if (isBertPunctuation(ch)) {
      if (cur) words.push(cur);
      words.push(ch);
      cur = '';
    } else {
      cur += ch;
    }
  }
  if (cur) words.push(cur);
  return words;
}

const UNCASED: BertNormalizerOptions = { cleanText: true, handleChineseChars: true, stripAccents: true, lowercase: true };

/** The words an uncased BERT tokenizer splits `text` into before WordPiece (normalized, then
 *  split on whitespace with punctuation isolated). */
export function bertWords(text: string, options: BertNormalizerOptions = UNCASED): string[] {
  return bertPreTokenize(normalizeBert(text, options));
}

// ---------------------------------------------------------------------------------------------
// Added (special) tokens: found in the text before anything else, as `tokenizers` does, so that
// a literal "[MASK]" in a query stays one token.

interface Matcher {
  byFirstUnit: Map<number, { pattern: string; token: AddedTokenSpec }[]>;
}

function buildMatcher(tokens: readonly AddedTokenSpec[], patternOf: (t: AddedTokenSpec) => string): Matcher {
  const byFirstUnit = new Map<number, { pattern: string; token: AddedTokenSpec }[]>();
  for (const token of tokens) {
    const pattern = patternOf(token);
    if (!pattern) continue;
    const key = pattern.charCodeAt(0);
    let list = byFirstUnit.get(key);
    if (!list) byFirstUnit.set(key, (list = []));
    list.push({ pattern, token });
  }
  // Leftmost-longest: at a position the longest pattern wins.
  for (const list of byFirstUnit.values()) list.sort((a, b) => b.pattern.length - a.pattern.length);
  return { byFirstUnit };
}

type Segment = { text: string; token?: undefined } | { text: string; token: AddedTokenSpec };

function lastCodePoint(s: string): string {
  const cp = s.codePointAt(s.length - 1)!;
  // A trailing low surrogate: step back to the pair's start.
  return cp >= 0xdc00 && cp <= 0xdfff && s.length >= 2 ? String.fromCodePoint(s.codePointAt(s.length - 2)!) : String.fromCodePoint(cp);
}

function splitOnAddedTokens(text: string, matcher: Matcher): Segment[] {
  if (matcher.byFirstUnit.size === 0) return [{ text }];
  const out: Segment[] = [];
  let from = 0;
  let i = 0;
  while (i < text.length) {
    const candidates = matcher.byFirstUnit.get(text.charCodeAt(i));
    const hit = candidates?.find((c) => text.startsWith(c.pattern, i));
    if (!hit) {
      i++;
      continue;
    }
    const t = hit.token;
    let start = i;
    let stop = i + hit.pattern.length;
    i = stop;
    if (t.singleWord) {
      const startOk = start === 0 || !WORD_CHAR_RE.test(lastCodePoint(text.slice(0, start)));
      const stopOk = stop === text.length || !WORD_CHAR_RE.test(String.fromCodePoint(text.codePointAt(stop)!));
      if (!startOk || !stopOk) continue;
    }
    // Whitespace is BMP-only, so stepping by code units is safe here.
    if (t.lstrip) while (start > from && isWhitespace(text[start - 1]!)) start--;
    if (t.rstrip) while (stop < text.length && isWhitespace(text[stop]!)) stop++;
    if (from < start) out.push({ text: text.slice(from, start) });
    out.push({ text: text.slice(start, stop), token: t });
    from = i = stop;
  }
  if (from < text.length) out.push({ text: text.slice(from) });
  return out;
}

// ---------------------------------------------------------------------------------------------

export class BertTokenizer {
  readonly maxLength: number;
  readonly padId: number;
  readonly unkId: number;
  /** One more than the largest id: the embedding table must have at least this many rows. */
  readonly vocabSize: number;
  readonly source: string;
  private readonly spec: BertTokenizerSpec;
  private readonly rawMatcher: Matcher;
  private readonly normalizedMatcher: Matcher;

  constructor(spec: BertTokenizerSpec) {
    const unkId = spec.vocab.get(spec.unkToken);
    if (unkId === undefined) {
      throw new CalibscopeError('E_BAD_CHECKPOINT', `${spec.source}: the unknown token "${spec.unkToken}" is not in the vocabulary`, {
        file: spec.source,
      });
    }
    const specials = spec.prefix.length + spec.suffix.length;
    if (!Number.isInteger(spec.maxLength) || spec.maxLength <= specials) {
      throw new CalibscopeError('E_BAD_CHECKPOINT', `${spec.source}: maximum length ${spec.maxLength} leaves no room for text`, {
        file: spec.source,
        maxLength: spec.maxLength,
      });
    }
    this.spec = spec;
    this.maxLength = spec.maxLength;
    this.padId = spec.padId;
    this.unkId = unkId;
    this.source = spec.source;
    let maxId = -1;
    for (const id of spec.vocab.values()) if (id > maxId) maxId = id;
    for (const t of spec.addedTokens) if (t.id > maxId) maxId = t.id;
    this.vocabSize = maxId + 1;
    const norm = spec.normalizer;
    this.rawMatcher = buildMatcher(
      spec.addedTokens.filter((t) => !t.normalized || !norm),
      (t) => t.content,
    );
    this.normalizedMatcher = buildMatcher(
      norm ? spec.addedTokens.filter((t) => t.normalized) : [],
      (t) => normalizeBert(t.content, norm!),
    );
  }

  encode(text: string): EncodedText {
    if (typeof text !== 'string') {
      throw new CalibscopeError('E_BAD_ARGUMENT', `tokenizer input must be a string, got ${text === null ? 'null' : typeof text}`);
    }
    const spec = this.spec;
    const ids: number[] = [];
    const tokens: string[] = [];
    const input = spec.lowercaseInput ? text.toLowerCase() : text;
    for (const seg of splitOnAddedTokens(input, this.rawMatcher)) {
      if (seg.token) {
        ids.push(seg.token.id);
        tokens.push(seg.token.content);
        continue;
      }
      const normalized = spec.normalizer ? normalizeBert(seg.text, spec.normalizer) : seg.text;
      for (const sub of splitOnAddedTokens(normalized, this.normalizedMatcher)) {
        if (sub.token) {
          ids.push(sub.token.id);
          tokens.push(sub.token.content);
          continue;
        }
        const words = spec.bertPreTokenizer ? bertPreTokenize(sub.text) : sub.text ? [sub.text] : [];
        for (const w of words) this.wordPiece(w, ids, tokens);
      }
    }

    const room = this.maxLength - spec.prefix.length - spec.suffix.length;
    const truncated = ids.length > room;
    if (truncated) {
      const keepFrom = spec.truncationSide === 'left' ? ids.length - room : 0;
      ids.splice(0, keepFrom);
      tokens.splice(0, keepFrom);
      ids.length = room;
      tokens.length = room;
    }
    return {
      ids: [...spec.prefix.map((p) => p.id), ...ids, ...spec.suffix.map((p) => p.id)],
      tokens: [...spec.prefix.map((p) => p.token), ...tokens, ...spec.suffix.map((p) => p.token)],
      truncated,
    };
  }

  encodeBatch(texts: readonly string[]): EncodedText[] {
    if (!Array.isArray(texts)) throw new CalibscopeError('E_BAD_ARGUMENT', 'encodeBatch expects an array of strings');
    return texts.map((t) => this.encode(t));
  }

  /** Greedy longest-match-first; a word with any unmatched rest becomes a single [UNK]. */
  private wordPiece(word: string, ids: number[], tokens: string[]): void {
    const { vocab, continuingSubwordPrefix, maxInputCharsPerWord, unkToken } = this.spec;
    // Code-unit offsets of each code point, so that lengths and cuts count characters.
    const offsets: number[] = [];
    for (let i = 0; i < word.length; ) {
      offsets.push(i);
      i += word.codePointAt(i)! > 0xffff ? 2 : 1;
    }
    const n = offsets.length;
    offsets.push(word.length);
    if (n > maxInputCharsPerWord) {
      ids.push(this.unkId);
      tokens.push(unkToken);
      return;
    }
    const pieceIds: number[] = [];
    const pieces: string[] = [];
    let start = 0;
    while (start < n) {
      let end = n;
      let found: string | undefined;
      let foundId = -1;
      while (start < end) {
        let sub = word.slice(offsets[start], offsets[end]);
        if (start > 0) sub = continuingSubwordPrefix + sub;
        const id = vocab.get(sub);
        if (id !== undefined) {
          found = sub;
          foundId = id;
          break;
        }
        end--;
      }
      if (found === undefined) {
        ids.push(this.unkId);
        tokens.push(unkToken);
        return;
      }
      pieceIds.push(foundId);
      pieces.push(found);
      start = end;
    }
    for (let k = 0; k < pieces.length; k++) {
      ids.push(pieceIds[k]!);
      tokens.push(pieces[k]!);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Loading

type Json = Record<string, unknown>;

function bad(file: string, reason: string, details: Record<string, unknown> = {}): CalibscopeError {
  return new CalibscopeError('E_BAD_CHECKPOINT', `${file}: ${reason}`, { file, ...details });
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The file's text, or undefined when it does not exist. */
async function readText(file: string): Promise<string | undefined> {
  let buf: Buffer;
  try {
    buf = await fs.readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    if (code === 'EISDIR') throw bad(file, 'is a folder, not a file');
    throw new CalibscopeError('E_IO', `${file}: ${(err as Error).message}`, { file, errno: code });
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(buf);
  } catch {
    throw bad(file, 'is not valid UTF-8');
  }
}

async function readJson(file: string): Promise<Json | undefined> {
  const text = await readText(file);
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text.replace(/^\ufeff/, ''));
  } catch (err) {
    throw bad(file, `is not valid JSON (${(err as Error).message})`);
  }
  if (!isObject(value)) throw bad(file, 'must hold a JSON object');
  return value;
}

function optBool(file: string, obj: Json, key: string, fallback: boolean): boolean {
  const v = obj[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'boolean') throw bad(file, `"${key}" must be true or false`);
  return v;
}

function optString(file: string, obj: Json, key: string, fallback: string): string {
  const v = obj[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'string') throw bad(file, `"${key}" must be a string`);
  return v;
}

function optLength(file: string, obj: Json | undefined, key: string): number | undefined {
  const v = obj?.[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !(v > 0) || !Number.isInteger(v)) throw bad(file, `"${key}" must be a positive integer`);
  return v;
}

function tokenId(file: string, v: unknown, where: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw bad(file, `${where} must be a non-negative integer id`);
  return v;
}

function parseAddedToken(file: string, v: unknown, where: string, idFallback?: number): AddedTokenSpec {
  if (!isObject(v)) throw bad(file, `${where} must be an object`);
  const content = v.content;
  if (typeof content !== 'string' || content === '') throw bad(file, `${where}.content must be a non-empty string`);
  const special = optBool(file, v, 'special', false);
  return {
    id: v.id === undefined && idFallback !== undefined ? idFallback : tokenId(file, v.id, `${where}.id`),
    content,
    singleWord: optBool(file, v, 'single_word', false),
    lstrip: optBool(file, v, 'lstrip', false),
    rstrip: optBool(file, v, 'rstrip', false),
    normalized: optBool(file, v, 'normalized', !special),
    special,
  };
}

/** A tokenizer_config special token: a plain string or a serialised AddedToken. */
function configToken(file: string, cfg: Json | undefined, key: string, fallback: string): string {
  const v = cfg?.[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v.content === 'string') return v.content;
  throw bad(file, `"${key}" must be a string or a token object`);
}

interface PostProcessing {
  prefix: SpecialPiece[];
  suffix: SpecialPiece[];
}

function parsePostProcessor(file: string, pp: unknown): PostProcessing {
  if (pp === null || pp === undefined) return { prefix: [], suffix: [] };
  if (!isObject(pp)) throw bad(file, 'post_processor must be an object');
  switch (pp.type) {
    case 'BertProcessing':
    case 'RobertaProcessing': {
      const piece = (key: string): SpecialPiece => {
        const v = pp[key];
        if (!Array.isArray(v) || v.length !== 2 || typeof v[0] !== 'string') {
          throw bad(file, `post_processor.${key} must be [token, id]`);
        }
        return { token: v[0], id: tokenId(file, v[1], `post_processor.${key}[1]`) };
      };
      return { prefix: [piece('cls')], suffix: [piece('sep')] };
    }
    case 'TemplateProcessing': {
      const single = pp.single;
      const specials = pp.special_tokens;
      if (!Array.isArray(single)) throw bad(file, 'post_processor.single must be a list');
      if (specials !== undefined && !isObject(specials)) throw bad(file, 'post_processor.special_tokens must be an object');
      const out: PostProcessing = { prefix: [], suffix: [] };
      let seenSequence = false;
      for (const [k, item] of single.entries()) {
        const where = `post_processor.single[${k}]`;
        if (isObject(item) && isObject(item.Sequence)) {
          if (seenSequence) throw bad(file, `${where}: a single-sequence template may hold one sequence`);
          seenSequence = true;
        } else if (isObject(item) && isObject(item.SpecialToken) && typeof item.SpecialToken.id === 'string') {
          const name = item.SpecialToken.id;
          const def = specials?.[name];
          const defIds = isObject(def) ? def.ids : undefined;
          const defTokens = isObject(def) ? def.tokens : undefined;
          if (!Array.isArray(defIds) || !Array.isArray(defTokens) || defIds.length !== defTokens.length) {
            throw bad(file, `${where}: special token "${name}" is not defined in post_processor.special_tokens`);
          }
          const target = seenSequence ? out.suffix : out.prefix;
          defIds.forEach((id, j) => {
            const token: unknown = defTokens[j];
            if (typeof token !== 'string') throw bad(file, `post_processor.special_tokens.${name}.tokens must be strings`);
            target.push({ id: tokenId(file, id, `post_processor.special_tokens.${name}.ids[${j}]`), token });
          });
        } else {
          throw bad(file, `${where} must be a Sequence or a SpecialToken`);
        }
      }
      if (!seenSequence) throw bad(file, 'post_processor.single has no Sequence');
      return out;
    }
    case 'Sequence': {
      if (!Array.isArray(pp.processors)) throw bad(file, 'post_processor.processors must be a list');
      // ByteLevel and friends only touch offsets; at most one member may add tokens.
      const adding = pp.processors.filter((p) => isObject(p) && p.type !== 'ByteLevel');
      if (adding.length > 1) throw bad(file, 'post_processor: more than one processor adds special tokens');
      return parsePostProcessor(file, adding[0] ?? null);
    }
    default:
      throw bad(file, `unsupported post_processor type ${JSON.stringify(pp.type)}`);
  }
}

interface Limits {
  tokenizerMax?: number;
  configMax?: number;
  sentenceMax?: number;
}

/**
 * The length sentence-transformers and transformers truncate at. sentence-transformers passes
 * max_seq_length as the tokenizer call's max_length, which replaces the tokenizer's own
 * model_max_length (all-MiniLM-L6-v2: 256, with model_max_length 512); without it the limit is
 * model_max_length. Either is capped at max_position_embeddings, beyond which the model has no
 * positions.
 */
function pickMaxLength(l: Limits): number {
  const own = l.sentenceMax ?? l.tokenizerMax;
  const candidates = [own, l.configMax].filter((v): v is number => v !== undefined);
  return candidates.length > 0 ? Math.min(...candidates) : DEFAULT_MAX_LENGTH;
}

/** model_max_length, ignoring transformers' "no limit" sentinel. */
function modelMaxLength(file: string, cfg: Json | undefined): number | undefined {
  const v = cfg?.model_max_length;
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !(v > 0)) throw bad(file, '"model_max_length" must be a positive number');
  return v >= UNSET_MODEL_MAX_LENGTH ? undefined : Math.floor(v);
}

function configTruncationSide(ctx: Context): 'right' | 'left' | undefined {
  const v = ctx.tokenizerConfig?.truncation_side;
  if (v === undefined || v === null) return undefined;
  if (v !== 'right' && v !== 'left') throw bad(ctx.tokenizerConfigFile, '"truncation_side" must be "right" or "left"');
  return v;
}

interface Context {
  tokenizerConfig?: Json;
  tokenizerConfigFile: string;
  limits: Limits;
  lowercaseInput: boolean;
}

function specFromTokenizerJson(file: string, tj: Json, ctx: Context): BertTokenizerSpec {
  const model = tj.model;
  if (!isObject(model)) throw bad(file, 'has no "model" object');
  if (model.type !== undefined && model.type !== 'WordPiece') {
    throw bad(file, `model type ${JSON.stringify(model.type)} is not supported (only WordPiece, i.e. BERT-style tokenizers)`);
  }
  if (!isObject(model.vocab)) throw bad(file, 'model.vocab must be an object of token → id');
  const vocab = new Map<string, number>();
  for (const [tok, id] of Object.entries(model.vocab)) vocab.set(tok, tokenId(file, id, `model.vocab["${tok}"]`));
  const maxChars = model.max_input_chars_per_word ?? 100;
  if (typeof maxChars !== 'number' || !Number.isInteger(maxChars) || maxChars < 0) {
    throw bad(file, 'model.max_input_chars_per_word must be a non-negative integer');
  }

  let normalizer: BertNormalizerOptions | null = null;
  const n = tj.normalizer;
  if (isObject(n)) {
    if (n.type !== 'BertNormalizer') throw bad(file, `normalizer type ${JSON.stringify(n.type)} is not supported (only BertNormalizer)`);
    const lowercase = optBool(file, n, 'lowercase', true);
    normalizer = {
      cleanText: optBool(file, n, 'clean_text', true),
      handleChineseChars: optBool(file, n, 'handle_chinese_chars', true),
      // null: follow lowercase, as the original BERT did.
      stripAccents: optBool(file, n, 'strip_accents', lowercase),
      lowercase,
    };
  } else if (n !== null && n !== undefined) {
    throw bad(file, 'normalizer must be an object or null');
  }

  const p = tj.pre_tokenizer;
  let bertPreTokenizer = false;
  if (isObject(p)) {
    if (p.type !== 'BertPreTokenizer') throw bad(file, `pre_tokenizer type ${JSON.stringify(p.type)} is not supported (only BertPreTokenizer)`);
    bertPreTokenizer = true;
  } else if (p !== null && p !== undefined) {
    throw bad(file, 'pre_tokenizer must be an object or null');
  }

  const addedTokens: AddedTokenSpec[] = [];
  if (tj.added_tokens !== undefined && tj.added_tokens !== null) {
    if (!Array.isArray(tj.added_tokens)) throw bad(file, 'added_tokens must be a list');
    tj.added_tokens.forEach((t, k) => addedTokens.push(parseAddedToken(file, t, `added_tokens[${k}]`)));
  }

  const { prefix, suffix } = parsePostProcessor(file, tj.post_processor);

  // tokenizer.json's truncation.max_length is not a limit: transformers replaces the backend's
  // truncation on every call (all-MiniLM-L6-v2 ships 128 there and embeds up to 256 tokens). Its
  // direction is the default truncation_side. (A malformed max_length is still a broken file.)
  let truncationSide: 'right' | 'left' = 'right';
  if (isObject(tj.truncation)) {
    optLength(file, tj.truncation, 'max_length');
    const dir = tj.truncation.direction;
    if (dir === 'Left') truncationSide = 'left';
    else if (dir !== undefined && dir !== 'Right') throw bad(file, 'truncation.direction must be "Left" or "Right"');
  } else if (tj.truncation !== null && tj.truncation !== undefined) {
    throw bad(file, 'truncation must be an object or null');
  }
  // transformers sets the direction from tokenizer_config's truncation_side whenever it truncates.
  truncationSide = configTruncationSide(ctx) ?? truncationSide;

  let padId: number | undefined;
  if (isObject(tj.padding) && tj.padding.pad_id !== undefined) padId = tokenId(file, tj.padding.pad_id, 'padding.pad_id');
  const padToken = configToken(ctx.tokenizerConfigFile, ctx.tokenizerConfig, 'pad_token', '[PAD]');
  padId ??= addedTokens.find((t) => t.content === padToken)?.id ?? vocab.get(padToken) ?? 0;

  return {
    vocab,
    unkToken: optString(file, model, 'unk_token', '[UNK]'),
    continuingSubwordPrefix: optString(file, model, 'continuing_subword_prefix', '##'),
    maxInputCharsPerWord: maxChars,
    normalizer,
    bertPreTokenizer,
    addedTokens,
    prefix,
    suffix,
    maxLength: pickMaxLength({ ...ctx.limits, tokenizerMax: modelMaxLength(ctx.tokenizerConfigFile, ctx.tokenizerConfig) }),
    truncationSide,
    lowercaseInput: ctx.lowercaseInput,
    padId,
    source: file,
  };
}

/** vocab.txt as transformers reads it: one token a line, a later duplicate wins. */
function parseVocabTxt(text: string): Map<string, number> {
  const lines = text.split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  const vocab = new Map<string, number>();
  lines.forEach((line, i) => vocab.set(line.endsWith('\r') ? line.slice(0, -1) : line, i));
  return vocab;
}

function specFromVocabTxt(file: string, vocab: Map<string, number>, ctx: Context): BertTokenizerSpec {
  const cfgFile = ctx.tokenizerConfigFile;
  const cfg = ctx.tokenizerConfig ?? {};
  const lowercase = optBool(cfgFile, cfg, 'do_lower_case', true);
  const names = {
    unk: configToken(cfgFile, cfg, 'unk_token', '[UNK]'),
    cls: configToken(cfgFile, cfg, 'cls_token', '[CLS]'),
    sep: configToken(cfgFile, cfg, 'sep_token', '[SEP]'),
    pad: configToken(cfgFile, cfg, 'pad_token', '[PAD]'),
    mask: configToken(cfgFile, cfg, 'mask_token', '[MASK]'),
  };
  const idOf = (name: string, role: string): number => {
    const id = vocab.get(name);
    if (id === undefined) throw bad(file, `the ${role} token "${name}" is not in the vocabulary`);
    return id;
  };

  // Special tokens are never split and never normalized, as transformers registers them.
  const added = new Map<string, AddedTokenSpec>();
  const special = (content: string, id: number): AddedTokenSpec => ({
    id,
    content,
    singleWord: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  if (isObject(cfg.added_tokens_decoder)) {
    for (const [key, v] of Object.entries(cfg.added_tokens_decoder)) {
      const id = Number(key);
      if (!Number.isInteger(id) || id < 0) throw bad(cfgFile, `added_tokens_decoder key "${key}" is not an id`);
      const t = parseAddedToken(cfgFile, v, `added_tokens_decoder["${key}"]`, id);
      added.set(t.content, t);
    }
  }
  for (const name of Object.values(names)) {
    const id = vocab.get(name);
    if (id !== undefined && !added.has(name)) added.set(name, special(name, id));
  }

  return {
    vocab,
    unkToken: names.unk,
    continuingSubwordPrefix: '##',
    maxInputCharsPerWord: 100,
    normalizer: {
      cleanText: true,
      handleChineseChars: optBool(cfgFile, cfg, 'tokenize_chinese_chars', true),
      stripAccents: optBool(cfgFile, cfg, 'strip_accents', lowercase),
      lowercase,
    },
    bertPreTokenizer: true,
    addedTokens: [...added.values()],
    prefix: [{ id: idOf(names.cls, 'CLS'), token: names.cls }],
    suffix: [{ id: idOf(names.sep, 'SEP'), token: names.sep }],
    maxLength: pickMaxLength({ ...ctx.limits, tokenizerMax: modelMaxLength(cfgFile, ctx.tokenizerConfig) }),
    truncationSide: configTruncationSide(ctx) ?? 'right',
    lowercaseInput: ctx.lowercaseInput,
    padId: vocab.get(names.pad) ?? 0,
    source: file,
  };
}

async function exists(file: string): Promise<boolean> {
  try {
    await fs.access(file);
    return true;
  } catch {
    return false;
  }
}

/**
 * Where the tokenizer files are: the folder itself, or for an older sentence-transformers folder
 * the Transformer module's sub-folder named in modules.json.
 */
async function tokenizerDirs(modelDir: string): Promise<string[]> {
  const dirs = [modelDir];
  const modules = await readText(path.join(modelDir, 'modules.json'));
  if (modules === undefined) return dirs;
  let list: unknown;
  try {
    list = JSON.parse(modules.replace(/^\ufeff/, ''));
  } catch (err) {
    throw bad(path.join(modelDir, 'modules.json'), `is not valid JSON (${(err as Error).message})`);
  }
  if (!Array.isArray(list)) return dirs;
  for (const m of list) {
    if (isObject(m) && typeof m.type === 'string' && /(^|\.)Transformer$/.test(m.type) && typeof m.path === 'string' && m.path !== '') {
      dirs.unshift(path.join(modelDir, m.path));
    }
  }
  return dirs;
}

/**
 * Reads a model folder's tokenizer: tokenizer.json when present, otherwise vocab.txt with
 * tokenizer_config.json. The maximum length is sentence_bert_config.json's max_seq_length, else
 * tokenizer_config.json's model_max_length, capped at config.json's max_position_embeddings.
 */
export async function loadTokenizer(modelDir: string): Promise<BertTokenizer> {
  if (typeof modelDir !== 'string' || modelDir === '') {
    throw new CalibscopeError('E_BAD_ARGUMENT', 'loadTokenizer needs a model folder path');
  }
  let st;
  try {
    st = await fs.stat(modelDir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new CalibscopeError('E_NOT_FOUND', `${modelDir}: model folder not found`, { path: modelDir });
    }
    throw new CalibscopeError('E_IO', `${modelDir}: ${(err as Error).message}`, { path: modelDir, errno: code });
  }
  if (!st.isDirectory()) throw new CalibscopeError('E_BAD_ARGUMENT', `${modelDir}: not a folder`, { path: modelDir });

  const dirs = await tokenizerDirs(modelDir);
  // Each file is taken from the first folder that has it (module folder first, then the root).
  const find = async (name: string): Promise<string | undefined> => {
    for (const d of dirs) if (await exists(path.join(d, name))) return path.join(d, name);
    return undefined;
  };
  const jsonOf = async (name: string): Promise<{ file: string; json?: Json }> => {
    const file = (await find(name)) ?? path.join(dirs[0]!, name);
    return { file, json: await readJson(file) };
  };

  const config = await jsonOf('config.json');
  const sbert = await jsonOf('sentence_bert_config.json');
  const tokCfg = await jsonOf('tokenizer_config.json');
  const ctx: Context = {
    tokenizerConfig: tokCfg.json,
    tokenizerConfigFile: tokCfg.file,
    limits: {
      configMax: optLength(config.file, config.json, 'max_position_embeddings'),
      sentenceMax: optLength(sbert.file, sbert.json, 'max_seq_length'),
    },
    lowercaseInput: sbert.json ? optBool(sbert.file, sbert.json, 'do_lower_case', false) : false,
  };

  const tjFile = await find('tokenizer.json');
  if (tjFile !== undefined) {
    const tj = await readJson(tjFile);
    if (tj !== undefined) return new BertTokenizer(specFromTokenizerJson(tjFile, tj, ctx));
  }
  const vocabFile = await find('vocab.txt');
  if (vocabFile !== undefined) {
    const text = await readText(vocabFile);
    if (text !== undefined) {
      const vocab = parseVocabTxt(text);
      if (vocab.size === 0) throw bad(vocabFile, 'is empty');
      return new BertTokenizer(specFromVocabTxt(vocabFile, vocab, ctx));
    }
  }
  throw new CalibscopeError('E_NOT_FOUND', `${modelDir}: no tokenizer.json or vocab.txt found`, {
    path: modelDir,
    looked_in: dirs,
  });
}
