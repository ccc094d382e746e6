//! Finding and loading ONNX Runtime (`libonnxruntime`), once per process.
//!
//! `ort` is built with `load-dynamic`: nothing is linked at build time, and the
//! library is opened when the first voice loads. Where it comes from, first
//! match wins:
//!
//! 1. an explicit path (configuration);
//! 2. `ORT_DYLIB_PATH` (ort's own convention);
//! 3. the model store: the library inside the PyPI `onnxruntime` wheel for
//!    this platform, pulled with pip like a model ([`runtime_spec`]).
//!
//! `ort` panics when it has to find the library itself and cannot; we always
//! hand it a path and also catch panics, so a missing or wrong library is a
//! start-up error that says what to install.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use ort::environment::Environment;
use sandpiper_models::{ModelKind, ModelSpec, Progress, Source, Store};

/// The ONNX Runtime release whose library we load (from the PyPI wheel of that version).
pub const ORT_VERSION: &str = "1.32.0";

/// ort's environment variable for the library's path.
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// The library's path inside the wheel, per platform.
fn wheel_member() -> String {
    if cfg!(target_os = "macos") {
        format!("onnxruntime/capi/libonnxruntime.{ORT_VERSION}.dylib")
    } else if cfg!(windows) {
        "onnxruntime/capi/onnxruntime.dll".to_owned()
    } else {
        format!("onnxruntime/capi/libonnxruntime.so.{ORT_VERSION}")
    }
}

/// The store entry for ONNX Runtime: the library out of the `onnxruntime`
/// wheel. The wheel is platform-specific, so pip picks the one for this
/// machine and no hash is pinned.
pub fn runtime_spec() -> ModelSpec {
    ModelSpec::new(
        "onnxruntime",
        ModelKind::Speech,
        Source::Pip {
            requirement: format!("onnxruntime=={ORT_VERSION}"),
            member: wheel_member(),
        },
    )
}

/// What to tell a user whose ONNX Runtime cannot be loaded.
fn install_hint() -> String {
    format!(
        "speech needs ONNX Runtime {ORT_VERSION}: let sandpiper pull it into the model store \
         (needs python3 with pip; `sandpiper pull` does it), or `pip install \
         onnxruntime=={ORT_VERSION}` and set {ORT_DYLIB_ENV} to its {}",
        wheel_member()
    )
}

/// Where the library is: `explicit`, else `ORT_DYLIB_PATH`, else the store
/// (pulled if missing).
pub fn locate(explicit: Option<&Path>, store: &Store, progress: Progress) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    if let Some(path) = std::env::var_os(ORT_DYLIB_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    store
        .ensure(&runtime_spec(), progress)
        .with_context(|| format!("cannot get ONNX Runtime; {}", install_hint()))
}

static ENV: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

/// Loads ONNX Runtime from `library` (once per process) and returns its
/// environment. A later call with another path gets the first library.
pub fn environment(library: &Path) -> Result<Environment> {
    if !library.exists() {
        bail!(
            "ONNX Runtime library {} does not exist; {}",
            library.display(),
            install_hint()
        );
    }
    let mut env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, env)) = env.as_ref() {
        return Ok(env.clone());
    }
    let path = library.to_owned();
    let built = std::panic::catch_unwind(move || -> Result<Environment> {
        let builder = ort::init_from(&path).map_err(|e| anyhow!("{e}"))?;
        builder
            .with_name("sandpiper")
            .build()
            .map_err(|e| anyhow!("{e}"))
    })
    .map_err(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into());
        anyhow!("{msg}")
    })
    .and_then(|r| r)
    .with_context(|| {
        format!(
            "cannot load ONNX Runtime from {}; {}",
            library.display(),
            install_hint()
        )
    })?;
    tracing::info!(library = %library.display(), "ONNX Runtime loaded");
    *env = Some((library.to_owned(), built.clone()));
    Ok(built)
}
