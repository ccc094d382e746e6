//! Measures what it would cost to move tokenization or sampling from the host
//! backend into the guest, for ARCHITECTURE.md's "where tokenization and
//! sampling live".
//!
//!     cargo run --release -p sandpiper-llm --example placement_costs -- MODEL.gguf
//!
//! Guests run in a fresh instance per request, so anything they hold is
//! rebuilt per request: a guest-side tokenizer pays its construction every
//! time. Guest-side sampling needs the full logits vector per token.

use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use sandpiper_llm::{Model, SamplingParams};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .expect("usage: placement_costs MODEL.gguf");
    let mut file = std::fs::File::open(&path)?;
    let ct = gguf_file::Content::read(&mut file)?;

    let build = time(5, || tokenizers::Tokenizer::from_gguf(&ct).unwrap());
    println!("build tokenizer from GGUF metadata: {build:?} (a guest would pay this per request)");

    let model = Model::load("m", path.as_ref())?;
    let prompt = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n<|im_start|>assistant\n";
    let tokenize = time(50, || model.tokenize(prompt).unwrap());
    println!("tokenize a 42-token prompt in the host: {tokenize:?}");

    let vocab = model.info().vocab_size;
    let logits: Vec<f32> = (0..vocab)
        .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
        .collect();
    let copy = time(200, || logits.clone());
    println!(
        "copy one logits vector ({vocab} f32, {} KiB): {copy:?}",
        vocab * 4 / 1024
    );
    let top_p = time(50, || {
        let mut idx: Vec<u32> = (0..vocab as u32).collect();
        idx.sort_unstable_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        idx[0]
    });
    println!("full-vocabulary sort for top-p, native: {top_p:?} (wasm is slower)");

    let mut seq = model.new_sequence();
    seq.set_sampling(&SamplingParams {
        temperature: 0.0,
        ..Default::default()
    });
    let mut next = model.tokenize(prompt)?;
    next = vec![seq.step(&next)?];
    let step = time(20, || {
        let t = seq.step(&next).unwrap();
        next = vec![t];
    });
    println!("one decode step (forward + greedy sample): {step:?}");
    Ok(())
}
