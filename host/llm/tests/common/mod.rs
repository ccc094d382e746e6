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

/// Feeds `tokens` to `seq` and returns the next position's logits as bits
/// (for exact comparisons) and the greedy pick.
#[allow(dead_code)] // used by the tests that compare logits exactly
pub fn feed_greedy(seq: &mut sandpiper_llm::Sequence, tokens: &[u32]) -> (Vec<u32>, u32) {
    let logits = seq.feed(tokens).unwrap().to_vec1::<f32>().unwrap();
    let next = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0 as u32;
    (logits.iter().map(|v| v.to_bits()).collect(), next)
}

/// Loaded once per test binary: every test shares the weights, as the server does.
#[allow(dead_code)] // tests/prefix.rs loads models of its own
pub fn model() -> Arc<Model> {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    MODEL
        .get_or_init(|| Model::load("smollm2-135m-instruct", &model_path()).expect("loading model"))
        .clone()
}
