//! Sandpiper's OpenAI chat guest.
//!
//! Serves `POST /v1/chat/completions` (whole or streamed) and
//! `GET /v1/models[/{id}]`, running chat models through `wasi:nn` as
//! described in `wit/nn-protocol.md`. The host instantiates this component
//! afresh for every request.
//!
//! Pure logic (parsing, templating, the generation loop, stop sequences,
//! response bodies) lives in modules that also build and test on the
//! developer's machine; only [`handler`] and [`completion`] touch WASI and
//! exist on the guest target alone.

#[cfg(target_arch = "wasm32")]
mod completion;
pub mod generate;
#[cfg(target_arch = "wasm32")]
mod handler;
pub mod logprobs;
pub mod metadata;
pub mod request;
pub mod response;
pub mod routes;
pub mod stop;
pub mod stream;
pub mod template;
pub mod utf8;
