//! Prefill and decode speed of the native forward pass against candle's
//! `quantized_llama`, side by side in one run (so machine noise hits both).
//!
//! `cargo run --release -p sandpiper-llm --example native_speed -- MODEL.gguf [ROUNDS]`
//!
//! The machine may be shared: besides wall-clock tokens/s, each line gives
//! tokens per second of CPU time actually run (all threads, from
//! `/proc/self/task/*/schedstat`, Linux only), which other load does not
//! distort as much.
//!
//! Threads: `SANDPIPER_THREADS` (default: one per CPU); kernels:
//! `SANDPIPER_KERNELS=scalar|avx2|avx512|neon` (default: the best supported).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use sandpiper_llm::{LoadOptions, Model, SamplingParams};

/// Nanoseconds this process's threads have run on a CPU (0 where unknown).
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// (wall seconds, CPU seconds) of `f`.
fn timed(f: impl FnOnce()) -> (f64, f64) {
    let (t, c) = (Instant::now(), cpu_ns());
    f();
    (t.elapsed().as_secs_f64(), (cpu_ns() - c) as f64 * 1e-9)
}

fn prompt_tokens(model: &Model, n: usize) -> Vec<u32> {
    let text = "The history of the sandpiper begins on the shores of the northern seas, \
                where small wading birds run along the tide line looking for food. "
        .repeat(64);
    let mut tokens = model.tokenize(&text).unwrap();
    tokens.truncate(n);
    assert_eq!(tokens.len(), n);
    tokens
}

/// Prefill (wall, CPU) tokens/s for an `n`-token prompt (best of `rounds`).
fn prefill(model: &Arc<Model>, n: usize, rounds: usize) -> (f64, f64) {
    let tokens = prompt_tokens(model, n);
    let (mut wall, mut cpu) = (f64::MAX, f64::MAX);
    for _ in 0..rounds {
        let mut seq = model.new_sequence();
        let (w, c) = timed(|| {
            seq.feed(&tokens).unwrap();
        });
        wall = wall.min(w);
        cpu = cpu.min(c);
    }
    (n as f64 / wall, n as f64 / cpu)
}

/// Decode (wall, CPU) tokens/s over `n` greedy steps (argmax sampling) after a short prompt
/// (best of `rounds`).
fn decode(model: &Arc<Model>, n: usize, rounds: usize) -> (f64, f64) {
    let tokens = prompt_tokens(model, 16);
    let (mut wall, mut cpu) = (f64::MAX, f64::MAX);
    for _ in 0..rounds {
        let mut seq = model.new_sequence();
        // Greedy: measure the forward pass, not the top-p sort.
        seq.set_sampling(&SamplingParams {
            temperature: 0.0,
            ..Default::default()
        });
        let mut next = seq.step(&tokens).unwrap();
        let (w, c) = timed(|| {
            for _ in 0..n {
                next = seq.step(&[next]).unwrap();
            }
        });
        wall = wall.min(w);
        cpu = cpu.min(c);
    }
    (n as f64 / wall, n as f64 / cpu)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(
        args.next()
            .expect("usage: native_speed MODEL.gguf [ROUNDS]"),
    );
    let rounds: usize = args.next().map_or(3, |s| s.parse().expect("ROUNDS"));
    // Nothing kept for reuse: each round computes its prompt whole.
    let options = LoadOptions {
        prefix_cache_bytes: 0,
        ..LoadOptions::default()
    };
    let native = Model::load_with("model", &path, &options).unwrap();
    let candle = Model::load_reference("model", &path).unwrap();
    println!(
        "native backend: {} ({} kernels, {} threads)",
        native.backend(),
        sandpiper_llm::kernels::level().name(),
        sandpiper_llm::kernels::pool::global().threads()
    );
    println!(
        "{:<14} {:>10} {:>10} {:>7}   {:>12} {:>12} {:>7}",
        "tok/s", "candle", "native", "ratio", "candle/cpu-s", "native/cpu-s", "ratio"
    );
    type Bench<'a> = dyn Fn(&Arc<Model>) -> (f64, f64) + 'a;
    for (name, f) in [
        (
            "prefill 128",
            &(|m: &Arc<Model>| prefill(m, 128, rounds)) as &Bench<'_>,
        ),
        ("prefill 512", &|m: &Arc<Model>| prefill(m, 512, rounds)),
        ("decode 128", &|m: &Arc<Model>| decode(m, 128, rounds)),
    ] {
        let (cw, cc) = f(&candle);
        let (nw, nc) = f(&native);
        println!(
            "{name:<14} {cw:>10.1} {nw:>10.1} {:>6.2}x   {cc:>12.1} {nc:>12.1} {:>6.2}x",
            nw / cw,
            nc / cc
        );
    }
}
