//! Hand-checked pooling cases: every expected value below is worked out in the comments.

use ndarray::{array, Array3, ArrayD, IxDyn};
use tei_sparse_pool::{
    splade_pool, squeeze_token_weights, to_sparse, token_weight_pool, SparseError, SparseHead,
    SparsePooler,
};

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

fn assert_row(got: ndarray::ArrayView1<f32>, want: &[f32]) {
    assert_eq!(got.len(), want.len(), "row length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(close(*g, *w), "column {i}: got {g}, want {w}");
    }
}

#[test]
fn splade_takes_max_over_positions_of_log1p_relu() {
    // Column maxima over the three positions: 2, -1 (relu -> 0), 0.5, 3.
    let logits = array![[
        [1.0_f32, -2.0, 0.0, 3.0],
        [2.0, -1.0, 0.5, 0.0],
        [0.0, -3.0, 0.25, 1.5],
    ]];
    let mask = array![[1_i64, 1, 1]];
    let out = splade_pool(logits.view(), mask.view()).unwrap();
    assert_eq!(out.dim(), (1, 4));
    assert_row(out.row(0), &[3.0_f32.ln(), 0.0, 1.5_f32.ln(), 4.0_f32.ln()]);
    let (idx, val) = to_sparse(out.row(0));
    assert_eq!(idx, vec![0, 2, 3]);
    assert!(close(val[2], 4.0_f32.ln()));
}

#[test]
fn splade_ignores_right_and_left_padding() {
    // Padding positions carry 100 everywhere: any leak shows as ln(101).
    let logits = array![
        [[1.0_f32, 0.0], [0.0, 2.0], [100.0, 100.0]],
        [[100.0, 100.0], [3.0, -1.0], [0.5, 0.0]],
    ];
    let mask = array![[1_i64, 1, 0], [0, 1, 1]];
    let out = splade_pool(logits.view(), mask.view()).unwrap();
    assert_row(out.row(0), &[2.0_f32.ln(), 3.0_f32.ln()]);
    assert_row(out.row(1), &[4.0_f32.ln(), 0.0]);
}

#[test]
fn splade_fully_masked_or_negative_rows_are_empty() {
    let logits = array![[[5.0_f32, 5.0], [5.0, 5.0]], [[-1.0, -0.5], [-2.0, 0.0]]];
    let mask = array![[0_i64, 0], [1, 1]];
    let out = splade_pool(logits.view(), mask.view()).unwrap();
    for row in out.rows() {
        let (idx, val) = to_sparse(row);
        assert!(idx.is_empty() && val.is_empty(), "{row:?}");
    }
}

#[test]
fn splade_ignores_nan() {
    let logits = array![[[f32::NAN, 1.0], [2.0, f32::NAN]]];
    let out = splade_pool(logits.view(), array![[1_i64, 1]].view()).unwrap();
    assert_row(out.row(0), &[3.0_f32.ln(), 2.0_f32.ln()]);
}

#[test]
fn splade_rejects_mask_of_another_shape() {
    let logits = Array3::<f32>::zeros((2, 4, 3));
    let err = splade_pool(logits.view(), array![[1_i64, 1, 1], [1, 1, 1]].view()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "SPLADE logits has shape [2, 4, 3], expected [2, 3, ...] like attention_mask"
    );
}

const CLS: i64 = 101;
const SEP: i64 = 102;
const PAD: i64 = 0;
const SPECIALS: [u32; 4] = [0, 100, 101, 102];

#[test]
fn token_weights_relu_specials_and_duplicates() {
    // id 7 appears with 0.5 then 0.8 -> 0.8; id 8 with -0.3 -> dropped; id 9 with 0.2 then 0.1
    // -> 0.2 (an earlier larger weight is kept); CLS/SEP carry big weights but are special.
    let ids = array![[CLS, 7, 8, 7, 9, 9, SEP]];
    let weights = array![[0.9_f32, 0.5, -0.3, 0.8, 0.2, 0.1, 0.7]];
    let mask = array![[1_i64, 1, 1, 1, 1, 1, 1]];
    let out = token_weight_pool(weights.view(), ids.view(), mask.view(), &SPECIALS, 200).unwrap();
    assert_eq!(out.dim(), (1, 200));
    let (idx, val) = to_sparse(out.row(0));
    assert_eq!(idx, vec![7, 9]);
    assert_eq!(val, vec![0.8, 0.2]);
}

#[test]
fn token_weights_ignore_padding_on_either_side() {
    // Padding carries large weights and even ids that are out of range or not special: none of
    // it may matter.
    let ids = array![[CLS, 5, SEP, 150, -1], [PAD, 9999, CLS, 6, SEP]];
    let weights = array![[0.0_f32, 0.4, 0.0, 9.0, 9.0], [9.0, 9.0, 0.0, 0.6, 0.0]];
    let mask = array![[1_i64, 1, 1, 0, 0], [0, 0, 1, 1, 1]];
    let out = token_weight_pool(weights.view(), ids.view(), mask.view(), &SPECIALS, 200).unwrap();
    assert_eq!(to_sparse(out.row(0)), (vec![5], vec![0.4]));
    assert_eq!(to_sparse(out.row(1)), (vec![6], vec![0.6]));
}

#[test]
fn token_weights_all_zero_is_empty() {
    let ids = array![[CLS, 5, 6, SEP]];
    let weights = array![[0.0_f32, 0.0, -0.0, f32::NAN]];
    let out = token_weight_pool(
        weights.view(),
        ids.view(),
        array![[1_i64, 1, 1, 1]].view(),
        &SPECIALS,
        200,
    )
    .unwrap();
    assert!(out.iter().all(|&v| v == 0.0));
    assert_eq!(to_sparse(out.row(0)), (vec![], vec![]));
}

#[test]
fn token_weights_vocab_bounds_are_errors() {
    let mask = array![[1_i64, 1, 1]];
    let weights = array![[0.1_f32, 0.0, 0.2]];
    // The last valid id is 199: fine.
    let ok = token_weight_pool(
        weights.view(),
        array![[CLS, 199, SEP]].view(),
        mask.view(),
        &SPECIALS,
        200,
    )
    .unwrap();
    assert_eq!(ok[[0, 199]], 0.0);
    // 200 is out of range even with a zero weight.
    let err = token_weight_pool(
        weights.view(),
        array![[CLS, 200, SEP]].view(),
        mask.view(),
        &SPECIALS,
        200,
    )
    .unwrap_err();
    assert_eq!(
        err,
        SparseError::TokenOutOfVocab {
            id: 200,
            sequence: 0,
            position: 1,
            vocab_size: 200
        }
    );
    assert!(err.to_string().starts_with(
        "input id 200 (sequence 0, position 1) is outside the vocabulary (vocab_size=200)"
    ));
    let err = token_weight_pool(
        weights.view(),
        array![[-5, 4, SEP]].view(),
        mask.view(),
        &SPECIALS,
        200,
    )
    .unwrap_err();
    assert!(matches!(err, SparseError::TokenOutOfVocab { id: -5, .. }));
}

#[test]
fn token_weights_special_ids_beyond_vocab_are_ignored() {
    let out = token_weight_pool(
        array![[0.3_f32, 0.4]].view(),
        array![[1_i64, 2]].view(),
        array![[1_i64, 1]].view(),
        &[2, 5000],
        10,
    )
    .unwrap();
    assert_eq!(to_sparse(out.row(0)), (vec![1], vec![0.3]));
}

#[test]
fn token_weights_shapes_must_agree() {
    let err = token_weight_pool(
        array![[0.3_f32, 0.4]].view(),
        array![[1_i64, 2, 3]].view(),
        array![[1_i64, 1, 1]].view(),
        &[],
        10,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        SparseError::ShapeMismatch {
            what: "token weights",
            ..
        }
    ));
    let err = token_weight_pool(
        array![[0.3_f32, 0.4]].view(),
        array![[1_i64, 2]].view(),
        array![[1_i64], [1]].view(),
        &[],
        10,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        SparseError::ShapeMismatch {
            what: "input_ids",
            ..
        }
    ));
}

#[test]
fn squeeze_accepts_trailing_unit_or_rank_two() {
    let three = ArrayD::from_shape_vec(IxDyn(&[1, 3, 1]), vec![0.1_f32, 0.2, 0.3]).unwrap();
    assert_eq!(
        squeeze_token_weights(three.view()).unwrap(),
        array![[0.1_f32, 0.2, 0.3]]
    );
    let two = ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![0.1_f32, 0.2, 0.3]).unwrap();
    assert_eq!(squeeze_token_weights(two.view()).unwrap().dim(), (1, 3));
    let wide = ArrayD::<f32>::zeros(IxDyn(&[1, 3, 2]));
    assert!(matches!(
        squeeze_token_weights(wide.view()),
        Err(SparseError::ShapeMismatch { got, .. }) if got == vec![1, 3, 2]
    ));
}

#[test]
fn pooler_dispatches_on_head_and_checks_runtime_shapes() {
    let ids = array![[CLS, 3, SEP], [CLS, 4, PAD]];
    let mask = array![[1_i64, 1, 1], [1, 1, 0]];

    let splade = SparsePooler::new(SparseHead::Splade, 2, &SPECIALS).unwrap();
    let logits = ArrayD::from_shape_vec(
        IxDyn(&[2, 3, 2]),
        vec![
            1.0_f32, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 50.0, 50.0,
        ],
    )
    .unwrap();
    let out = splade.pool(logits.view(), ids.view(), mask.view()).unwrap();
    // SPLADE keeps special positions (candle does too): CLS's logit 1.0 counts.
    assert_row(out.row(0), &[2.0_f32.ln(), 3.0_f32.ln()]);
    assert_row(out.row(1), &[0.0, 0.0]);
    let wrong_vocab = ArrayD::<f32>::zeros(IxDyn(&[2, 3, 5]));
    let err = splade
        .pool(wrong_vocab.view(), ids.view(), mask.view())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "SPLADE logits has shape [2, 3, 5], expected [batch, seq, vocab=2]"
    );

    let weights = SparsePooler::new(SparseHead::TokenWeights, 200, &SPECIALS).unwrap();
    let out_w = ArrayD::from_shape_vec(IxDyn(&[2, 3, 1]), vec![0.5_f32, 0.25, 0.5, 0.5, 0.75, 0.5])
        .unwrap();
    let out = weights.pool(out_w.view(), ids.view(), mask.view()).unwrap();
    assert_eq!(out.dim(), (2, 200));
    assert_eq!(to_sparse(out.row(0)), (vec![3], vec![0.25]));
    assert_eq!(to_sparse(out.row(1)), (vec![4], vec![0.75]));
}
