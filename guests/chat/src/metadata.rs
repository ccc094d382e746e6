//! The `metadata` compute's JSON (`wit/nn-protocol.md`): what a chat model
//! needs to be prompted and stopped correctly.

use serde::Deserialize;

/// The fields of the model description this guest uses; others are ignored
/// so the host can add more without breaking guests.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ModelMetadata {
    /// Longest sequence (prompt + completion) the context can hold.
    pub context_length: u64,
    /// Token ids run from 0 to `vocab_size - 1` (checks `logit_bias`).
    #[serde(default)]
    pub vocab_size: Option<u64>,
    #[serde(default)]
    pub bos_token: Option<String>,
    #[serde(default)]
    pub eos_token: Option<String>,
    /// Sampling any of these ends the completion with `finish_reason: "stop"`.
    #[serde(default)]
    pub eos_token_ids: Vec<i32>,
    /// The GGUF's Jinja chat template, if it has one.
    #[serde(default)]
    pub chat_template: Option<String>,
}

impl ModelMetadata {
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("invalid model metadata: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_protocol_example() {
        let m = ModelMetadata::parse(
            br#"{"id": "smollm2-135m-instruct", "architecture": "llama", "context_length": 8192,
             "vocab_size": 49152, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
             "bos_token_id": 1, "eos_token_ids": [2], "chat_template": "{% for m in messages %}{% endfor %}"}"#,
        )
        .unwrap();
        assert_eq!(m.context_length, 8192);
        assert_eq!(m.eos_token_ids, vec![2]);
        assert_eq!(m.vocab_size, Some(49152));
        assert_eq!(m.bos_token.as_deref(), Some("<|im_start|>"));
        assert!(m.chat_template.is_some());
    }

    #[test]
    fn null_template_and_missing_tokens() {
        let m =
            ModelMetadata::parse(br#"{"context_length": 2048, "chat_template": null}"#).unwrap();
        assert_eq!(m.chat_template, None);
        assert!(m.eos_token_ids.is_empty());
        assert!(ModelMetadata::parse(b"{}").is_err());
    }
}
