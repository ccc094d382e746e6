//! The candle backend's own speed, in-process, without HTTP or wasm: what
//! `bench/run` compares with `llama-bench` on the same GGUF.
//!
//!     cargo run --release -p sandpiper-llm --example bench_native -- MODEL.gguf \
//!         [--prompt 128,512] [--gen 128] [--reps 1] [--threads N]
//!
//! Mirrors llama-bench's tests: `pp N` feeds an N-token prompt to a fresh
//! sequence in one call (tokens/s of that call); `tg N` runs N single-token
//! decode steps from an empty sequence, each a forward pass plus a greedy
//! sample fed back (tokens/s over all N steps; end-of-text does not stop it).
//! One untimed warm-up runs first. `--threads` sets `RAYON_NUM_THREADS` and
//! `CANDLE_NUM_THREADS` (when not already set) before candle starts its pools.
//! Prints one JSON object on stdout.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use sandpiper_llm::{Model, SamplingParams};
use serde_json::json;

const TEXT: &str = "The lighthouse stood at the edge of the world, where the grey sea \
met a sky of the same colour. Every night its keeper climbed the spiral stairs, \
trimmed the wick and watched the beam sweep across the water, counting ships, \
storms and the slow turning of the seasons. ";

struct Args {
    model: PathBuf,
    prompts: Vec<usize>,
    gen: usize,
    reps: usize,
    threads: Option<usize>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        model: PathBuf::new(),
        prompts: vec![128, 512],
        gen: 128,
        reps: 1,
        threads: None,
    };
    let mut model = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--prompt" => {
                args.prompts = value("--prompt")?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.trim().parse().context("--prompt takes numbers"))
                    .collect::<anyhow::Result<_>>()?
            }
            "--gen" => args.gen = value("--gen")?.parse().context("--gen takes a number")?,
            "--reps" => args.reps = value("--reps")?.parse().context("--reps takes a number")?,
            "--threads" => {
                args.threads = Some(
                    value("--threads")?
                        .parse()
                        .context("--threads takes a number")?,
                )
            }
            "-h" | "--help" => {
                println!("usage: bench_native MODEL.gguf [--prompt 128,512] [--gen 128] [--reps 1] [--threads N]");
                std::process::exit(0);
            }
            other if other.starts_with('-') => bail!("unknown option {other}"),
            path => model = Some(PathBuf::from(path)),
        }
    }
    args.model = model.context("usage: bench_native MODEL.gguf [options]")?;
    if args.reps == 0 || args.prompts.contains(&0) {
        bail!("--reps and prompt lengths must be at least 1");
    }
    Ok(args)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if let Some(n) = args.threads {
        for var in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
            if std::env::var_os(var).is_none() {
                std::env::set_var(var, n.to_string());
            }
        }
    }

    let t = Instant::now();
    let model = Model::load("bench", &args.model)?;
    let load_s = t.elapsed().as_secs_f64();

    // Real text, repeated, cut to each length.
    let longest = args.prompts.iter().copied().max().unwrap_or(0).max(16);
    let mut tokens = Vec::new();
    while tokens.len() < longest {
        tokens.extend(model.tokenize(TEXT)?);
    }
    let first = model.info().bos_token_id.unwrap_or(tokens[0]);
    let greedy = SamplingParams {
        temperature: 0.0,
        ..Default::default()
    };

    // Warm-up, untimed (llama-bench does the same).
    {
        let mut seq = model.new_sequence();
        seq.set_sampling(&greedy);
        let next = seq.step(&tokens[..16])?;
        seq.step(&[next])?;
    }

    let mut prefill = Vec::new();
    for &n in &args.prompts {
        let mut secs = Vec::new();
        for _ in 0..args.reps {
            let mut seq = model.new_sequence();
            let t = Instant::now();
            std::hint::black_box(seq.feed(&tokens[..n])?);
            secs.push(t.elapsed().as_secs_f64());
        }
        let tok_s: Vec<f64> = secs.iter().map(|s| n as f64 / s).collect();
        prefill.push(json!({"tokens": n, "seconds": secs, "tok_s": median(&tok_s)}));
    }

    let mut decode_secs = Vec::new();
    for _ in 0..args.reps {
        let mut seq = model.new_sequence();
        seq.set_sampling(&greedy);
        let mut next = first;
        let t = Instant::now();
        for _ in 0..args.gen {
            next = seq.step(&[next])?;
        }
        decode_secs.push(t.elapsed().as_secs_f64());
    }
    let decode_tok_s: Vec<f64> = decode_secs.iter().map(|s| args.gen as f64 / s).collect();

    let out = json!({
        "model": args.model.display().to_string(),
        "threads": std::env::var("RAYON_NUM_THREADS").ok(),
        "load_seconds": load_s,
        "prefill": prefill,
        "decode": {"tokens": args.gen, "seconds": decode_secs, "tok_s": median(&decode_tok_s)},
    });
    println!("{out}");
    Ok(())
}
