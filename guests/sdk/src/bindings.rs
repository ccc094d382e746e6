//! Bindings for the imports Sandpiper adds to the wasi:http proxy world:
//! `wasi:nn` and `sandpiper:guest/models`.
//!
//! Generated in their own module because the `wasi` crate (used for the HTTP
//! export) also has a top-level `wasi` module; keeping them apart avoids name
//! clashes. The rest of the SDK wraps these in safer, smaller types.

wit_bindgen::generate!({
    path: "../../wit",
    world: "sandpiper:guest/imports",
    // The world only imports wasi:nn (nothing else from WASI), so generating
    // everything here cannot duplicate what the `wasi` crate provides.
    generate_all,
});
