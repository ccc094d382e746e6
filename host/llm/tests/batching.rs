//! Concurrent sequences of one model share forward passes (`batch.rs`), and
//! sharing changes nothing in what each computes. Its own test binary, so no
//! other test's sequences join these batches.

mod common;

use std::sync::{Arc, Barrier};

use sandpiper_llm::{Model, SamplingParams};

const STEPS: usize = 24;

fn prompts() -> [String; 4] {
    // The last prompt is long (past 512 positions): batching must not
    // change what long contexts compute either.
    let notes = "The sandpiper feeds at the edge of the tide, running after each wave \
                 as it draws back and probing the wet sand for small creatures. "
        .repeat(24);
    [
        "<|im_start|>user\nCount to ten.<|im_end|>\n<|im_start|>assistant\n".into(),
        "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n".into(),
        "<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n<|im_start|>assistant\n".into(),
        format!("<|im_start|>system\nYou are terse. {notes}<|im_end|>\n<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n"),
    ]
}

/// Greedy decoding of `prompt`: every step's logits (as bits) and token.
fn decode(model: &Arc<Model>, prompt: &str, start: Option<&Barrier>) -> Vec<(u32, Vec<u32>)> {
    let tokens = model.tokenize(prompt).unwrap();
    let mut seq = model.new_sequence();
    seq.set_sampling(&SamplingParams {
        temperature: 0.0,
        ..Default::default()
    });
    if let Some(b) = start {
        b.wait();
    }
    let mut out = Vec::new();
    let mut feed = tokens;
    for _ in 0..STEPS {
        let (bits, next) = common::feed_greedy(&mut seq, &feed);
        out.push((next, bits));
        feed = vec![next];
    }
    out
}

#[test]
fn concurrent_sequences_share_forward_passes_with_identical_results() {
    let model = common::model();
    if model.backend() != "native" {
        eprintln!("candle backend: no batching to test");
        return;
    }
    let texts = prompts();
    let long = model.tokenize(&texts[3]).unwrap().len();
    assert!(long > 520, "the long prompt has {long} tokens");
    let alone: Vec<_> = texts.iter().map(|p| decode(&model, p, None)).collect();
    let before = model.batch_stats().unwrap();
    assert_eq!(
        before.steps, before.batches,
        "one sequence at a time: batches of one"
    );

    let barrier = Barrier::new(texts.len());
    let together: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = texts
            .iter()
            .map(|p| {
                let (model, barrier) = (&model, &barrier);
                s.spawn(move || decode(model, p, Some(barrier)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let after = model.batch_stats().unwrap();
    let (steps, batches) = (after.steps - before.steps, after.batches - before.batches);
    assert_eq!(steps, (texts.len() * STEPS) as u64);
    eprintln!("{steps} steps in {batches} forward passes");
    assert!(
        batches * 2 <= steps,
        "4 concurrent sequences took {batches} forward passes for {steps} steps"
    );
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        for (step, ((ta, la), (tb, lb))) in a.iter().zip(b).enumerate() {
            assert_eq!(ta, tb, "prompt {i}, step {step}: greedy token");
            assert!(
                la == lb,
                "prompt {i}, step {step}: logits differ when batched"
            );
        }
    }
}
