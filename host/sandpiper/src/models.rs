//! Turning configured model specs into loaded models: pull into the store if
//! needed, load once, register under the model's name for `load-by-name`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use sandpiper_models::{ModelKind, ModelSpec, Progress, Store};

use crate::config::ServeConfig;
use crate::metrics::Metrics;
use crate::nn::{EmbedGraph, Graphs, LlmGraph, VoiceGraph};
use wasmtime_wasi_nn::Graph;

/// A model as clients see it in `/v1/models`.
#[derive(Debug, Clone)]
pub struct ServedModel {
    pub id: String,
    pub kind: ModelKind,
    pub owned_by: String,
    pub created: u64,
}

/// Everything the host has loaded, shared by all guest instances.
#[derive(Clone)]
pub struct LoadedModels {
    pub graphs: Graphs,
    pub list: Arc<[ServedModel]>,
}

/// Pulls every model that is missing (one after another, so progress bars
/// do not interleave), then loads them all at once, one thread each: start-up
/// waits for the slowest model instead of the sum of them.
pub fn load(
    config: &ServeConfig,
    store: &Store,
    progress: Progress,
    metrics: &Arc<Metrics>,
) -> Result<LoadedModels> {
    let specs = &config.models[..];
    let mut paths = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        if specs[..i].iter().any(|s| s.name == spec.name) {
            bail!("model name {:?} is configured twice", spec.name);
        }
        let path = store
            .ensure(spec, progress)
            .with_context(|| format!("fetching model {:?} ({})", spec.name, spec.source))?;
        if spec.kind == ModelKind::Speech {
            sandpiper_voice::runtime::locate(None, store, progress)?;
        }
        paths.push(path);
    }
    let loaded: Vec<Result<Graph>> = std::thread::scope(|scope| {
        let handles: Vec<_> = specs
            .iter()
            .zip(&paths)
            .map(|(spec, path)| {
                scope.spawn(move || load_one(spec, path, config, store, progress, metrics))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("loading a model panicked")))
            })
            .collect()
    });
    let mut graphs = HashMap::new();
    let mut list = Vec::new();
    for (spec, graph) in specs.iter().zip(loaded) {
        graphs.insert(spec.name.clone(), graph?);
        list.push(ServedModel {
            id: spec.name.clone(),
            kind: spec.kind,
            owned_by: "sandpiper".into(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        });
    }
    Ok(LoadedModels {
        graphs: Graphs::new(graphs),
        list: list.into(),
    })
}

/// Loads one pulled model as a wasi-nn graph.
fn load_one(
    spec: &ModelSpec,
    path: &Path,
    config: &ServeConfig,
    store: &Store,
    progress: Progress,
    metrics: &Arc<Metrics>,
) -> Result<Graph> {
    let started = std::time::Instant::now();
    let graph = match spec.kind {
        ModelKind::Chat => {
            let options = sandpiper_llm::LoadOptions {
                prefix_cache_bytes: config.prefix_cache_bytes,
                ..Default::default()
            };
            let model = sandpiper_llm::Model::load_with(&spec.name, path, &options)
                .with_context(|| format!("loading model {:?}", spec.name))?;
            LlmGraph::new(model, metrics.clone())
        }
        ModelKind::Speech => {
            // The voice's `.onnx.json` is its companion (or, for a local
            // `voice.onnx`, the `voice.onnx.json` beside it).
            let config = spec
                .companions
                .iter()
                .find(|c| c.path.ends_with(".json"))
                .map(|c| store.companion_path(spec, c))
                .unwrap_or_else(|| path.with_extension("onnx.json"));
            let library = sandpiper_voice::runtime::locate(None, store, progress)?;
            let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
            let voice = sandpiper_voice::Voice::load(&spec.name, path, &config, &library, parallel)
                .with_context(|| format!("loading voice {:?}", spec.name))?;
            VoiceGraph::new(Arc::new(voice), metrics.clone())
        }
        ModelKind::Embedding => {
            let model = sandpiper_embed::Embedder::load(&spec.name, path)
                .with_context(|| format!("loading model {:?}", spec.name))?;
            EmbedGraph::new(Arc::new(model), metrics.clone())
        }
    };
    tracing::info!(
        model = %spec.name,
        path = %path.display(),
        load_ms = started.elapsed().as_millis() as u64,
        "model loaded"
    );
    Ok(graph)
}
