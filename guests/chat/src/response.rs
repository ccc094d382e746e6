//! The non-streamed Chat Completions response body and the usage record
//! shared with streaming.

use crate::generate::FinishReason;
use crate::logprobs::{choice_logprobs, TokenLogprob};
use serde_json::{json, Value};

/// Token accounting reported to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    /// See [`crate::generate::Outcome::completion_tokens`] for what counts.
    pub completion_tokens: u64,
}

impl Usage {
    pub fn to_value(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

/// Identity of one completion, shared by all its chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionId {
    /// `chatcmpl-…`
    pub id: String,
    /// Unix seconds when the request was handled.
    pub created: u64,
    /// The model id as the client sent it.
    pub model: String,
}

/// A `chat.completion` object. `logprobs` is `Some` when the request asked
/// for them.
pub fn completion(
    ident: &CompletionId,
    content: &str,
    logprobs: Option<&[TokenLogprob]>,
    finish: FinishReason,
    usage: Usage,
) -> Value {
    json!({
        "id": ident.id,
        "object": "chat.completion",
        "created": ident.created,
        "model": ident.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "logprobs": logprobs.map(choice_logprobs),
            "finish_reason": finish.as_str(),
        }],
        "usage": usage.to_value(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_has_openai_shape() {
        let ident = CompletionId {
            id: "chatcmpl-1".into(),
            created: 7,
            model: "m".into(),
        };
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 2,
        };
        assert_eq!(
            completion(&ident, "Paris", None, FinishReason::Stop, usage),
            json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris"},
                             "logprobs": null, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
        );
        let body = completion(&ident, "", Some(&[]), FinishReason::Stop, usage);
        assert_eq!(
            body["choices"][0]["logprobs"],
            json!({"content": [], "refusal": null})
        );
    }
}
