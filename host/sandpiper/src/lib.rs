//! Sandpiper's server: an axum HTTP front that hands each `/v1/*` request to a
//! fresh WebAssembly guest instance, and a wasi-nn backend through which those
//! guests reach models loaded once in the host.
//!
//! Follow a request: [`server`] (router) → [`sandbox`] (guest instance) →
//! [`nn`] (wasi-nn backend) → `sandpiper_llm` (model).

pub mod config;
pub mod guests;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod sandbox;
pub mod server;
