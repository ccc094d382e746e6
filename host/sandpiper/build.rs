//! Builds the guest components (guests/, a wasm32-wasip2 workspace of its own)
//! so the server binary can embed its default guests.
//!
//! The nested cargo gets its own target dir (sharing the outer one deadlocks on
//! the artifact lock under `--release`) and a scrubbed environment: the outer
//! build's rustflags and wrappers must not leak into the wasm build (they break
//! `wasm-component-ld`). `CARGO_MAKEFLAGS` is kept so both share job slots.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Guests the build produces: (cargo package, artifact file name).
const GUESTS: &[&str] = &["chat", "embeddings", "speech", "sandbox_probe"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.join("../..").canonicalize().unwrap();
    let guests = root.join("guests");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let target_dir = root.join("target").join("guests");

    watch(&guests, &root.join("wit"));

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guests)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_PKG_NAME",
        "CARGO_TARGET_WASM32_WASIP2_LINKER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("running cargo to build the guests (wasm32-wasip2)");
    if !status.success() {
        panic!(
            "building the guest components failed; the wasm32-wasip2 target is needed \
             (rust-toolchain.toml asks rustup for it; else `rustup target add wasm32-wasip2`)"
        );
    }
    for name in GUESTS {
        let built = target_dir.join(format!("wasm32-wasip2/release/{name}.wasm"));
        let dest = out_dir.join(format!("{name}.wasm"));
        std::fs::copy(&built, &dest).unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
        println!(
            "cargo:rustc-env=SANDPIPER_GUEST_{}={}",
            name.to_uppercase(),
            dest.display()
        );
    }
}

/// Rebuild when guest sources or the WIT change, but not when guests/target does.
fn watch(guests: &Path, wit: &Path) {
    println!("cargo:rerun-if-changed={}", wit.display());
    for entry in std::fs::read_dir(guests).unwrap().flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
