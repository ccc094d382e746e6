//! The native forward pass against candle's `quantized_llama` (the
//! reference) on the real default model.
//!
//! Both quantize activations to the same 8-bit blocks and use the same
//! integer block dot products; they differ only in float summation order
//! (SIMD lanes, attention). Through the 8-bit activation quantization of 30
//! layers that is not a 1e-6 difference: an order change moves some value
//! across a rounding boundary, and an outlier-dominated block's step is
//! large. candle disagrees with *itself* by the same amount: its logits after
//! a prompt fed whole and fed token by token differ by up to 2.5% of the
//! logit range (max abs difference) on these prompts; the native pass vs
//! candle measures up to ~4.5%. So:
//!
//! - logits after the prompt and after each of 32 steps: max |native −
//!   candle| ≤ [`TOLERANCE`] × the range (max − min) of candle's logits;
//! - greedy decoding, 32 steps, teacher-forced (both sequences are fed
//!   candle's pick): native's argmax must be candle's argmax, or — only at a
//!   near-tie — a token candle scores within [`NEAR_TIE`] × range of its
//!   best. Free-running greedy text cannot be required to match token for
//!   token: at a near-tie either backend (or candle on another CPU, whose
//!   gemm sums in another order) may take the other branch.
//! - and in at least 90% of the steps the picks are identical.

mod common;

use std::sync::Arc;

use sandpiper_llm::Model;

/// Max |native − candle| over the vocabulary, relative to the range of
/// candle's logits (~35 here). Measured: up to ~4.5% (candle vs itself: 2.5%).
const TOLERANCE: f32 = 0.08;
/// A greedy pick may differ only where candle's top two are this close
/// (relative to the range).
const NEAR_TIE: f32 = 0.05;
const STEPS: usize = 32;

fn chat(system: &str, user: &str) -> String {
    format!(
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )
}

fn prompts() -> Vec<String> {
    let sys = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
    let long_text = "The quick brown fox jumps over the lazy dog. ".repeat(60);
    vec![
        chat(
            sys,
            "What is the capital of France? Answer in one sentence.",
        ),
        chat(sys, "Write a haiku about the sea."),
        chat(
            "You are a precise assistant.",
            "List three prime numbers greater than 100 and explain how you checked them.",
        ),
        // Over two prefill chunks (256 tokens): chunked prefill with a
        // non-empty cache; queries over 256, 384 and 512 positions attend in
        // 2, 3 and 4 stretches, merged.
        chat(sys, &format!("Summarise this text: {long_text}")),
    ]
}

fn reference() -> Arc<Model> {
    Model::load_reference("smollm2-135m-instruct", &common::model_path())
        .expect("loading reference")
}

fn to_vec(t: candle_core::Tensor) -> Vec<f32> {
    t.to_vec1::<f32>().unwrap()
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// (max abs difference, reference range).
fn compare(native: &[f32], reference: &[f32]) -> (f32, f32) {
    assert_eq!(native.len(), reference.len());
    let diff = native
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let max = reference.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = reference.iter().copied().fold(f32::INFINITY, f32::min);
    (diff, max - min)
}

#[test]
fn native_matches_candle_reference() {
    let native = common::model();
    if std::env::var("SANDPIPER_LLM_BACKEND").is_ok_and(|v| v == "candle") {
        eprintln!("SANDPIPER_LLM_BACKEND=candle: nothing to compare");
        return;
    }
    assert_eq!(
        native.backend(),
        "native",
        "the default model runs natively"
    );
    let reference = reference();
    assert_eq!(reference.backend(), "candle");
    let (mut worst, mut same, mut steps) = (0f32, 0, 0);
    for prompt in prompts() {
        let tokens = native.tokenize(&prompt).unwrap();
        let mut a = native.new_sequence();
        let mut b = reference.new_sequence();
        let mut la = to_vec(a.feed(&tokens).unwrap());
        let mut lb = to_vec(b.feed(&tokens).unwrap());
        for step in 0..=STEPS {
            let (diff, range) = compare(&la, &lb);
            worst = worst.max(diff / range);
            assert!(
                diff <= TOLERANCE * range,
                "{} prompt tokens, step {step}: max |Δlogit| {diff} > {TOLERANCE} × range {range}",
                tokens.len()
            );
            if step == STEPS {
                break;
            }
            let (ta, tb) = (argmax(&la), argmax(&lb));
            steps += 1;
            if ta == tb {
                same += 1;
            } else {
                let gap = lb[tb as usize] - lb[ta as usize];
                assert!(
                    gap <= NEAR_TIE * range,
                    "{} prompt tokens, step {step}: native picks {ta}, candle {tb}, \
                     which candle scores {gap} higher (range {range})",
                    tokens.len()
                );
            }
            la = to_vec(a.feed(&[tb]).unwrap());
            lb = to_vec(b.feed(&[tb]).unwrap());
        }
        assert_eq!(a.len(), tokens.len() + STEPS);
    }
    eprintln!("worst max |Δlogit| / range: {worst:.4}; identical greedy picks: {same}/{steps}");
    assert!(
        same * 10 >= steps * 9,
        "identical greedy picks in only {same} of {steps} steps"
    );
}

/// The native pass computes each position the same way however the prompt is
/// split into feeds (unlike candle, whose attention gemm changes with the
/// shapes): feeding in pieces gives bit-identical logits.
#[test]
fn native_prefill_in_pieces_matches_whole() {
    let native = common::model();
    let tokens = native.tokenize(&prompts()[3]).unwrap();
    let mut whole = native.new_sequence();
    let lw = to_vec(whole.feed(&tokens).unwrap());
    let mut pieces = native.new_sequence();
    let (x, y) = tokens.split_at(tokens.len() / 2);
    pieces.feed(x).unwrap();
    let (y1, y2) = y.split_at(1);
    pieces.feed(y1).unwrap();
    let lp = to_vec(pieces.feed(y2).unwrap());
    assert_eq!(lp, lw);
}
