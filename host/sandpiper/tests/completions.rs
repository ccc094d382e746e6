//! The legacy Completions API (`POST /v1/completions`) end to end: HTTP →
//! chat guest → wasi-nn → candle, on the real default model. Raw prompts
//! (no chat template, no BOS), prompt lists and token prompts, `n`, `echo`,
//! `stop`, legacy `logprobs`, streaming, exact usage and the errors.

mod common;

use common::{assert_openai_error, chat_model, token_counts, Server, MODEL};
use serde_json::{json, Value};

const PATH: &str = "/v1/completions";
const PROMPT: &str = "The capital of France is";

fn complete(server: &Server, req: &Value) -> Value {
    let (status, body) = server.post(PATH, req);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion", "{body}");
    assert!(body["id"].as_str().unwrap().starts_with("cmpl-"), "{body}");
    assert_eq!(body["model"], MODEL);
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap(),
        "{body}"
    );
    body
}

fn texts(body: &Value) -> Vec<String> {
    body["choices"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            assert_eq!(c["index"], i, "{body}");
            c["text"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Per choice index: the joined text and the finish reason, checking that
/// nothing follows a choice's finish chunk.
fn streamed_choices(events: &[Value], count: usize) -> Vec<(String, String)> {
    let mut out = vec![(String::new(), None); count];
    for event in events {
        assert_eq!(event["object"], "text_completion", "{event}");
        for c in event["choices"].as_array().unwrap() {
            let i = c["index"].as_u64().unwrap() as usize;
            assert!(out[i].1.is_none(), "text after choice {i} finished");
            out[i].0.push_str(c["text"].as_str().unwrap());
            if let Some(reason) = c["finish_reason"].as_str() {
                out[i].1 = Some(reason.to_string());
            }
        }
    }
    out.into_iter()
        .map(|(text, finish)| (text, finish.expect("every choice finishes")))
        .collect()
}

#[test]
fn raw_prompt_whole_streamed_and_as_tokens() {
    let server = Server::start(&[]);
    let model = chat_model();
    let ids = model.tokenize(PROMPT).unwrap();

    let req = json!({"model": MODEL, "prompt": PROMPT, "temperature": 0, "max_tokens": 8});
    let body = complete(&server, &req);
    let text = &texts(&body)[0];
    assert!(!text.is_empty(), "{body}");
    assert_eq!(body["choices"][0]["logprobs"], Value::Null);
    let finish = body["choices"][0]["finish_reason"].as_str().unwrap();
    // The prompt is tokenised as it is: no template, no BOS.
    assert_eq!(body["usage"]["prompt_tokens"], ids.len(), "{body}");
    if finish == "length" {
        assert_eq!(body["usage"]["completion_tokens"], 8);
    } else {
        assert_eq!(finish, "stop");
    }

    // The same prompt as token ids completes identically.
    let tokens = json!({"model": MODEL, "prompt": ids, "temperature": 0, "max_tokens": 8});
    let by_ids = complete(&server, &tokens);
    assert_eq!(by_ids["choices"], body["choices"]);
    assert_eq!(token_counts(&by_ids["usage"]), token_counts(&body["usage"]));

    // Streamed: the texts join to the same completion, then usage, [DONE].
    let mut streaming = req.clone();
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({"include_usage": true});
    let events = server.stream_at(PATH, &streaming);
    assert_eq!(
        streamed_choices(&events[..events.len() - 1], 1),
        vec![(text.clone(), finish.to_string())]
    );
    let last = events.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(token_counts(&last["usage"]), token_counts(&body["usage"]));
    assert!(events[0]["id"].as_str().unwrap().starts_with("cmpl-"));

    // max_tokens defaults to 16, as OpenAI's.
    let story = json!({"model": MODEL, "prompt": "Once upon a time, there was a", "temperature": 0,
        "logit_bias": {"2": -100, "0": -100}});
    let body = complete(&server, &story);
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 16);
}

#[test]
fn prompt_lists_n_seed_echo_and_stop() {
    let server = Server::start(&[]);
    let model = chat_model();
    let prompts = ["Once upon a time", "The best thing about the sea is"];
    let base = json!({"model": MODEL, "temperature": 1.0, "seed": 11, "max_tokens": 10, "n": 2});
    let mut req = base.clone();
    req["prompt"] = json!(prompts);
    let body = complete(&server, &req);
    let all = texts(&body);
    assert_eq!(all.len(), 4, "{body}");
    // Prompt-major order; each prompt completes as it does alone (choice j
    // samples with seed + j whichever prompt it belongs to).
    let mut prompt_tokens = 0;
    let mut completion_tokens = 0;
    for (i, prompt) in prompts.iter().enumerate() {
        let mut one = base.clone();
        one["prompt"] = json!(prompt);
        let alone = complete(&server, &one);
        assert_eq!(texts(&alone), all[2 * i..2 * i + 2], "prompt {i}");
        assert_eq!(
            alone["usage"]["prompt_tokens"],
            model.tokenize(prompt).unwrap().len()
        );
        prompt_tokens += alone["usage"]["prompt_tokens"].as_u64().unwrap();
        completion_tokens += alone["usage"]["completion_tokens"].as_u64().unwrap();
    }
    // Usage: each prompt once, every choice's completion.
    assert_eq!(body["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(body["usage"]["completion_tokens"], completion_tokens);
    // Reproducible, and streamed one choice after another.
    assert_eq!(complete(&server, &req)["choices"], body["choices"]);
    let mut streaming = req.clone();
    streaming["stream"] = json!(true);
    let streamed = streamed_choices(&server.stream_at(PATH, &streaming), 4);
    let finishes: Vec<(String, String)> = body["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["text"].as_str().unwrap().to_string(),
                c["finish_reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(streamed, finishes);

    // echo: the prompt's text, then the same completion.
    let mut echo = req.clone();
    echo["echo"] = json!(true);
    let echoed = complete(&server, &echo);
    for (k, text) in texts(&echoed).iter().enumerate() {
        assert_eq!(text, &format!("{}{}", prompts[k / 2], all[k]));
    }
    assert_eq!(token_counts(&echoed["usage"]), token_counts(&body["usage"]));
    echo["stream"] = json!(true);
    let streamed = streamed_choices(&server.stream_at(PATH, &echo), 4);
    let joined: Vec<String> = streamed.into_iter().map(|(t, _)| t).collect();
    assert_eq!(joined, texts(&echoed));

    // stop: the greedy completion is cut before the stop text, which never
    // appears, whole or streamed.
    let greedy = json!({"model": MODEL, "prompt": PROMPT, "temperature": 0, "max_tokens": 12});
    let full = texts(&complete(&server, &greedy))[0].clone();
    let word = full
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("{full:?}"))
        .to_string();
    let mut stopped = greedy.clone();
    stopped["stop"] = json!([word, "\u{1F980}"]);
    let body = complete(&server, &stopped);
    let text = &texts(&body)[0];
    assert!(!text.contains(&word), "{text:?} contains {word:?}");
    assert_eq!(&full[..text.len()], text.as_str());
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    stopped["stream"] = json!(true);
    let streamed = streamed_choices(&server.stream_at(PATH, &stopped), 1);
    assert_eq!(streamed, vec![(text.clone(), "stop".to_string())]);
}

#[test]
fn legacy_logprobs_whole_and_streamed() {
    let server = Server::start(&[]);
    let req = json!({"model": MODEL, "prompt": PROMPT, "temperature": 0, "max_tokens": 10,
        "logprobs": 3});
    let body = complete(&server, &req);
    let choice = &body["choices"][0];
    let text = choice["text"].as_str().unwrap();
    let lp = &choice["logprobs"];
    let tokens: Vec<&str> = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let n = tokens.len();
    assert!(n > 0, "{body}");
    for key in ["token_logprobs", "top_logprobs", "text_offset"] {
        assert_eq!(lp[key].as_array().unwrap().len(), n, "{key}: {body}");
    }
    assert_eq!(tokens.concat(), text);
    let mut offset = 0;
    for k in 0..n {
        assert_eq!(lp["text_offset"][k], offset, "{body}");
        offset += tokens[k].chars().count();
        let logprob = lp["token_logprobs"][k].as_f64().unwrap();
        assert!(logprob <= 0.0);
        let top = lp["top_logprobs"][k].as_object().unwrap();
        assert!((3..=4).contains(&top.len()), "{body}");
        // Greedy without penalties or bias samples the most likely token.
        assert_eq!(top[tokens[k]].as_f64().unwrap(), logprob);
        let best = top
            .values()
            .map(|v| v.as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        assert_eq!(best, logprob, "{body}");
    }

    // Streamed entries join to the whole ones.
    let mut streaming = req.clone();
    streaming["stream"] = json!(true);
    let events = server.stream_at(PATH, &streaming);
    for key in ["tokens", "token_logprobs", "top_logprobs", "text_offset"] {
        let joined: Vec<Value> = events
            .iter()
            .filter(|e| e["choices"][0]["finish_reason"].is_null())
            .flat_map(|e| e["choices"][0]["logprobs"][key].as_array().unwrap().clone())
            .collect();
        assert_eq!(Value::Array(joined), lp[key], "{key}");
    }

    // logprobs: 0 still scores the sampled tokens.
    let mut zero = req.clone();
    zero["logprobs"] = json!(0);
    let body = complete(&server, &zero);
    let top = &body["choices"][0]["logprobs"]["top_logprobs"];
    assert!(top
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t.as_object().unwrap().len() == 1));
}

#[test]
fn errors_name_the_parameter() {
    let server = Server::start(&[]);
    let ok = json!({"model": MODEL, "prompt": PROMPT, "max_tokens": 4});
    let with = |key: &str, value: Value| {
        let mut req = ok.clone();
        req[key] = value;
        req
    };
    for (req, param, code) in [
        (
            with("suffix", json!(" and more.")),
            "suffix",
            "unsupported_parameter",
        ),
        (
            with("best_of", json!(2)),
            "best_of",
            "unsupported_parameter",
        ),
        (with("logprobs", json!(6)), "logprobs", "invalid_value"),
        (with("prompt", json!("")), "prompt", "invalid_value"),
        (with("prompt", json!([])), "prompt", "empty_array"),
        (with("prompt", json!([1, 49152])), "prompt", "invalid_value"),
        (
            with("prompt", json!(["ok", 5])),
            "prompt[1]",
            "invalid_type",
        ),
        (with("n", json!(9)), "n", "invalid_value"),
        (
            with("max_tokens", json!(8192)),
            "prompt",
            "context_length_exceeded",
        ),
        (
            with("logit_bias", json!({"49152": 1})),
            "logit_bias",
            "invalid_value",
        ),
    ] {
        let (status, body) = server.post(PATH, &req);
        let error = assert_openai_error(status, &body, 400);
        assert_eq!(
            (&error["param"], &error["code"]),
            (&json!(param), &json!(code)),
            "{body}"
        );
    }
    let mut echo = with("echo", json!(true));
    echo["logprobs"] = json!(1);
    let (status, body) = server.post(PATH, &echo);
    let error = assert_openai_error(status, &body, 400);
    assert_eq!(error["param"], "echo");
    assert!(error["message"].as_str().unwrap().contains("logprobs"));

    // The context check counts each prompt's tokens plus max_tokens.
    let (status, body) = server.post(PATH, &with("max_tokens", json!(8190)));
    let error = assert_openai_error(status, &body, 400);
    assert!(
        error["message"].as_str().unwrap().contains("prompt"),
        "{body}"
    );

    let (status, body) = server.post(PATH, &with("model", json!("no-such-model")));
    assert_eq!(
        assert_openai_error(status, &body, 404)["code"],
        "model_not_found"
    );
    let (status, body) = server.post(PATH, &with("model", json!("all-minilm-l6-v2")));
    let error = assert_openai_error(status, &body, 400);
    assert_eq!(error["param"], "model");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("/v1/completions"),
        "{body}"
    );
    let (status, body) = server.get(PATH);
    assert_openai_error(status, &body, 405);

    // Accepted and harmless: best_of equal to n, an empty suffix, user.
    let mut fine = with("best_of", json!(1));
    fine["suffix"] = json!("");
    fine["user"] = json!("u-1");
    let (status, body) = server.post(PATH, &fine);
    assert_eq!(status, 200, "{body}");
}
