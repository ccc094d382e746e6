//! A GGUF chat model loaded once and shared by every sequence.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::Device;
use candle_transformers::models::quantized_llama::ModelWeights;
use serde::Serialize;

use crate::batch::{BatchStats, Batcher};
use crate::llama::Llama;
use crate::prefix::PrefixStats;
use crate::sequence::Sequence;
use crate::tokenizer::GgufTokenizer;

/// What guests need to know to build prompts and stop generating; sent to
/// them as the `metadata` tensor (see wit/nn-protocol.md).
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub id: String,
    pub architecture: String,
    pub context_length: usize,
    pub vocab_size: usize,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub bos_token_id: Option<u32>,
    /// Every token that ends a turn (`eos` and, where the GGUF names one, `eot`).
    pub eos_token_ids: Vec<u32>,
    pub chat_template: Option<String>,
}

/// The forward pass a model runs on.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Weights {
    /// The native llama forward pass on runtime-dispatched SIMD kernels
    /// ([`crate::llama`]), behind the queue that batches concurrent
    /// sequences' steps ([`crate::batch`]).
    Native(Box<Batcher>),
    /// candle's `quantized_llama`: the reference implementation, and the
    /// fallback for files the native pass does not handle (other ggml types,
    /// mixture of experts, architectures other than plain llama). Weights with
    /// an empty KV cache; each sequence clones it, which copies only `Arc`s to
    /// the quantized tensors.
    Candle(ModelWeights),
}

/// How a model is loaded.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Run candle's `quantized_llama` even where the native forward pass
    /// could.
    pub reference: bool,
    /// Memory for the KV caches of finished sequences, reused by prompts
    /// that start the same way ([`crate::prefix`]); 0 keeps none.
    pub prefix_cache_bytes: usize,
}

impl Default for LoadOptions {
    /// The native forward pass unless `SANDPIPER_LLM_BACKEND=candle`; the
    /// default prefix budget.
    fn default() -> Self {
        LoadOptions {
            reference: std::env::var("SANDPIPER_LLM_BACKEND").is_ok_and(|v| v == "candle"),
            prefix_cache_bytes: crate::prefix::DEFAULT_BUDGET,
        }
    }
}

pub struct Model {
    pub(crate) weights: Weights,
    pub(crate) tokenizer: GgufTokenizer,
    pub(crate) info: ModelInfo,
    pub(crate) device: Device,
}

impl Model {
    /// Loads a GGUF file (llama architecture family) onto the CPU, with the
    /// default [`LoadOptions`].
    ///
    /// Plain llama models with Q4_1/Q8_0 weights run on the native forward
    /// pass ([`crate::llama`]); anything else, or every file when
    /// `SANDPIPER_LLM_BACKEND=candle` is set, on candle's `quantized_llama`.
    pub fn load(id: &str, path: &Path) -> Result<Arc<Model>> {
        Self::load_with(id, path, &LoadOptions::default())
    }

    /// Loads a GGUF file on candle's `quantized_llama`, the reference the
    /// native forward pass is tested against.
    pub fn load_reference(id: &str, path: &Path) -> Result<Arc<Model>> {
        let options = LoadOptions {
            reference: true,
            ..LoadOptions::default()
        };
        Self::load_with(id, path, &options)
    }

    /// Which forward pass runs the model: `"native"` or `"candle"`.
    pub fn backend(&self) -> &'static str {
        match self.weights {
            Weights::Native(_) => "native",
            Weights::Candle(_) => "candle",
        }
    }

    /// How often prompts started from a kept prefix, on the native forward
    /// pass (candle keeps none: `None`).
    pub fn prefix_stats(&self) -> Option<PrefixStats> {
        match &self.weights {
            Weights::Native(batcher) => Some(batcher.prefixes().stats()),
            Weights::Candle(_) => None,
        }
    }

    /// Steps and forward passes so far, on the native forward pass (candle
    /// runs each sequence on its own: `None`).
    pub fn batch_stats(&self) -> Option<BatchStats> {
        match &self.weights {
            Weights::Native(batcher) => Some(batcher.stats()),
            Weights::Candle(_) => None,
        }
    }

    /// Loads a GGUF file as `options` say.
    pub fn load_with(id: &str, path: &Path, options: &LoadOptions) -> Result<Arc<Model>> {
        // Buffered: the header is tens of thousands of small reads (one per
        // vocabulary string), each a system call on a bare file.
        let mut file = std::io::BufReader::with_capacity(
            64 << 10,
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        );
        let ct = gguf_file::Content::read(&mut file)
            .with_context(|| format!("reading GGUF header of {}", path.display()))?;
        let tokenizer = GgufTokenizer::from_gguf(&ct)
            .with_context(|| format!("tokenizer of {}", path.display()))?;
        let info = model_info(id, &ct, tokenizer.vocab_size());
        let device = Device::Cpu;
        let native = if !options.reference {
            match Llama::from_gguf(&ct, &mut file) {
                Ok(llama) => {
                    tracing::info!(
                        "{id}: native forward pass, {} kernels, {} threads",
                        crate::kernels::level().name(),
                        crate::kernels::pool::global().threads()
                    );
                    Some(llama)
                }
                Err(e) => {
                    tracing::info!("{id}: candle forward pass ({e:#})");
                    None
                }
            }
        } else {
            None
        };
        let weights = match native {
            Some(llama) => {
                Weights::Native(Box::new(Batcher::new(llama, options.prefix_cache_bytes)))
            }
            None => {
                candle_runs_here()
                    .with_context(|| format!("{id}: cannot run {}", path.display()))?;
                Weights::Candle(
                    ModelWeights::from_gguf(ct, &mut file, &device)
                        .with_context(|| format!("loading weights of {}", path.display()))?,
                )
            }
        };
        Ok(Arc::new(Model {
            weights,
            tokenizer,
            info,
            device,
        }))
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Special tokens in the text are parsed; no BOS is added.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text)
    }

    /// The token's text as raw bytes (possibly part of a UTF-8 character);
    /// empty for control tokens.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.tokenizer.token_bytes(id)
    }

    /// A fresh sequence with its own KV cache over the shared weights.
    pub fn new_sequence(self: &Arc<Self>) -> Sequence {
        Sequence::new(self.clone())
    }
}

/// candle 0.11's quantized matmuls on aarch64 execute `sdot` (the Armv8.2
/// dot-product extension) without checking that the CPU has it, so on a CPU
/// without it (Cortex-A53/A72: Raspberry Pi 3 and 4) the first forward pass
/// dies of SIGILL. Such a model is refused when it is loaded instead, saying
/// what does run there: the native pass checks the CPU and has kernels
/// without `sdot`.
fn candle_runs_here() -> Result<()> {
    #[cfg(target_arch = "aarch64")]
    if !std::arch::is_aarch64_feature_detected!("dotprod") {
        anyhow::bail!(
            "this model would run on candle's quantized kernels, which need the Arm \
             dot-product extension (Armv8.2 `dotprod`) that this CPU lacks; a llama-family \
             GGUF with Q4_1 or Q8_0 weights runs on Sandpiper's own kernels here"
        );
    }
    Ok(())
}

fn model_info(id: &str, ct: &gguf_file::Content, vocab_size: usize) -> ModelInfo {
    let md = &ct.metadata;
    let string = |k: &str| md.get(k).and_then(|v| v.to_string().ok()).cloned();
    let number = |k: &str| {
        md.get(k)
            .and_then(crate::tokenizer::metadata_int)
            .and_then(|x| u32::try_from(x).ok())
    };
    let architecture = string("general.architecture").unwrap_or_else(|| "llama".into());
    let context_length = number(&format!("{architecture}.context_length")).unwrap_or(2048) as usize;
    let token_text = |tid: Option<u32>| -> Option<String> {
        let tokens = md.get("tokenizer.ggml.tokens")?.to_vec().ok()?;
        tokens.get(tid? as usize)?.to_string().ok().cloned()
    };
    let bos_token_id = number("tokenizer.ggml.bos_token_id");
    let eos_id = number("tokenizer.ggml.eos_token_id");
    let mut eos_token_ids: Vec<u32> = [eos_id, number("tokenizer.ggml.eot_token_id")]
        .into_iter()
        .flatten()
        .collect();
    eos_token_ids.dedup();
    ModelInfo {
        id: id.to_string(),
        architecture,
        context_length,
        vocab_size,
        bos_token: token_text(bos_token_id),
        eos_token: token_text(eos_id),
        bos_token_id,
        eos_token_ids,
        chat_template: string("tokenizer.chat_template"),
    }
}
