//! Sandpiper's OpenAI chat guest.
//!
//! Serves `POST /v1/chat/completions` and the legacy `POST /v1/completions`
//! (whole or streamed) and `GET /v1/models[/{id}]`, running chat models through `wasi:nn` as
//! described in `wit/nn-protocol.md`. The host instantiates this component
//! afresh for every request.
//!
//! Pure logic (parsing, templating, the generation loop, stop sequences,
//! response bodies) lives in modules that also build and test on the
//! developer's machine; only [`handler`], [`completion`] and
//! [`text_completion`] touch WASI and exist on the guest target alone.

#[cfg(target_arch = "wasm32")]
mod completion;
pub mod constraint;
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
#[cfg(target_arch = "wasm32")]
mod text_completion;
pub mod text_request;
pub mod text_response;
pub mod tools;
pub mod utf8;
