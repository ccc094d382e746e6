//! Pull models into the default store and print their paths:
//! `cargo run -p sandpiper-models --example pull -- [MODEL_ARG...]` (default: the default chat and embedding models).
//! Each argument is what `--model` takes: `NAME=REF` or a built-in name.

use anyhow::Result;
use sandpiper_models::{catalog, parse_model_arg, Progress, Store};

fn main() -> Result<()> {
    let store = Store::open_default()?;
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        args.push(catalog::DEFAULT_CHAT.to_owned());
        args.push(catalog::DEFAULT_EMBEDDING.to_owned());
    }
    for arg in args {
        let spec = parse_model_arg(&arg)?;
        let path = store.ensure(&spec, Progress::auto())?;
        println!("{}\t{}", spec.name, path.display());
    }
    Ok(())
}
