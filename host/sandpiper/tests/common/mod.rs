//! A real `sandpiper serve` process on a free loopback port, for tests that
//! talk to it over real HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use serde_json::Value;

pub struct Server {
    child: Child,
    pub base: String,
}

/// Pulls the default models once per test binary (a no-op when the store has them).
fn ensure_default_model() {
    static PULL: Once = Once::new();
    PULL.call_once(|| {
        let store = sandpiper_models::Store::open_default().expect("model store");
        store
            .ensure(
                &sandpiper_models::catalog::default_chat(),
                sandpiper_models::Progress::Hide,
            )
            .expect("pulling the default chat model");
        store
            .ensure(
                &sandpiper_models::catalog::default_embedding(),
                sandpiper_models::Progress::Hide,
            )
            .expect("pulling the default embedding model");
        store
            .ensure(
                &sandpiper_models::catalog::default_voice(),
                sandpiper_models::Progress::Hide,
            )
            .expect("pulling the default voice");
        sandpiper_voice::runtime::locate(None, &store, sandpiper_models::Progress::Hide)
            .expect("pulling ONNX Runtime for the voice");
    });
}

impl Server {
    /// `sandpiper serve` with the default model and any extra arguments.
    /// (The child is waited for in `Drop`.)
    #[allow(clippy::zombie_processes)]
    pub fn start(extra: &[&str]) -> Server {
        ensure_default_model();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sandpiper"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting sandpiper");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            if stdout.read_line(&mut line).unwrap() == 0 {
                let status = child.wait().unwrap();
                panic!("sandpiper exited before listening: {status}");
            }
            if let Some(url) = line.trim().strip_prefix("sandpiper listening on ") {
                let base = url.to_string();
                // Keep draining stdout so the server never blocks on it.
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut stdout, &mut std::io::sink());
                });
                return Server { child, base };
            }
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn client() -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .unwrap()
    }

    /// POST a raw body; returns status and parsed JSON (Null if not JSON).
    pub fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let resp = Self::client()
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, &body.to_string())
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let resp = Self::client().get(self.url(path)).send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// A streaming chat request: the `data:` payloads, in order, up to `[DONE]`.
    pub fn stream(&self, body: &Value) -> Vec<Value> {
        self.stream_at("/v1/chat/completions", body)
    }

    /// A streaming POST to `path`: a 200 event stream that ends with
    /// `[DONE]`; returns the `data:` payloads before it, in order.
    pub fn stream_at(&self, path: &str, body: &Value) -> Vec<Value> {
        let resp = Self::client()
            .post(self.url(path))
            .json(body)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let text = resp.text().unwrap();
        assert!(
            text.ends_with("data: [DONE]\n\n"),
            "stream did not end with [DONE]: {text}"
        );
        sse_events(&text)
    }

    /// A metric's current value from `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let text = Self::client()
            .get(self.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no metric {name}"))
            .parse()
            .unwrap()
    }

    /// Waits until no model sequence is alive: a response can reach the
    /// client a moment before its guest instance ends and the sequence's KV
    /// cache is kept for the prompts that follow.
    pub fn wait_for_sequences_to_end(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.metric("sandpiper_active_sequences") != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "sequences still alive after 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `usage` record's token counts, without `prompt_tokens_details`: how
/// many prompt tokens an earlier request's KV cache supplied differs between
/// otherwise identical requests (the first computes what the next reuses).
pub fn token_counts(usage: &Value) -> [u64; 3] {
    let cached = usage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or_else(|| panic!("no cached_tokens in {usage}"));
    let prompt = usage["prompt_tokens"].as_u64().unwrap();
    assert!(cached < prompt, "{usage}");
    ["prompt_tokens", "completion_tokens", "total_tokens"].map(|k| usage[k].as_u64().unwrap())
}

/// The JSON `data:` payloads of a server-sent-event body, in order.
/// `[DONE]`, which ends chat and completion streams, is left out; nothing
/// may follow it.
pub fn sse_events(text: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut done = false;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        assert!(!done, "data after [DONE]: {text}");
        if data == "[DONE]" {
            done = true;
            continue;
        }
        events.push(serde_json::from_str(data).unwrap());
    }
    events
}

/// The default chat model, in-process, for its tokenizer.
pub fn chat_model() -> std::sync::Arc<sandpiper_llm::Model> {
    let store = sandpiper_models::Store::open_default().unwrap();
    let path = store
        .resolve(&sandpiper_models::catalog::default_chat())
        .unwrap()
        .expect("the default chat model is pulled by Server::start");
    sandpiper_llm::Model::load(MODEL, &path).unwrap()
}

/// Checks the status and OpenAI's error shape (`message`, `type`, `param`,
/// `code`); returns the `error` object for further checks.
pub fn assert_openai_error(status: u16, body: &Value, want_status: u16) -> &Value {
    assert_eq!(status, want_status, "{body}");
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    assert!(
        error.get("code").is_some() && error.get("param").is_some(),
        "{body}"
    );
    error
}

pub const MODEL: &str = "smollm2-135m-instruct";

pub fn paris_request() -> Value {
    serde_json::json!({
        "model": MODEL,
        "temperature": 0,
        "max_tokens": 40,
        "messages": [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
    })
}

/// The concatenated content deltas of a chat stream.
pub fn streamed_text(events: &[Value]) -> String {
    events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect()
}
