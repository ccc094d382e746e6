//! wasi-nn for guests: the registry of models the host has loaded, and the
//! backends that run them. Guests only `load-by-name`; weights never cross
//! into the sandbox.

mod llm;
mod registry;
mod tensor;

pub use llm::LlmGraph;
pub use registry::Graphs;

use wasmtime_wasi_nn::wit::WasiNnCtx;

/// A per-instance wasi-nn context over the shared graphs (cheap: `Arc` clones).
pub fn ctx(graphs: &Graphs) -> WasiNnCtx {
    WasiNnCtx::new([llm::GgmlBackend.into()], graphs.clone().into())
}
