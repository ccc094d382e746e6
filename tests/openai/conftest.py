"""A real `sandpiper serve` for the OpenAI client tests.

The binary is the one `cargo test` built (target/debug/sandpiper), or
$SANDPIPER_BIN. It serves the default models on a free loopback port.
"""

import os
import subprocess
import pathlib

import pytest
from openai import OpenAI, AsyncOpenAI

ROOT = pathlib.Path(__file__).resolve().parents[2]
API_KEY = "sk-sandpiper-test"


def _start(*args):
    binary = os.environ.get("SANDPIPER_BIN", str(ROOT / "target" / "debug" / "sandpiper"))
    proc = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:
        if line.startswith("sandpiper listening on "):
            return proc, line.split()[-1].strip()
    proc.wait()
    raise RuntimeError(f"sandpiper exited before listening: {proc.returncode}")


@pytest.fixture(scope="session")
def server():
    proc, base = _start("--api-key", API_KEY)
    yield base
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def client(server):
    return OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0, timeout=300)


@pytest.fixture
def async_client(server):
    # One per test: tests drive it with asyncio.run, and a client's pooled
    # connections belong to the event loop that opened them.
    return AsyncOpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0, timeout=300)
