//! Server-sent-event framing, as OpenAI streams use it: each event is one
//! `data: <json>` line followed by a blank line, and the stream ends with
//! `data: [DONE]`. [`TextEvent`] sends the per-token events of a stream
//! without rebuilding their JSON each time.

/// The terminator OpenAI clients wait for before closing a stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// The response headers of an event stream.
pub const HEAD: &[(&str, &str)] = &[
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
];

/// Frames one JSON payload as an SSE `data` event.
///
/// The payload must not contain a raw newline (a newline would end the
/// field); compact `serde_json` output never does, since it escapes newlines
/// inside strings.
pub fn data_event(json: &str) -> Vec<u8> {
    debug_assert!(!json.contains('\n'), "SSE data must be one line");
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

/// An event that differs from one call to the next only in one string
/// field (a streamed text delta), kept as the bytes before and after that
/// string.
///
/// A guest sends one event per generated token, between two decode steps.
/// Built as a JSON tree and serialized each time (allocations, map inserts,
/// the tree's drop), the events made up a third or more of the guest's wasm
/// time per token: with them pre-serialized, `perf` in the host counted
/// 0.58–0.67 of the samples in the chat guest's code for the same streamed
/// requests (~35–45 µs per token instead of ~50–90, SmolLM2 on a 2-vCPU
/// VM). Here an event is serialized once; each token costs the escape of
/// its text and one copy.
#[derive(Debug, Clone)]
pub struct TextEvent {
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl TextEvent {
    /// Splits the event `event(text)` builds around its text: `event` is
    /// called once, with a mark in place of the text. `None` when the
    /// mark's JSON string does not appear exactly once in what it built
    /// (another field, such as a model name a client chose, holds it too):
    /// the caller then builds each event whole.
    pub fn new(event: impl FnOnce(&str) -> Vec<u8>) -> Option<Self> {
        const MARK: &str = "\u{1}";
        const MARK_JSON: &[u8] = br#""\u0001""#;
        let whole = event(MARK);
        let mut found = whole
            .windows(MARK_JSON.len())
            .enumerate()
            .filter(|(_, w)| *w == MARK_JSON)
            .map(|(at, _)| at);
        let at = found.next()?;
        if found.next().is_some() {
            return None;
        }
        Some(Self {
            head: whole[..at].to_vec(),
            tail: whole[at + MARK_JSON.len()..].to_vec(),
        })
    }

    /// The event for `text`: byte for byte what the builder given to
    /// [`TextEvent::new`] makes of it.
    pub fn render(&self, text: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.len() + text.len() + 8 + self.tail.len());
        out.extend_from_slice(&self.head);
        serde_json::to_writer(&mut out, text).expect("writing to a Vec cannot fail");
        out.extend_from_slice(&self.tail);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(model: &str, text: &str) -> Vec<u8> {
        let chunk = json!({"model": model, "choices": [{"delta": {"content": text}, "index": 0}], "usage": null});
        data_event(&chunk.to_string())
    }

    #[test]
    fn text_event_renders_what_the_builder_builds() {
        let e = TextEvent::new(|text| event("m", text)).unwrap();
        for text in [
            "",
            "Hi",
            "a \"quoted\" \\ word\n\t",
            "é ✓ 😀",
            "\u{1}",
            "\u{0}\u{1f}\u{7f}",
            "</script>",
        ] {
            assert_eq!(e.render(text), event("m", text), "{text:?}");
        }
    }

    #[test]
    fn text_event_refuses_an_ambiguous_mark() {
        assert!(TextEvent::new(|text| event("\u{1}", text)).is_none());
        assert!(TextEvent::new(|_| event("m", "no mark")).is_none());
        // The mark inside a longer string is no match.
        let e = TextEvent::new(|text| event("a\u{1}b", text)).unwrap();
        assert_eq!(e.render("x"), event("a\u{1}b", "x"));
    }

    #[test]
    fn frames_one_event() {
        assert_eq!(
            data_event(r#"{"a":"b\nc"}"#),
            b"data: {\"a\":\"b\\nc\"}\n\n"
        );
        assert_eq!(DONE, b"data: [DONE]\n\n");
    }
}
