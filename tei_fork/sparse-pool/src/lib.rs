//! Sparse pooling of ONNX model outputs for TEI's `ort` backend.
//!
//! Two kinds of model produce sparse (vocabulary-sized) vectors:
//!
//! * **SPLADE**: a masked-LM export whose output (usually `logits`) is `[batch, seq, vocab]`.
//!   The vector is the max over the real (unmasked) positions of `ln(1 + max(x, 0))`.
//! * **Token weights** (bge-m3 style): an export with a one-unit head per token, `[batch, seq, 1]`
//!   or `[batch, seq]`. The weight of a token is `max(x, 0)`; weights are gathered by *input
//!   token id*, keeping the largest weight per id, and special tokens are dropped.
//!
//! The backend decides which kind it has at load time, from the output's static shape
//! ([`detect_head`]), and builds a [`SparsePooler`] once; per batch it hands the raw output,
//! `input_ids` and `attention_mask` to [`SparsePooler::pool`] and gets `[batch, vocab]` back.
//! Nothing here panics on bad input: every mismatch is a [`SparseError`] whose message is fit
//! for the router's log.
//!
//! ```
//! use ndarray::{array, ArrayD, IxDyn};
//! use tei_sparse_pool::{select_output, SparseHead, SparsePooler};
//!
//! // Load time: the session's outputs and the chosen output's static shape (-1 = dynamic).
//! let name = select_output(["last_hidden_state", "sparse_embeddings"], None)?;
//! let pooler = SparsePooler::from_output(&name, &[-1, -1, 1], Some(6), &[0, 1, 2])?;
//! assert_eq!(pooler.head(), SparseHead::TokenWeights);
//!
//! // Per batch: raw output, input ids and attention mask (right padding here).
//! let output = ArrayD::from_shape_vec(IxDyn(&[1, 4, 1]), vec![0.9_f32, 0.4, 0.7, 3.0])?;
//! let ids = array![[0_i64, 4, 4, 1]];
//! let mask = array![[1_i64, 1, 1, 0]];
//! let pooled = pooler.pool(output.view(), ids.view(), mask.view())?;
//! assert_eq!(pooled.row(0).to_vec(), vec![0.0, 0.0, 0.0, 0.0, 0.7, 0.0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod pool;
mod specials;

pub use error::SparseError;
pub use pool::{splade_pool, squeeze_token_weights, to_sparse, token_weight_pool};
pub use specials::{special_token_ids, SPECIAL_TOKEN_KEYS};

use ndarray::{Array2, ArrayView2, ArrayViewD, Ix3};

/// Output names tried, in order, when the user does not name one: optimum's MLM export calls
/// its output `logits`; bge-m3 exports use `sparse_embeddings` or `token_weights`.
pub const DEFAULT_OUTPUT_NAMES: [&str; 3] = ["logits", "sparse_embeddings", "token_weights"];

/// Which sparse head an ONNX output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparseHead {
    /// `[batch, seq, vocab]` masked-LM logits.
    Splade,
    /// `[batch, seq, 1]` or `[batch, seq]` per-token weights.
    TokenWeights,
}

impl std::fmt::Display for SparseHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SparseHead::Splade => f.write_str("SPLADE logits"),
            SparseHead::TokenWeights => f.write_str("token weights"),
        }
    }
}

/// The output to read: `configured` if given (it must exist), else the first of
/// [`DEFAULT_OUTPUT_NAMES`] that the session has.
pub fn select_output<'a, I>(available: I, configured: Option<&str>) -> Result<String, SparseError>
where
    I: IntoIterator<Item = &'a str>,
{
    let available: Vec<&str> = available.into_iter().collect();
    let wanted: Vec<&str> = match configured {
        Some(name) => vec![name],
        None => DEFAULT_OUTPUT_NAMES.to_vec(),
    };
    wanted
        .iter()
        .find(|name| available.contains(name))
        .map(|name| name.to_string())
        .ok_or_else(|| SparseError::MissingOutput {
            wanted: wanted.iter().map(|s| s.to_string()).collect(),
            available: available.iter().map(|s| s.to_string()).collect(),
        })
}

/// Decide the head from an output's shape as ONNX metadata gives it (`-1` or any negative value
/// marks a dynamic dimension, as in `ort`'s `Shape`).
///
/// Only the last dimension matters: it must be static and equal `vocab_size` (SPLADE) or 1
/// (token weights). A rank-2 output is token weights only when its last (sequence) dimension is
/// dynamic; a fixed one means an already pooled or classifier output.
pub fn detect_head(
    output_name: &str,
    shape: &[i64],
    vocab_size: usize,
) -> Result<SparseHead, SparseError> {
    if vocab_size < 2 {
        // With vocab 1 a SPLADE output and a token-weight output look the same.
        return Err(SparseError::InvalidVocab { vocab_size });
    }
    let unsupported = || SparseError::UnsupportedShape {
        name: output_name.to_string(),
        shape: shape.to_vec(),
        vocab_size,
    };
    match shape {
        [_, _, last] if *last < 0 => Err(SparseError::DynamicLastDim {
            name: output_name.to_string(),
            shape: shape.to_vec(),
            vocab_size,
        }),
        [_, _, last] if *last as u64 == vocab_size as u64 => Ok(SparseHead::Splade),
        [_, _, 1] => Ok(SparseHead::TokenWeights),
        [_, seq] if *seq < 0 => Ok(SparseHead::TokenWeights),
        _ => Err(unsupported()),
    }
}

/// A head fixed at load time, ready to pool batches.
#[derive(Debug, Clone)]
pub struct SparsePooler {
    head: SparseHead,
    vocab_size: usize,
    // One flag per vocabulary id: cheaper per token than a set lookup.
    special: Vec<bool>,
}

impl SparsePooler {
    /// Build a pooler. `special_ids` are dropped by token-weight pooling (SPLADE ignores them,
    /// as candle does); ids at or beyond `vocab_size` are ignored, since no valid input can
    /// carry them.
    pub fn new(
        head: SparseHead,
        vocab_size: usize,
        special_ids: &[u32],
    ) -> Result<Self, SparseError> {
        if vocab_size < 2 {
            return Err(SparseError::InvalidVocab { vocab_size });
        }
        let mut special = vec![false; vocab_size];
        for &id in special_ids {
            if let Some(flag) = special.get_mut(id as usize) {
                *flag = true;
            }
        }
        Ok(Self {
            head,
            vocab_size,
            special,
        })
    }

    /// [`detect_head`] then [`SparsePooler::new`]: everything a backend checks at load time.
    ///
    /// `vocab_size` is the model's (config.json). Without it, a `[batch, seq, V]` output with a
    /// static `V > 1` is taken as SPLADE over `V` ids; token weights cannot be sized without it
    /// ([`SparseError::MissingVocab`]).
    pub fn from_output(
        output_name: &str,
        shape: &[i64],
        vocab_size: Option<usize>,
        special_ids: &[u32],
    ) -> Result<Self, SparseError> {
        let vocab_size = match vocab_size {
            Some(vocab_size) => vocab_size,
            None => match shape {
                [_, _, last] if *last > 1 => *last as usize,
                _ => {
                    return Err(SparseError::MissingVocab {
                        name: output_name.to_string(),
                        shape: shape.to_vec(),
                    })
                }
            },
        };
        let head = detect_head(output_name, shape, vocab_size)?;
        Self::new(head, vocab_size, special_ids)
    }

    pub fn head(&self) -> SparseHead {
        self.head
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Pool one batch of raw model output into `[batch, vocab_size]`.
    ///
    /// `output` is the array as extracted from the session (any rank); its shape is checked
    /// against the head and against `input_ids`/`attention_mask` (`[batch, seq]`, padding on
    /// either side, mask 0 on padding).
    pub fn pool(
        &self,
        output: ArrayViewD<f32>,
        input_ids: ArrayView2<i64>,
        attention_mask: ArrayView2<i64>,
    ) -> Result<Array2<f32>, SparseError> {
        match self.head {
            SparseHead::Splade => {
                let shape = output.shape().to_vec();
                let logits = output.into_dimensionality::<Ix3>().map_err(|_| {
                    SparseError::ShapeMismatch {
                        what: "SPLADE logits",
                        got: shape.clone(),
                        expected: format!("[batch, seq, vocab={}]", self.vocab_size),
                    }
                })?;
                if logits.shape()[2] != self.vocab_size {
                    return Err(SparseError::ShapeMismatch {
                        what: "SPLADE logits",
                        got: shape,
                        expected: format!("[batch, seq, vocab={}]", self.vocab_size),
                    });
                }
                splade_pool(logits, attention_mask)
            }
            SparseHead::TokenWeights => {
                let weights = squeeze_token_weights(output)?;
                pool::token_weight_pool_flags(
                    weights,
                    input_ids,
                    attention_mask,
                    &self.special,
                    self.vocab_size,
                )
            }
        }
    }
}
