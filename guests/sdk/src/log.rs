//! One-line logging to stderr, which the host forwards to its own log.
//!
//! `eprintln!` panics if stderr cannot be written, and a panic traps the
//! whole request; a log line must never cost the client its response, so
//! write errors are ignored here.

use std::io::Write as _;

/// Writes `text` and a newline to stderr in one call, ignoring failures.
pub fn line(text: &str) {
    let mut buf = String::with_capacity(text.len() + 1);
    buf.push_str(text);
    buf.push('\n');
    let _ = std::io::stderr().write_all(buf.as_bytes());
}
