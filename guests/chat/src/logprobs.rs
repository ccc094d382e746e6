//! Log-probabilities of output tokens (`logprobs`, `top_logprobs`): the
//! backend's `logprobs` output (`wit/nn-protocol.md`) and OpenAI's
//! `choices[].logprobs.content[]` entries.

use serde::Deserialize;
use serde_json::{json, Value};

/// One alternative the backend listed (`top` of its `logprobs` output).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Alternative {
    #[serde(default)]
    pub id: i32,
    pub logprob: f64,
    #[serde(default)]
    pub bytes: Vec<u8>,
}

/// The backend's `logprobs` output for one sampled token.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StepLogprobs {
    pub logprob: f64,
    #[serde(default)]
    pub top: Vec<Alternative>,
}

impl StepLogprobs {
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("invalid `logprobs` output: {e}"))
    }
}

/// One entry of `logprobs.content`: a sampled token whose text was output.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token's text (its bytes decoded lossily; trimmed when a stop
    /// sequence cut it, see `generate`).
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f64,
    pub top: Vec<Alternative>,
}

impl TokenLogprob {
    pub fn new(bytes: &[u8], logprobs: StepLogprobs) -> Self {
        Self {
            token: String::from_utf8_lossy(bytes).into_owned(),
            bytes: bytes.to_vec(),
            logprob: logprobs.logprob,
            top: logprobs.top,
        }
    }

    /// OpenAI's `{"token", "logprob", "bytes", "top_logprobs"}`.
    pub fn to_value(&self) -> Value {
        let top: Vec<Value> = self
            .top
            .iter()
            .map(|a| {
                json!({
                    "token": String::from_utf8_lossy(&a.bytes),
                    "logprob": a.logprob,
                    "bytes": a.bytes,
                })
            })
            .collect();
        json!({
            "token": self.token,
            "logprob": self.logprob,
            "bytes": self.bytes,
            "top_logprobs": top,
        })
    }
}

/// A choice's `logprobs` object: `{"content": [...], "refusal": null}`.
pub fn choice_logprobs(entries: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = entries.iter().map(TokenLogprob::to_value).collect();
    json!({"content": content, "refusal": null})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backend_output_and_renders_openai_shape() {
        let lp = StepLogprobs::parse(
            br#"{"logprob": -0.25, "top": [{"id": 5, "logprob": -0.25, "bytes": [72, 105]}, {"id": 6, "logprob": -2.0, "bytes": [240]}]}"#,
        )
        .unwrap();
        let e = TokenLogprob::new(b"Hi", lp);
        assert_eq!(
            e.to_value(),
            json!({"token": "Hi", "logprob": -0.25, "bytes": [72, 105], "top_logprobs": [
                {"token": "Hi", "logprob": -0.25, "bytes": [72, 105]},
                {"token": "\u{fffd}", "logprob": -2.0, "bytes": [240]}]})
        );
        assert_eq!(choice_logprobs(&[])["content"], json!([]));
        assert!(StepLogprobs::parse(b"[]").is_err());
    }
}
