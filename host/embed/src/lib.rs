//! Sentence embeddings on candle, computed the way sentence-transformers computes them for
//! models such as all-MiniLM-L6-v2: tokenise (with `[CLS]`/`[SEP]`, truncated to the model's
//! `max_seq_length`), run the BERT encoder, mean-pool the last hidden states over the
//! attention mask, then L2-normalise.
//!
//! An [`Embedder`] is loaded from a directory laid out as sentence-transformers saves one:
//!
//! ```text
//! model.safetensors          weights (any name; the path given to `load`)
//! config.json                the BERT config
//! tokenizer.json             the Hugging Face tokenizer
//! 1_Pooling/config.json      pooling mode (optional: mean if absent)
//! sentence_bert_config.json  max_seq_length (optional: 256 if absent)
//! ```
//!
//! Inputs longer than `max_seq_length` tokens (special tokens included) are truncated, as
//! sentence-transformers truncates them: only the first tokens count.

use std::path::Path;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Encoding, Token, Tokenizer, TruncationParams};

/// `max_seq_length` when the model directory does not say (all-MiniLM-L6-v2's value).
pub const DEFAULT_MAX_TOKENS: usize = 256;

/// Most inputs run in one forward pass; larger requests run as several batches, so memory
/// stays bounded (attention is `batch × heads × len²`).
pub const MAX_BATCH: usize = 32;

/// One thing to embed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Text, tokenised by the model's tokenizer.
    Text(String),
    /// Token ids of the model's own vocabulary, without special tokens: `[CLS]`/`[SEP]` are
    /// added as for text, so the ids of `encode(text, add_special_tokens = false)` embed
    /// exactly like the text.
    Tokens(Vec<u32>),
}

/// Errors a caller can act on, kept apart from internal failures.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A token id outside the model's vocabulary.
    #[error("token id {id} is not in the model's vocabulary of {vocab_size} tokens")]
    BadToken { id: u32, vocab_size: usize },
    /// Anything else (tokenizer or tensor failures): a server-side problem.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// What [`Embedder::embed`] returns, one entry per input, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// Unit-length vectors of [`Embedder::dim`] values.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens the model saw for each input: after truncation, special tokens included.
    pub token_counts: Vec<usize>,
}

/// How token states become one vector (`1_Pooling/config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooling {
    /// Average over the attention mask (`pooling_mode_mean_tokens`).
    Mean,
    /// The `[CLS]` token's state (`pooling_mode_cls_token`).
    Cls,
}

/// What the model is, for metadata and logs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EmbedderInfo {
    pub id: String,
    pub architecture: &'static str,
    /// Length of every vector.
    pub dim: usize,
    /// Inputs are truncated to this many tokens, special tokens included.
    pub max_tokens: usize,
    pub vocab_size: usize,
    pub pooling: &'static str,
    pub normalized: bool,
}

/// A loaded embedding model. Shared by reference across threads: `embed` takes `&self`.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    /// The same without truncation, for [`Embedder::tokenize`].
    untruncated: Tokenizer,
    device: Device,
    pooling: Pooling,
    pad_id: u32,
    info: EmbedderInfo,
}

impl Embedder {
    /// Loads the model whose weights are `weights` (F32 safetensors); its config, tokenizer
    /// and pooling config are read from the same directory (see the crate docs).
    pub fn load(id: &str, weights: &Path) -> anyhow::Result<Embedder> {
        let dir = weights
            .parent()
            .context("the weights path has no parent directory")?;
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .context("config.json is not a BERT config")?;
        let pooling = match read_optional(&dir.join("1_Pooling/config.json"))? {
            None => Pooling::Mean,
            Some(json) => pooling_mode(&json)?,
        };
        let max_tokens = match read_optional(&dir.join("sentence_bert_config.json"))? {
            None => DEFAULT_MAX_TOKENS,
            Some(json) => json["max_seq_length"]
                .as_u64()
                .map_or(DEFAULT_MAX_TOKENS, |n| n as usize),
        }
        .min(config.max_position_embeddings);

        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| anyhow::anyhow!("cannot load {}: {e}", tokenizer_path.display()))?;
        // The file may carry its own truncation and fixed-length padding (all-MiniLM-L6-v2's
        // says 128); sentence-transformers overrides both, and so do we: truncate to
        // max_seq_length, pad per batch ourselves.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| anyhow::anyhow!("cannot set truncation: {e}"))?;
        tokenizer.with_padding(None);
        let mut untruncated = tokenizer.clone();
        untruncated
            .with_truncation(None)
            .map_err(|e| anyhow::anyhow!("cannot unset truncation: {e}"))?;

        let device = Device::Cpu;
        // SAFETY: the file is mapped read-only; the store never rewrites a file in place
        // (new versions are renamed over it, leaving this mapping intact).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &device) }
            .with_context(|| format!("cannot map {}", weights.display()))?;
        let model = BertModel::load(vb, &config).context("cannot load the BERT weights")?;
        let info = EmbedderInfo {
            id: id.to_owned(),
            architecture: "bert",
            dim: config.hidden_size,
            max_tokens,
            vocab_size: config.vocab_size,
            pooling: match pooling {
                Pooling::Mean => "mean",
                Pooling::Cls => "cls",
            },
            normalized: true,
        };
        Ok(Embedder {
            model,
            tokenizer,
            untruncated,
            device,
            pooling,
            pad_id: config.pad_token_id as u32,
            info,
        })
    }

    /// What the model is.
    pub fn info(&self) -> &EmbedderInfo {
        &self.info
    }

    /// Length of every vector.
    pub fn dim(&self) -> usize {
        self.info.dim
    }

    /// The token ids of `text` without special tokens (what [`Input::Tokens`] takes).
    pub fn tokenize(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        let encoding = self
            .untruncated
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("cannot tokenize: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Embeds every input: unit vectors in input order, and how many tokens each used.
    pub fn embed(&self, inputs: &[Input]) -> Result<Embeddings, EmbedError> {
        let mut encoded = Vec::with_capacity(inputs.len());
        for input in inputs {
            encoded.push(self.encode(input)?);
        }
        let mut vectors = Vec::with_capacity(inputs.len());
        for batch in encoded.chunks(MAX_BATCH) {
            vectors.extend(self.forward(batch).map_err(EmbedError::Internal)?);
        }
        Ok(Embeddings {
            vectors,
            token_counts: encoded.iter().map(Vec::len).collect(),
        })
    }

    /// The ids the model sees for one input: special tokens added, truncated.
    fn encode(&self, input: &Input) -> Result<Vec<u32>, EmbedError> {
        let encoding = match input {
            Input::Text(text) => self.tokenizer.encode(text.as_str(), true),
            Input::Tokens(ids) => {
                let vocab_size = self.tokenizer.get_vocab_size(true);
                let tokens = ids
                    .iter()
                    .map(|&id| {
                        let value = self
                            .tokenizer
                            .id_to_token(id)
                            .filter(|_| (id as usize) < self.info.vocab_size)
                            .ok_or(EmbedError::BadToken {
                                id,
                                vocab_size: vocab_size.min(self.info.vocab_size),
                            })?;
                        Ok(Token::new(id, value, (0, 0)))
                    })
                    .collect::<Result<Vec<_>, EmbedError>>()?;
                // The tokenizer's own post-processing: truncation, then `[CLS] … [SEP]`.
                self.tokenizer
                    .post_process(Encoding::from_tokens(tokens, 0), None, true)
            }
        }
        .map_err(|e| EmbedError::Internal(anyhow::anyhow!("cannot tokenize: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// One forward pass over a batch, padded to its longest input.
    fn forward(&self, batch: &[Vec<u32>]) -> anyhow::Result<Vec<Vec<f32>>> {
        let n = batch.len();
        let len = batch.iter().map(Vec::len).max().unwrap_or(0);
        if n == 0 || len == 0 {
            bail!("nothing to embed");
        }
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for seq in batch {
            ids.extend_from_slice(seq);
            ids.extend(std::iter::repeat_n(self.pad_id, len - seq.len()));
            mask.extend(std::iter::repeat_n(1u32, seq.len()));
            mask.extend(std::iter::repeat_n(0u32, len - seq.len()));
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let type_ids = ids.zeros_like()?;
        // [n, len, dim]
        let states = self.model.forward(&ids, &type_ids, Some(&mask))?;
        let pooled = match self.pooling {
            Pooling::Mean => {
                let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // [n, len, 1]
                let summed = states.broadcast_mul(&mask)?.sum(1)?; // [n, dim]
                let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?; // [n, 1]
                summed.broadcast_div(&counts)?
            }
            Pooling::Cls => states.narrow(1, 0, 1)?.squeeze(1)?,
        };
        let norms = pooled
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-12, f64::MAX)?;
        let normalized = pooled.broadcast_div(&norms)?;
        Ok(normalized.to_vec2::<f32>()?)
    }
}

fn read_optional(path: &Path) -> anyhow::Result<Option<serde_json::Value>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is not JSON", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The one pooling mode a sentence-transformers pooling config turns on.
fn pooling_mode(json: &serde_json::Value) -> anyhow::Result<Pooling> {
    let on = |key: &str| json[key].as_bool().unwrap_or(false);
    match (
        on("pooling_mode_mean_tokens"),
        on("pooling_mode_cls_token"),
        on("pooling_mode_max_tokens") || on("pooling_mode_mean_sqrt_len_tokens"),
    ) {
        (true, false, false) => Ok(Pooling::Mean),
        (false, true, false) => Ok(Pooling::Cls),
        _ => bail!("unsupported pooling config (only mean or CLS pooling, alone): {json}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_modes() {
        let mean =
            serde_json::json!({"pooling_mode_mean_tokens": true, "pooling_mode_cls_token": false});
        assert_eq!(pooling_mode(&mean).unwrap(), Pooling::Mean);
        let cls = serde_json::json!({"pooling_mode_cls_token": true});
        assert_eq!(pooling_mode(&cls).unwrap(), Pooling::Cls);
        let max = serde_json::json!({"pooling_mode_max_tokens": true});
        assert!(pooling_mode(&max).is_err());
        let both =
            serde_json::json!({"pooling_mode_mean_tokens": true, "pooling_mode_cls_token": true});
        assert!(pooling_mode(&both).is_err());
    }
}
