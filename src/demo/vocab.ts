// The demo models' tokenizer: a BERT WordPiece vocabulary made by calibscope — the special
// tokens, every character the query set uses (and its "##" continuation), common suffixes, then
// frequent English words and the query set's own words — padded with [unusedN] to the model's
// vocabulary size; written as tokenizer.json (Hugging Face tokenizers), vocab.txt and
// tokenizer_config.json.
import fs from 'node:fs';
import path from 'node:path';
import { bertWords, isBertPunctuation, isChineseChar } from '../semantic/tokenizer.js';
import { CalibscopeError } from '../util/errors.js';

export const SPECIAL_TOKENS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] as const;

/** The semantic query set (assets/semantic-queries.txt): its words go into every demo vocabulary. */
export const QUERY_SET = path.resolve(__dirname, '..', '..', '..', 'assets', 'semantic-queries.txt');

// Frequent English words (roughly by frequency), then words of the fields the query set covers.
const COMMON_WORDS = `
the of and to a in is it you that he was for on are with as i his they be at one have this from or had by
not word but what some we can out other were all there when up use your how said an each she which do their
time if will way about many then them write would like so these her long make thing see him two has look more
day could go come did number sound no most people my over know water than call first who may down side been now
find any new work part take get place made live where after back little only round man year came show every good
me give our under name very through just form sentence great think say help low line differ turn cause much mean
before move right boy old too same tell does set three want air well also play small end put home read hand port
large spell add even land here must big high such follow act why ask men change went light kind off need house
picture try us again animal point mother world near build self earth father head stand own page should country
found answer school grow study still learn plant cover food sun four between state keep eye never last let thought
city tree cross farm hard start might story saw far sea draw left late run don't while press close night real life
few north open seem together next white children begin got walk example ease paper group always music those both
mark often letter until mile river car feet care second book carry took science eat room friend began idea fish
mountain stop once base hear horse cut sure watch color face wood main enough plain girl usual young ready above
ever red list though feel talk bird soon body dog family direct pose leave song measure door product black short
numeral class wind question happen complete ship area half rock order fire south problem piece told knew pass
since top whole king space heard best hour better true during hundred five remember step early hold west ground
interest reach fast verb sing listen six table travel less morning ten simple several vowel toward war lay against
pattern slow center love person money serve appear road map rain rule govern pull cold notice voice unit power town
fine certain fly fall lead cry dark machine note wait plan figure star box noun field rest correct able pound done
beauty drive stood contain front teach week final gave green oh quick develop ocean warm free minute strong special
mind behind clear tail produce fact street inch multiply nothing course stay wheel full force blue object decide
surface deep moon island foot system busy test record boat common gold possible plane stead dry wonder laugh
thousand ago ran check game shape equate miss brought heat snow tire bring yes distant fill east paint language
among grand ball yet wave drop heart am present heavy dance engine position arm wide sail material size vary settle
speak weight general ice matter circle pair include divide syllable felt perhaps pick sudden count square reason
length represent art subject region energy hunt probable bed brother egg ride cell believe fraction forest sit race
window store summer train sleep prove lone leg exercise wall catch mount wish sky board joy winter sat written wild
instrument kept glass grass cow job edge sign visit past soft fun bright gas weather month million bear finish happy
hope flower clothe strange gone jump baby eight village meet root buy raise solve metal whether push seven paragraph
third shall held hair describe cook floor either result burn hill safe cat century consider type law bit coast copy
phrase silent tall sand soil roll temperature finger industry value fight lie beat excite natural view sense ear
else quite broke case middle kill son lake moment scale loud spring observe child straight consonant nation
dictionary milk speed method organ pay age section dress cloud surprise quiet stone tiny climb cool design poor lot
experiment bottom key iron single stick flat twenty skin smile crease hole trade melody trip office receive row
mouth exact symbol die least trouble shout except wrote seed tone join suggest clean break lady yard rise bad blow
oil blood touch grew cent mix team wire cost lost brown wear garden equal sent choose fell fit flow fair bank collect
save control decimal gentle woman captain practice separate difficult doctor please protect noon whose locate ring
character insect caught period indicate radio spoke atom human history effect electric expect crop modern element
hit student corner party supply bone rail imagine provide agree thus capital won't chair danger fruit rich thick
soldier process operate guess necessary sharp wing create neighbor wash bat rather crowd corn compare poem string
bell depend meat rub tube famous dollar stream fear sight thin triangle planet hurry chief colony clock mine tie
enter major fresh search send yellow gun allow print dead spot desert suit current lift rose continue block chart
hat sell success company subtract event particular deal swim term opposite wife shoe shoulder spread arrange camp
invent cotton born determine quart nine truck noise level chance gather shop stretch throw shine property column
molecule select wrong gray repeat require broad prepare salt nose plural anger claim continent oxygen sugar death
pretty skill women season solution magnet silver thank branch match suffix especially fig afraid huge sister steel
discuss forward similar guide experience score apple bought led pitch coat mass card band rope slip win dream
evening condition feed tool total basic smell valley nor double seat arrive master track parent shore division
sheet substance favor connect post spend chord fat glad original share station dad bread charge proper bar offer
segment slave duck instant market degree populate chick dear enemy reply drink occur support speech nature range
steam motion path liquid log meant quotient teeth shell neck
data model models training train trained inference weight weights layer layers network networks neural learning
deep machine embedding embeddings vector vectors token tokens tokenizer attention transformer transformers encoder
decoder batch loss gradient gradients optimizer accuracy precision recall dataset datasets feature features label
labels classification regression retrieval query queries document documents index database server client memory
cpu gpu kernel kernels tensor tensors matrix float integer bits bytes quantization quantize quantized calibration
scale scales block blocks format formats error errors mean median variance distribution sample samples random
python code function functions file files install version api json string array list type types class object
linux windows docker cloud storage cache thread threads process performance latency throughput speed benchmark
fine tune tuning evaluate evaluation metric metrics semantic similarity cosine distance sentence sentences text
search engine ranking rank model's language languages english
`;

// Continuation pieces that let unseen words split into a stem and a common ending.
const SUFFIXES = [
  's', 'es', 'ed', 'ing', 'er', 'ers', 'est', 'ly', 'y', 'al', 'ic', 'ical', 'ion', 'ions', 'tion', 'tions', 'ation',
  'ment', 'ments', 'ness', 'able', 'ible', 'ity', 'ize', 'ized', 'ise', 'ist', 'ism', 'ful', 'less', 'ous', 'ive', 'ian',
  'en', 'or', 'ors', 'ant', 'ent', 'ence', 'ance', 'ship', 'hood', 'ward', 'wise', 'like',
];

export interface Vocabulary {
  /** Tokens by id. */
  tokens: string[];
  /** How many tokens are real (the rest are [unusedN] padding). */
  used: number;
}

let querySetText: string | undefined;

function readQuerySet(): string {
  if (querySetText === undefined) {
    try {
      querySetText = fs.readFileSync(QUERY_SET, 'utf8');
    } catch (err) {
      throw new CalibscopeError('E_NOT_FOUND', `${QUERY_SET}: the semantic query set is missing (${(err as Error).message})`, { file: QUERY_SET });
    }
  }
  return querySetText;
}

/**
 * The demo vocabulary of exactly `size` tokens. Ids: the special tokens, single characters, their
 * "##" forms, suffixes, then words (common English first, then the query set's by frequency),
 * then [unused0], [unused1], ... A vocabulary too small for all words keeps the first ones.
 */
export function buildVocabulary(size: number, queryText: string = readQuerySet()): Vocabulary {
  const seen = new Set<string>();
  const tokens: string[] = [];
  const add = (t: string) => {
    if (t.length === 0 || seen.has(t)) return;
    seen.add(t);
    tokens.push(t);
  };
  SPECIAL_TOKENS.forEach(add);

  const queryWords = bertWords(queryText);
  const chars = new Set<string>();
  for (let cp = 33; cp < 127; cp++) chars.add(String.fromCodePoint(cp).toLowerCase());
  for (const w of queryWords) for (const ch of w) chars.add(ch);
  const charList = [...chars].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
  charList.forEach(add);
  // Punctuation is always split off, so it never continues a word.
  charList.filter((c) => !isBertPunctuation(c) && !isChineseChar(c.codePointAt(0)!)).forEach((c) => add(`##${c}`));
  SUFFIXES.forEach((s) => add(`##${s}`));

  for (const w of bertWords(COMMON_WORDS)) add(w);
  const counts = new Map<string, number>();
  for (const w of queryWords) counts.set(w, (counts.get(w) ?? 0) + 1);
  [...counts.entries()]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .forEach(([w]) => add(w));

  if (size < SPECIAL_TOKENS.length) {
    throw new CalibscopeError('E_BAD_ARGUMENT', `a vocabulary of ${size} tokens cannot hold the ${SPECIAL_TOKENS.length} special tokens`);
  }
  tokens.length = Math.min(tokens.length, size);
  const used = tokens.length;
  for (let i = 0; tokens.length < size; i++) add(`[unused${i}]`);
  return { tokens, used };
}

/** tokenizer.json in the Hugging Face tokenizers format, for a lower-casing BERT WordPiece model. */
export function tokenizerJson(vocab: Vocabulary): string {
  const id = (t: string) => vocab.tokens.indexOf(t);
  const added = SPECIAL_TOKENS.map((t) => ({
    id: id(t),
    content: t,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  const special = (t: string) => ({ id: t, ids: [id(t)], tokens: [t] });
  const head = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: '[CLS]', type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '[SEP]', type_id: 0 } },
        { Sequence: { id: 'B', type_id: 1 } },
        { SpecialToken: { id: '[SEP]', type_id: 1 } },
      ],
      special_tokens: { '[CLS]': special('[CLS]'), '[SEP]': special('[SEP]') },
    },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
  };
  // The vocab object is written by hand: JSON.stringify of an object would move integer-like
  // tokens ("2", "10") to the front, and the file should list tokens in id order.
  const entries = vocab.tokens.map((t, i) => `${JSON.stringify(t)}:${i}`).join(',');
  const model =
    `{"type":"WordPiece","unk_token":"[UNK]","continuing_subword_prefix":"##","max_input_chars_per_word":100,` + `"vocab":{${entries}}}`;
  const text = JSON.stringify(head);
  return `${text.slice(0, -1)},"model":${model}}`;
}

export function vocabTxt(vocab: Vocabulary): string {
  return `${vocab.tokens.join('\n')}\n`;
}

export function tokenizerConfigJson(maxLength: number): Record<string, unknown> {
  return {
    clean_up_tokenization_spaces: true,
    cls_token: '[CLS]',
    do_lower_case: true,
    mask_token: '[MASK]',
    model_max_length: maxLength,
    pad_token: '[PAD]',
    sep_token: '[SEP]',
    strip_accents: null,
    tokenize_chinese_chars: true,
    tokenizer_class: 'BertTokenizer',
    unk_token: '[UNK]',
  };
}

export const SPECIAL_TOKENS_MAP = {
  cls_token: '[CLS]',
  mask_token: '[MASK]',
  pad_token: '[PAD]',
  sep_token: '[SEP]',
  unk_token: '[UNK]',
};
