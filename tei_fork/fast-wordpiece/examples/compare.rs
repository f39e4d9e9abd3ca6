//! Side by side on one thread: `Tokenizer::encode` as TEI calls it against the fast path, on
//! the same texts, alternating rounds. Prints one JSON object (benchmarks/bench_tokenize.py
//! runs this and keeps the result).
//!
//!     cargo run --release --example compare -- TOKENIZER_JSON CORPUS_FILE [ROUNDS]
//!
//! CORPUS_FILE has one text per line.

use std::time::Instant;
use tei_fast_wordpiece::{FastEncoding, FastWordPiece, Truncation};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: compare TOKENIZER_JSON CORPUS_FILE [ROUNDS]");
        std::process::exit(2);
    }
    let rounds: usize = args
        .get(3)
        .map_or(5, |r| r.parse().expect("ROUNDS is a number"));
    let mut tokenizer = Tokenizer::from_file(&args[1]).expect("a tokenizer.json");
    tokenizer.with_padding(None);
    let max_length = 512;
    tokenizer
        .with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .expect("truncation");
    let fast = FastWordPiece::from_tokenizer(&tokenizer).unwrap_or_else(|why| {
        eprintln!("no fast path for {}: {why}", args[1]);
        std::process::exit(3);
    });
    let corpus = std::fs::read_to_string(&args[2]).expect("a corpus file");
    let texts: Vec<&str> = corpus.lines().filter(|l| !l.trim().is_empty()).collect();
    let truncation = Some(Truncation {
        max_length,
        direction: TruncationDirection::Right,
    });

    let (mut agree, mut declined, mut tokens) = (0usize, 0usize, 0usize);
    for text in &texts {
        let expected = tokenizer
            .encode(*text, true)
            .expect("tokenizers encodes it");
        tokens += expected.len();
        match fast.encode(text, true, truncation) {
            Some(got)
                if got.ids == expected.get_ids() && got.type_ids == expected.get_type_ids() =>
            {
                agree += 1
            }
            Some(_) => panic!("the fast path disagrees with tokenizers on {text:?}"),
            None => declined += 1,
        }
    }

    let (mut slow_us, mut fast_us) = (Vec::new(), Vec::new());
    let mut out = FastEncoding::default();
    let mut scratch = String::new();
    for _ in 0..rounds {
        let started = Instant::now();
        for text in &texts {
            std::hint::black_box(
                tokenizer
                    .encode(*text, true)
                    .expect("tokenizers encodes it"),
            );
        }
        slow_us.push(started.elapsed().as_secs_f64() * 1e6 / texts.len() as f64);
        let started = Instant::now();
        for text in &texts {
            let ids = fast.encode_into(text, true, truncation, &mut out, &mut scratch);
            std::hint::black_box((ids, &out.ids, &out.type_ids));
        }
        fast_us.push(started.elapsed().as_secs_f64() * 1e6 / texts.len() as f64);
    }
    let (slow, quick) = (median(&mut slow_us), median(&mut fast_us));
    println!(
        "{{\"texts\": {}, \"tokens_per_text\": {:.1}, \"agree\": {agree}, \"declined\": {declined}, \
         \"rounds\": {rounds}, \"tokenizers_us_per_text\": {slow:.2}, \"fast_us_per_text\": {quick:.2}, \
         \"fast_over_tokenizers_time\": {:.4}, \"speedup\": {:.2}}}",
        texts.len(),
        tokens as f64 / texts.len() as f64,
        quick / slow,
        slow / quick
    );
}
