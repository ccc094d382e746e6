/// Errors a caller can act on; everything else is an internal failure.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The sequence would grow past the model's context window.
    #[error("context window exceeded: {requested} tokens requested, the model's context is {context_length}")]
    ContextFull {
        requested: usize,
        context_length: usize,
    },
    /// A token id outside the vocabulary.
    #[error("token id {0} is outside the vocabulary")]
    BadToken(u32),
    /// `step` needs at least one token to feed.
    #[error("no tokens to feed")]
    Empty,
    /// `resample` before any token was sampled.
    #[error("nothing was sampled yet to resample")]
    NothingToResample,
    /// A `resample` mask that allows no token of the vocabulary.
    #[error("the mask allows no token")]
    EmptyMask,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<candle_core::Error> for LlmError {
    fn from(e: candle_core::Error) -> Self {
        LlmError::Internal(e.into())
    }
}
