//! Models by name, for `load-by-name`.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime_wasi_nn::{Graph, GraphRegistry};

/// The host's loaded models. Cloning shares them: each guest instance gets a
/// registry that points at the same weights.
#[derive(Clone, Default)]
pub struct Graphs(Arc<HashMap<String, Graph>>);

impl Graphs {
    pub fn new(graphs: HashMap<String, Graph>) -> Self {
        Graphs(Arc::new(graphs))
    }
}

impl GraphRegistry for Graphs {
    fn get(&self, name: &str) -> Option<&Graph> {
        self.0.get(name)
    }

    /// Guests never mutate the shared registry.
    fn get_mut(&mut self, _name: &str) -> Option<&mut Graph> {
        None
    }
}
