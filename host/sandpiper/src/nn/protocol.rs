//! What every Sandpiper graph shares: named tensors in, named tensors out
//! (wit/nn-protocol.md), adapted once to wasmtime-wasi-nn's backend traits.

use wasmtime_wasi_nn::backend::{
    BackendError, BackendExecutionContext, BackendGraph, Id, NamedTensor,
};
use wasmtime_wasi_nn::{ExecutionContext, Graph, Tensor};

use super::tensor::invalid;

/// An execution context that answers one `compute` with named outputs.
pub(crate) trait NamedCompute: Send + Sync + 'static {
    /// `inputs` is never empty.
    fn compute(&mut self, inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, BackendError>;
}

/// A backend graph as wasi-nn's registry handle.
pub(crate) fn graph(graph: impl BackendGraph + 'static) -> Graph {
    let graph: Box<dyn BackendGraph> = Box::new(graph);
    graph.into()
}

/// A [`NamedCompute`] as wasi-nn's execution-context handle.
pub(crate) fn context(ctx: impl NamedCompute) -> ExecutionContext {
    let ctx: Box<dyn BackendExecutionContext> = Box::new(Protocol(ctx));
    ctx.into()
}

pub(crate) fn named(name: &str, tensor: Tensor) -> NamedTensor {
    NamedTensor {
        name: name.to_string(),
        tensor,
    }
}

struct Protocol<C>(C);

impl<C: NamedCompute> BackendExecutionContext for Protocol<C> {
    fn set_input(&mut self, _: Id, _: &Tensor) -> Result<(), BackendError> {
        Err(invalid(
            "set-input is the witx API; use compute with named inputs",
        ))
    }

    fn get_output(&mut self, _: Id) -> Result<Tensor, BackendError> {
        Err(invalid(
            "get-output is the witx API; use compute with named inputs",
        ))
    }

    fn compute(
        &mut self,
        inputs: Option<Vec<NamedTensor>>,
    ) -> Result<Option<Vec<NamedTensor>>, BackendError> {
        let inputs = inputs.ok_or_else(|| invalid("compute needs named inputs"))?;
        if inputs.is_empty() {
            return Err(invalid("compute needs an input"));
        }
        self.0.compute(inputs).map(Some)
    }
}
