//! The guest components built into the binary (see build.rs), so that one
//! file can be copied to a board and serve.

/// The OpenAI chat/models guest; serves `/v1/` unless configured otherwise.
pub const CHAT: &[u8] = include_bytes!(env!("SANDPIPER_GUEST_CHAT"));

/// The OpenAI embeddings guest; serves `/v1/embeddings` unless configured otherwise.
pub const EMBEDDINGS: &[u8] = include_bytes!(env!("SANDPIPER_GUEST_EMBEDDINGS"));

/// The OpenAI speech guest; serves `/v1/audio/` unless configured otherwise.
pub const SPEECH: &[u8] = include_bytes!(env!("SANDPIPER_GUEST_SPEECH"));

/// Path of the sandbox-probe test guest. It tries to escape the sandbox and is
/// never embedded; tests load it with `--guest`.
pub const SANDBOX_PROBE_PATH: &str = env!("SANDPIPER_GUEST_SANDBOX_PROBE");
