//! Chat completions end to end: HTTP → chat guest → wasi-nn → candle, on the
//! real default model.

mod common;

use common::{paris_request, streamed_text, token_counts, Server, MODEL};
use serde_json::{json, Value};

#[test]
fn answers_paris_streaming_and_not_identically() {
    let server = Server::start(&[]);
    let (status, body) = server.post("/v1/chat/completions", &paris_request());
    assert_eq!(status, 200, "{body}");
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("Paris"), "{text:?}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let usage = &body["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 10);
    assert!(usage["completion_tokens"].as_u64().unwrap() >= 5);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );

    let mut streaming = paris_request();
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({"include_usage": true});
    let events = server.stream(&streaming);
    assert_eq!(events[0]["object"], "chat.completion.chunk");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        streamed_text(&events),
        text,
        "streamed deltas differ from the response"
    );
    let finish = events
        .iter()
        .find_map(|e| e["choices"][0]["finish_reason"].as_str())
        .unwrap();
    assert_eq!(finish, "stop");
    let last = events.last().unwrap();
    assert_eq!(last["choices"].as_array().unwrap().len(), 0);
    assert_eq!(token_counts(&last["usage"]), token_counts(&body["usage"]));
}

#[test]
fn max_tokens_stop_and_seed() {
    let server = Server::start(&[]);
    // max_tokens cuts the answer: finish_reason "length", exact token count.
    let mut req = paris_request();
    req["max_tokens"] = json!(3);
    let (status, body) = server.post("/v1/chat/completions", &req);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 3);

    // A stop sequence ends the answer and never appears in it.
    let mut req = paris_request();
    req["stop"] = json!(["Paris"]);
    let (status, body) = server.post("/v1/chat/completions", &req);
    assert_eq!(status, 200, "{body}");
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!text.contains("Paris"), "{text:?}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let mut streaming = req.clone();
    streaming["stream"] = json!(true);
    assert_eq!(streamed_text(&server.stream(&streaming)), text);

    // Sampling with a seed reproduces; a different seed is allowed to differ.
    let sampled = json!({
        "model": MODEL, "temperature": 1.0, "top_p": 0.95, "seed": 1234, "max_tokens": 24,
        "messages": [{"role": "user", "content": "Write a short poem about the sea."}],
    });
    let (_, a) = server.post("/v1/chat/completions", &sampled);
    let (_, b) = server.post("/v1/chat/completions", &sampled);
    assert_eq!(a["choices"][0]["message"], b["choices"][0]["message"]);
}

#[test]
fn n_choices_are_separate_reproducible_sequences() {
    let server = Server::start(&[]);
    let req = json!({
        "model": MODEL, "temperature": 1.0, "seed": 7, "max_tokens": 16, "n": 3,
        "messages": [{"role": "user", "content": "Write a short poem about the sea."}],
    });
    let (status, a) = server.post("/v1/chat/completions", &req);
    assert_eq!(status, 200, "{a}");
    let choices = a["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{a}");
    let texts: Vec<&str> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            assert_eq!(c["index"], i, "{a}");
            c["message"]["content"].as_str().unwrap()
        })
        .collect();
    // Seeds 7, 8 and 9: the choices are sampled independently.
    assert!(texts[0] != texts[1] || texts[1] != texts[2], "{texts:?}");
    // The prompt is counted once, the completions summed.
    let (_, one) = server.post(
        "/v1/chat/completions",
        &json!({"model": MODEL, "max_tokens": 1, "messages": req["messages"]}),
    );
    assert_eq!(a["usage"]["prompt_tokens"], one["usage"]["prompt_tokens"]);
    let finishes: Vec<&str> = choices
        .iter()
        .map(|c| c["finish_reason"].as_str().unwrap())
        .collect();
    assert!(finishes.iter().all(|f| *f == "stop" || *f == "length"));

    // The whole response reproduces.
    let (_, b) = server.post("/v1/chat/completions", &req);
    assert_eq!(a["choices"], b["choices"]);
    assert_eq!(token_counts(&a["usage"]), token_counts(&b["usage"]));

    // Streamed: each chunk names its choice; per index the deltas join to
    // the non-streamed text, each choice ends with its own finish chunk.
    let mut streaming = req.clone();
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({"include_usage": true});
    let events = server.stream(&streaming);
    let mut streamed = vec![String::new(); 3];
    let mut finished = vec![None; 3];
    for event in &events {
        for c in event["choices"].as_array().unwrap() {
            let i = c["index"].as_u64().unwrap() as usize;
            assert!(finished[i].is_none(), "delta after choice {i} finished");
            if let Some(text) = c["delta"]["content"].as_str() {
                streamed[i].push_str(text);
            }
            if let Some(reason) = c["finish_reason"].as_str() {
                finished[i] = Some(reason.to_string());
            }
        }
    }
    assert_eq!(streamed, texts);
    let finished: Vec<String> = finished.into_iter().map(Option::unwrap).collect();
    assert_eq!(finished, finishes);
    assert_eq!(
        token_counts(&events.last().unwrap()["usage"]),
        token_counts(&a["usage"])
    );

    // More than 8 choices is refused by name.
    let mut many = req.clone();
    many["n"] = json!(9);
    let (status, body) = server.post("/v1/chat/completions", &many);
    assert_eq!((status, &body["error"]["param"]), (400, &json!("n")));
}

#[test]
fn prompts_reuse_the_kv_cache_of_earlier_requests() {
    let server = Server::start(&[]);
    let req = json!({"model": MODEL, "temperature": 0, "max_tokens": 12, "messages": [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "Why is the sky blue?"}]});
    let cached = |body: &Value| {
        body["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or_else(|| panic!("no cached_tokens: {body}"))
    };
    let (status, first) = server.post("/v1/chat/completions", &req);
    assert_eq!(status, 200, "{first}");
    let prompt = first["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(cached(&first) < prompt - 1, "{first}");

    // The same prompt again: all of it but the last token is reused (kept
    // as soon as the first request computed it), and the answer is the same.
    let reused = server.metric("sandpiper_prompt_tokens_reused_total");
    let (_, again) = server.post("/v1/chat/completions", &req);
    assert_eq!(cached(&again), prompt - 1, "{again}");
    assert_eq!(again["choices"], first["choices"]);
    assert_eq!(
        server.metric("sandpiper_prompt_tokens_reused_total") - reused,
        prompt - 1
    );

    // The conversation's next turn reuses the whole first turn, the answer
    // included: kept when the first request's sequence ended.
    server.wait_for_sequences_to_end();
    let mut next = req.clone();
    let messages = next["messages"].as_array_mut().unwrap();
    messages.push(first["choices"][0]["message"].clone());
    messages.push(json!({"role": "user", "content": "And at sunset?"}));
    let (status, turn) = server.post("/v1/chat/completions", &next);
    assert_eq!(status, 200, "{turn}");
    assert!(cached(&turn) >= prompt, "{turn}");

    // Keeping nothing changes no answer.
    let plain = Server::start(&["--prefix-cache-mib", "0"]);
    for body in [&req, &req, &next] {
        let (_, fresh) = plain.post("/v1/chat/completions", body);
        assert_eq!(cached(&fresh), 0, "{fresh}");
        let (_, kept) = server.post("/v1/chat/completions", body);
        assert_eq!(fresh["choices"], kept["choices"]);
    }
    assert_eq!(plain.metric("sandpiper_prompt_prefix_hits_total"), 0);
}

#[test]
fn models_are_listed() {
    let server = Server::start(&[]);
    let (status, body) = server.get("/v1/models");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    let model = &body["data"][0];
    assert_eq!(model["id"], MODEL);
    assert_eq!(model["object"], "model");
    assert_eq!(model["kind"], "chat");
    assert!(model["owned_by"].is_string());
    let (status, one) = server.get(&format!("/v1/models/{MODEL}"));
    assert_eq!(status, 200);
    assert_eq!(&one, model);
}
