//! Shared code for Sandpiper's WebAssembly guests.
//!
//! Every guest is a `wasi:http` proxy component that may run models through
//! `wasi:nn`. The pieces they all need live here so that each guest is only
//! its own request logic:
//!
//! - [`error`]: OpenAI-shaped error bodies, so every failure looks the same to clients.
//! - [`nn`]: typed wrappers over `wasi:nn` and the tensor encodings of
//!   `wit/nn-protocol.md`.
//! - [`models`]: what the host serves (`sandpiper:guest/models`).
//! - [`params`]: reading request parameters with OpenAI's 400 errors;
//!   [`prompt`]: a `prompt`/`input` of texts or token ids.
//! - [`base64`]: standard base64, for `encoding_format: "base64"` bodies.
//! - [`sse`]: server-sent-event framing for streamed responses.
//! - [`log`]: one-line logging to stderr that can never fail a request.
//! - [`http`]: URL helpers and (guest target only) reading the request body
//!   and writing whole or streamed responses.
//! - [`time`], [`ids`] (guest target only): wall-clock and monotonic time,
//!   random response ids.
//!
//! Pure logic compiles and is tested on the developer's machine too; anything
//! that calls an import is gated on `target_arch = "wasm32"`, where the
//! imports exist.

pub mod base64;
#[cfg(target_arch = "wasm32")]
mod bindings;
pub mod error;
pub mod http;
#[cfg(target_arch = "wasm32")]
pub mod ids;
pub mod log;
pub mod models;
pub mod nn;
pub mod params;
pub mod prompt;
pub mod routes;
pub mod sse;
#[cfg(target_arch = "wasm32")]
pub mod time;

pub use error::ApiError;
