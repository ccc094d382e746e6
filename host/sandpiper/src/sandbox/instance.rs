//! Compiled guests, and running one request in a fresh instance.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::sync::oneshot;
use wasmtime::{Engine, Store};
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::{HyperIncomingBody, HyperOutgoingBody};
use wasmtime_wasi_http::WasiHttpView;

use super::state::GuestState;
use super::{compile, engine};
use crate::config::{GuestRoute, GuestSource};
use crate::metrics::Metrics;
use crate::models::LoadedModels;

/// Wasm instructions between voluntary yields of a running guest.
const FUEL_YIELD_INTERVAL: u64 = 10_000_000;

/// Why a request got no response from its guest.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("the guest failed: {0:#}")]
    Trap(anyhow::Error),
    #[error("the guest returned an error instead of a response: {0:?}")]
    Response(ErrorCode),
    #[error("the guest finished without sending a response")]
    NoResponse,
}

struct Route {
    prefix: String,
    name: String,
    pre: ProxyPre<GuestState>,
}

/// Every guest, compiled once and pre-instantiated.
pub struct Sandbox {
    engine: Engine,
    routes: Vec<Route>,
    models: LoadedModels,
    metrics: Arc<Metrics>,
    /// Guests run here, not on the HTTP runtime: wasi-nn calls block their
    /// thread for as long as inference takes.
    runtime: tokio::runtime::Handle,
    /// Wasm instructions one request may execute (time in wasi-nn calls is
    /// not counted).
    fuel: u64,
}

impl Sandbox {
    pub fn new(
        routes: &[GuestRoute],
        models: LoadedModels,
        metrics: Arc<Metrics>,
        runtime: tokio::runtime::Handle,
        compiled_cache: Option<&std::path::Path>,
        fuel: u64,
    ) -> Result<Self> {
        let engine = engine::engine()?;
        let linker = engine::linker(&engine)?;
        let mut compiled = Vec::new();
        for route in routes {
            let started = Instant::now();
            let wasm = match &route.source {
                GuestSource::Embedded(_, bytes) => std::borrow::Cow::Borrowed(*bytes),
                GuestSource::File(path) => std::borrow::Cow::Owned(
                    std::fs::read(path)
                        .with_context(|| format!("reading guest {}", path.display()))?,
                ),
            };
            let component = compile::component(&engine, &wasm, compiled_cache)
                .with_context(|| format!("compiling guest {}", route.name()))?;
            let pre = linker
                .instantiate_pre(&component)
                .and_then(ProxyPre::new)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("linking guest {}", route.name()))?;
            tracing::info!(
                guest = %route.name(),
                route = %route.prefix,
                compile_ms = started.elapsed().as_millis() as u64,
                "guest ready"
            );
            compiled.push(Route {
                prefix: route.prefix.clone(),
                name: route.name(),
                pre,
            });
        }
        // Longest prefix first, so `/v1/audio/` can override `/v1/`.
        compiled.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Sandbox {
            engine,
            routes: compiled,
            models,
            metrics,
            runtime,
            fuel,
        })
    }

    /// The guest serving `path`, if any.
    pub fn route(&self, path: &str) -> Option<usize> {
        self.routes
            .iter()
            .position(|r| path.starts_with(&r.prefix) || path == r.prefix.trim_end_matches('/'))
    }

    /// Runs the request in a fresh instance of the route's guest. Returns once
    /// the guest has set its response; the body keeps streaming from the guest
    /// task after that, and stops if the client goes away.
    pub async fn handle(
        self: &Arc<Self>,
        route: usize,
        req: hyper::Request<HyperIncomingBody>,
    ) -> Result<hyper::Response<HyperOutgoingBody>, GuestError> {
        let (tx, rx) = oneshot::channel();
        let this = self.clone();
        let task = self
            .runtime
            .spawn(async move { this.run(route, req, tx).await });
        match rx.await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(code)) => Err(GuestError::Response(code)),
            Err(_) => match task.await {
                Ok(Ok(())) => Err(GuestError::NoResponse),
                Ok(Err(e)) => Err(GuestError::Trap(e)),
                Err(join) => Err(GuestError::Trap(anyhow::anyhow!("guest task: {join}"))),
            },
        }
    }

    async fn run(
        &self,
        route: usize,
        req: hyper::Request<HyperIncomingBody>,
        tx: oneshot::Sender<Result<hyper::Response<HyperOutgoingBody>, ErrorCode>>,
    ) -> Result<()> {
        let route = &self.routes[route];
        let _active = Active::new(&self.metrics);
        let started = Instant::now();
        let mut store = Store::new(&self.engine, GuestState::new(&self.models));
        store.set_fuel(self.fuel)?;
        // Yield to the guest runtime now and then, so one busy guest cannot
        // starve the others scheduled on its thread.
        store.fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL))?;
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(tx)?;
        let proxy = route.pre.instantiate_async(&mut store).await?;
        let micros = started.elapsed().as_micros() as u64;
        self.metrics.instantiated(micros);
        tracing::debug!(guest = %route.name, instantiate_us = micros, "instance created");
        let result = proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, req, out)
            .await
            .map_err(anyhow::Error::from);
        if let Err(e) = &result {
            self.metrics.guest_errors.fetch_add(1, Relaxed);
            tracing::warn!(guest = %route.name, error = %format!("{e:#}"), "guest trapped");
        }
        result
    }
}

/// Counts a running instance for `/metrics`.
struct Active<'a>(&'a Metrics);

impl<'a> Active<'a> {
    fn new(m: &'a Metrics) -> Self {
        m.active_instances.fetch_add(1, Relaxed);
        Active(m)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active_instances.fetch_sub(1, Relaxed);
    }
}
