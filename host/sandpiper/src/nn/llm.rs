//! The `ggml` backend: GGUF chat models run by `sandpiper_llm`.
//! The tensor protocol is documented in wit/nn-protocol.md.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use sandpiper_llm::{LlmError, Logprobs, Model, Sampled, SamplingParams, Sequence};
use wasmtime_wasi_nn::backend::{
    BackendError, BackendFromDir, BackendGraph, BackendInner, NamedTensor,
};
use wasmtime_wasi_nn::wit::{ExecutionTarget, GraphEncoding};
use wasmtime_wasi_nn::{ExecutionContext, Graph, Tensor};

use super::protocol::{self, named, NamedCompute};
use super::tensor::{bytes, i32s, invalid, to_bytes, to_text, to_tokens};
use crate::metrics::Metrics;

/// Answers `load` for the `ggml` encoding: models are loaded by the host from
/// its store, never from bytes a guest holds.
pub(crate) struct GgmlBackend;

impl BackendInner for GgmlBackend {
    fn encoding(&self) -> GraphEncoding {
        GraphEncoding::Ggml
    }

    fn load(&mut self, _: &[&[u8]], _: ExecutionTarget) -> Result<Graph, BackendError> {
        Err(invalid(
            "guests cannot load model bytes; use load-by-name with a served model id",
        ))
    }

    fn as_dir_loadable(&mut self) -> Option<&mut dyn BackendFromDir> {
        None
    }
}

/// A loaded chat model as a wasi-nn graph.
pub struct LlmGraph {
    model: Arc<Model>,
    metrics: Arc<Metrics>,
}

impl LlmGraph {
    #[allow(clippy::new_ret_no_self)]
    pub fn new(model: Arc<Model>, metrics: Arc<Metrics>) -> Graph {
        metrics.watch(model.clone());
        protocol::graph(LlmGraph { model, metrics })
    }
}

impl BackendGraph for LlmGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        self.metrics.active_sequences.fetch_add(1, Relaxed);
        Ok(protocol::context(LlmContext {
            seq: self.model.new_sequence(),
            metrics: Live(self.metrics.clone()),
        }))
    }
}

/// One sequence: its KV cache lives as long as the guest keeps the context.
struct LlmContext {
    seq: Sequence,
    /// Declared after `seq`, so fields drop in this order: the sequence
    /// counts as gone from `sandpiper_active_sequences` only once its cache
    /// is kept for reuse (what a client waiting for that gauge relies on).
    metrics: Live,
}

/// The server's metrics, with one more active sequence while this lives.
struct Live(Arc<Metrics>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.active_sequences.fetch_sub(1, Relaxed);
    }
}

impl std::ops::Deref for Live {
    type Target = Metrics;

    fn deref(&self) -> &Metrics {
        &self.0
    }
}

impl LlmContext {
    fn metadata(&self) -> Result<Vec<NamedTensor>, BackendError> {
        let json =
            serde_json::to_vec(self.seq.model().info()).map_err(|e| invalid(e.to_string()))?;
        Ok(vec![named("metadata", bytes(json))])
    }

    fn tokenize(&self, text: &Tensor) -> Result<Vec<NamedTensor>, BackendError> {
        let text = to_text("tokenize", text)?;
        let tokens = self
            .seq
            .model()
            .tokenize(text)
            .map_err(|e| invalid(format!("{e:#}")))?;
        Ok(vec![named("tokens", i32s(&tokens))])
    }

    /// Every token's bytes, concatenated, and where each starts: guests that
    /// constrain decoding match their grammar against these.
    fn vocab(&self) -> Vec<NamedTensor> {
        let model = self.seq.model();
        let size = model.info().vocab_size as u32;
        let mut all = Vec::new();
        let mut offsets = Vec::with_capacity(size as usize + 1);
        for id in 0..size {
            offsets.push(all.len() as u32);
            all.extend_from_slice(model.token_bytes(id).unwrap_or_default());
        }
        offsets.push(all.len() as u32);
        vec![named("vocab", bytes(all)), named("offsets", i32s(&offsets))]
    }

    /// The `logprobs` output: `{"logprob", "top": [{"id", "logprob", "bytes"}]}`.
    fn logprobs_json(&self, logprobs: &Logprobs) -> Vec<u8> {
        let model = self.seq.model();
        let top: Vec<_> = logprobs
            .top
            .iter()
            .map(|t| {
                serde_json::json!({
                    "id": t.id,
                    "logprob": t.logprob,
                    "bytes": model.token_bytes(t.id).unwrap_or_default(),
                })
            })
            .collect();
        serde_json::json!({"logprob": logprobs.logprob, "top": top})
            .to_string()
            .into_bytes()
    }

    fn step(&mut self, inputs: &[NamedTensor]) -> Result<Vec<NamedTensor>, BackendError> {
        let mut tokens = None;
        for input in inputs {
            match input.name.as_str() {
                "tokens" => tokens = Some(to_tokens("tokens", &input.tensor)?),
                "sampling" => {
                    let params: SamplingParams =
                        serde_json::from_str(to_text("sampling", &input.tensor)?)
                            .map_err(|e| invalid(format!("`sampling`: {e}")))?;
                    self.seq.set_sampling(&params);
                }
                other => return Err(invalid(format!("unknown input `{other}`"))),
            }
        }
        let tokens = tokens.ok_or_else(|| invalid("missing input `tokens`"))?;
        let fed = tokens.len() as u64;
        let sampled = self.seq.sample_step(&tokens);
        // The guest's turn until its next step: it writes the token, to a
        // client over HTTP when streaming. Kernel threads spinning meanwhile
        // would hold CPUs that work needs.
        sandpiper_llm::kernels::pool::global().rest();
        let prompt = sampled.is_ok() && self.seq.len() as u64 == fed;
        if sampled.is_ok() {
            if prompt {
                self.metrics.prompt_tokens.fetch_add(fed, Relaxed);
            }
            self.metrics.tokens_generated.fetch_add(1, Relaxed);
        }
        let mut outputs = self.sampled(sampled)?;
        if prompt {
            let reused = self.seq.reused_tokens() as u32;
            outputs.push(named("reused", i32s(&[reused])));
        }
        Ok(outputs)
    }

    /// `resample`: the last position again, among the tokens `mask` allows.
    fn resample(&mut self, mask: &Tensor) -> Result<Vec<NamedTensor>, BackendError> {
        let mask = to_bytes("mask", mask)?;
        let sampled = self.seq.resample(mask);
        self.sampled(sampled)
    }

    /// The outputs of a `tokens` or `resample` compute.
    fn sampled(
        &self,
        sampled: Result<Sampled, LlmError>,
    ) -> Result<Vec<NamedTensor>, BackendError> {
        match sampled {
            Ok(sampled) => {
                let next = sampled.token;
                let text = self
                    .seq
                    .model()
                    .token_bytes(next)
                    .unwrap_or_default()
                    .to_vec();
                let mut outputs = vec![named("token", i32s(&[next])), named("bytes", bytes(text))];
                if let Some(logprobs) = sampled.logprobs {
                    outputs.push(named("logprobs", bytes(self.logprobs_json(&logprobs))));
                }
                Ok(outputs)
            }
            // Errors the guest can turn into a client error travel as data: wasi-nn
            // flattens backend errors to a generic `runtime-error` message.
            Err(
                e @ (LlmError::ContextFull { .. }
                | LlmError::BadToken(_)
                | LlmError::Empty
                | LlmError::EmptyMask
                | LlmError::NothingToResample),
            ) => {
                let code = match e {
                    LlmError::ContextFull { .. } => "context_length_exceeded",
                    LlmError::EmptyMask | LlmError::NothingToResample => "invalid_mask",
                    _ => "invalid_tokens",
                };
                let body = serde_json::json!({"code": code, "message": e.to_string()});
                Ok(vec![named("error", bytes(body.to_string().into_bytes()))])
            }
            Err(e) => {
                tracing::error!(error = %e, "inference failed");
                Err(invalid(e.to_string()))
            }
        }
    }
}

impl NamedCompute for LlmContext {
    fn compute(&mut self, inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, BackendError> {
        let first = &inputs[0];
        let outputs = match first.name.as_str() {
            "metadata" => self.metadata()?,
            "tokenize" => self.tokenize(&first.tensor)?,
            "vocab" => self.vocab(),
            "resample" => self.resample(&first.tensor)?,
            _ => self.step(&inputs)?,
        };
        Ok(outputs)
    }
}
