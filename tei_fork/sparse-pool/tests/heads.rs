//! Load-time decisions: which output to read and which head it is.

use tei_sparse_pool::{detect_head, select_output, SparseError, SparseHead, SparsePooler};

const V: usize = 30522;

#[test]
fn detects_splade_and_token_weights_from_the_last_dimension() {
    assert_eq!(
        detect_head("logits", &[-1, -1, 30522], V),
        Ok(SparseHead::Splade)
    );
    assert_eq!(
        detect_head("logits", &[8, 512, 30522], V),
        Ok(SparseHead::Splade)
    );
    assert_eq!(
        detect_head("sparse_embeddings", &[-1, -1, 1], V),
        Ok(SparseHead::TokenWeights)
    );
    assert_eq!(
        detect_head("token_weights", &[-1, -1], V),
        Ok(SparseHead::TokenWeights)
    );
    // A fixed batch or sequence does not change the decision.
    assert_eq!(
        detect_head("token_weights", &[1, 16, 1], V),
        Ok(SparseHead::TokenWeights)
    );
}

#[test]
fn bad_shapes_name_the_output_and_what_is_expected() {
    let err = detect_head("logits", &[-1, -1, 384], V).unwrap_err();
    assert_eq!(
        err.to_string(),
        "sparse head output `logits` has shape [?, ?, 384]; expected [batch, seq, vocab=30522] \
         (SPLADE) or [batch, seq, 1] (token weights)"
    );
    // Classifier logits and already pooled vectors have a fixed last dimension on rank 2.
    for shape in [&[-1_i64, 2][..], &[-1, 30522], &[-1], &[-1, -1, 1, 1], &[]] {
        assert!(
            matches!(
                detect_head("logits", shape, V),
                Err(SparseError::UnsupportedShape { .. })
            ),
            "{shape:?}"
        );
    }
}

#[test]
fn a_dynamic_last_dimension_cannot_be_decided() {
    let err = detect_head("logits", &[-1, -1, -1], V).unwrap_err();
    assert!(matches!(err, SparseError::DynamicLastDim { .. }));
    assert!(err.to_string().starts_with(
        "sparse head output `logits` has shape [?, ?, ?] with a dynamic last dimension"
    ));
}

#[test]
fn vocab_must_tell_the_heads_apart() {
    for vocab_size in [0, 1] {
        assert_eq!(
            detect_head("logits", &[-1, -1, 1], vocab_size),
            Err(SparseError::InvalidVocab { vocab_size })
        );
        assert!(SparsePooler::new(SparseHead::Splade, vocab_size, &[]).is_err());
    }
}

#[test]
fn output_selection_prefers_configured_then_defaults_in_order() {
    let names = ["last_hidden_state", "logits"];
    assert_eq!(select_output(names, None).unwrap(), "logits");
    assert_eq!(
        select_output(["token_weights", "sparse_embeddings"], None).unwrap(),
        "sparse_embeddings"
    );
    assert_eq!(
        select_output(["token_weights", "last_hidden_state"], None).unwrap(),
        "token_weights"
    );
    assert_eq!(
        select_output(["sparse_vecs", "logits"], Some("sparse_vecs")).unwrap(),
        "sparse_vecs"
    );
}

#[test]
fn missing_output_lists_what_was_wanted_and_what_exists() {
    let err = select_output(["last_hidden_state", "pooler_output"], None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the ONNX model has no sparse output: looked for [`logits`, `sparse_embeddings`, \
         `token_weights`], its outputs are [`last_hidden_state`, `pooler_output`]; export the \
         masked-LM `logits` (SPLADE) or a per-token weight output, or name the output to use"
    );
    // A configured name is not silently replaced by a default one.
    assert!(matches!(
        select_output(["logits"], Some("sparse_vecs")),
        Err(SparseError::MissingOutput { wanted, .. }) if wanted == vec!["sparse_vecs".to_string()]
    ));
}

#[test]
fn from_output_checks_everything_at_load() {
    let pooler = SparsePooler::from_output("logits", &[-1, -1, 50], Some(50), &[0, 1]).unwrap();
    assert_eq!(pooler.head(), SparseHead::Splade);
    assert_eq!(pooler.vocab_size(), 50);
    assert!(SparsePooler::from_output("logits", &[-1, -1, 49], Some(50), &[]).is_err());
    let pooler = SparsePooler::from_output("w", &[-1, -1, 1], Some(50), &[0]).unwrap();
    assert_eq!(pooler.head(), SparseHead::TokenWeights);
}

#[test]
fn without_vocab_size_splade_is_sized_by_its_output_and_token_weights_fail() {
    // SPLADE logits carry the vocabulary in their static last dimension.
    let pooler = SparsePooler::from_output("logits", &[-1, -1, 50], None, &[]).unwrap();
    assert_eq!(pooler.head(), SparseHead::Splade);
    assert_eq!(pooler.vocab_size(), 50);
    // Token weights do not: the model must say how many ids there are.
    for shape in [&[-1_i64, -1, 1][..], &[-1, -1]] {
        let err = SparsePooler::from_output("sparse_embeddings", shape, None, &[]).unwrap_err();
        assert!(matches!(err, SparseError::MissingVocab { .. }), "{shape:?}");
        assert!(
            err.to_string().contains("config.json has no `vocab_size`"),
            "{err}"
        );
    }
    assert_eq!(
        SparsePooler::from_output("sparse_embeddings", &[-1, -1, 1], None, &[])
            .unwrap_err()
            .to_string(),
        "sparse head output `sparse_embeddings` has shape [?, ?, 1] but config.json has no \
         `vocab_size`, which is needed to size the sparse vector (token weights are gathered by \
         input token id)"
    );
    // A dynamic last dimension is still undecidable.
    assert!(matches!(
        SparsePooler::from_output("logits", &[-1, -1, -1], None, &[]),
        Err(SparseError::MissingVocab { .. })
    ));
}
