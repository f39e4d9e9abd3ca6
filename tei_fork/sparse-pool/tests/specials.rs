//! Which token ids token-weight pooling drops, read from tokenizer files.

use tei_sparse_pool::{special_token_ids, SparseError};

// A cut-down BERT tokenizer.json: WordPiece vocabulary as a map, specials as added tokens.
const BERT_TOKENIZER: &str = r#"{
  "added_tokens": [
    {"id": 0, "content": "[PAD]", "special": true},
    {"id": 100, "content": "[UNK]", "special": true},
    {"id": 101, "content": "[CLS]", "special": true},
    {"id": 102, "content": "[SEP]", "special": true},
    {"id": 103, "content": "[MASK]", "special": true}
  ],
  "model": {"type": "WordPiece", "vocab": {"[PAD]": 0, "hello": 7592, "[UNK]": 100}}
}"#;

const BERT_CONFIG: &str = r#"{"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
  "unk_token": "[UNK]", "mask_token": "[MASK]", "model_max_length": 512}"#;

#[test]
fn bert_names_resolve_and_mask_is_kept() {
    let ids = special_token_ids(BERT_TOKENIZER, Some(BERT_CONFIG)).unwrap();
    assert_eq!(ids, vec![0, 100, 101, 102]);
}

#[test]
fn without_config_every_special_added_token_is_dropped() {
    let ids = special_token_ids(BERT_TOKENIZER, None).unwrap();
    assert_eq!(ids, vec![0, 100, 101, 102, 103]);
    // A config that names none of the keys falls back the same way.
    let ids = special_token_ids(BERT_TOKENIZER, Some(r#"{"model_max_length": 8}"#)).unwrap();
    assert_eq!(ids, vec![0, 100, 101, 102, 103]);
}

#[test]
fn xlm_roberta_objects_and_unigram_vocab() {
    // Unigram vocabularies are lists whose index is the id; <unk> is found there only.
    let tokenizer = r#"{
      "added_tokens": [
        {"id": 0, "content": "<s>", "special": true},
        {"id": 1, "content": "<pad>", "special": true},
        {"id": 2, "content": "</s>", "special": true},
        {"id": 250001, "content": "<mask>", "special": true}
      ],
      "model": {"type": "Unigram", "vocab": [["<s>", 0.0], ["<pad>", 0.0], ["</s>", 0.0],
                                             ["<unk>", 0.0], ["▁hello", -9.1]]}
    }"#;
    let config = r#"{
      "bos_token": "<s>", "cls_token": {"__type": "AddedToken", "content": "<s>"},
      "eos_token": "</s>", "sep_token": "</s>", "pad_token": "<pad>",
      "unk_token": {"content": "<unk>", "special": true}, "mask_token": "<mask>"
    }"#;
    assert_eq!(
        special_token_ids(tokenizer, Some(config)).unwrap(),
        vec![0, 1, 2, 3]
    );
}

#[test]
fn unknown_names_are_skipped() {
    let config = r#"{"cls_token": "[CLS]", "unk_token": "<nope>", "pad_token": null}"#;
    assert_eq!(
        special_token_ids(BERT_TOKENIZER, Some(config)).unwrap(),
        vec![101]
    );
}

#[test]
fn invalid_json_is_an_error() {
    assert!(matches!(
        special_token_ids("{not json", None),
        Err(SparseError::Tokenizer(msg)) if msg.starts_with("tokenizer.json is not valid JSON")
    ));
    assert!(matches!(
        special_token_ids(BERT_TOKENIZER, Some("[")),
        Err(SparseError::Tokenizer(msg)) if msg.starts_with("tokenizer_config.json is not valid JSON")
    ));
}
