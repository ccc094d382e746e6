//! Sampling parameters end to end on the real default model: penalties,
//! `logit_bias`, `logprobs`/`top_logprobs`, and the OpenAI parameters the
//! server refuses rather than ignores.

mod common;

use common::{chat_model, paris_request, Server, MODEL};
use serde_json::{json, Value};

fn chat(server: &Server, req: &Value) -> Value {
    let (status, body) = server.post("/v1/chat/completions", req);
    assert_eq!(status, 200, "{body}");
    body
}

fn content(body: &Value) -> &str {
    body["choices"][0]["message"]["content"].as_str().unwrap()
}

fn entries(body: &Value) -> &Vec<Value> {
    body["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap_or_else(|| panic!("no logprobs: {body}"))
}

#[test]
fn logit_bias_bans_and_forces_tokens() {
    let server = Server::start(&[]);
    let model = chat_model();
    let mut req = paris_request();
    req["max_tokens"] = json!(8);
    req["logprobs"] = json!(true);
    let greedy = chat(&server, &req);
    let first = entries(&greedy)[0]["token"].as_str().unwrap().to_string();
    let ids = model.tokenize(&first).unwrap();
    assert_eq!(ids.len(), 1, "{first:?} → {ids:?}");
    let first_id = ids[0];

    // A strong negative bias on the greedy answer's first token changes it.
    req["logit_bias"] = json!({ first_id.to_string(): -100 });
    let banned = chat(&server, &req);
    let new_first = entries(&banned)[0]["token"].as_str().unwrap();
    assert_ne!(new_first, first, "{banned}");
    assert!(
        entries(&banned)
            .iter()
            .all(|e| e["token"] != first.as_str()),
        "{banned}"
    );

    // A strong positive bias forces a token at every step.
    let forced = model.tokenize(" banana").unwrap()[0];
    let forced_text = String::from_utf8(model.token_bytes(forced).unwrap().to_vec()).unwrap();
    let mut req = paris_request();
    req["max_tokens"] = json!(3);
    req["logprobs"] = json!(true);
    req["top_logprobs"] = json!(2);
    req["logit_bias"] = json!({ forced.to_string(): 100 });
    let body = chat(&server, &req);
    assert_eq!(content(&body), forced_text.repeat(3), "{body}");
    // Logprobs are the model's own, before the bias: the forced token is
    // unlikely and not the model's top choice.
    let e = &entries(&body)[0];
    assert!(e["logprob"].as_f64().unwrap() < -1.0, "{e}");
    assert_ne!(e["top_logprobs"][0]["token"], forced_text.as_str(), "{e}");

    // Biasing the end-of-turn token ends the answer at once.
    let eos = model.info().eos_token_ids[0];
    let mut req = paris_request();
    req["logit_bias"] = json!({ eos.to_string(): 100 });
    let body = chat(&server, &req);
    assert_eq!(content(&body), "");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 1);
}

/// How often the most frequent word occurs.
fn max_repeats(text: &str) -> usize {
    let mut counts = std::collections::HashMap::new();
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        *counts.entry(w.to_lowercase()).or_insert(0) += 1;
    }
    counts.into_values().max().unwrap_or(0)
}

#[test]
fn penalties_reduce_repetition() {
    let server = Server::start(&[]);
    let req = json!({
        "model": MODEL,
        "temperature": 0,
        "max_tokens": 40,
        "messages": [{"role": "user", "content": "List the word apple over and over."}],
    });
    let plain = chat(&server, &req);
    let base = max_repeats(content(&plain));
    assert!(
        base >= 8,
        "the prompt should make the model repeat: {plain}"
    );
    for (param, value) in [("frequency_penalty", 2.0), ("presence_penalty", 2.0)] {
        let mut penalised = req.clone();
        penalised[param] = json!(value);
        let body = chat(&server, &penalised);
        let repeats = max_repeats(content(&body));
        assert!(
            repeats * 2 <= base,
            "{param}: {repeats} vs {base} repeats: {}",
            content(&body)
        );
    }
    // Neutral penalties change nothing.
    let mut neutral = req.clone();
    neutral["frequency_penalty"] = json!(0);
    neutral["presence_penalty"] = json!(0);
    assert_eq!(content(&chat(&server, &neutral)), content(&plain));
}

#[test]
fn logprobs_whole_and_streamed() {
    let server = Server::start(&[]);
    let mut req = paris_request();
    // Without logprobs, the field is null.
    let body = chat(&server, &req);
    assert_eq!(body["choices"][0]["logprobs"], Value::Null);

    req["logprobs"] = json!(true);
    req["top_logprobs"] = json!(3);
    let body = chat(&server, &req);
    let text = content(&body);
    assert!(text.contains("Paris"), "{text}");
    let list = entries(&body);
    assert!(!list.is_empty());
    let joined: String = list.iter().map(|e| e["token"].as_str().unwrap()).collect();
    assert_eq!(joined, text, "the tokens spell the content");
    for e in list {
        let logprob = e["logprob"].as_f64().unwrap();
        assert!(logprob <= 0.0, "{e}");
        let bytes: Vec<u8> = e["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(bytes, e["token"].as_str().unwrap().as_bytes(), "{e}");
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{e}");
        let values: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
        assert!(values.windows(2).all(|w| w[0] >= w[1]), "{e}");
        assert!(values.iter().all(|&v| v <= 0.0), "{e}");
        // Greedy: the chosen token is the most likely one.
        assert_eq!(top[0]["token"], e["token"], "{e}");
        assert_eq!(top[0]["bytes"], e["bytes"], "{e}");
        assert!((values[0] - logprob).abs() < 1e-6, "{e}");
        assert!(top
            .iter()
            .all(|t| t["token"].is_string() && t["bytes"].is_array()));
    }

    // Streamed chunks carry the logprobs of the text they deliver, and
    // together they equal the whole response's.
    req["stream"] = json!(true);
    let events = server.stream(&req);
    let mut streamed = Vec::new();
    for event in &events {
        let choice = &event["choices"][0];
        match choice["delta"]["content"].as_str() {
            Some(delta) if !delta.is_empty() => {
                let part = choice["logprobs"]["content"].as_array().unwrap();
                let part_text: String = part.iter().map(|e| e["token"].as_str().unwrap()).collect();
                assert_eq!(part_text, delta, "{event}");
                streamed.extend(part.iter().cloned());
            }
            _ => {}
        }
    }
    assert_eq!(streamed.len(), list.len());
    for (a, b) in streamed.iter().zip(list) {
        assert_eq!(a["token"], b["token"]);
        assert_eq!(a["bytes"], b["bytes"]);
        assert!((a["logprob"].as_f64().unwrap() - b["logprob"].as_f64().unwrap()).abs() < 1e-4);
    }

    // A stop sequence's text never shows in the logprobs either.
    let mut req = paris_request();
    req["logprobs"] = json!(true);
    req["stop"] = json!(["Paris"]);
    let body = chat(&server, &req);
    let joined: String = entries(&body)
        .iter()
        .map(|e| e["token"].as_str().unwrap())
        .collect();
    assert_eq!(joined, content(&body));
    assert!(!joined.contains("Paris"), "{body}");
}

#[test]
fn unsupported_and_invalid_parameters_are_refused() {
    let server = Server::start(&[]);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("frequency_penalty", json!(2.5), "invalid_value"),
        ("presence_penalty", json!(-3), "invalid_value"),
        ("frequency_penalty", json!("high"), "invalid_type"),
        ("logit_bias", json!({"abc": 1}), "invalid_value"),
        ("logit_bias", json!({"5": 150}), "invalid_value"),
        ("logit_bias", json!({"49152": 1}), "invalid_value"),
        ("top_logprobs", json!(2), "invalid_value"),
        // `tool_choice` needs `tools`; `tools` must be a list of function tools.
        ("tool_choice", json!("required"), "invalid_value"),
        ("tools", json!({"type": "function"}), "invalid_type"),
        ("functions", json!([{"name": "f"}]), "unsupported_parameter"),
        (
            "function_call",
            json!({"name": "f"}),
            "unsupported_parameter",
        ),
        ("response_format", json!("json"), "invalid_type"),
        (
            "audio",
            json!({"voice": "alloy", "format": "wav"}),
            "unsupported_parameter",
        ),
        (
            "modalities",
            json!(["text", "audio"]),
            "unsupported_parameter",
        ),
        (
            "prediction",
            json!({"type": "content", "content": "x"}),
            "unsupported_parameter",
        ),
        ("web_search_options", json!({}), "unsupported_parameter"),
    ];
    for (param, value, code) in cases {
        let mut req = paris_request();
        req[param] = value;
        let (status, body) = server.post("/v1/chat/completions", &req);
        assert_eq!(status, 400, "{param}: {body}");
        assert_eq!(body["error"]["param"], param, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    }
    let mut req = paris_request();
    req["logprobs"] = json!(true);
    req["top_logprobs"] = json!(21);
    let (status, body) = server.post("/v1/chat/completions", &req);
    assert_eq!(
        (status, &body["error"]["param"]),
        (400, &json!("top_logprobs"))
    );

    // Harmless defaults and unknown fields are accepted.
    let mut req = paris_request();
    req["max_tokens"] = json!(4);
    for (k, v) in [
        ("n", json!(1)),
        ("response_format", json!({"type": "text"})),
        ("logprobs", json!(false)),
        ("user", json!("someone")),
        ("metadata", json!({"k": "v"})),
        ("store", json!(false)),
        ("service_tier", json!("auto")),
        ("tools", json!([])),
        ("tool_choice", json!("none")),
        ("parallel_tool_calls", json!(true)),
        ("some_future_field", json!({"x": 1})),
    ] {
        req[k] = v;
    }
    let body = chat(&server, &req);
    assert_eq!(body["choices"][0]["logprobs"], Value::Null);
}
