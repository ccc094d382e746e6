//! What `sandpiper serve` is told to do, kept apart from the code that does it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use sandpiper_models::ModelSpec;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub models: Vec<ModelSpec>,
    /// Extra or replacement guests: path prefix → component file.
    pub guests: Vec<GuestRoute>,
    /// Threads that run guest instances (and so inference). Model calls are
    /// blocking; keeping them off the HTTP runtime keeps `/health` and other
    /// requests responsive.
    pub guest_threads: usize,
    /// Threads of the HTTP runtime: the accept loop, `/health`, `/metrics`
    /// and moving bytes between sockets and guests. One is plenty for that,
    /// and with two or more tokio wakes an extra thread at every streamed
    /// token (measured on 2 vCPUs: ~125 → ~90 µs of CPU per token, taken
    /// from the kernels' threads).
    pub http_threads: usize,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Wasm instructions one request's guest may execute before it is stopped.
    pub guest_fuel: u64,
    /// When set, API requests must carry `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Bytes of finished sequences' KV caches each chat model keeps for
    /// prompts that start the same way.
    pub prefix_cache_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct GuestRoute {
    /// Path prefix such as `/v1/` or `/probe/`.
    pub prefix: String,
    pub source: GuestSource,
}

#[derive(Debug, Clone)]
pub enum GuestSource {
    Embedded(&'static str, &'static [u8]),
    File(PathBuf),
}

impl GuestRoute {
    /// Parses `ROUTE=PATH.wasm` as given to `--guest`.
    pub fn parse(s: &str) -> Result<Self> {
        let (prefix, path) = s
            .split_once('=')
            .with_context(|| format!("--guest expects ROUTE=PATH.wasm, got {s:?}"))?;
        if !prefix.starts_with('/') {
            bail!("--guest route must start with '/', got {prefix:?}");
        }
        Ok(GuestRoute {
            prefix: prefix.to_string(),
            source: GuestSource::File(PathBuf::from(path)),
        })
    }

    pub fn name(&self) -> String {
        match &self.source {
            GuestSource::Embedded(name, _) => format!("{name} (built in)"),
            GuestSource::File(p) => p.display().to_string(),
        }
    }
}

impl ServeConfig {
    /// The built-in guests, overridden by any configured for the same prefix.
    pub fn routes(&self) -> Vec<GuestRoute> {
        let mut routes = self.guests.clone();
        if !routes.iter().any(|r| r.prefix == "/v1/") {
            routes.push(GuestRoute {
                prefix: "/v1/".into(),
                source: GuestSource::Embedded("chat", crate::guests::CHAT),
            });
        }
        // Longer prefixes win (see `Sandbox::route`), so this beats `/v1/`.
        if !routes.iter().any(|r| r.prefix == "/v1/embeddings/") {
            routes.push(GuestRoute {
                prefix: "/v1/embeddings/".into(),
                source: GuestSource::Embedded("embeddings", crate::guests::EMBEDDINGS),
            });
        }
        if !routes.iter().any(|r| r.prefix == "/v1/audio/") {
            routes.push(GuestRoute {
                prefix: "/v1/audio/".into(),
                source: GuestSource::Embedded("speech", crate::guests::SPEECH),
            });
        }
        routes
    }
}
