//! The fast path against `tokenizers::Tokenizer::encode`, id for id, on BERT tokenizers built
//! here with every normalizer setting and post-processor kind, over hand-picked and generated
//! texts that exercise each character class; and on real tokenizer.json files where
//! PYTEI_TOKENIZER_JSON names them (colon-separated), as the upstream tier does.

use std::collections::HashMap;
use tei_fast_wordpiece::{FastWordPiece, Truncation};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, PaddingParams, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

/// Generated texts per check: fewer in debug builds (nox's cargo tier), where tokenizers is slow.
const GENERATED: usize = if cfg!(debug_assertions) { 500 } else { 1500 };

const SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

fn vocab() -> HashMap<String, u32> {
    let mut entries: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    for c in ('a'..='z').chain('0'..='9') {
        entries.push(c.to_string());
        entries.push(format!("##{c}"));
    }
    for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¿¡«»—…„".chars() {
        entries.push(c.to_string());
    }
    for piece in [
        "é", "ß", "σ", "ς", "ω", "ı", "中", "文", "日", "本", "한", "국", "어", "😀", "ǆ", "fi",
    ] {
        entries.push(piece.to_string());
        entries.push(format!("##{piece}"));
    }
    for word in [
        "the",
        "hello",
        "world",
        "un",
        "##able",
        "##ing",
        "play",
        "##ed",
        "mask",
        "cls",
        "##s",
        "retrieval",
        "hybrid",
        "emb",
        "##ed",
        "##ding",
        "##s",
        "naive",
        "cafe",
        "strasse",
        "##",
        "####",
        "##x",
    ] {
        entries.push(word.to_string());
    }
    let mut vocab = HashMap::new();
    for entry in entries {
        let next = vocab.len() as u32;
        vocab.entry(entry).or_insert(next);
    }
    vocab
}

#[derive(Clone, Copy, Debug)]
enum Post {
    None,
    Template,
    TemplateTypeOne,
    Bert,
    Roberta,
}

fn bert(normalizer: BertNormalizer, post: Post, max_chars: usize) -> Tokenizer {
    let vocab = vocab();
    let id = |t: &str| vocab[t];
    let (cls, sep) = (id("[CLS]"), id("[SEP]"));
    let model = WordPiece::builder()
        .vocab(vocab.clone())
        .unk_token("[UNK]".to_string())
        .max_input_chars_per_word(max_chars)
        .build()
        .unwrap();
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_normalizer(Some(normalizer));
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    let specials = vec![("[CLS]".to_string(), cls), ("[SEP]".to_string(), sep)];
    match post {
        Post::None => {}
        Post::Template => {
            tokenizer.with_post_processor(Some(
                TemplateProcessing::builder()
                    .try_single("[CLS] $A [SEP]")
                    .unwrap()
                    .special_tokens(specials)
                    .build()
                    .unwrap(),
            ));
        }
        Post::TemplateTypeOne => {
            tokenizer.with_post_processor(Some(
                TemplateProcessing::builder()
                    .try_single("[CLS]:0 $A:1 [SEP]:1 [SEP]:0")
                    .unwrap()
                    .special_tokens(specials)
                    .build()
                    .unwrap(),
            ));
        }
        Post::Bert => {
            tokenizer.with_post_processor(Some(BertProcessing::new(
                ("[SEP]".to_string(), sep),
                ("[CLS]".to_string(), cls),
            )));
        }
        Post::Roberta => {
            tokenizer.with_post_processor(Some(RobertaProcessing::new(
                ("[SEP]".to_string(), sep),
                ("[CLS]".to_string(), cls),
            )));
        }
    }
    let added: Vec<AddedToken> = SPECIALS
        .iter()
        .map(|s| AddedToken::from(*s, true))
        .collect();
    tokenizer.add_special_tokens(&added);
    // a normalized, non-special added token: matched after normalization
    tokenizer.add_tokens(&[AddedToken::from("Zürich", false).normalized(true)]);
    tokenizer
}

/// What TEI calls: `with_truncation(params).encode(text, true)`.
fn reference(
    tokenizer: &mut Tokenizer,
    text: &str,
    special: bool,
    truncation: Option<Truncation>,
) -> Option<(Vec<u32>, Vec<u32>)> {
    let params = truncation.map(|t| TruncationParams {
        direction: t.direction,
        max_length: t.max_length,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
    });
    tokenizer.with_truncation(params).ok()?;
    let encoding = tokenizer.encode(text, special).ok()?;
    Some((
        encoding.get_ids().to_vec(),
        encoding.get_type_ids().to_vec(),
    ))
}

const PIECES: &[&str] = &[
    "a",
    "b",
    "z",
    "Q",
    "X",
    "the",
    "The",
    "HELLO",
    "world",
    "unplayable",
    "playing",
    "played",
    "0",
    "42",
    "3.14",
    "x",
    "xyz",
    "naïve",
    "café",
    "cafe\u{301}",
    "Straße",
    "STRASSE",
    "ﬁ",
    "ı",
    "İstanbul",
    "ΣΟΦΟΣ",
    "σοφός",
    "Ω",
    "中文",
    "日本語",
    "한국어",
    "カタカナ",
    "😀",
    "👍🏽",
    "مرحبا",
    "हिन्दी",
    "ǅ",
    "Ⅻ",
    "①",
    "¿",
    "¡",
    "«",
    "»",
    "—",
    "…",
    "„",
    "!",
    "?",
    ".",
    ",",
    "-",
    "'",
    "\"",
    "(",
    ")",
    "[",
    "]",
    "#",
    "##",
    "###a",
    "@",
    "$",
    "%",
    "^",
    "&",
    "*",
    "~",
    "`",
    "|",
    "\\",
    "/",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\u{0B}",
    "\u{0C}",
    "\u{1C}",
    "\0",
    "\u{1}",
    "\u{7F}",
    "\u{85}",
    "\u{A0}",
    "\u{1680}",
    "\u{2000}",
    "\u{2028}",
    "\u{3000}",
    "\u{200B}",
    "\u{FEFF}",
    "\u{FFFD}",
    "\u{E000}",
    "\u{AD}",
    "\u{0301}",
    "\u{0903}",
    "\u{2F800}",
    "\u{20000}",
    "\u{F900}",
    "[MASK]",
    "[mask]",
    "[ MASK ]",
    "[CLS]",
    "[SEP",
    "Zürich",
    "ZURICH",
    "zurich",
    "zu\u{308}rich",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn corpus(count: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng(seed);
    let mut texts: Vec<String> = PIECES.iter().map(|p| p.to_string()).collect();
    texts.push("x".repeat(101));
    texts.push("ab".repeat(60));
    texts.push("hello world, the unplayable cafe\u{301}! 中文 [MASK]".to_string());
    for _ in 0..count {
        let parts = 1 + rng.below(24);
        let mut text = String::new();
        for _ in 0..parts {
            text.push_str(PIECES[rng.below(PIECES.len())]);
            if rng.below(3) > 0 {
                text.push(' ');
            }
        }
        texts.push(text);
    }
    texts
}

fn contains_added(text: &str) -> bool {
    let folded = text.to_lowercase();
    SPECIALS.iter().any(|s| text.contains(s))
        || ["zürich", "zurich", "zu\u{308}rich"]
            .iter()
            .any(|s| folded.contains(s))
}

fn truncations() -> Vec<Option<Truncation>> {
    let t = |max_length, direction| {
        Some(Truncation {
            max_length,
            direction,
        })
    };
    vec![
        None,
        t(512, TruncationDirection::Right),
        t(8, TruncationDirection::Right),
        t(8, TruncationDirection::Left),
        t(3, TruncationDirection::Right),
        t(3, TruncationDirection::Left),
    ]
}

/// Every text the fast path accepts gives tokenizers' ids and type ids; it accepts every text
/// without an added token's content. Returns how many encodings were compared.
fn check(tokenizer: &mut Tokenizer, texts: &[String], what: &str) -> usize {
    let fast = FastWordPiece::from_tokenizer(tokenizer)
        .unwrap_or_else(|why| panic!("{what}: no fast path: {why}"));
    let mut compared = 0;
    for text in texts {
        for special in [true, false] {
            for truncation in truncations() {
                let expected = reference(tokenizer, text, special, truncation);
                match fast.encode(text, special, truncation) {
                    Some(got) => {
                        let expected = expected.unwrap_or_else(|| {
                            panic!("{what}: tokenizers failed on {text:?}, the fast path did not")
                        });
                        assert_eq!(
                            (got.ids, got.type_ids),
                            expected,
                            "{what}: {text:?} special={special} truncation={truncation:?}"
                        );
                        compared += 1;
                    }
                    None => {
                        let tight = truncation
                            .is_some_and(|t| special && t.max_length <= fast.added_tokens_count());
                        assert!(
                            contains_added(text) || tight,
                            "{what}: the fast path declined {text:?} (special={special}, {truncation:?})"
                        );
                    }
                }
            }
        }
    }
    compared
}

#[test]
fn every_normalizer_setting_and_post_processor_agrees_with_tokenizers() {
    let texts = corpus(GENERATED, 0x5eed);
    let mut compared = 0;
    for (clean, chinese, strip, lower) in [
        (true, true, None, true),
        (true, true, None, false),
        (true, true, Some(false), true),
        (true, true, Some(true), false),
        (false, false, None, true),
        (true, false, None, true),
        (false, true, Some(true), true),
    ] {
        for post in [
            Post::Template,
            Post::TemplateTypeOne,
            Post::Bert,
            Post::Roberta,
            Post::None,
        ] {
            let normalizer = BertNormalizer::new(clean, chinese, strip, lower);
            let mut tokenizer = bert(normalizer, post, 100);
            let what =
                format!("clean={clean} chinese={chinese} strip={strip:?} lower={lower} {post:?}");
            compared += check(&mut tokenizer, &texts, &what);
        }
    }
    // 35 tokenizers x 2 x 6 truncations x the texts, less the declined ones (about 250 a text)
    assert!(
        compared > 200 * GENERATED,
        "only {compared} encodings compared"
    );
}

#[test]
fn long_words_become_one_unknown_token_at_the_same_limit() {
    let mut tokenizer = bert(BertNormalizer::default(), Post::Template, 5);
    let texts: Vec<String> = [
        "abcde",
        "abcdef",
        "ééééé",
        "éééééé",
        "中中中中中中",
        "hello world",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    check(&mut tokenizer, &texts, "max 5 chars per word");
    let fast = FastWordPiece::from_tokenizer(&tokenizer).unwrap();
    let unk = vocab()["[UNK]"];
    assert_eq!(fast.encode("abcdef", false, None).unwrap().ids, vec![unk]);
}

#[test]
fn declines_texts_with_added_tokens_and_tokenizers_outside_the_bert_pipeline() {
    let tokenizer = bert(BertNormalizer::default(), Post::Template, 100);
    let fast = FastWordPiece::from_tokenizer(&tokenizer).unwrap();
    assert!(fast.encode("a [MASK] b", true, None).is_none());
    assert!(
        fast.encode("ZÜRICH", true, None).is_none(),
        "normalized added token"
    );
    assert!(fast.encode("a mask b", true, None).is_some());
    assert_eq!(fast.added_tokens_count(), 2);

    let mut whitespace = tokenizer.clone();
    whitespace.with_pre_tokenizer(Some(Whitespace {}));
    let why = FastWordPiece::from_tokenizer(&whitespace).unwrap_err();
    assert!(why.0.contains("BertPreTokenizer"), "{why}");

    let mut padded = tokenizer.clone();
    padded.with_padding(Some(PaddingParams::default()));
    let why = FastWordPiece::from_tokenizer(&padded).unwrap_err();
    assert!(why.0.contains("pads"), "{why}");

    let mut no_normalizer = tokenizer.clone();
    no_normalizer.with_normalizer(None::<BertNormalizer>);
    assert!(FastWordPiece::from_tokenizer(&no_normalizer).is_err());
}

#[test]
fn type_ids_follow_the_template() {
    let tokenizer = bert(BertNormalizer::default(), Post::TemplateTypeOne, 100);
    let fast = FastWordPiece::from_tokenizer(&tokenizer).unwrap();
    let got = fast.encode("hello world", true, None).unwrap();
    assert_eq!(got.type_ids, vec![0, 1, 1, 1, 0]);
    assert_eq!(fast.added_tokens_count(), 3);
}

/// Real tokenizers (the upstream tier passes the catalogue's): every one that is a BERT
/// WordPiece pipeline must get a fast path and agree on the generated corpus.
#[test]
fn real_tokenizers_agree_where_given() {
    let Ok(paths) = std::env::var("PYTEI_TOKENIZER_JSON") else {
        eprintln!("PYTEI_TOKENIZER_JSON not set: no real tokenizer checked");
        return;
    };
    let texts = corpus(2 * GENERATED, 0xb1e5);
    for path in paths.split(':').filter(|p| !p.is_empty()) {
        let mut tokenizer = Tokenizer::from_file(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        tokenizer.with_padding(None);
        let compared = check(&mut tokenizer, &texts, path);
        eprintln!("{path}: {compared} encodings agree");
    }
}
