//! Server-sent-event framing, as OpenAI streams use it: each event is one
//! `data: <json>` line followed by a blank line, and the stream ends with
//! `data: [DONE]`.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_one_event() {
        assert_eq!(
            data_event(r#"{"a":"b\nc"}"#),
            b"data: {\"a\":\"b\\nc\"}\n\n"
        );
        assert_eq!(DONE, b"data: [DONE]\n\n");
    }
}
