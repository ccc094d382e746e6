//! Counters the server exposes at `/metrics` (Prometheus text format).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub guest_errors: AtomicU64,
    /// Guest instances currently running a request.
    pub active_instances: AtomicU64,
    /// Execution contexts (sequences) alive in guests.
    pub active_sequences: AtomicU64,
    pub tokens_generated: AtomicU64,
    pub prompt_tokens: AtomicU64,
    /// Tokens fed to embedding models.
    pub embedding_tokens: AtomicU64,
    /// Audio samples synthesised by speech voices.
    pub speech_samples: AtomicU64,
    pub instantiate_micros_total: AtomicU64,
    pub instantiations: AtomicU64,
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut put = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        put(
            "sandpiper_requests_total",
            "counter",
            "HTTP requests handed to guests.",
            self.requests.load(Relaxed),
        );
        put(
            "sandpiper_guest_errors_total",
            "counter",
            "Guest traps and failures to start.",
            self.guest_errors.load(Relaxed),
        );
        put(
            "sandpiper_active_instances",
            "gauge",
            "Guest instances running.",
            self.active_instances.load(Relaxed),
        );
        put(
            "sandpiper_active_sequences",
            "gauge",
            "Model execution contexts alive.",
            self.active_sequences.load(Relaxed),
        );
        put(
            "sandpiper_generated_tokens_total",
            "counter",
            "Tokens sampled by chat models.",
            self.tokens_generated.load(Relaxed),
        );
        put(
            "sandpiper_prompt_tokens_total",
            "counter",
            "Prompt tokens fed to chat models.",
            self.prompt_tokens.load(Relaxed),
        );
        put(
            "sandpiper_embedding_tokens_total",
            "counter",
            "Tokens fed to embedding models.",
            self.embedding_tokens.load(Relaxed),
        );
        put(
            "sandpiper_speech_samples_total",
            "counter",
            "Audio samples synthesised by speech voices.",
            self.speech_samples.load(Relaxed),
        );
        put(
            "sandpiper_guest_instantiations_total",
            "counter",
            "Guest instances created.",
            self.instantiations.load(Relaxed),
        );
        put(
            "sandpiper_guest_instantiate_microseconds_total",
            "counter",
            "Time spent creating guest instances.",
            self.instantiate_micros_total.load(Relaxed),
        );
        out
    }
}
