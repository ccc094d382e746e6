//! Sandpiper's OpenAI speech guest.
//!
//! Serves `POST /v1/audio/speech` (OpenAI's shape: `model`, `input`, `voice`,
//! `response_format`, `speed`, `stream_format`) and `GET /v1/audio/voices`.
//! The voices are wasi:nn graphs in the host (`wit/nn-protocol.md`, "Speech
//! voices"): this guest normalises the text ([`normalize`]), splits it into
//! sentences, has the host speak each one, and encodes and streams the audio
//! ([`audio`], [`flac`], [`opus`]) as each sentence is ready.
//!
//! Everything but [`handler`] and [`speak`] is pure and tested off-wasm.

pub mod audio;
pub mod flac;
#[cfg(target_arch = "wasm32")]
mod handler;
pub mod normalize;
pub mod numbers;
pub mod opus;
pub mod request;
pub mod resample;
pub mod routes;
#[cfg(target_arch = "wasm32")]
mod speak;
pub mod voices;
