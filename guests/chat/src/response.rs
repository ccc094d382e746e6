//! The non-streamed Chat Completions response body and the usage record
//! shared with streaming.

use crate::generate::FinishReason;
use crate::logprobs::{choice_logprobs, TokenLogprob};
use crate::tools::ToolCall;
use sandpiper_guest_sdk::sse;
use serde_json::{json, Value};

/// Token accounting reported to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    /// See [`crate::generate::Outcome::completion_tokens`] for what counts.
    pub completion_tokens: u64,
    /// Prompt tokens whose KV cache the host reused from an earlier request
    /// instead of computing (part of `prompt_tokens`).
    pub cached_tokens: u64,
}

impl Usage {
    pub fn to_value(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
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

impl CompletionId {
    /// `{"id", "object", "created", "model", "choices"}`: how every body
    /// and streamed chunk of a completion starts.
    pub fn envelope(&self, object: &str, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// One streamed chunk as an SSE event. With `include_usage` every chunk
    /// carries `usage`: `null`, except in the usage chunk (`Some`).
    pub fn chunk_event(
        &self,
        object: &str,
        choices: Value,
        include_usage: bool,
        usage: Option<Usage>,
    ) -> Vec<u8> {
        let mut chunk = self.envelope(object, choices);
        if include_usage {
            chunk["usage"] = usage.map_or(Value::Null, Usage::to_value);
        }
        sse::data_event(&chunk.to_string())
    }
}

/// One generated choice of a non-streamed response. `logprobs` is `Some`
/// when the request asked for them.
#[derive(Debug, Clone, Copy)]
pub struct Choice<'a> {
    pub content: &'a str,
    pub logprobs: Option<&'a [TokenLogprob]>,
    pub finish: FinishReason,
    /// Calls the model made; the message then has `null` content.
    pub tool_calls: Option<&'a [ToolCall]>,
}

/// A `chat.completion` object; choice `i` of `choices` gets `"index": i`.
pub fn completion(ident: &CompletionId, choices: &[Choice], usage: Usage) -> Value {
    let choices: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(index, choice)| {
            let message = match choice.tool_calls {
                None => json!({"role": "assistant", "content": choice.content}),
                Some(calls) => json!({
                    "role": "assistant",
                    "content": null,
                    "tool_calls": calls.iter().map(|c| c.to_value(None)).collect::<Vec<_>>(),
                }),
            };
            json!({
                "index": index,
                "message": message,
                "logprobs": choice.logprobs.map(choice_logprobs),
                "finish_reason": choice.finish.as_str(),
            })
        })
        .collect();
    let mut body = ident.envelope("chat.completion", json!(choices));
    body["usage"] = usage.to_value();
    body
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
            cached_tokens: 1,
        };
        let paris = Choice {
            content: "Paris",
            logprobs: None,
            finish: FinishReason::Stop,
            tool_calls: None,
        };
        assert_eq!(
            completion(&ident, &[paris], usage),
            json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris"},
                             "logprobs": null, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                          "prompt_tokens_details": {"cached_tokens": 1}}})
        );
        let empty = Choice {
            content: "",
            logprobs: Some(&[]),
            finish: FinishReason::Length,
            tool_calls: None,
        };
        let body = completion(&ident, &[empty, paris], usage);
        assert_eq!(
            body["choices"][0]["logprobs"],
            json!({"content": [], "refusal": null})
        );
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert_eq!(body["choices"][1]["index"], 1);
        assert_eq!(body["choices"][1]["message"]["content"], "Paris");

        let calls = [ToolCall {
            id: "call_1".into(),
            name: "f".into(),
            arguments: "{}".into(),
        }];
        let called = Choice {
            content: "",
            logprobs: None,
            finish: FinishReason::ToolCalls,
            tool_calls: Some(&calls),
        };
        let body = completion(&ident, &[called], usage);
        assert_eq!(
            body["choices"][0]["message"],
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]})
        );
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    }
}
