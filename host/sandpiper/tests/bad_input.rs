//! Bad requests get OpenAI-shaped errors with the right status, and the
//! server keeps serving after each.

mod common;

use common::{paris_request, Server, MODEL};
use serde_json::{json, Value};

fn assert_error(status: u16, body: &Value, want_status: u16, param: Option<&str>) {
    let error = common::assert_openai_error(status, body, want_status);
    if let Some(param) = param {
        assert_eq!(error["param"], param, "{body}");
    }
}

/// The server still answers a real request.
fn assert_healthy(server: &Server) {
    let (status, _) = server.get("/health");
    assert_eq!(status, 200);
    let mut req = paris_request();
    req["max_tokens"] = json!(2);
    let (status, body) = server.post("/v1/chat/completions", &req);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn bad_requests_get_errors_and_the_server_keeps_serving() {
    let server = Server::start(&[]);
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases: Vec<(&str, String, u16, Option<&str>)> = vec![
        ("malformed JSON", "{\"model\": ".into(), 400, None),
        (
            "unknown model",
            json!({"model": "no-such-model", "messages": user}).to_string(),
            404,
            None,
        ),
        (
            "missing messages",
            json!({"model": MODEL}).to_string(),
            400,
            Some("messages"),
        ),
        (
            "empty messages",
            json!({"model": MODEL, "messages": []}).to_string(),
            400,
            Some("messages"),
        ),
        (
            "messages of wrong type",
            json!({"model": MODEL, "messages": "hi"}).to_string(),
            400,
            Some("messages"),
        ),
        (
            "temperature of wrong type",
            json!({"model": MODEL, "messages": user, "temperature": "hot"}).to_string(),
            400,
            Some("temperature"),
        ),
        (
            "negative max_tokens",
            json!({"model": MODEL, "messages": user, "max_tokens": -5}).to_string(),
            400,
            Some("max_tokens"),
        ),
    ];
    for (what, body, status, param) in cases {
        let (got, resp) = server.post_raw("/v1/chat/completions", &body);
        assert_error(got, &resp, status, param);
        eprintln!("{what}: {got} {resp}");
    }
    let (_, unknown) = server.post_raw(
        "/v1/chat/completions",
        &json!({"model": "no-such-model", "messages": user}).to_string(),
    );
    assert_eq!(unknown["error"]["code"], "model_not_found");
    assert_healthy(&server);
}

#[test]
fn prompt_longer_than_the_context_window_is_rejected() {
    let server = Server::start(&[]);
    // ~3 tokens per repetition: well past the 8192-token window.
    let long = "the quick brown fox ".repeat(4000);
    let req = json!({"model": MODEL, "messages": [{"role": "user", "content": long}]});
    let (status, body) = server.post("/v1/chat/completions", &req);
    assert_error(status, &body, 400, Some("messages"));
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    // Prompt + max_tokens past the window is rejected too.
    let req = json!({"model": MODEL, "max_tokens": 9000, "messages": [{"role": "user", "content": "hi"}]});
    let (status, body) = server.post("/v1/chat/completions", &req);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    assert_healthy(&server);
}

#[test]
fn unknown_paths_methods_and_oversized_bodies() {
    let server = Server::start(&["--max-body-bytes", "65536"]);
    let (status, body) = server.get("/v1/nothing-here");
    assert_error(status, &body, 404, None);
    let (status, body) = server.get("/not-api");
    assert_error(status, &body, 404, None);
    let (status, body) = server.get("/v1/chat/completions");
    assert_error(status, &body, 405, None);
    let big =
        json!({"model": MODEL, "messages": [{"role": "user", "content": "x".repeat(100_000)}]});
    let (status, body) = server.post("/v1/chat/completions", &big);
    assert_error(status, &body, 413, None);
    assert_healthy(&server);
}

#[test]
fn a_trapping_guest_costs_one_500() {
    let probe = format!("/probe/={}", sandpiper::guests::SANDBOX_PROBE_PATH);
    let server = Server::start(&["--guest", &probe]);
    let (status, body) = server.get("/probe/trap");
    assert_error(status, &body, 500, None);
    assert_eq!(body["error"]["type"], "server_error");
    let (status, body) = server.get("/probe/env");
    assert_eq!(status, 200, "{body}");
    assert_healthy(&server);
}

#[test]
fn an_api_key_is_required_when_configured() {
    let server = Server::start(&["--api-key", "sk-test-123"]);
    let client = Server::client();
    let models = server.url("/v1/models");
    for auth in [None, Some("Bearer wrong"), Some("sk-test-123")] {
        let mut req = client.get(&models);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let resp = req.send().unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{auth:?}");
        let body: Value = resp.json().unwrap();
        assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    }
    let resp = client
        .get(&models)
        .header("authorization", "Bearer sk-test-123")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // Health checks stay open for load balancers and probes.
    assert_eq!(
        client
            .get(server.url("/health"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[test]
fn a_guest_that_never_returns_is_stopped() {
    let probe = format!("/probe/={}", sandpiper::guests::SANDBOX_PROBE_PATH);
    // A small budget so the test is quick; chat requests still fit in it.
    let server = Server::start(&["--guest", &probe, "--guest-fuel", "2000000000"]);
    let started = std::time::Instant::now();
    let (status, body) = server.get("/probe/spin");
    assert_error(status, &body, 500, None);
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert_healthy(&server);
}
