//! Generations run beside each other and beside the HTTP runtime.

mod common;

use std::io::{BufRead, BufReader};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{paris_request, streamed_text, Server, MODEL};
use serde_json::json;

/// These tests measure the server under its own load; run them one at a time
/// so they do not load each other's CPU (the machine has two cores).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn two_generations_and_health_checks_at_once() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&[]);
    // Long enough to watch: 300 tokens take a second or more even on the
    // native kernels (a one-sentence answer was over before the first check).
    let long = json!({
        "model": MODEL, "temperature": 0, "max_tokens": 300,
        "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
    });
    let (solo_status, solo) = server.post("/v1/chat/completions", &long);
    assert_eq!(solo_status, 200);
    let want = solo["choices"][0]["message"]["content"].clone();

    std::thread::scope(|s| {
        let gens: Vec<_> = (0..2)
            .map(|_| s.spawn(|| server.post("/v1/chat/completions", &long)))
            .collect();
        // Health checks while both generate.
        let mut worst = Duration::ZERO;
        let mut checks = 0;
        std::thread::sleep(Duration::from_millis(50));
        while !gens.iter().all(|g| g.is_finished()) && checks < 200 {
            let t = Instant::now();
            let (status, _) = server.get("/health");
            assert_eq!(status, 200);
            worst = worst.max(t.elapsed());
            checks += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        for g in gens {
            let (status, body) = g.join().unwrap();
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["choices"][0]["message"]["content"], want);
        }
        eprintln!("{checks} health checks during generation, worst {worst:?}");
        assert!(
            checks >= 3,
            "generations finished too fast to observe ({checks} checks)"
        );
        assert!(
            worst < Duration::from_millis(100),
            "/health took {worst:?} during generation"
        );
    });
}

/// The HTTP threads run below the priority of the threads that run
/// inference (guest threads and kernel workers), so that sending a token
/// never holds a CPU the next forward pass is waiting for; see
/// `yield_to_inference` in main.rs.
#[cfg(target_os = "linux")]
#[test]
fn http_threads_yield_to_inference() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&[]);
    // A generation, so that every kind of thread has started.
    let (status, _) = server.post("/v1/chat/completions", &paris_request());
    assert_eq!(status, 200);
    let mut nice: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for task in std::fs::read_dir(format!("/proc/{}/task", server.pid())).unwrap() {
        let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
        // `pid (comm) state ...`: the comm may hold spaces; nice is field 19.
        let (head, rest) = stat.rsplit_once(')').unwrap();
        let comm = head.split_once('(').unwrap().1;
        let kind = comm.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        let value = rest.split_whitespace().nth(16).unwrap().parse().unwrap();
        nice.entry(kind.to_string()).or_default().push(value);
    }
    // (Tokio's blocking threads, should the HTTP runtime start any, share
    // its name and its start hook.)
    for (kind, want) in [
        ("sandpiper-http", 5),
        ("sandpiper-guest", 0),
        ("sandpiper-llm", 0),
    ] {
        let values = nice
            .get(kind)
            .unwrap_or_else(|| panic!("no {kind} thread: {nice:?}"));
        assert!(values.iter().all(|&n| n == want), "{nice:?}");
    }
}

#[test]
fn a_client_that_disconnects_stops_the_generation() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&[]);
    let req = json!({
        "model": MODEL, "temperature": 0, "stream": true, "max_tokens": 2000,
        "messages": [{"role": "user", "content": "Tell me a very long story about a dragon."}],
    });
    let resp = Server::client()
        .post(server.url("/v1/chat/completions"))
        .json(&req)
        .send()
        .unwrap();
    let mut reader = BufReader::new(resp);
    let mut line = String::new();
    let mut chunks = 0;
    while chunks < 3 {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.starts_with("data: ") {
            chunks += 1;
        }
    }
    assert_eq!(server.metric("sandpiper_active_sequences"), 1);
    drop(reader);
    // The guest notices on its next write and drops its sequence.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("sandpiper_active_sequences") != 0 {
        assert!(
            Instant::now() < deadline,
            "generation kept running after disconnect"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = server.metric("sandpiper_generated_tokens_total");
    assert!(
        after < 2000,
        "generated {after} tokens for a client that left"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.metric("sandpiper_generated_tokens_total"), after);
    // And the server serves the next request.
    let (status, _) = server.post("/v1/chat/completions", &paris_request());
    assert_eq!(status, 200);
}

/// Four streams at once decode in shared forward passes (continuous
/// batching), and each still gets exactly the text it gets alone.
#[test]
fn concurrent_streams_are_batched_and_unchanged() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&[]);
    let request = |topic: &str| {
        json!({
            "model": MODEL, "temperature": 0, "stream": true, "max_tokens": 40,
            "messages": [{"role": "user", "content": format!("Write a long story about {topic}.")}],
        })
    };
    let topics = ["a dragon", "the sea", "a robot", "a lighthouse keeper"];
    let alone: Vec<String> = topics
        .iter()
        .map(|t| streamed_text(&server.stream(&request(t))))
        .collect();
    let steps = server.metric("sandpiper_llm_steps_total");
    let passes = server.metric("sandpiper_llm_forward_passes_total");
    assert_eq!(steps, passes, "requests one at a time: one step per pass");

    let together: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = topics
            .iter()
            .map(|t| {
                let (server, body) = (&server, request(t));
                s.spawn(move || streamed_text(&server.stream(&body)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let steps = server.metric("sandpiper_llm_steps_total") - steps;
    let passes = server.metric("sandpiper_llm_forward_passes_total") - passes;
    eprintln!("4 streams: {steps} steps in {passes} forward passes");
    assert!(
        passes * 2 <= steps,
        "4 concurrent streams took {passes} forward passes for {steps} steps"
    );
    assert_eq!(
        together, alone,
        "batched streams must decode what they decode alone"
    );
}
