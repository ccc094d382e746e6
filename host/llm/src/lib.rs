//! Quantized LLM inference on candle.
//!
//! A [`Model`] is loaded once from a GGUF file and shared (behind an `Arc`) by
//! every request; a [`Sequence`] is one generation's state: its own KV cache,
//! position and sampler over the shared weights. The server's wasi-nn backend
//! maps a wasi-nn graph to a `Model` and an execution context to a `Sequence`;
//! benchmarks call the same types in-process.

mod error;
mod model;
mod sampler;
mod sequence;
mod tokenizer;

pub use error::LlmError;
pub use model::{Model, ModelInfo};
pub use sampler::{Logprobs, Sampled, SamplingParams, TokenLogprob, MAX_TOP_LOGPROBS};
pub use sequence::Sequence;
