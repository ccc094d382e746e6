//! Counters the server exposes at `/metrics` (Prometheus text format).

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use sandpiper_llm::Model;

/// How many recent guest instantiations the quantiles are taken over.
const RECENT: usize = 4096;

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
    /// The last [`RECENT`] instantiation times, for the median and p99.
    recent_instantiate_micros: Mutex<VecDeque<u64>>,
    /// Chat models, whose batching and prefix counters are reported.
    chat_models: Mutex<Vec<Arc<Model>>>,
}

impl Metrics {
    /// Records one guest instance creation (store, request resources and
    /// instantiation).
    pub fn instantiated(&self, micros: u64) {
        self.instantiations.fetch_add(1, Relaxed);
        self.instantiate_micros_total.fetch_add(micros, Relaxed);
        if let Ok(mut recent) = self.recent_instantiate_micros.lock() {
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(micros);
        }
    }

    /// Reports `model`'s batching and prefix counters from now on.
    pub fn watch(&self, model: Arc<Model>) {
        if let Ok(mut models) = self.chat_models.lock() {
            models.push(model);
        }
    }

    fn chat_models(&self) -> Vec<Arc<Model>> {
        self.chat_models
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Sequence steps and the forward passes they took, over all chat models.
    fn batch_totals(&self) -> (u64, u64) {
        self.chat_models()
            .iter()
            .filter_map(|m| m.batch_stats())
            .fold((0, 0), |(s, b), x| (s + x.steps, b + x.batches))
    }

    /// Prompts started from a kept prefix, and the tokens reused, over all
    /// chat models.
    fn prefix_totals(&self) -> (u64, u64) {
        self.chat_models()
            .iter()
            .filter_map(|m| m.prefix_stats())
            .fold((0, 0), |(h, t), x| (h + x.hits, t + x.reused_tokens))
    }

    /// The median and 99th percentile of recent instantiation times.
    fn instantiate_quantiles(&self) -> Option<(u64, u64)> {
        let mut recent: Vec<u64> = self
            .recent_instantiate_micros
            .lock()
            .ok()?
            .iter()
            .copied()
            .collect();
        if recent.is_empty() {
            return None;
        }
        recent.sort_unstable();
        let at = |q: f64| recent[((recent.len() - 1) as f64 * q).round() as usize];
        Some((at(0.5), at(0.99)))
    }

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
        let (steps, passes) = self.batch_totals();
        put(
            "sandpiper_llm_steps_total",
            "counter",
            "Sequence steps (decode steps and prompt chunks) run by chat models.",
            steps,
        );
        put(
            "sandpiper_llm_forward_passes_total",
            "counter",
            "Forward passes those steps took: concurrent sequences' steps are batched into one.",
            passes,
        );
        let (hits, reused) = self.prefix_totals();
        put(
            "sandpiper_prompt_prefix_hits_total",
            "counter",
            "Prompts that started with the tokens of an earlier request, whose KV cache was reused.",
            hits,
        );
        put(
            "sandpiper_prompt_tokens_reused_total",
            "counter",
            "Prompt tokens taken from earlier requests' KV caches instead of computed.",
            reused,
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
        if let Some((median, p99)) = self.instantiate_quantiles() {
            let name = "sandpiper_guest_instantiate_microseconds";
            let _ = writeln!(
                out,
                "# HELP {name} Guest instance creation time over the last {RECENT} instances.\n# TYPE {name} summary\n{name}{{quantile=\"0.5\"}} {median}\n{name}{{quantile=\"0.99\"}} {p99}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instantiation_quantiles_are_rendered() {
        let m = Metrics::default();
        assert!(!m.render().contains("quantile"));
        for micros in 1..=100 {
            m.instantiated(micros);
        }
        let text = m.render();
        assert!(
            text.contains("sandpiper_guest_instantiate_microseconds{quantile=\"0.5\"} 51"),
            "{text}"
        );
        assert!(
            text.contains("sandpiper_guest_instantiate_microseconds{quantile=\"0.99\"} 99"),
            "{text}"
        );
        assert!(text.contains("sandpiper_guest_instantiations_total 100"));
        assert!(text.contains("sandpiper_guest_instantiate_microseconds_total 5050"));
    }
}
