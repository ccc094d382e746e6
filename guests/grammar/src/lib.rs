//! Constrained decoding: output that always parses and validates.
//!
//! A JSON Schema (or "any JSON object", or a tool call) is compiled into a
//! context-free [`Grammar`] over **bytes** (tokens are byte strings that may
//! split a UTF-8 character, so the grammar spells out UTF-8 itself). A
//! [`Matcher`] follows the output byte by byte, the way llama.cpp's grammar
//! engine does: a set of stacks of grammar positions, one per way the text so
//! far can continue. [`Vocab`] turns a matcher state into a token mask by
//! walking the vocabulary in sorted order, so tokens that share a rejected
//! prefix are skipped together.
//!
//! The crate is plain Rust with no WASI: the chat guest drives it, and its
//! tests run on the developer's machine.

mod grammar;
mod matcher;
mod schema;
mod vocab;

pub use grammar::{ByteSet, Elem, Grammar, GrammarBuilder, RuleId};
pub use matcher::Matcher;
pub use schema::{any_json_object, json_schema, tool_calls, SchemaError, ToolSpec};
pub use vocab::Vocab;
