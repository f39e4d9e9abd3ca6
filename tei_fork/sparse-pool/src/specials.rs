use serde_json::Value;

use crate::SparseError;

/// `tokenizer_config.json` keys naming the tokens that token-weight pooling drops. bge-m3 drops
/// CLS, EOS, PAD and UNK; BOS and SEP are the same tokens in its XLM-R tokenizer and the BERT
/// names of them elsewhere. MASK and other added tokens are kept, as bge-m3 keeps them.
pub const SPECIAL_TOKEN_KEYS: [&str; 6] = [
    "bos_token",
    "cls_token",
    "eos_token",
    "sep_token",
    "pad_token",
    "unk_token",
];

/// The ids of the special tokens to drop, sorted and without duplicates.
///
/// Tokens named under [`SPECIAL_TOKEN_KEYS`] in `tokenizer_config.json` (a string or an
/// `AddedToken` object with `content`) are looked up in `tokenizer.json`: first its
/// `added_tokens`, then the model vocabulary (a map for WordPiece/BPE/WordLevel, a list for
/// Unigram). Names that resolve to nothing are skipped. When there is no config, or it names
/// none that resolve, every `added_tokens` entry marked `special` is used instead.
pub fn special_token_ids(
    tokenizer_json: &str,
    tokenizer_config_json: Option<&str>,
) -> Result<Vec<u32>, SparseError> {
    let tokenizer: Value = serde_json::from_str(tokenizer_json)
        .map_err(|e| SparseError::Tokenizer(format!("tokenizer.json is not valid JSON: {e}")))?;
    let mut ids: Vec<u32> = Vec::new();
    if let Some(text) = tokenizer_config_json {
        let config: Value = serde_json::from_str(text).map_err(|e| {
            SparseError::Tokenizer(format!("tokenizer_config.json is not valid JSON: {e}"))
        })?;
        for key in SPECIAL_TOKEN_KEYS {
            let content = match config.get(key) {
                Some(Value::String(s)) => Some(s.as_str()),
                Some(Value::Object(o)) => o.get("content").and_then(Value::as_str),
                _ => None,
            };
            if let Some(id) = content.and_then(|c| token_id(&tokenizer, c)) {
                ids.push(id);
            }
        }
    }
    if ids.is_empty() {
        ids = added_tokens(&tokenizer)
            .filter(|t| t.get("special").and_then(Value::as_bool) == Some(true))
            .filter_map(|t| t.get("id").and_then(Value::as_u64))
            .filter_map(|id| u32::try_from(id).ok())
            .collect();
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

fn added_tokens(tokenizer: &Value) -> impl Iterator<Item = &Value> {
    tokenizer
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn token_id(tokenizer: &Value, content: &str) -> Option<u32> {
    let added = added_tokens(tokenizer)
        .find(|t| t.get("content").and_then(Value::as_str) == Some(content))
        .and_then(|t| t.get("id").and_then(Value::as_u64));
    let id = added.or_else(|| match tokenizer.pointer("/model/vocab") {
        Some(Value::Object(map)) => map.get(content).and_then(Value::as_u64),
        Some(Value::Array(list)) => list
            .iter()
            .position(|entry| entry.get(0).and_then(Value::as_str) == Some(content))
            .map(|i| i as u64),
        _ => None,
    })?;
    u32::try_from(id).ok()
}
