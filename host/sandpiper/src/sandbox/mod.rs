//! Guest sandboxes: one wasmtime engine, each guest component compiled and
//! pre-instantiated once, and a fresh instance per HTTP request.

mod compile;
mod engine;
mod instance;
mod state;

pub use instance::{GuestError, Sandbox};
