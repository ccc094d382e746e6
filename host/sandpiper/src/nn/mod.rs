//! wasi-nn for guests: the registry of models the host has loaded, and the
//! backends that run them. Guests only `load-by-name`; weights never cross
//! into the sandbox.

mod embed;
mod llm;
mod protocol;
mod registry;
mod tensor;
mod voice;

pub use embed::EmbedGraph;
pub use llm::LlmGraph;
pub use registry::Graphs;
pub use voice::VoiceGraph;

use wasmtime_wasi_nn::wit::WasiNnCtx;

/// A per-instance wasi-nn context over the shared graphs (cheap: `Arc` clones).
pub fn ctx(graphs: &Graphs) -> WasiNnCtx {
    WasiNnCtx::new([llm::GgmlBackend.into()], graphs.clone().into())
}
