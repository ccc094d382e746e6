//! The candle backend on the real default model (SmolLM2-135M-Instruct Q4_1).

mod common;

use sandpiper_llm::SamplingParams;

/// Reference ids from llama.cpp's tokenizer on the same GGUF (no BOS added,
/// special tokens parsed).
#[test]
fn tokenizer_matches_llama_cpp() {
    let model = common::model();
    let cases: &[(&str, &[u32])] = &[
        ("system", &[9690]),
        ("Hello, world!", &[19556, 28, 905, 17]),
        (
            "The year 2026 has 365 days.",
            &[
                504, 713, 216, 34, 32, 34, 38, 553, 216, 35, 38, 37, 2009, 30,
            ],
        ),
        (" café naïve 🚀", &[37366, 15486, 46494, 15107, 244, 218]),
        (
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n",
            &[1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198],
        ),
    ];
    for (text, want) in cases {
        assert_eq!(&model.tokenize(text).unwrap(), want, "tokenizing {text:?}");
    }
}

#[test]
fn token_bytes_round_trip_text() {
    let model = common::model();
    let text = " café naïve 🚀 and\nnew lines";
    let bytes: Vec<u8> = model
        .tokenize(text)
        .unwrap()
        .iter()
        .flat_map(|&t| model.token_bytes(t).unwrap().to_vec())
        .collect();
    assert_eq!(String::from_utf8(bytes).unwrap(), text);
    // Control tokens carry no text.
    assert_eq!(model.token_bytes(2), Some(&[][..]));
}

#[test]
fn metadata_describes_the_model() {
    let info = common::model().info().clone();
    assert_eq!(info.context_length, 8192);
    assert_eq!(info.vocab_size, 49152);
    assert!(info.eos_token_ids.contains(&2), "{:?}", info.eos_token_ids);
    let template = info.chat_template.expect("SmolLM2 ships a chat template");
    assert!(template.contains("<|im_start|>"));
}

/// Greedy generation gives llama.cpp's answer on the same GGUF, on the best
/// kernels of the CPU at hand (test.sh also runs it under qemu-aarch64: NEON).
#[test]
fn greedy_answer_names_paris() {
    let model = common::model();
    if std::env::var("SANDPIPER_LLM_BACKEND").is_err() {
        assert_eq!(model.backend(), "native");
    }
    eprintln!(
        "{} forward pass, {} kernels",
        model.backend(),
        sandpiper_llm::kernels::level().name()
    );
    let prompt = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n<|im_start|>assistant\n";
    let mut seq = model.new_sequence();
    seq.set_sampling(&SamplingParams {
        temperature: 0.0,
        ..Default::default()
    });
    let mut next = model.tokenize(prompt).unwrap();
    let mut out = Vec::new();
    for _ in 0..32 {
        let t = seq.step(&next).unwrap();
        if model.info().eos_token_ids.contains(&t) {
            break;
        }
        out.extend_from_slice(model.token_bytes(t).unwrap());
        next = vec![t];
    }
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("Paris"), "{text:?}");
}

/// candle's quantized kernels execute the Arm dot-product instructions
/// unconditionally: where the CPU lacks them (test.sh runs this on an emulated
/// Cortex-A53, too) the candle path is refused at load time with a clear
/// error, not a SIGILL in the first step; everywhere else it loads and steps.
#[test]
fn candle_path_refused_only_where_it_would_crash() {
    #[cfg(target_arch = "aarch64")]
    let crashes = !std::arch::is_aarch64_feature_detected!("dotprod");
    #[cfg(not(target_arch = "aarch64"))]
    let crashes = false;
    match sandpiper_llm::Model::load_reference("smollm2", &common::model_path()) {
        Ok(model) => {
            assert!(!crashes, "loaded onto kernels this CPU cannot run");
            assert_eq!(model.backend(), "candle");
            let mut seq = model.new_sequence();
            seq.step(&model.tokenize("Hello").unwrap()).unwrap();
        }
        Err(e) => {
            let e = format!("{e:#}");
            assert!(crashes, "{e}");
            assert!(e.contains("dot-product extension"), "{e}");
        }
    }
}

#[test]
fn sequences_share_weights_but_not_state() {
    let model = common::model();
    let greedy = SamplingParams {
        temperature: 0.0,
        ..Default::default()
    };
    let prompt = model
        .tokenize("<|im_start|>user\nCount to five.<|im_end|>\n<|im_start|>assistant\n")
        .unwrap();
    let run = |interleave: bool| {
        let mut a = model.new_sequence();
        let mut b = model.new_sequence();
        a.set_sampling(&greedy);
        b.set_sampling(&greedy);
        let (mut na, mut nb) = (
            prompt.clone(),
            model
                .tokenize("<|im_start|>user\nSay hi.<|im_end|>\n")
                .unwrap(),
        );
        let mut out = Vec::new();
        for _ in 0..8 {
            let t = a.step(&na).unwrap();
            out.push(t);
            na = vec![t];
            if interleave {
                nb = vec![b.step(&nb).unwrap()];
            }
        }
        out
    };
    assert_eq!(run(false), run(true));
}

#[test]
fn context_window_is_enforced() {
    let model = common::model();
    let mut seq = model.new_sequence();
    let too_long = vec![198u32; 8193];
    let err = seq.feed(&too_long).unwrap_err();
    assert!(
        err.to_string().starts_with("context window exceeded"),
        "{err}"
    );
    assert_eq!(seq.len(), 0);
}

/// Sampling on the model's own logits: a nucleus small enough for one token
/// is greedy decoding; at `top_p` 0.5 every draw lies inside the nucleus
/// (the tokens more probable than it hold less than half the mass, read from
/// the model's top logprobs); a seed replays its draws.
#[test]
fn sampling_keeps_to_the_nucleus() {
    let model = common::model();
    let prompt = model
        .tokenize("<|im_start|>user\nWrite a short poem about the sea.<|im_end|>\n<|im_start|>assistant\n")
        .unwrap();
    let run = |params: SamplingParams, steps: usize| {
        let mut seq = model.new_sequence();
        seq.set_sampling(&params);
        let mut next = prompt.clone();
        let mut out = Vec::new();
        for _ in 0..steps {
            let s = seq.sample_step(&next).unwrap();
            next = vec![s.token];
            out.push(s);
        }
        out
    };
    let tokens = |v: &[sandpiper_llm::Sampled]| v.iter().map(|s| s.token).collect::<Vec<_>>();
    let greedy = run(
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        24,
    );
    let one = run(
        SamplingParams {
            temperature: 1.0,
            top_p: 1e-9,
            seed: Some(1),
            ..Default::default()
        },
        24,
    );
    assert_eq!(tokens(&one), tokens(&greedy));

    let half = SamplingParams {
        temperature: 1.0,
        top_p: 0.5,
        seed: Some(42),
        logprobs: true,
        top_logprobs: 20,
        ..Default::default()
    };
    let drawn = run(half.clone(), 48);
    for (i, s) in drawn.iter().enumerate() {
        let lp = s.logprobs.as_ref().unwrap();
        let above: f32 = lp
            .top
            .iter()
            .take_while(|t| t.id != s.token)
            .map(|t| t.logprob.exp())
            .sum();
        assert!(
            above < 0.5,
            "step {i}: token {} after {above} of the mass",
            s.token
        );
    }
    assert_eq!(tokens(&run(half, 48)), tokens(&drawn));
    // Not every draw was the most probable token: nuclei of several tokens
    // were drawn from.
    assert!(
        drawn
            .iter()
            .any(|s| s.logprobs.as_ref().unwrap().top[0].id != s.token),
        "{:?}",
        tokens(&drawn)
    );
}
