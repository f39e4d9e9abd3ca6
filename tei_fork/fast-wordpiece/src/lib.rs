//! BERT WordPiece tokenization to ids, without the offset bookkeeping of the `tokenizers` crate.
//!
//! TEI tokenizes every input with `tokenizers::Tokenizer::encode`, which keeps an alignment for
//! every character through normalization and pre-tokenization and builds a token string and
//! offsets for every piece. For a 128-token English text that costs about 0.5 ms on one core,
//! which bounds a GPU router's throughput (each tokenization worker gives about 2,000 such texts
//! a second) and adds to every request's latency. TEI only needs the ids and type ids.
//!
//! [`FastWordPiece`] is built from a loaded tokenizer when it is exactly the classic BERT
//! pipeline (BertNormalizer, BertPreTokenizer, WordPiece, a post-processor that puts fixed
//! tokens around the sequence, no padding) and gives the same ids and type ids as
//! `Tokenizer::encode` for every text it accepts. It declines (returns `None`) where it would
//! have to guess: a text that contains an added token's content, or an input longer than the
//! tokenizer's char limit. The caller then uses `Tokenizer::encode` as before. Every character
//! class is decided by the functions the `tokenizers` crate itself calls.

use aho_corasick::AhoCorasick;
use std::collections::HashMap;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::{
    Model, ModelWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer,
    TruncationDirection,
};
use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;

/// Why a tokenizer has no fast path (the caller logs it and keeps `Tokenizer::encode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsupported {}

/// Truncation as TEI asks for it: the longest-first strategy, stride 0, one sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    pub max_length: usize,
    pub direction: TruncationDirection,
}

/// The ids and type ids of one text, special tokens included where asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FastEncoding {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

// Classes of an ASCII character, computed once with the same predicates as for the others.
const REMOVED: u8 = 1;
const SPACE: u8 = 2;
const PUNCT: u8 = 4;

/// Special tokens (id, type id) before and after a sequence, and the sequence's type id.
type Template = (Vec<(u32, u32)>, Vec<(u32, u32)>, u32);

/// A BERT WordPiece tokenizer that produces only ids; see the crate documentation.
#[derive(Debug, Clone)]
pub struct FastWordPiece {
    clean_text: bool,
    handle_chinese_chars: bool,
    strip_accents: bool,
    lowercase: bool,
    ascii: [u8; 128],
    /// the whole vocabulary: what a word's first piece is looked up in
    words: HashMap<String, u32>,
    /// entries that start with the continuing-subword prefix, without it: a later piece
    continuations: HashMap<String, u32>,
    unk_id: u32,
    max_input_chars_per_word: usize,
    prefix: Vec<(u32, u32)>,
    suffix: Vec<(u32, u32)>,
    sequence_type_id: u32,
    /// the sequence's type id without special tokens (a template still sets it)
    plain_type_id: u32,
    /// added tokens' contents as written, and as normalized (for those matched after normalizing)
    added_raw: Option<AhoCorasick>,
    added_normalized: Option<AhoCorasick>,
}

/// tokenizers' BertNormalizer `is_whitespace`
fn is_bert_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

/// tokenizers' BertNormalizer `is_control`
fn is_bert_control(c: char) -> bool {
    match c {
        '\t' | '\n' | '\r' => false,
        _ => c.is_other(),
    }
}

/// tokenizers' BertNormalizer `is_chinese_char`
fn is_chinese_char(c: char) -> bool {
    matches!(
        c as usize,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

/// tokenizers' BertPreTokenizer `is_bert_punc`
fn is_bert_punc(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

impl FastWordPiece {
    /// The fast path for `tokenizer`, or why it has none.
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Result<Self, Unsupported> {
        let unsupported = |why: String| Err(Unsupported(why));
        let normalizer: BertNormalizer = match tokenizer.get_normalizer() {
            Some(NormalizerWrapper::BertNormalizer(n)) => *n,
            other => {
                return unsupported(format!("the normalizer is not BertNormalizer ({other:?})"))
            }
        };
        match tokenizer.get_pre_tokenizer() {
            Some(PreTokenizerWrapper::BertPreTokenizer(_)) => {}
            other => {
                return unsupported(format!(
                    "the pre-tokenizer is not BertPreTokenizer ({other:?})"
                ))
            }
        }
        let model = match tokenizer.get_model() {
            ModelWrapper::WordPiece(model) => model,
            _ => return unsupported("the model is not WordPiece".to_string()),
        };
        match tokenizer.get_post_processor() {
            None
            | Some(PostProcessorWrapper::Bert(_))
            | Some(PostProcessorWrapper::Roberta(_))
            | Some(PostProcessorWrapper::Template(_)) => {}
            Some(other) => {
                return unsupported(format!("the post-processor is not a template ({other:?})"))
            }
        }
        if tokenizer.get_padding().is_some() {
            return unsupported("the tokenizer pads its encodings".to_string());
        }
        let words = model.get_vocab();
        let Some(&unk_id) = words.get(&model.unk_token) else {
            return unsupported(format!(
                "the unknown token {:?} is not in the vocabulary",
                model.unk_token
            ));
        };
        let continuations = words
            .iter()
            .filter_map(|(token, &id)| {
                token
                    .strip_prefix(model.continuing_subword_prefix.as_str())
                    .map(|rest| (rest.to_string(), id))
            })
            .collect();
        let mut fast = Self {
            clean_text: normalizer.clean_text,
            handle_chinese_chars: normalizer.handle_chinese_chars,
            strip_accents: normalizer.strip_accents.unwrap_or(normalizer.lowercase),
            lowercase: normalizer.lowercase,
            ascii: [0; 128],
            words,
            continuations,
            unk_id,
            max_input_chars_per_word: model.max_input_chars_per_word,
            prefix: Vec::new(),
            suffix: Vec::new(),
            sequence_type_id: 0,
            plain_type_id: 0,
            added_raw: None,
            added_normalized: None,
        };
        for (byte, class) in fast.ascii.iter_mut().enumerate() {
            let c = char::from(byte as u8);
            if fast.clean_text && (byte == 0 || is_bert_control(c)) {
                *class |= REMOVED;
            }
            if is_bert_whitespace(c) {
                *class |= SPACE;
            }
            if is_bert_punc(c) {
                *class |= PUNCT;
            }
        }
        fast.added_tokens(tokenizer)?;
        fast.probe_template(tokenizer)?;
        Ok(fast)
    }

    fn added_tokens(&mut self, tokenizer: &Tokenizer) -> Result<(), Unsupported> {
        let added = tokenizer.get_added_tokens_decoder();
        let raw: Vec<&str> = added
            .values()
            .map(|t| t.content.as_str())
            .filter(|c| !c.is_empty())
            .collect();
        // tokenizers matches a `normalized` added token in the normalized text, by its
        // normalized content; the others only in the text as given
        let mut normalized: Vec<String> = Vec::new();
        for token in added
            .values()
            .filter(|t| t.normalized && !t.content.is_empty())
        {
            let mut text = String::new();
            self.normalize(&token.content, &mut text);
            if !text.is_empty() {
                normalized.push(text);
            }
            normalized.push(token.content.clone());
        }
        let build = |patterns: &[&str]| -> Result<Option<AhoCorasick>, Unsupported> {
            if patterns.is_empty() {
                return Ok(None);
            }
            AhoCorasick::new(patterns)
                .map(Some)
                .map_err(|e| Unsupported(format!("added tokens: {e}")))
        };
        self.added_raw = build(&raw)?;
        let normalized: Vec<&str> = normalized.iter().map(String::as_str).collect();
        self.added_normalized = build(&normalized)?;
        Ok(())
    }

    /// The special tokens the post-processor puts around one sequence, read from what the
    /// tokenizer does to two probes (rather than from each post-processor's own settings).
    fn probe_template(&mut self, tokenizer: &Tokenizer) -> Result<(), Unsupported> {
        // The probes are a few tokens long: only a tokenizer.json truncation shorter than them
        // needs an untruncated copy (a clone of the whole vocabulary, at start-up).
        let copy;
        let plain = match tokenizer.get_truncation() {
            Some(truncation) if truncation.max_length < 16 => {
                let mut untruncated = tokenizer.clone();
                untruncated
                    .with_truncation(None)
                    .map_err(|e| Unsupported(format!("probe: {e}")))?;
                copy = untruncated;
                &copy
            }
            _ => tokenizer,
        };
        let mut found: Option<Template> = None;
        let mut plain_type_ids = Vec::new();
        for probe in ["a", "a b c"] {
            let encode = |special: bool| {
                plain
                    .encode(probe, special)
                    .map_err(|e| Unsupported(format!("probe {probe:?}: {e}")))
            };
            let (bare, full) = (encode(false)?, encode(true)?);
            plain_type_ids.extend_from_slice(bare.get_type_ids());
            let (bare, ids, types) = (bare.get_ids(), full.get_ids(), full.get_type_ids());
            if ids.len() < bare.len() {
                return Err(Unsupported(
                    "the post-processor drops tokens of the sequence".to_string(),
                ));
            }
            let added = ids.len() - bare.len();
            let fits: Vec<_> = (0..=added)
                .filter(|&k| {
                    ids[k..k + bare.len()] == *bare
                        && types[k..k + bare.len()].iter().all(|&t| t == types[k])
                })
                .map(|k| {
                    let pairs = |r: std::ops::Range<usize>| -> Vec<(u32, u32)> {
                        r.map(|i| (ids[i], types[i])).collect()
                    };
                    let middle = types.get(k).copied().unwrap_or(0);
                    (pairs(0..k), pairs(k + bare.len()..ids.len()), middle)
                })
                .collect();
            let [template] = fits.as_slice() else {
                return Err(Unsupported(format!(
                    "the post-processor's special tokens cannot be told apart from {probe:?}"
                )));
            };
            match &found {
                Some(previous) if previous != template => {
                    return Err(Unsupported(
                        "the post-processor does not put the same tokens around every sequence"
                            .to_string(),
                    ))
                }
                _ => found = Some(template.clone()),
            }
        }
        let (prefix, suffix, sequence_type_id) = found.unwrap_or_default();
        let plain_type_id = plain_type_ids.first().copied().unwrap_or(0);
        if plain_type_ids.iter().any(|&t| t != plain_type_id) {
            return Err(Unsupported(
                "the sequence's type ids differ between its tokens".to_string(),
            ));
        }
        self.plain_type_id = plain_type_id;
        self.prefix = prefix;
        self.suffix = suffix;
        self.sequence_type_id = sequence_type_id;
        Ok(())
    }

    /// How many special tokens one sequence gets.
    pub fn added_tokens_count(&self) -> usize {
        self.prefix.len() + self.suffix.len()
    }

    /// The ids and type ids `Tokenizer::encode(text, add_special_tokens)` gives with
    /// `truncation` set (longest first, stride 0), or `None` where this path declines.
    pub fn encode(
        &self,
        text: &str,
        add_special_tokens: bool,
        truncation: Option<Truncation>,
    ) -> Option<FastEncoding> {
        let mut out = FastEncoding::default();
        let mut scratch = String::new();
        self.encode_into(text, add_special_tokens, truncation, &mut out, &mut scratch)
            .then_some(out)
    }

    /// [`FastWordPiece::encode`] into buffers the caller keeps (cleared first); false where it declines.
    pub fn encode_into(
        &self,
        text: &str,
        add_special_tokens: bool,
        truncation: Option<Truncation>,
        out: &mut FastEncoding,
        normalized: &mut String,
    ) -> bool {
        out.ids.clear();
        out.type_ids.clear();
        if self
            .added_raw
            .as_ref()
            .is_some_and(|added| added.is_match(text))
        {
            return false;
        }
        self.normalize(text, normalized);
        if self
            .added_normalized
            .as_ref()
            .is_some_and(|added| added.is_match(normalized.as_str()))
        {
            return false;
        }
        let specials = if add_special_tokens {
            self.added_tokens_count()
        } else {
            0
        };
        out.ids.extend(
            self.prefix
                .iter()
                .filter(|_| add_special_tokens)
                .map(|&(id, _)| id),
        );
        let start = out.ids.len();
        self.split_and_look_up(normalized, &mut out.ids);
        if let Some(truncation) = truncation {
            if truncation.max_length <= specials {
                return false; // tokenizers' own edge cases: leave them to it
            }
            let limit = truncation.max_length - specials;
            let length = out.ids.len() - start;
            if length > limit {
                match truncation.direction {
                    TruncationDirection::Right => out.ids.truncate(start + limit),
                    TruncationDirection::Left => {
                        out.ids.drain(start..start + (length - limit));
                    }
                }
            }
        }
        let sequence = out.ids.len() - start;
        if add_special_tokens {
            out.ids.extend(self.suffix.iter().map(|&(id, _)| id));
            out.type_ids.extend(self.prefix.iter().map(|&(_, t)| t));
            out.type_ids
                .extend(std::iter::repeat_n(self.sequence_type_id, sequence));
            out.type_ids.extend(self.suffix.iter().map(|&(_, t)| t));
        } else {
            out.type_ids.resize(sequence, self.plain_type_id);
        }
        true
    }

    /// BertNormalizer, step by step as tokenizers applies it: clean, pad CJK, NFD without
    /// nonspacing marks, lowercase.
    fn normalize(&self, text: &str, out: &mut String) {
        out.clear();
        out.reserve(text.len() + 8);
        if text.is_ascii() {
            // NFD leaves ASCII as it is and no ASCII character is CJK or a nonspacing mark
            for &byte in text.as_bytes() {
                let class = self.ascii[byte as usize];
                if class & REMOVED != 0 {
                    continue;
                }
                let c = if self.clean_text && class & SPACE != 0 {
                    ' '
                } else if self.lowercase {
                    char::from(byte.to_ascii_lowercase())
                } else {
                    char::from(byte)
                };
                out.push(c);
            }
            return;
        }
        let mut cleaned = String::with_capacity(text.len() + 8);
        for c in text.chars() {
            if self.clean_text && (c as u32 == 0 || c as u32 == 0xfffd || is_bert_control(c)) {
                continue;
            }
            let c = if self.clean_text && is_bert_whitespace(c) {
                ' '
            } else {
                c
            };
            if self.handle_chinese_chars && is_chinese_char(c) {
                cleaned.push(' ');
                cleaned.push(c);
                cleaned.push(' ');
            } else {
                cleaned.push(c);
            }
        }
        if self.strip_accents {
            let stripped = cleaned
                .as_str()
                .nfd()
                .map(|(c, _)| c)
                .filter(|c| !c.is_mark_nonspacing());
            self.push_cased(stripped, out);
        } else {
            self.push_cased(cleaned.chars(), out);
        }
    }

    fn push_cased(&self, chars: impl Iterator<Item = char>, out: &mut String) {
        if self.lowercase {
            out.extend(chars.flat_map(char::to_lowercase));
        } else {
            out.extend(chars);
        }
    }

    /// BertPreTokenizer (split on whitespace, isolate punctuation), then WordPiece per word.
    fn split_and_look_up(&self, normalized: &str, ids: &mut Vec<u32>) {
        let mut word_start: Option<usize> = None;
        for (i, c) in normalized.char_indices() {
            let punct = if c.is_ascii() {
                self.ascii[c as usize] & PUNCT != 0
            } else {
                is_bert_punc(c)
            };
            if punct || c.is_whitespace() {
                if let Some(start) = word_start.take() {
                    self.word_piece(&normalized[start..i], ids);
                }
                if punct {
                    self.word_piece(&normalized[i..i + c.len_utf8()], ids);
                }
            } else if word_start.is_none() {
                word_start = Some(i);
            }
        }
        if let Some(start) = word_start {
            self.word_piece(&normalized[start..], ids);
        }
    }

    /// tokenizers' WordPiece::tokenize: greedy longest match first; a word with a piece that
    /// matches nothing, or longer than max_input_chars_per_word characters, is one unknown token.
    fn word_piece(&self, word: &str, ids: &mut Vec<u32>) {
        let chars = if word.is_ascii() {
            word.len()
        } else {
            word.chars().count()
        };
        if chars > self.max_input_chars_per_word {
            ids.push(self.unk_id);
            return;
        }
        let first = ids.len();
        let mut start = 0;
        while start < word.len() {
            let table = if start == 0 {
                &self.words
            } else {
                &self.continuations
            };
            let mut end = word.len();
            let mut found = None;
            while start < end {
                let piece = &word[start..end];
                if let Some(&id) = table.get(piece) {
                    found = Some(id);
                    break;
                }
                end -= piece.chars().next_back().map_or(1, char::len_utf8);
            }
            match found {
                Some(id) => {
                    ids.push(id);
                    start = end;
                }
                None => {
                    ids.truncate(first);
                    ids.push(self.unk_id);
                    return;
                }
            }
        }
    }
}
