//! What one guest instance's store holds, and what it is allowed to do.

use std::future::Future;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};
use wasmtime_wasi_nn::wit::{WasiNnCtx, WasiNnView};

use crate::models::{LoadedModels, ServedModel};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "sandpiper:guest/models-host",
    });
}
use bindings::sandpiper::guest::models::{self as models_wit, ModelInfo, ModelKind};

pub(crate) struct GuestState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: DenyOutbound,
    nn: WasiNnCtx,
    models: Arc<[ServedModel]>,
}

impl GuestState {
    /// The sandbox: no preopened directories, no sockets, no environment, no
    /// arguments; stderr goes to the server's log so guests can report.
    pub(crate) fn new(models: &LoadedModels) -> Self {
        let wasi = WasiCtx::builder()
            .inherit_stderr()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        GuestState {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            hooks: DenyOutbound,
            nn: crate::nn::ctx(&models.graphs),
            models: models.list.clone(),
        }
    }

    pub(crate) fn nn(&mut self) -> WasiNnView<'_> {
        WasiNnView::new(&mut self.table, &mut self.nn)
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Guests may not make outbound HTTP requests.
struct DenyOutbound;

type HttpResult<T> = Result<T, wasmtime_wasi_http::Error>;
type IoFuture = Box<dyn Future<Output = HttpResult<()>> + Send>;
type WasiResponse = http::Response<wasmtime_wasi_http::WasiBody>;

impl WasiHttpHooks for DenyOutbound {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: IoFuture,
    ) -> Box<dyn Future<Output = HttpResult<(WasiResponse, IoFuture)>> + Send> {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// `sandpiper:guest/models`.
pub(crate) struct ModelsHost;

impl ModelsHost {
    pub(crate) fn add_to_linker(linker: &mut Linker<GuestState>) -> anyhow::Result<()> {
        models_wit::add_to_linker::<_, HasSelf<GuestState>>(linker, |s| s)?;
        Ok(())
    }
}

impl models_wit::Host for GuestState {
    fn list_models(&mut self) -> Vec<ModelInfo> {
        self.models
            .iter()
            .map(|m| ModelInfo {
                id: m.id.clone(),
                kind: match m.kind {
                    sandpiper_models::ModelKind::Chat => ModelKind::Chat,
                    sandpiper_models::ModelKind::Embedding => ModelKind::Embedding,
                    sandpiper_models::ModelKind::Speech => ModelKind::Speech,
                },
                owned_by: m.owned_by.clone(),
                created: m.created,
            })
            .collect()
    }
}
