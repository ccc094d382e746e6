//! A prompt that starts like an earlier sequence continues from that
//! sequence's kept KV cache (`prefix.rs`), and gets exactly the logits it
//! would have got computing everything. Its own test binary, so no other
//! test's sequences are kept in the model these tests watch.

mod common;

use std::sync::Arc;

use sandpiper_llm::{LoadOptions, Model, PrefixStats, SamplingParams, Sequence};

const STEPS: usize = 8;

const SYSTEM: &str =
    "<|im_start|>system\nYou are a helpful assistant who answers briefly.<|im_end|>\n";

fn chat(user: &str) -> String {
    format!("{SYSTEM}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
}

fn load(prefix_cache_bytes: usize) -> Arc<Model> {
    let options = LoadOptions {
        reference: false,
        prefix_cache_bytes,
    };
    Model::load_with("smollm2-135m-instruct", &common::model_path(), &options)
        .expect("loading model")
}

fn greedy(model: &Arc<Model>) -> Sequence {
    let mut seq = model.new_sequence();
    seq.set_sampling(&SamplingParams {
        temperature: 0.0,
        ..Default::default()
    });
    seq
}

/// How many leading tokens `a` and `b` have in common.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Feeds `prompt`, then `STEPS` greedy tokens: every step's logits (as
/// bits), and every token fed.
fn decode(seq: &mut Sequence, prompt: &[u32]) -> (Vec<Vec<u32>>, Vec<u32>) {
    let mut steps = Vec::new();
    let mut fed = prompt.to_vec();
    let mut feed = prompt.to_vec();
    for _ in 0..STEPS {
        let (bits, next) = common::feed_greedy(seq, &feed);
        steps.push(bits);
        feed = vec![next];
        fed.push(next);
    }
    fed.pop(); // sampled, never fed
    (steps, fed)
}

#[test]
fn prompts_continue_from_kept_prefixes_with_identical_logits() {
    let model = load(64 << 20);
    if model.backend() != "native" {
        eprintln!("candle backend: no prefixes are kept");
        return;
    }
    // Computes everything, every time.
    let fresh = load(0);

    // Every sequence's reused tokens, for the model's counters.
    let mut reused = Vec::new();

    let first = model.tokenize(&chat("Count to ten.")).unwrap();
    let mut seq = greedy(&model);
    let (steps, history) = decode(&mut seq, &first);
    assert_eq!(seq.reused_tokens(), 0, "nothing was kept yet");
    assert_eq!(steps, decode(&mut greedy(&fresh), &first).0);
    drop(seq);

    // Another question after the same system prompt: the shared head is reused.
    let second = model.tokenize(&chat("Name three colours.")).unwrap();
    let shared = common_prefix(&first, &second);
    assert!(shared > 10, "the system prompt is shared ({shared} tokens)");
    let mut seq = greedy(&model);
    let (steps, _) = decode(&mut seq, &second);
    assert_eq!(seq.reused_tokens(), shared);
    assert_eq!(steps, decode(&mut greedy(&fresh), &second).0);
    reused.push(seq.reused_tokens());
    drop(seq);

    // The next turn of the first conversation: all of it is reused, the
    // tokens that sequence generated included.
    let mut next_turn = history.clone();
    next_turn.extend(
        model
            .tokenize(
                "<|im_end|>\n<|im_start|>user\nAnd backwards?<|im_end|>\n<|im_start|>assistant\n",
            )
            .unwrap(),
    );
    let mut seq = greedy(&model);
    let (steps, _) = decode(&mut seq, &next_turn);
    assert_eq!(seq.reused_tokens(), history.len());
    assert_eq!(steps, decode(&mut greedy(&fresh), &next_turn).0);
    reused.push(seq.reused_tokens());
    drop(seq);

    // A prompt is kept as soon as it is computed: a sequence that starts
    // while the first is still alive reuses all of it.
    let third = model.tokenize(&chat("What is two plus two?")).unwrap();
    let mut live = greedy(&model);
    live.feed(&third).unwrap();
    reused.push(live.reused_tokens());
    let mut seq = greedy(&model);
    let (steps, _) = decode(&mut seq, &third);
    assert_eq!(seq.reused_tokens(), third.len() - 1);
    assert_eq!(steps, decode(&mut greedy(&fresh), &third).0);
    reused.push(seq.reused_tokens());
    drop(seq);
    drop(live);

    // A prompt that was all seen before still computes its last token.
    let mut seq = greedy(&model);
    let (steps, _) = decode(&mut seq, &first);
    assert_eq!(seq.reused_tokens(), first.len() - 1);
    assert_eq!(steps, decode(&mut greedy(&fresh), &first).0);
    reused.push(seq.reused_tokens());
    drop(seq);

    let stats = model.prefix_stats().unwrap();
    assert_eq!(stats.hits, reused.iter().filter(|&&n| n > 0).count() as u64);
    assert_eq!(stats.reused_tokens as usize, reused.iter().sum::<usize>());
    assert!(stats.entries >= 2 && stats.bytes > 0, "{stats:?}");
    assert_eq!(
        fresh.prefix_stats().unwrap(),
        PrefixStats::default(),
        "a budget of 0 keeps nothing"
    );
}

/// Prompts that arrive at the same moment with a long opening in common: one
/// computes the opening, the others wait for it and continue from its copy
/// (instead of all computing it side by side in one pass), with the logits
/// of computing everything.
#[test]
fn prompts_that_arrive_together_compute_their_shared_opening_once() {
    let model = load(64 << 20);
    if model.backend() != "native" {
        eprintln!("candle backend: no prefixes are kept");
        return;
    }
    let fresh = load(0);
    let system = format!(
        "<|im_start|>system\n{}<|im_end|>\n",
        "You answer questions about shore birds, briefly and kindly. ".repeat(8)
    );
    let prompts: Vec<Vec<u32>> = [
        "Name a wader.",
        "What do sandpipers eat?",
        "Where do plovers nest?",
    ]
    .iter()
    .map(|q| {
        let text = format!("{system}<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n");
        model.tokenize(&text).unwrap()
    })
    .collect();
    let shared = (1..prompts.len())
        .map(|i| common_prefix(&prompts[0], &prompts[i]))
        .max()
        .unwrap();
    assert!(shared > 60, "the system prompt is shared ({shared} tokens)");

    let start = Arc::new(std::sync::Barrier::new(prompts.len()));
    let runs: Vec<_> = prompts
        .iter()
        .map(|prompt| {
            let (model, start, prompt) = (model.clone(), start.clone(), prompt.clone());
            std::thread::spawn(move || {
                let mut seq = greedy(&model);
                start.wait();
                let (steps, _) = decode(&mut seq, &prompt);
                (seq.reused_tokens(), steps)
            })
        })
        .collect();
    let results: Vec<(usize, Vec<Vec<u32>>)> =
        runs.into_iter().map(|r| r.join().unwrap()).collect();

    let mut reused: Vec<usize> = results.iter().map(|(n, _)| *n).collect();
    reused.sort();
    assert_eq!(reused, [0, shared, shared], "one computed the opening");
    for (prompt, (_, steps)) in prompts.iter().zip(&results) {
        assert_eq!(steps, &decode(&mut greedy(&fresh), prompt).0);
    }
}

/// A short prompt does not wait for a long one that merely opens the same
/// way (waiting would cost it the whole long prefill to save a few tokens):
/// it is computed beside it.
#[test]
fn a_short_prompt_does_not_wait_for_a_long_one_with_the_same_opening() {
    let model = load(64 << 20);
    if model.backend() != "native" {
        eprintln!("candle backend: no prefixes are kept");
        return;
    }
    let fresh = load(0);
    let long = model
        .tokenize(&chat(&format!(
            "Summarise this: {}",
            "The sandpiper runs along the edge of the waves. ".repeat(60)
        )))
        .unwrap();
    let short = model.tokenize(&chat("Name a wader.")).unwrap();
    let shared = common_prefix(&long, &short);
    assert!(
        shared >= 16 && long.len() > 10 * shared,
        "{shared} shared of {}",
        long.len()
    );

    let long_run = {
        let (model, long) = (model.clone(), long.clone());
        std::thread::spawn(move || {
            let mut seq = greedy(&model);
            let (steps, _) = decode(&mut seq, &long);
            (seq.reused_tokens(), steps)
        })
    };
    // Once the long prompt is being computed (it takes far longer than
    // what follows), the short one starts.
    let since = std::time::Instant::now();
    while model.prefix_stats().unwrap().computing == 0 {
        assert!(
            since.elapsed().as_secs() < 60,
            "the long prompt never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let mut seq = greedy(&model);
    let (steps, _) = decode(&mut seq, &short);
    assert_eq!(seq.reused_tokens(), 0, "the short prompt did not wait");
    assert_eq!(steps, decode(&mut greedy(&fresh), &short).0);

    let (long_reused, long_steps) = long_run.join().unwrap();
    assert_eq!(long_reused, 0);
    assert_eq!(long_steps, decode(&mut greedy(&fresh), &long).0);
}
