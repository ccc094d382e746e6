//! Quantized LLM inference: GGUF weights, tokenizer, per-sequence state and
//! sampling.
//!
//! A [`Model`] is loaded once from a GGUF file and shared (behind an `Arc`) by
//! every request; a [`Sequence`] is one generation's state: its own KV cache,
//! position and sampler over the shared weights. The server's wasi-nn backend
//! maps a wasi-nn graph to a `Model` and an execution context to a `Sequence`;
//! benchmarks call the same types in-process.
//!
//! Plain llama models with Q4_1/Q8_0 weights run on a native forward pass
//! (`llama.rs`) over kernels that pick SIMD at run time (`kernels/`: AVX2,
//! AVX-512 VNNI, NEON, scalar) and a small worker pool; everything else runs
//! on candle's `quantized_llama`, which is also the reference the native pass
//! is tested against (`tests/reference.rs`).

mod batch;
mod distribution;
mod error;
#[doc(hidden)]
pub mod kernels;
mod llama;
mod model;
mod prefix;
mod sampler;
mod sequence;
mod tokenizer;

pub use batch::BatchStats;
pub use error::LlmError;
pub use model::{LoadOptions, Model, ModelInfo};
pub use prefix::PrefixStats;
pub use sampler::{Logprobs, Sampled, SamplingParams, TokenLogprob, MAX_TOP_LOGPROBS};
pub use sequence::Sequence;
