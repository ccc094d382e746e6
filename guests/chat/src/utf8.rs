//! Turning token bytes into text without splitting characters.
//!
//! A token's `bytes` may end in the middle of a multi-byte UTF-8 character
//! (byte-fallback tokenisers emit emoji as several one-byte tokens). Sending
//! those halves to a client as separate deltas would corrupt them, so the
//! decoder holds back an incomplete trailing character until the next token
//! completes it.

/// Incremental UTF-8 decoder over a stream of byte chunks.
///
/// The concatenation of everything [`push`](Self::push) returns is the same
/// however the bytes were split: `String::from_utf8_lossy` of all bytes,
/// minus a character left incomplete at the very end. Such a character
/// (generation hit `max_tokens` halfway through it) is never returned: it
/// was never fully produced, and a U+FFFD closing a cut-off answer is noise.
#[derive(Debug, Default)]
pub struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether bytes of an unfinished character are waiting for the next push.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Adds bytes and returns the text that is now complete. Invalid
    /// sequences become U+FFFD; an incomplete character at the end is kept
    /// for the next call.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        // Truncated character at the end: wait for more bytes.
                        None => {
                            rest = after;
                            break;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_passes_through() {
        let mut d = Utf8Decoder::new();
        assert_eq!(d.push(b"Hello"), "Hello");
        assert_eq!(d.push(b", world"), ", world");
    }

    #[test]
    fn holds_back_split_character() {
        let euro = "€".as_bytes(); // e2 82 ac
        let mut d = Utf8Decoder::new();
        assert_eq!(d.push(&[b'a', euro[0]]), "a");
        assert_eq!(d.push(&euro[1..2]), "");
        assert_eq!(d.push(&[euro[2], b'b']), "€b");
    }

    #[test]
    fn emoji_one_byte_at_a_time() {
        let mut d = Utf8Decoder::new();
        let out: String = "🦀!".bytes().map(|b| d.push(&[b])).collect();
        assert_eq!(out, "🦀!");
    }

    #[test]
    fn invalid_bytes_become_replacement() {
        let mut d = Utf8Decoder::new();
        assert_eq!(d.push(&[b'x', 0xff, b'y']), "x\u{fffd}y");
        assert_eq!(d.push(&[0xe2, 0x28]), "\u{fffd}(");
    }

    #[test]
    fn unfinished_character_at_end_is_never_returned() {
        let mut d = Utf8Decoder::new();
        assert_eq!(d.push(&[b'a', 0xf0, 0x9f]), "a");
    }

    #[test]
    fn any_split_equals_lossy_decoding() {
        let bytes: Vec<u8> = [
            &b"ok "[..],
            "žluť🦀".as_bytes(),
            &[0xff, 0xe2, 0x82],
            &b"x"[..],
            &[0xf0, 0x9f, 0xa6],
        ]
        .concat();
        // The crab left incomplete at the end is never returned.
        let expected = String::from_utf8_lossy(&bytes[..bytes.len() - 3]).into_owned();
        for size in 1..=bytes.len() {
            let mut d = Utf8Decoder::new();
            let out: String = bytes.chunks(size).map(|c| d.push(c)).collect();
            assert_eq!(out, expected, "chunk size {size}");
        }
    }
}
