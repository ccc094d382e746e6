//! Embedding models (`sandpiper_embed`, a candle BERT) as wasi-nn graphs.
//! The tensor protocol is documented in wit/nn-protocol.md.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use sandpiper_embed::{EmbedError, Embedder, Input};
use wasmtime_wasi_nn::backend::{BackendError, BackendGraph, NamedTensor};
use wasmtime_wasi_nn::wit::TensorType;
use wasmtime_wasi_nn::{ExecutionContext, Graph, Tensor};

use super::protocol::{self, named, NamedCompute};
use super::tensor::{bytes, invalid, to_text};
use crate::metrics::Metrics;

/// Most inputs one `compute` may embed (OpenAI's per-request limit).
pub const MAX_INPUTS: usize = 2048;

/// A loaded embedding model as a wasi-nn graph.
pub struct EmbedGraph {
    model: Arc<Embedder>,
    metrics: Arc<Metrics>,
}

impl EmbedGraph {
    /// The model as wasi-nn's graph handle, ready for the registry.
    #[allow(clippy::new_ret_no_self)] // wasi-nn needs its `Graph`, as for `LlmGraph`
    pub fn new(model: Arc<Embedder>, metrics: Arc<Metrics>) -> Graph {
        protocol::graph(EmbedGraph { model, metrics })
    }
}

impl BackendGraph for EmbedGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        // Stateless: each compute embeds its own inputs.
        Ok(protocol::context(EmbedContext {
            model: self.model.clone(),
            metrics: self.metrics.clone(),
        }))
    }
}

struct EmbedContext {
    model: Arc<Embedder>,
    metrics: Arc<Metrics>,
}

impl EmbedContext {
    fn metadata(&self) -> Result<Vec<NamedTensor>, BackendError> {
        let json = serde_json::to_vec(self.model.info()).map_err(|e| invalid(e.to_string()))?;
        Ok(vec![named("metadata", bytes(json))])
    }

    fn embed(&self, inputs: Vec<Input>) -> Result<Vec<NamedTensor>, BackendError> {
        if inputs.is_empty() {
            return Err(invalid("nothing to embed"));
        }
        if inputs.len() > MAX_INPUTS {
            return Err(invalid(format!("more than {MAX_INPUTS} inputs")));
        }
        let out = match self.model.embed(&inputs) {
            Ok(out) => out,
            // Errors the guest can turn into a client error travel as data: wasi-nn
            // flattens backend errors to a generic `runtime-error` message.
            Err(e @ EmbedError::BadToken { .. }) => {
                let body = serde_json::json!({"code": "invalid_tokens", "message": e.to_string()});
                return Ok(vec![named("error", bytes(body.to_string().into_bytes()))]);
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "embedding failed");
                return Err(invalid(e.to_string()));
            }
        };
        let total: usize = out.token_counts.iter().sum();
        self.metrics
            .embedding_tokens
            .fetch_add(total as u64, Relaxed);
        let n = out.vectors.len();
        let dim = self.model.dim();
        let data: Vec<u8> = out
            .vectors
            .iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let counts: Vec<u8> = out
            .token_counts
            .iter()
            .flat_map(|&c| (c as i32).to_le_bytes())
            .collect();
        Ok(vec![
            named(
                "embeddings",
                Tensor::new(vec![n as u32, dim as u32], TensorType::Fp32, data),
            ),
            named(
                "token_counts",
                Tensor::new(vec![n as u32], TensorType::I32, counts),
            ),
        ])
    }
}

/// `texts`: a JSON array of strings.
fn parse_texts(t: &Tensor) -> Result<Vec<Input>, BackendError> {
    let texts: Vec<String> = serde_json::from_str(to_text("texts", t)?)
        .map_err(|e| invalid(format!("`texts` must be a JSON array of strings: {e}")))?;
    Ok(texts.into_iter().map(Input::Text).collect())
}

/// `tokens`: a JSON array of arrays of token ids.
fn parse_tokens(t: &Tensor) -> Result<Vec<Input>, BackendError> {
    let tokens: Vec<Vec<u32>> = serde_json::from_str(to_text("tokens", t)?).map_err(|e| {
        invalid(format!(
            "`tokens` must be a JSON array of arrays of token ids: {e}"
        ))
    })?;
    Ok(tokens.into_iter().map(Input::Tokens).collect())
}

impl NamedCompute for EmbedContext {
    fn compute(&mut self, inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, BackendError> {
        let [first] = inputs.as_slice() else {
            return Err(invalid("compute takes exactly one input"));
        };
        let outputs = match first.name.as_str() {
            "metadata" => self.metadata()?,
            "texts" => self.embed(parse_texts(&first.tensor)?)?,
            "tokens" => self.embed(parse_tokens(&first.tensor)?)?,
            other => {
                return Err(invalid(format!(
                    "unknown input `{other}`; expected `metadata`, `texts` or `tokens`"
                )))
            }
        };
        Ok(outputs)
    }
}
