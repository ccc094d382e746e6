//! Choosing the next token from the logits.

use candle_core::Tensor;
use candle_transformers::generation::{LogitsProcessor, Sampling};
use serde::Deserialize;

/// What a request asks of sampling; guests send it as JSON.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f64,
    pub top_p: f64,
    /// `None` draws a random seed.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            seed: None,
        }
    }
}

pub(crate) struct Sampler(LogitsProcessor);

impl Sampler {
    pub(crate) fn new(p: &SamplingParams) -> Self {
        let sampling = if p.temperature <= 1e-6 {
            Sampling::ArgMax
        } else if p.top_p < 1.0 {
            Sampling::TopP {
                p: p.top_p,
                temperature: p.temperature,
            }
        } else {
            Sampling::All {
                temperature: p.temperature,
            }
        };
        let seed = p.seed.unwrap_or_else(rand::random);
        Self(LogitsProcessor::from_sampling(seed, sampling))
    }

    pub(crate) fn sample(&mut self, logits: &Tensor) -> candle_core::Result<u32> {
        self.0.sample(logits)
    }
}
