//! Streamed Chat Completions: `chat.completion.chunk` events over SSE.
//!
//! Event order, as OpenAI sends it: a first chunk carrying the role, content
//! deltas as they are produced, a chunk with an empty delta and the
//! `finish_reason`, a usage chunk with `"choices": []` when
//! `stream_options.include_usage` is set, then `data: [DONE]`. With
//! `include_usage` every other chunk carries `"usage": null`.
//!
//! With `n` > 1 the choices are generated one after another, not
//! interleaved: choice 0's role, content and finish chunks, then choice 1's,
//! and so on, each chunk carrying its choice's `index`; the usage chunk and
//! `[DONE]` come once, after the last choice.

use crate::generate::{FinishReason, Sink};
use crate::logprobs::{choice_logprobs, TokenLogprob};
use crate::response::{CompletionId, Usage};
use crate::tools::ToolCall;
use sandpiper_guest_sdk::http::Disconnected;
use sandpiper_guest_sdk::sse::TextEvent;
use serde_json::{json, Value};

/// Builds the SSE events of one streamed completion.
#[derive(Debug, Clone)]
pub struct Chunks {
    pub ident: CompletionId,
    pub include_usage: bool,
    /// The request asked for `logprobs`: content chunks carry theirs.
    pub logprobs: bool,
}

impl Chunks {
    fn event(&self, choices: Value, usage: Option<Usage>) -> Vec<u8> {
        self.ident
            .chunk_event("chat.completion.chunk", choices, self.include_usage, usage)
    }

    fn choice(index: u64, delta: Value, logprobs: Value, finish: Option<FinishReason>) -> Value {
        json!([{
            "index": index,
            "delta": delta,
            "logprobs": logprobs,
            "finish_reason": finish.map(FinishReason::as_str),
        }])
    }

    /// The first event: announces the assistant role with empty content.
    pub fn role(&self, index: u64) -> Vec<u8> {
        self.event(
            Self::choice(
                index,
                json!({"role": "assistant", "content": ""}),
                Value::Null,
                None,
            ),
            None,
        )
    }

    /// One content delta with the log-probabilities of the tokens it
    /// completes (see `generate`).
    pub fn content(&self, index: u64, text: &str, logprobs: &[TokenLogprob]) -> Vec<u8> {
        let logprobs = if self.logprobs {
            choice_logprobs(logprobs)
        } else {
            Value::Null
        };
        self.event(
            Self::choice(index, json!({"content": text}), logprobs, None),
            None,
        )
    }

    /// The calls the model made in choice `index`, each whole in one delta
    /// (id, name and all the arguments).
    pub fn tool_calls(&self, index: u64, calls: &[ToolCall]) -> Vec<u8> {
        let calls: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| c.to_value(Some(i)))
            .collect();
        self.event(
            Self::choice(index, json!({"tool_calls": calls}), Value::Null, None),
            None,
        )
    }

    /// The event that ends choice `index`.
    pub fn finish(&self, index: u64, reason: FinishReason) -> Vec<u8> {
        self.event(
            Self::choice(index, json!({}), Value::Null, Some(reason)),
            None,
        )
    }

    /// The usage event (send only when `include_usage`).
    pub fn usage(&self, usage: Usage) -> Vec<u8> {
        self.event(json!([]), Some(usage))
    }
}

/// A [`Sink`] that sends each delta as a content chunk through `write`,
/// which must flush so the client sees tokens as they are generated.
pub struct SseSink<'a, W> {
    chunks: &'a Chunks,
    /// The choice the deltas belong to.
    index: u64,
    /// Content chunks pre-serialized around their text, when they carry no
    /// logprobs (which differ from chunk to chunk).
    event: Option<TextEvent>,
    write: W,
}

impl<'a, W> SseSink<'a, W> {
    /// The sink of choice `index`.
    pub fn new(chunks: &'a Chunks, index: u64, write: W) -> Self {
        let event = if chunks.logprobs {
            None
        } else {
            TextEvent::new(|text| chunks.content(index, text, &[]))
        };
        Self {
            chunks,
            index,
            event,
            write,
        }
    }
}

impl<W: FnMut(&[u8]) -> Result<(), Disconnected>> Sink for SseSink<'_, W> {
    fn text(&mut self, delta: &str, logprobs: &[TokenLogprob]) -> Result<(), Disconnected> {
        let event = match &self.event {
            Some(event) => event.render(delta),
            None => self.chunks.content(self.index, delta, logprobs),
        };
        (self.write)(&event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{generate, Limits, Pieces};

    fn chunks(include_usage: bool) -> Chunks {
        Chunks {
            ident: CompletionId {
                id: "chatcmpl-x".into(),
                created: 1,
                model: "m".into(),
            },
            include_usage,
            logprobs: false,
        }
    }

    fn parse(event: &[u8]) -> Value {
        let s = std::str::from_utf8(event).unwrap();
        let json = s
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn role_content_finish_usage() {
        let c = chunks(true);
        let role = parse(&c.role(0));
        assert_eq!(role["object"], "chat.completion.chunk");
        assert_eq!(
            role["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(role["choices"][0]["finish_reason"], Value::Null);
        assert_eq!(role["usage"], Value::Null);
        assert!(role.as_object().unwrap().contains_key("usage"));

        let content = parse(&c.content(0, "Hi\n", &[]));
        assert_eq!(content["choices"][0]["delta"], json!({"content": "Hi\n"}));
        assert_eq!(content["choices"][0]["logprobs"], Value::Null);
        let with = Chunks {
            logprobs: true,
            ..c.clone()
        };
        let entry = TokenLogprob::new(
            b"Hi",
            crate::logprobs::StepLogprobs {
                logprob: -0.5,
                top: vec![],
            },
        );
        let content = parse(&with.content(0, "Hi", &[entry]));
        assert_eq!(
            content["choices"][0]["logprobs"]["content"][0],
            json!({"token": "Hi", "logprob": -0.5, "bytes": [72, 105], "top_logprobs": []})
        );

        let fin = parse(&c.finish(2, FinishReason::Length));
        assert_eq!(fin["choices"][0]["index"], 2);
        assert_eq!(fin["choices"][0]["delta"], json!({}));
        assert_eq!(fin["choices"][0]["finish_reason"], "length");

        let usage = parse(&c.usage(Usage {
            prompt_tokens: 4,
            completion_tokens: 6,
            cached_tokens: 0,
        }));
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 10);
    }

    #[test]
    fn sink_sends_what_content_builds() {
        for (include_usage, model) in [(true, "m"), (false, "m"), (true, "odd \u{1} model")] {
            let c = Chunks {
                ident: CompletionId {
                    model: model.into(),
                    ..chunks(include_usage).ident
                },
                ..chunks(include_usage)
            };
            for delta in ["Hi", "\"\\\n", "é😀", "\u{1}"] {
                let mut wire = Vec::new();
                let mut sink = SseSink::new(&c, 3, |b: &[u8]| {
                    wire.extend_from_slice(b);
                    Ok(())
                });
                sink.text(delta, &[]).unwrap();
                assert_eq!(wire, c.content(3, delta, &[]), "{model:?} {delta:?}");
            }
        }
    }

    #[test]
    fn no_usage_field_without_include_usage() {
        let role = parse(&chunks(false).role(0));
        assert!(!role.as_object().unwrap().contains_key("usage"));
    }

    #[test]
    fn sse_deltas_concatenate_to_whole_content() {
        let c = chunks(false);
        let pieces = vec!["Hel", "lo \"", "wor", "ld\"\n", "é", "END", "!"];
        let limits = Limits {
            max_new_tokens: 50,
            eos_token_ids: vec![2],
            stop: vec!["END".into()],
        };
        let mut whole = String::new();
        generate(&mut Pieces(pieces.clone()), &[1], &limits, None, &mut whole).unwrap();

        let mut wire = Vec::new();
        let mut sink = SseSink::new(&c, 1, |b: &[u8]| {
            wire.extend_from_slice(b);
            Ok(())
        });
        generate(&mut Pieces(pieces), &[1], &limits, None, &mut sink).unwrap();
        let text = String::from_utf8(wire).unwrap();
        let streamed: String = text
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let chunk = parse(format!("{e}\n\n").as_bytes());
                assert_eq!(chunk["choices"][0]["index"], 1);
                chunk["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(streamed, whole);
        assert_eq!(whole, "Hello \"world\"\né");
    }
}
