use std::fmt::Write;

/// Everything that can go wrong; each message says what the model or batch lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SparseError {
    #[error(
        "the ONNX model has no sparse output: looked for {}, its outputs are {}; export the masked-LM \
         `logits` (SPLADE) or a per-token weight output, or name the output to use",
        quoted(wanted),
        quoted(available)
    )]
    MissingOutput {
        wanted: Vec<String>,
        available: Vec<String>,
    },

    #[error(
        "sparse head output `{name}` has shape {}; expected [batch, seq, vocab={vocab_size}] (SPLADE) \
         or [batch, seq, 1] (token weights)",
        dims(shape)
    )]
    UnsupportedShape {
        name: String,
        shape: Vec<i64>,
        vocab_size: usize,
    },

    #[error(
        "sparse head output `{name}` has shape {} with a dynamic last dimension, so it cannot be told \
         apart: SPLADE needs [batch, seq, vocab={vocab_size}], token weights [batch, seq, 1]; \
         re-export with a fixed last dimension",
        dims(shape)
    )]
    DynamicLastDim {
        name: String,
        shape: Vec<i64>,
        vocab_size: usize,
    },

    #[error(
        "sparse head output `{name}` has shape {} but config.json has no `vocab_size`, which is \
         needed to size the sparse vector (token weights are gathered by input token id)",
        dims(shape)
    )]
    MissingVocab { name: String, shape: Vec<i64> },

    #[error(
        "vocab_size {vocab_size} is not usable for sparse pooling; check `vocab_size` in config.json"
    )]
    InvalidVocab { vocab_size: usize },

    #[error(
        "input id {id} (sequence {sequence}, position {position}) is outside the vocabulary \
         (vocab_size={vocab_size}); the tokenizer and the model's vocab_size disagree"
    )]
    TokenOutOfVocab {
        id: i64,
        sequence: usize,
        position: usize,
        vocab_size: usize,
    },

    #[error("{what} has shape {got:?}, expected {expected}")]
    ShapeMismatch {
        what: &'static str,
        got: Vec<usize>,
        expected: String,
    },

    #[error("cannot read special tokens: {0}")]
    Tokenizer(String),
}

fn quoted(names: &[String]) -> String {
    let inner: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    format!("[{}]", inner.join(", "))
}

// ONNX marks dynamic dimensions with negative values; `?` reads better in a log line.
fn dims(shape: &[i64]) -> String {
    let mut out = String::from("[");
    for (i, d) in shape.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        if *d < 0 {
            out.push('?');
        } else {
            let _ = write!(out, "{d}");
        }
    }
    out.push(']');
    out
}
