//! What the server serves: a named model, its kind and where its file comes from.

use std::fmt;
use std::str::FromStr;

use crate::Source;

/// What a model does, which decides the API endpoints and the backend that loads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Text generation (chat completions).
    Chat,
    /// Text embeddings.
    Embedding,
    /// Speech recognition / synthesis.
    Speech,
}

impl ModelKind {
    /// The lowercase name used in configs and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Chat => "chat",
            ModelKind::Embedding => "embedding",
            ModelKind::Speech => "speech",
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ModelKind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "chat" => Ok(ModelKind::Chat),
            "embedding" | "embeddings" => Ok(ModelKind::Embedding),
            "speech" => Ok(ModelKind::Speech),
            _ => anyhow::bail!("unknown model kind `{s}`; expected chat, embedding or speech"),
        }
    }
}

/// A model the server can serve: its name and where its file comes from.
///
/// Most models are one file (a GGUF). Others need a few more from the same source, such as a
/// tokenizer and a config beside the weights: those are its [`Companion`]s, pulled and verified
/// with the primary file, and the model counts as present only when all of them are.
///
/// `sha256` and `size` pin the exact bytes. Catalog entries always have them, so a
/// corrupted or substituted download is caught before it is loaded; ad-hoc references
/// (`--model NAME=REF`) usually do not, and are trusted as found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelSpec {
    /// The name clients ask for (the `model` field of API requests).
    pub name: String,
    /// What the model does.
    pub kind: ModelKind,
    /// Where its file comes from.
    pub source: Source,
    /// Expected SHA-256 of the file, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Expected size of the file in bytes; checked before hashing, and cheaply on every start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Other files the model needs, from the same source, beside the primary file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub companions: Vec<Companion>,
}

/// A file a model needs besides its primary file, from the same source (the same wheel, repo
/// or local directory).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Companion {
    /// `/`-separated path relative to the primary file's directory: `config.json`,
    /// `1_Pooling/config.json`. No `..`, no leading `/`.
    pub path: String,
    /// Expected SHA-256 of the file, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl Companion {
    /// A companion pinned by its SHA-256 (`None`: trusted as found).
    pub fn new(path: impl Into<String>, sha256: Option<&str>) -> Self {
        Companion {
            path: path.into(),
            sha256: sha256.map(str::to_owned),
        }
    }
}

impl ModelSpec {
    /// A spec with no pinned size or hash and no companions.
    pub fn new(name: impl Into<String>, kind: ModelKind, source: Source) -> Self {
        ModelSpec {
            name: name.into(),
            kind,
            source,
            sha256: None,
            size: None,
            companions: Vec::new(),
        }
    }
}
