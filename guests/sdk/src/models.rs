//! What the host serves (`sandpiper:guest/models`), in the shape OpenAI's
//! `/v1/models` uses, so guests can validate `model` without probing wasi:nn.

use serde_json::{json, Value};

/// What a model is for; decides which endpoints accept it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Chat,
    Embedding,
    Speech,
}

impl ModelKind {
    /// The lowercase name used in `/v1/models` (`"chat"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Chat => "chat",
            ModelKind::Embedding => "embedding",
            ModelKind::Speech => "speech",
        }
    }
}

/// One served model (`sandpiper:guest/models.model-info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub id: String,
    pub kind: ModelKind,
    pub owned_by: String,
    /// Unix seconds when the host loaded the model.
    pub created: u64,
}

impl ModelInfo {
    /// OpenAI's model object plus Sandpiper's `kind`.
    pub fn to_value(&self) -> Value {
        json!({
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": self.owned_by,
            "kind": self.kind.as_str(),
        })
    }
}

/// OpenAI's list envelope: `{"object":"list","data":[...]}`.
pub fn list_value(models: &[ModelInfo]) -> Value {
    json!({
        "object": "list",
        "data": models.iter().map(ModelInfo::to_value).collect::<Vec<_>>(),
    })
}

/// Asks the host which models it serves.
#[cfg(target_arch = "wasm32")]
pub fn list() -> Vec<ModelInfo> {
    use crate::bindings::sandpiper::guest::models as wit;
    wit::list_models()
        .into_iter()
        .map(|m| ModelInfo {
            id: m.id,
            kind: match m.kind {
                wit::ModelKind::Chat => ModelKind::Chat,
                wit::ModelKind::Embedding => ModelKind::Embedding,
                wit::ModelKind::Speech => ModelKind::Speech,
            },
            owned_by: m.owned_by,
            created: m.created,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_has_openai_shape_plus_kind() {
        let m = ModelInfo {
            id: "smollm2".into(),
            kind: ModelKind::Chat,
            owned_by: "sandpiper".into(),
            created: 1700000000,
        };
        assert_eq!(
            list_value(&[m]),
            json!({"object": "list", "data": [{"id": "smollm2", "object": "model",
                "created": 1700000000u64, "owned_by": "sandpiper", "kind": "chat"}]})
        );
    }
}
