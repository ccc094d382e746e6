//! One generation: its own KV cache and sampler over shared weights.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::Tensor;
use candle_transformers::models::quantized_llama::ModelWeights;

use crate::llama;
use crate::model::Weights;
use crate::prefix::Prefixes;
use crate::sampler::{Sampled, Sampler, SamplingParams};
use crate::{LlmError, Model};

/// Prompts are fed in chunks so the attention scores of a long prompt never
/// need a `len × len` matrix at once.
const PREFILL_CHUNK: usize = 256;

pub struct Sequence {
    model: Arc<Model>,
    /// Tells this sequence's steps apart in the model's batch queue.
    id: u64,
    state: State,
    len: usize,
    /// The tokens fed so far (native forward pass only: kept with the cache
    /// when the sequence ends, see [`crate::prefix`]).
    history: Vec<u32>,
    /// Prompt tokens taken from a kept prefix instead of computed.
    reused: usize,
    sampler: Sampler,
    /// The logits and token of the last sample, for [`Sequence::resample`].
    last: Option<(Tensor, u32)>,
}

/// Ends a prompt's mark as being computed in its model's prefix store
/// ([`Prefixes::lookup`]) however [`Sequence::feed`] returns: after the
/// prompt is kept, or on an error.
struct Computing<'a> {
    prefixes: &'a Prefixes,
    id: u64,
}

impl Drop for Computing<'_> {
    fn drop(&mut self) {
        self.prefixes.computed(self.id);
    }
}

/// The per-sequence half of the model's forward pass.
#[allow(clippy::large_enum_variant)]
enum State {
    /// KV cache of the native forward pass (its scratch buffers belong to
    /// the model's batcher: one batch runs at a time).
    Native(llama::Cache),
    /// candle's weights (shared `Arc`s) with this sequence's KV cache.
    Candle(ModelWeights),
}

impl Drop for Sequence {
    fn drop(&mut self) {
        if let (Weights::Native(batcher), State::Native(cache)) =
            (&self.model.weights, &mut self.state)
        {
            batcher.leave(self.id);
            batcher
                .prefixes()
                .insert(std::mem::take(&mut self.history), std::mem::take(cache));
        }
    }
}

impl Sequence {
    pub(crate) fn new(model: Arc<Model>) -> Self {
        let state = match &model.weights {
            Weights::Native(batcher) => State::Native(batcher.llama().new_cache()),
            Weights::Candle(weights) => State::Candle(weights.clone()),
        };
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Self {
            state,
            model,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            len: 0,
            history: Vec::new(),
            reused: 0,
            sampler: Sampler::new(&SamplingParams::default()),
            last: None,
        }
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Tokens in the KV cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many of the tokens in the KV cache were copied from an earlier
    /// sequence's cache instead of computed: the prompt's first tokens, when
    /// they started an earlier sequence too ([`crate::prefix`]).
    pub fn reused_tokens(&self) -> usize {
        self.reused
    }

    /// Replaces the sampling parameters (and reseeds the sampler). The
    /// counts of tokens sampled so far, which the penalties use, are kept.
    pub fn set_sampling(&mut self, params: &SamplingParams) {
        self.sampler.replace(params);
    }

    /// Appends `tokens` to the sequence and returns the logits for the next
    /// position (f32, `[vocab]`).
    pub fn feed(&mut self, tokens: &[u32]) -> Result<Tensor, LlmError> {
        if tokens.is_empty() {
            return Err(LlmError::Empty);
        }
        let context_length = self.model.info.context_length;
        if self.len + tokens.len() > context_length {
            return Err(LlmError::ContextFull {
                requested: self.len + tokens.len(),
                context_length,
            });
        }
        let vocab = self.model.info.vocab_size as u32;
        if let Some(&bad) = tokens.iter().find(|&&t| t >= vocab) {
            return Err(LlmError::BadToken(bad));
        }
        let prompt = self.len == 0;
        let mut tokens = tokens;
        // Until this function returns, other prompts may wait for this one.
        let mut _computing = None;
        if let (true, State::Native(cache), Weights::Native(batcher)) =
            (prompt, &mut self.state, &self.model.weights)
        {
            let found = batcher.prefixes().lookup(batcher.llama(), self.id, tokens);
            _computing = Some(Computing {
                prefixes: batcher.prefixes(),
                id: self.id,
            });
            if let Some((n, kept)) = found {
                *cache = kept;
                self.history.extend_from_slice(&tokens[..n]);
                self.len = n;
                self.reused = n;
                tokens = &tokens[n..];
            }
        }
        let n_chunks = tokens.len().div_ceil(PREFILL_CHUNK);
        let mut logits = None;
        for (i, chunk) in tokens.chunks(PREFILL_CHUNK).enumerate() {
            match (&mut self.state, &self.model.weights) {
                (State::Native(cache), Weights::Native(batcher)) => {
                    // Only the last chunk's logits are wanted.
                    let (back, result) = batcher.step(
                        self.id,
                        std::mem::take(cache),
                        chunk.to_vec(),
                        i + 1 == n_chunks,
                    );
                    *cache = back;
                    let result = result?;
                    self.history.extend_from_slice(chunk);
                    if let Some(l) = result {
                        let n = l.len();
                        logits = Some(Tensor::from_vec(l, n, &self.model.device)?);
                    }
                }
                (State::Candle(weights), _) => {
                    let input = Tensor::new(chunk, &self.model.device)?.unsqueeze(0)?;
                    let l = weights.forward(&input, self.len)?;
                    logits = Some(l.squeeze(0)?.to_dtype(candle_core::DType::F32)?);
                }
                (State::Native(_), Weights::Candle(_)) => unreachable!("state follows the model"),
            }
            self.len += chunk.len();
        }
        // The prompt is kept at once, not only when the sequence ends, so
        // requests that come while this one generates (the same system
        // prompt) reuse it. Not when all but its last token were reused.
        if let (true, 2.., State::Native(cache), Weights::Native(batcher)) =
            (prompt, tokens.len(), &self.state, &self.model.weights)
        {
            batcher
                .prefixes()
                .insert_copy(batcher.llama(), &self.history, cache);
        }
        Ok(logits.expect("tokens is not empty"))
    }

    /// Feeds `tokens` and samples the next token. The sampled token is not
    /// appended: feed it back to continue.
    pub fn step(&mut self, tokens: &[u32]) -> Result<u32, LlmError> {
        Ok(self.sample_step(tokens)?.token)
    }

    /// [`step`](Self::step) that also returns the token's log-probabilities
    /// when the sampling parameters ask for them. Every sampled token counts
    /// towards the frequency and presence penalties of later steps.
    pub fn sample_step(&mut self, tokens: &[u32]) -> Result<Sampled, LlmError> {
        let logits = self.feed(tokens)?;
        let sampled = self.sampler.sample(&logits)?;
        self.last = Some((logits, sampled.token));
        Ok(sampled)
    }

    /// Replaces the last sample with one drawn from the same logits among
    /// the tokens `mask` allows (bit `i % 8` of byte `i / 8` for token `i`);
    /// see wit/nn-protocol.md. Nothing is fed.
    pub fn resample(&mut self, mask: &[u8]) -> Result<Sampled, LlmError> {
        let (logits, previous) = self.last.take().ok_or(LlmError::NothingToResample)?;
        if !crate::sampler::mask_allows_any(mask, self.model.info.vocab_size) {
            self.last = Some((logits, previous));
            return Err(LlmError::EmptyMask);
        }
        let sampled = self.sampler.resample(&logits, previous, mask)?;
        self.last = Some((logits, sampled.token));
        Ok(sampled)
    }
}
