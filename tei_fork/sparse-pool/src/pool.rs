use ndarray::{Array2, ArrayView1, ArrayView2, ArrayView3, ArrayViewD, Axis, Ix2, Ix3, Zip};

use crate::SparseError;

fn check_inputs(
    what: &'static str,
    got: &[usize],
    input_ids: Option<ArrayView2<i64>>,
    attention_mask: ArrayView2<i64>,
) -> Result<(), SparseError> {
    let (batch, seq) = attention_mask.dim();
    if let Some(ids) = input_ids {
        if ids.dim() != (batch, seq) {
            return Err(SparseError::ShapeMismatch {
                what: "input_ids",
                got: ids.shape().to_vec(),
                expected: format!("[{batch}, {seq}] like attention_mask"),
            });
        }
    }
    if got.len() < 2 || got[0] != batch || got[1] != seq {
        return Err(SparseError::ShapeMismatch {
            what,
            got: got.to_vec(),
            expected: format!("[{batch}, {seq}, ...] like attention_mask"),
        });
    }
    Ok(())
}

/// SPLADE pooling: per sequence, the max over unmasked positions of `ln(1 + max(x, 0))`.
///
/// Masked positions (mask 0) never contribute, wherever the padding is. A sequence with no
/// unmasked position gives a zero row. NaN logits are ignored.
pub fn splade_pool(
    logits: ArrayView3<f32>,
    attention_mask: ArrayView2<i64>,
) -> Result<Array2<f32>, SparseError> {
    check_inputs("SPLADE logits", logits.shape(), None, attention_mask)?;
    let (batch, _, vocab) = logits.dim();
    // Starting at 0 is the relu; ln_1p is monotonic, so taking the max first and the log once
    // per column gives the same numbers with seq-times fewer logarithms (B*L*V can be ~1e8).
    let mut out = Array2::<f32>::zeros((batch, vocab));
    for (b, mut row) in out.axis_iter_mut(Axis(0)).enumerate() {
        for (l, &m) in attention_mask.row(b).iter().enumerate() {
            if m == 0 {
                continue;
            }
            Zip::from(&mut row)
                .and(logits.slice(ndarray::s![b, l, ..]))
                .for_each(|acc, &x| {
                    if x > *acc {
                        *acc = x;
                    }
                });
        }
        row.mapv_inplace(f32::ln_1p);
    }
    Ok(out)
}

/// View a token-weight output as `[batch, seq]`: accepts `[batch, seq, 1]` and `[batch, seq]`.
pub fn squeeze_token_weights(output: ArrayViewD<f32>) -> Result<ArrayView2<f32>, SparseError> {
    let shape = output.shape().to_vec();
    let mismatch = || SparseError::ShapeMismatch {
        what: "token weights",
        got: shape.clone(),
        expected: "[batch, seq, 1] or [batch, seq]".to_string(),
    };
    match output.ndim() {
        2 => output.into_dimensionality::<Ix2>().map_err(|_| mismatch()),
        3 if shape[2] == 1 => Ok(output
            .into_dimensionality::<Ix3>()
            .map_err(|_| mismatch())?
            .index_axis_move(Axis(2), 0)),
        _ => Err(mismatch()),
    }
}

/// Token-weight pooling (bge-m3 lexical weights) into `[batch, vocab_size]`.
///
/// For each unmasked position: `w = max(weight, 0)`; special ids are skipped; otherwise
/// `out[id] = max(out[id], w)`. An id outside `0..vocab_size` at an unmasked position is an
/// error, whatever its weight. NaN weights count as 0.
pub fn token_weight_pool(
    weights: ArrayView2<f32>,
    input_ids: ArrayView2<i64>,
    attention_mask: ArrayView2<i64>,
    special_ids: &[u32],
    vocab_size: usize,
) -> Result<Array2<f32>, SparseError> {
    if vocab_size == 0 {
        return Err(SparseError::InvalidVocab { vocab_size });
    }
    let mut special = vec![false; vocab_size];
    for &id in special_ids {
        if let Some(flag) = special.get_mut(id as usize) {
            *flag = true;
        }
    }
    token_weight_pool_flags(weights, input_ids, attention_mask, &special, vocab_size)
}

pub(crate) fn token_weight_pool_flags(
    weights: ArrayView2<f32>,
    input_ids: ArrayView2<i64>,
    attention_mask: ArrayView2<i64>,
    special: &[bool],
    vocab_size: usize,
) -> Result<Array2<f32>, SparseError> {
    check_inputs(
        "token weights",
        weights.shape(),
        Some(input_ids),
        attention_mask,
    )?;
    let (batch, seq) = attention_mask.dim();
    let mut out = Array2::<f32>::zeros((batch, vocab_size));
    for b in 0..batch {
        for l in 0..seq {
            if attention_mask[[b, l]] == 0 {
                continue;
            }
            let raw = input_ids[[b, l]];
            let id = usize::try_from(raw)
                .ok()
                .filter(|&id| id < vocab_size)
                .ok_or(SparseError::TokenOutOfVocab {
                    id: raw,
                    sequence: b,
                    position: l,
                    vocab_size,
                })?;
            let w = weights[[b, l]];
            // The relu: a weight that is not positive (or NaN) adds nothing.
            if w.is_nan() || w <= 0.0 || special[id] {
                continue;
            }
            let slot = &mut out[[b, id]];
            if w > *slot {
                *slot = w;
            }
        }
    }
    Ok(out)
}

/// The non-zero entries of a pooled row, as TEI's `/embed_sparse` returns them.
pub fn to_sparse(row: ArrayView1<f32>) -> (Vec<u32>, Vec<f32>) {
    row.iter()
        .enumerate()
        .filter(|(_, &v)| v != 0.0)
        .map(|(i, &v)| (i as u32, v))
        .unzip()
}
