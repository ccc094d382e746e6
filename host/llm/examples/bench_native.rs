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
//! `--decode-context N` also times the same decode after an untimed prompt of
//! N tokens (the positions a served chat request decodes at).
//! `--streams 1,2,4` also decodes N tokens in each of several concurrent
//! sequences (one thread each) and reports the aggregate tokens/s: what
//! batching their steps into shared forward passes gains. With
//! `--decode-context N` each of those sequences first takes the N-token
//! prompt too (untimed), so they decode at a served request's positions,
//! where attention costs what it costs there. One untimed
//! warm-up runs first. `--threads` sets `RAYON_NUM_THREADS` and
//! `CANDLE_NUM_THREADS` (when not already set) before candle starts its pools.
//! Prints one JSON object on stdout.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use sandpiper_llm::{LoadOptions, Model, SamplingParams, Sequence};
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
    streams: Vec<usize>,
    decode_context: Option<usize>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        model: PathBuf::new(),
        prompts: vec![128, 512],
        gen: 128,
        reps: 1,
        threads: None,
        streams: vec![],
        decode_context: None,
    };
    let mut model = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} takes a value"));
        let number = |v: &str| -> anyhow::Result<usize> {
            v.trim()
                .parse()
                .with_context(|| format!("{arg} takes numbers, not {v:?}"))
        };
        let list = |v: String| -> anyhow::Result<Vec<usize>> {
            v.split(',').filter(|s| !s.is_empty()).map(number).collect()
        };
        match arg.as_str() {
            "--prompt" => args.prompts = list(value("--prompt")?)?,
            "--streams" => args.streams = list(value("--streams")?)?,
            "--decode-context" => args.decode_context = Some(number(&value("--decode-context")?)?),
            "--gen" => args.gen = number(&value("--gen")?)?,
            "--reps" => args.reps = number(&value("--reps")?)?,
            "--threads" => args.threads = Some(number(&value("--threads")?)?),
            "-h" | "--help" => {
                println!("usage: bench_native MODEL.gguf [--prompt 128,512] [--gen 128] [--reps 1] [--threads N] [--streams 1,2,4] [--decode-context N]");
                std::process::exit(0);
            }
            other if other.starts_with('-') => bail!("unknown option {other}"),
            path => model = Some(PathBuf::from(path)),
        }
    }
    args.model = model.context("usage: bench_native MODEL.gguf [options]")?;
    if args.reps == 0 || args.prompts.contains(&0) || args.streams.contains(&0) {
        bail!("--reps, prompt lengths and stream counts must be at least 1");
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
    // Nothing kept for reuse: every prompt measured is computed whole (the
    // warm-up and each prompt length start with the same tokens).
    let options = LoadOptions {
        prefix_cache_bytes: 0,
        ..LoadOptions::default()
    };
    let model = Model::load_with("bench", &args.model, &options)?;
    let load_s = t.elapsed().as_secs_f64();

    // Real text, repeated, cut to each length.
    let longest = args
        .prompts
        .iter()
        .copied()
        .chain(args.decode_context)
        .max()
        .unwrap_or(0)
        .max(16);
    let mut tokens = Vec::new();
    while tokens.len() < longest {
        tokens.extend(model.tokenize(TEXT)?);
    }
    let first = model.info().bos_token_id.unwrap_or(tokens[0]);
    let greedy = SamplingParams {
        temperature: 0.0,
        ..Default::default()
    };
    // A greedy sequence ready to decode, and its first input: after an
    // untimed prompt of `context` tokens (the positions a served request
    // decodes at, so attention costs the same on both sides), or at the start.
    let primed = |context: Option<usize>| -> anyhow::Result<(Sequence, u32)> {
        let mut seq = model.new_sequence();
        seq.set_sampling(&greedy);
        let next = match context {
            Some(n) => seq.step(&tokens[..n])?,
            None => first,
        };
        Ok((seq, next))
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
        let (mut seq, mut next) = primed(None)?;
        let t = Instant::now();
        for _ in 0..args.gen {
            next = seq.step(&[next])?;
        }
        decode_secs.push(t.elapsed().as_secs_f64());
    }
    let decode_tok_s: Vec<f64> = decode_secs.iter().map(|s| args.gen as f64 / s).collect();

    // The same decode after an untimed prompt of N tokens.
    let mut decode_at = serde_json::Value::Null;
    if let Some(n) = args.decode_context {
        let mut secs = Vec::new();
        for _ in 0..args.reps {
            let (mut seq, mut next) = primed(Some(n))?;
            let t = Instant::now();
            for _ in 0..args.gen {
                next = seq.step(&[next])?;
            }
            secs.push(t.elapsed().as_secs_f64());
        }
        let tok_s: Vec<f64> = secs.iter().map(|s| args.gen as f64 / s).collect();
        decode_at =
            json!({"context": n, "tokens": args.gen, "seconds": secs, "tok_s": median(&tok_s)});
    }

    // Concurrent decoding: each stream a thread with its own sequence, all
    // started together; aggregate tokens/s over the wall time of the slowest.
    let mut streams = Vec::new();
    for &n in &args.streams {
        let mut secs = Vec::new();
        for _ in 0..args.reps {
            let start = std::sync::Barrier::new(n + 1);
            let t = std::thread::scope(|s| -> anyhow::Result<f64> {
                let handles: Vec<_> = (0..n)
                    .map(|_| {
                        let (start, primed) = (&start, &primed);
                        s.spawn(move || -> anyhow::Result<()> {
                            let primed = primed(args.decode_context);
                            // Past the barrier before any error returns, or
                            // the other threads would wait forever.
                            start.wait();
                            let (mut seq, mut next) = primed?;
                            for _ in 0..args.gen {
                                next = seq.step(&[next])?;
                            }
                            Ok(())
                        })
                    })
                    .collect();
                start.wait();
                let t = Instant::now();
                for h in handles {
                    h.join().expect("a stream panicked")?;
                }
                Ok(t.elapsed().as_secs_f64())
            })?;
            secs.push(t);
        }
        let tok_s: Vec<f64> = secs.iter().map(|s| (n * args.gen) as f64 / s).collect();
        streams.push(json!({
            "streams": n,
            "context": args.decode_context.unwrap_or(0),
            "seconds": secs,
            "tok_s": median(&tok_s),
        }));
    }

    let out = json!({
        "model": args.model.display().to_string(),
        "threads": std::env::var("RAYON_NUM_THREADS").ok(),
        "load_seconds": load_s,
        "prefill": prefill,
        "decode": {"tokens": args.gen, "seconds": decode_secs, "tok_s": median(&decode_tok_s)},
        "decode_at_context": decode_at,
        "streams": streams,
    });
    println!("{out}");
    Ok(())
}
