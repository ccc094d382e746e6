//! Legacy Completions responses (`POST /v1/completions`): the
//! `text_completion` body, its streamed chunks and OpenAI's legacy
//! `logprobs` shape.
//!
//! A choice is `{"text", "index", "logprobs", "finish_reason"}`. With
//! `logprobs` asked for, its `logprobs` is
//! `{"tokens": [...], "token_logprobs": [...], "top_logprobs": [{token:
//! logprob, ...}, ...], "text_offset": [...]}`: one entry per output token,
//! as the generation loop lists them (see `generate.rs`: end-of-sequence
//! tokens are not listed, a token a stop sequence cuts is trimmed). Each
//! `top_logprobs` object holds the `logprobs` most likely tokens plus the
//! sampled one, so it may have `logprobs + 1` keys (OpenAI documents the
//! same); tokens whose text is the same keep the likelier one.
//! `text_offset` is where the token starts in the choice's `text`, in
//! characters (Unicode scalar values, as Python indexes strings); a token
//! that starts inside a character split between tokens gets that
//! character's offset.
//!
//! Streaming, as OpenAI sends it: chunks of object `text_completion` whose
//! `choices[0].text` are deltas (the echoed prompt, when asked, first), a
//! chunk with empty text and the `finish_reason` per choice, a usage chunk
//! with `"choices": []` when `stream_options.include_usage` is set (every
//! other chunk then carries `"usage": null`), then `data: [DONE]`. Choices
//! are streamed one after another, each chunk naming its `index`.

use crate::generate::{FinishReason, Sink};
use crate::logprobs::TokenLogprob;
use crate::response::{CompletionId, Usage};
use sandpiper_guest_sdk::http::Disconnected;
use sandpiper_guest_sdk::sse::TextEvent;
use serde_json::{json, Map, Value};

/// Builds legacy `logprobs` objects for one choice, piece by piece, keeping
/// track of where each token starts in the choice's text.
#[derive(Debug, Clone, Default)]
pub struct LegacyLogprobs {
    /// The choice's text so far (the echoed prompt included).
    text: String,
    /// Byte offset in `text` where the next listed token starts.
    next: usize,
    /// `text[..counted]` holds `chars` characters.
    counted: usize,
    chars: usize,
}

impl LegacyLogprobs {
    /// For a choice whose text starts with `prefix` (the echoed prompt, or
    /// nothing); the first token starts after it.
    pub fn new(prefix: &str) -> Self {
        Self {
            text: prefix.to_string(),
            next: prefix.len(),
            counted: 0,
            chars: 0,
        }
    }

    /// `delta` was appended to the text together with `entries`: the legacy
    /// object for these entries. The whole choice's object is one call with
    /// all of its text and entries; streamed calls give the same entries,
    /// split.
    pub fn push(&mut self, delta: &str, entries: &[TokenLogprob]) -> Value {
        self.text.push_str(delta);
        let mut tokens = Vec::with_capacity(entries.len());
        let mut token_logprobs = Vec::with_capacity(entries.len());
        let mut top_logprobs = Vec::with_capacity(entries.len());
        let mut text_offset = Vec::with_capacity(entries.len());
        for entry in entries {
            text_offset.push(self.char_offset(self.next));
            self.next += entry.bytes.len();
            tokens.push(json!(entry.token));
            token_logprobs.push(json!(entry.logprob));
            top_logprobs.push(top_object(entry));
        }
        json!({
            "tokens": tokens,
            "token_logprobs": token_logprobs,
            "top_logprobs": top_logprobs,
            "text_offset": text_offset,
        })
    }

    /// Characters before byte `at` (floored to a character boundary and
    /// clamped to the text: a dropped unfinished character has no text).
    /// Offsets only grow, so counting resumes where it stopped.
    fn char_offset(&mut self, at: usize) -> usize {
        let mut at = at.min(self.text.len());
        while !self.text.is_char_boundary(at) {
            at -= 1;
        }
        if at > self.counted {
            self.chars += self.text[self.counted..at].chars().count();
            self.counted = at;
        }
        self.chars
    }
}

/// `{token text: logprob}` for the alternatives, most likely first, plus
/// the sampled token.
fn top_object(entry: &TokenLogprob) -> Value {
    let mut top = Map::new();
    for alt in &entry.top {
        top.entry(String::from_utf8_lossy(&alt.bytes).into_owned())
            .or_insert(json!(alt.logprob));
    }
    top.entry(entry.token.clone())
        .or_insert(json!(entry.logprob));
    Value::Object(top)
}

/// One finished choice of a non-streamed response.
#[derive(Debug, Clone)]
pub struct TextChoice {
    /// The echoed prompt (if asked) followed by the completion.
    pub text: String,
    /// The legacy object when `logprobs` was asked for, else `None` (null).
    pub logprobs: Option<Value>,
    pub finish: FinishReason,
}

/// A `text_completion` object; choice `i` of `choices` gets `"index": i`.
pub fn text_completion(ident: &CompletionId, choices: &[TextChoice], usage: Usage) -> Value {
    let choices: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(index, choice)| {
            json!({
                "text": choice.text,
                "index": index,
                "logprobs": choice.logprobs,
                "finish_reason": choice.finish.as_str(),
            })
        })
        .collect();
    let mut body = ident.envelope("text_completion", json!(choices));
    body["usage"] = usage.to_value();
    body
}

/// Builds the SSE events of one streamed text completion.
#[derive(Debug, Clone)]
pub struct TextChunks {
    pub ident: CompletionId,
    pub include_usage: bool,
    /// The request asked for `logprobs`: text chunks carry theirs.
    pub logprobs: bool,
}

impl TextChunks {
    fn event(&self, choices: Value, usage: Option<Usage>) -> Vec<u8> {
        self.ident
            .chunk_event("text_completion", choices, self.include_usage, usage)
    }

    /// A piece of choice `index`'s text with its tokens' legacy logprobs
    /// (`None` without `logprobs`).
    pub fn text(&self, index: u64, text: &str, logprobs: Option<Value>) -> Vec<u8> {
        self.event(
            json!([{"text": text, "index": index, "logprobs": logprobs, "finish_reason": null}]),
            None,
        )
    }

    /// The event that ends choice `index`.
    pub fn finish(&self, index: u64, reason: FinishReason) -> Vec<u8> {
        self.event(
            json!([{"text": "", "index": index, "logprobs": null, "finish_reason": reason.as_str()}]),
            None,
        )
    }

    /// The usage event (send only when `include_usage`).
    pub fn usage(&self, usage: Usage) -> Vec<u8> {
        self.event(json!([]), Some(usage))
    }
}

/// A [`Sink`] that sends each delta of choice `index` as a text chunk
/// through `write`, which must flush so the client sees tokens as they are
/// generated.
pub struct TextSseSink<'a, W> {
    chunks: &'a TextChunks,
    index: u64,
    logprobs: LegacyLogprobs,
    /// Text chunks pre-serialized around their text, when they carry no
    /// logprobs (which differ from chunk to chunk).
    event: Option<TextEvent>,
    write: W,
}

impl<'a, W: FnMut(&[u8]) -> Result<(), Disconnected>> TextSseSink<'a, W> {
    /// Starts choice `index`: sends `echo` (the prompt, when echoed) as its
    /// first chunk unless it is empty.
    pub fn start(
        chunks: &'a TextChunks,
        index: u64,
        echo: &str,
        mut write: W,
    ) -> Result<Self, Disconnected> {
        if !echo.is_empty() {
            // The prompt's tokens are not scored (see `text_request`).
            let none = chunks
                .logprobs
                .then(|| LegacyLogprobs::default().push("", &[]));
            write(&chunks.text(index, echo, none))?;
        }
        let event = if chunks.logprobs {
            None
        } else {
            TextEvent::new(|text| chunks.text(index, text, None))
        };
        Ok(Self {
            chunks,
            index,
            logprobs: LegacyLogprobs::new(echo),
            event,
            write,
        })
    }
}

impl<W: FnMut(&[u8]) -> Result<(), Disconnected>> Sink for TextSseSink<'_, W> {
    fn text(&mut self, delta: &str, entries: &[TokenLogprob]) -> Result<(), Disconnected> {
        let event = match &self.event {
            Some(event) => event.render(delta),
            None => {
                let lp = self.logprobs.push(delta, entries);
                self.chunks
                    .text(self.index, delta, self.chunks.logprobs.then_some(lp))
            }
        };
        (self.write)(&event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{generate, Collected, Limits, Pieces};
    use crate::logprobs::{Alternative, StepLogprobs};

    fn entry(token: &str, logprob: f64, top: &[(&str, f64)]) -> TokenLogprob {
        TokenLogprob::new(
            token.as_bytes(),
            StepLogprobs {
                logprob,
                top: top
                    .iter()
                    .enumerate()
                    .map(|(id, (t, lp))| Alternative {
                        id: id as i32,
                        logprob: *lp,
                        bytes: t.as_bytes().to_vec(),
                    })
                    .collect(),
            },
        )
    }

    fn ident() -> CompletionId {
        CompletionId {
            id: "cmpl-1".into(),
            created: 7,
            model: "m".into(),
        }
    }

    #[test]
    fn legacy_shape_with_offsets_after_the_echo() {
        let entries = [
            entry(" Paris", -0.5, &[(" Paris", -0.5), (" Lyon", -2.0)]),
            entry(".", -0.25, &[(",", -0.1)]),
        ];
        let v = LegacyLogprobs::new("The capital is").push(" Paris.", &entries);
        assert_eq!(
            v,
            json!({"tokens": [" Paris", "."], "token_logprobs": [-0.5, -0.25],
                "top_logprobs": [{" Paris": -0.5, " Lyon": -2.0}, {",": -0.1, ".": -0.25}],
                "text_offset": [14, 20]})
        );
        // logprobs: 0 lists just the sampled token.
        let v = LegacyLogprobs::new("").push("a", &[entry("a", -1.0, &[])]);
        assert_eq!(v["top_logprobs"], json!([{"a": -1.0}]));
        assert_eq!(v["text_offset"], json!([0]));
    }

    #[test]
    fn offsets_count_characters_and_split_ones() {
        let crab = "🦀".as_bytes();
        let split = |bytes: &[u8]| {
            TokenLogprob::new(
                bytes,
                StepLogprobs {
                    logprob: -1.0,
                    top: vec![],
                },
            )
        };
        let entries = [
            split(b"\xc3\xa9"),
            split(&crab[..1]),
            split(&crab[1..]),
            split(b"!"),
        ];
        let v = LegacyLogprobs::new("é").push("é🦀!", &entries);
        // "é" is one character; both halves of the crab start at its offset.
        assert_eq!(v["text_offset"], json!([1, 2, 2, 3]));
        // Streamed in pieces, the offsets are the same.
        let mut lp = LegacyLogprobs::new("é");
        let a = lp.push("é", &entries[..1]);
        let b = lp.push("🦀", &entries[1..3]);
        let c = lp.push("!", &entries[3..]);
        let joined: Vec<Value> = [a, b, c]
            .iter()
            .flat_map(|v| v["text_offset"].as_array().unwrap().clone())
            .collect();
        assert_eq!(Value::Array(joined), v["text_offset"]);
        // A token of a dropped unfinished character points at the end.
        let v = LegacyLogprobs::new("").push("a", &[split(b"a"), split(&crab[..2])]);
        assert_eq!(v["text_offset"], json!([0, 1]));
    }

    #[test]
    fn completion_has_openai_shape() {
        let choices = [
            TextChoice {
                text: "Hello world".into(),
                logprobs: None,
                finish: FinishReason::Length,
            },
            TextChoice {
                text: "!".into(),
                logprobs: Some(json!({"tokens": []})),
                finish: FinishReason::Stop,
            },
        ];
        let usage = Usage {
            prompt_tokens: 2,
            completion_tokens: 3,
            cached_tokens: 0,
        };
        let body = text_completion(&ident(), &choices, usage);
        assert_eq!(
            body,
            json!({"id": "cmpl-1", "object": "text_completion", "created": 7, "model": "m",
                "choices": [
                    {"text": "Hello world", "index": 0, "logprobs": null, "finish_reason": "length"},
                    {"text": "!", "index": 1, "logprobs": {"tokens": []}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5,
                          "prompt_tokens_details": {"cached_tokens": 0}}})
        );
    }

    fn parse_event(event: &str) -> Value {
        serde_json::from_str(event.strip_prefix("data: ").unwrap()).unwrap()
    }

    fn events(wire: &[u8]) -> Vec<Value> {
        std::str::from_utf8(wire)
            .unwrap()
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(parse_event)
            .collect()
    }

    #[test]
    fn sink_sends_what_text_builds() {
        for (include_usage, model) in [(true, "m"), (false, "m"), (false, "odd \u{1} model")] {
            let c = TextChunks {
                ident: CompletionId {
                    model: model.into(),
                    ..ident()
                },
                include_usage,
                logprobs: false,
            };
            for delta in ["Hi", "\"\\\n", "é😀", "\u{1}"] {
                let mut wire = Vec::new();
                let mut sink = TextSseSink::start(&c, 2, "", |b: &[u8]| {
                    wire.extend_from_slice(b);
                    Ok(())
                })
                .unwrap();
                sink.text(delta, &[]).unwrap();
                assert_eq!(wire, c.text(2, delta, None), "{model:?} {delta:?}");
            }
        }
    }

    #[test]
    fn chunks_have_openai_shape() {
        let c = TextChunks {
            ident: ident(),
            include_usage: true,
            logprobs: false,
        };
        let text = events(&c.text(3, "Hi", None)).remove(0);
        assert_eq!(
            text,
            json!({"id": "cmpl-1", "object": "text_completion", "created": 7, "model": "m",
                "choices": [{"text": "Hi", "index": 3, "logprobs": null, "finish_reason": null}],
                "usage": null})
        );
        let fin = events(&c.finish(3, FinishReason::Stop)).remove(0);
        assert_eq!(fin["choices"][0]["text"], "");
        assert_eq!(fin["choices"][0]["finish_reason"], "stop");
        let usage = events(&c.usage(Usage {
            prompt_tokens: 1,
            completion_tokens: 1,
            cached_tokens: 0,
        }))
        .remove(0);
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 2);
        let without = TextChunks {
            include_usage: false,
            ..c
        };
        let text = events(&without.text(0, "x", None)).remove(0);
        assert!(!text.as_object().unwrap().contains_key("usage"));
    }

    #[test]
    fn streamed_text_and_logprobs_equal_whole() {
        let pieces = vec!["Hel", "lo \"", "wor", "ld\"\n", "é", "EN", "D!"];
        let limits = Limits {
            max_new_tokens: 50,
            eos_token_ids: vec![2],
            stop: vec!["END".into()],
        };
        let echo = "Say: ";
        let mut whole = Collected::default();
        generate(&mut Pieces(pieces.clone()), &[1], &limits, None, &mut whole).unwrap();
        let whole_lp = LegacyLogprobs::new(echo).push(&whole.content, &whole.logprobs);

        let c = TextChunks {
            ident: ident(),
            include_usage: false,
            logprobs: true,
        };
        let mut wire = Vec::new();
        let mut sink = TextSseSink::start(&c, 1, echo, |b: &[u8]| {
            wire.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        generate(&mut Pieces(pieces), &[1], &limits, None, &mut sink).unwrap();
        let events = events(&wire);
        let streamed: String = events
            .iter()
            .map(|e| {
                assert_eq!(e["choices"][0]["index"], 1);
                e["choices"][0]["text"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(streamed, format!("{echo}{}", whole.content));
        assert_eq!(whole.content, "Hello \"world\"\né");
        assert_eq!(events[0]["choices"][0]["text"], echo);
        for key in ["tokens", "token_logprobs", "top_logprobs", "text_offset"] {
            let joined: Vec<Value> = events
                .iter()
                .flat_map(|e| e["choices"][0]["logprobs"][key].as_array().unwrap().clone())
                .collect();
            assert_eq!(Value::Array(joined), whole_lp[key], "{key}");
        }
        assert_eq!(whole_lp["text_offset"][0], 5);
        // "EN" of the cut "END" is not listed.
        assert_eq!(whole_lp["tokens"].as_array().unwrap().len(), 5);
        // A failing write stops at the echo.
        let r = TextSseSink::start(&c, 0, echo, |_: &[u8]| Err(Disconnected));
        assert!(r.is_err());
    }
}
