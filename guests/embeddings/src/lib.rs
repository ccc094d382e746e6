//! Sandpiper's OpenAI embeddings guest.
//!
//! Serves `POST /v1/embeddings`, running embedding models through `wasi:nn`
//! as described in `wit/nn-protocol.md` ("Embedding models"). The host
//! instantiates this component afresh for every request.
//!
//! Parsing and the response body are pure and tested on the developer's
//! machine; only [`handler`] touches WASI and exists on the guest target.

#[cfg(target_arch = "wasm32")]
mod handler;
pub mod request;
pub mod response;
