//! The default chat model, pulled into the user's model store on first use.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use sandpiper_llm::Model;

pub fn model_path() -> PathBuf {
    if let Ok(p) = std::env::var("SANDPIPER_TEST_GGUF") {
        return PathBuf::from(p);
    }
    let store = sandpiper_models::Store::open_default().expect("model store");
    store
        .ensure(
            &sandpiper_models::catalog::default_chat(),
            sandpiper_models::Progress::Hide,
        )
        .expect("pulling the default chat model")
}

/// Loaded once per test binary: every test shares the weights, as the server does.
pub fn model() -> Arc<Model> {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    MODEL
        .get_or_init(|| Model::load("smollm2-135m-instruct", &model_path()).expect("loading model"))
        .clone()
}
