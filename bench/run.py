#!/usr/bin/env python3
"""Sandpiper benchmarks against llama.cpp on the same GGUF and thread count.

    bench/run                                  # full run, writes bench/RESULTS.md
    bench/run --smoke --sandpiper-bin target/debug/sandpiper   # CI: tiny, writes to a temp dir

See bench/README.md for what every number means. Standard library only.
"""

import argparse
import bisect
import contextlib
import datetime
import http.client
import json
import math
import os
import platform
import queue
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LLAMA_CPP_PYTHON = "0.3.36"
MODEL = "smollm2-135m-instruct"
# HTTP decodes per repetition in the paired sandbox-overhead measure.
OVERHEAD_PAIRS = 3

# The one text that makes the model talk long (decode and concurrency runs).
LONG_ANSWER = (
    "Write a long, detailed story about a lighthouse keeper who finds a mysterious map "
    "in an old bottle. Describe every place she visits and everyone she meets."
)
# A conversation's user turns: each request resends the earlier turns, as chat clients do.
CONVERSATION = [
    "Tell me about the history of lighthouses.",
    "Which one was the tallest, and why was it built there?",
    "How did the keepers live, day to day?",
    "Summarize all of that in two sentences.",
]
CONVERSATION_TOKENS = 64  # max_tokens of each answer (the decode length, if shorter)
# A burst: requests sent at once with one long system prompt and their own questions.
BURST_SYSTEM = ("You are the help desk of a bird observatory. Answer visitors' questions about "
                "shore birds, their food, nests and migrations, briefly and kindly. ") * 6
BURST_QUESTIONS = [
    "Name a wader.",
    "What do sandpipers eat?",
    "Where do plovers nest?",
    "Why do godwits migrate?",
]
BURST_TOKENS = 16  # max_tokens of each answer
# Filler words for prompts of an exact length; each is one token for GPT-2-style BPE.
FILLER = (" the cat sat on a mat and then the dog ran to the park with a red ball while"
          " birds sang in the old tree near the river").split()


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


def sandpiper_home():
    home = os.environ.get("SANDPIPER_HOME")
    if home:
        return Path(home)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "sandpiper"


def run_logged(cmd, logfile, cwd=None, env=None):
    """Runs cmd with output appended to logfile; on failure raises with the log's tail."""
    log("$ " + " ".join(str(c) for c in cmd))
    with open(logfile, "ab") as out:
        out.write(("\n$ " + " ".join(str(c) for c in cmd) + "\n").encode())
        out.flush()
        rc = subprocess.call([str(c) for c in cmd], cwd=cwd, env=env, stdout=out,
                             stderr=subprocess.STDOUT)
    if rc != 0:
        tail = Path(logfile).read_text(errors="replace").splitlines()[-30:]
        raise BenchError(f"{cmd[0]} exited with {rc}; last lines of {logfile}:\n" + "\n".join(tail))


# --------------------------------------------------------------------------- llama.cpp build

def llama_dir():
    return sandpiper_home() / "bench" / f"llama.cpp-{LLAMA_CPP_PYTHON}"


def llama_bins():
    bindir = llama_dir() / "build" / "bin"
    return bindir / "llama-bench", bindir / "llama-server"


def cpu_flags():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def llama_arch():
    """How llama.cpp is built for this CPU: (cmake flags, description).

    `GGML_NATIVE=ON` (-march=native), except that where the CPU lists AMX the AMX tiles
    are left out: a VM can list AMX without the kernel enabling it, and llama.cpp then
    dies with SIGILL on its first `tilezero` (seen on our 2-core machines). Sandpiper's
    kernels do not use AMX either, so both run the same instruction sets."""
    if platform.machine() in ("x86_64", "AMD64") and "amx_tile" in cpu_flags():
        flags = "-march=native -mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        return ([f"-DCMAKE_C_FLAGS={flags}", f"-DCMAKE_CXX_FLAGS={flags}", "-DGGML_NATIVE=OFF"],
                f"`-march=native` without AMX (`{flags}`)")
    return (["-DGGML_NATIVE=ON"], "`GGML_NATIVE=ON`")


def llama_stamp():
    return f"llama-cpp-python=={LLAMA_CPP_PYTHON} {' '.join(llama_arch()[0])}\n"


def llama_cached():
    bench, server = llama_bins()
    ok = llama_dir() / "build.ok"
    return ok.exists() and ok.read_text() == llama_stamp() and bench.exists() and server.exists()


def ensure_cmake():
    if shutil.which("cmake"):
        return
    log("cmake not found: installing Debian's cmake with apt-get")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.call(sudo + ["apt-get", "install", "-y", "cmake"], env=env) != 0:
        subprocess.call(sudo + ["apt-get", "update"], env=env)
        if subprocess.call(sudo + ["apt-get", "install", "-y", "cmake"], env=env) != 0:
            raise BenchError("cmake is needed to build llama.cpp (apt-get install cmake)")


def build_llama(jobs):
    """Builds llama-bench and llama-server from llama-cpp-python's sdist (vendor/llama.cpp)
    into the cache; does nothing when that build is already there."""
    if llama_cached():
        log(f"llama.cpp: using the cached build in {llama_dir()}")
        return
    root = llama_dir()
    root.mkdir(parents=True, exist_ok=True)
    logfile = root / "build.log"
    log(f"llama.cpp: building llama-cpp-python {LLAMA_CPP_PYTHON}'s vendor/llama.cpp in {root} "
        f"(about 10 minutes on 2 cores; log: {logfile})")
    ensure_cmake()
    dl = root / "sdist"
    name = f"llama_cpp_python-{LLAMA_CPP_PYTHON}"
    sdist = dl / f"{name}.tar.gz"
    if not sdist.exists():
        run_logged([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                    "llama-cpp-python", f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", dl],
                   logfile)
    src = root / "src"
    if not (src / "CMakeLists.txt").exists():
        prefix = f"{name}/vendor/llama.cpp/"
        tmp = root / "src.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(sdist) as tar:
            members = []
            for m in tar.getmembers():
                if m.name.startswith(prefix) and (m.isfile() or m.isdir()):
                    m.name = m.name[len(prefix):]
                    members.append(m)
            tar.extractall(tmp, members=members)
        shutil.rmtree(src, ignore_errors=True)
        tmp.rename(src)
    build = root / "build"
    if (root / "build.ok").exists():
        log("llama.cpp: the cached build used other flags; rebuilding")
        (root / "build.ok").unlink()
        shutil.rmtree(build, ignore_errors=True)
    run_logged(["cmake", "-S", src, "-B", build, "-DCMAKE_BUILD_TYPE=Release",
                "-DLLAMA_CURL=OFF", *llama_arch()[0], "-DBUILD_SHARED_LIBS=OFF",
                # No network during the build: no prebuilt web UI download, no npm.
                "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_OPENSSL=OFF",
                "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"], logfile)
    run_logged(["cmake", "--build", build, "--config", "Release", "-j", str(jobs),
                "--target", "llama-bench", "llama-server"], logfile)
    bench, server = llama_bins()
    if not (bench.exists() and server.exists()):
        raise BenchError(f"llama.cpp build finished but {bench} or {server} is missing")
    (root / "build.ok").write_text(llama_stamp())
    log("llama.cpp: built")


# --------------------------------------------------------------------------- small helpers

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median(xs):
    return statistics.median(xs) if xs else None


def percentile(xs, p):
    """Nearest-rank percentile."""
    if not xs:
        return None
    s = sorted(xs)
    return s[max(0, min(len(s), math.ceil(p / 100 * len(s))) - 1)]


def vm_hwm_kib(pid):
    """Peak resident set size (VmHWM) of a live process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise BenchError(f"no VmHWM for pid {pid}")


def thread_cpu_ns(pid):
    """CPU time so far of each thread of process `pid`, summed by thread name with
    trailing digits and dashes dropped (`sandpiper-http`, `sandpiper-llm`, ...), in ns,
    from /proc/PID/task/*/schedstat; {} where that is not available."""
    out = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            name = (task / "comm").read_text().strip().rstrip("0123456789-")
            ns = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        out[name] = out.get(name, 0) + ns
    return out


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def git_commit():
    def git(*a):
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    # The results file itself is rewritten by every run: a change there alone is not one.
    if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/RESULTS.md"):
        commit += " (with uncommitted changes)"
    return commit


# --------------------------------------------------------------------------- HTTP client

def http_get(conn, path):
    t = time.perf_counter()
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    dt = time.perf_counter() - t
    if resp.status != 200:
        raise BenchError(f"GET {path}: HTTP {resp.status}: {body[:300]!r}")
    return dt, body


def stream_chat(port, body, timeout=600, path="/v1/chat/completions"):
    """One streaming (chat) completion, timed from the client: `stream_many` of one."""
    return stream_many(port, [body], timeout, path)[0]


# A streamed event with text in it: a chat delta's or a completion choice's, not empty.
FIRST_TEXT = re.compile(rb'"(?:content|text)":"[^"]')
# Once a stream has shown its first text, the client asks the kernel not to wake it
# before this many bytes have arrived or the connection has closed.
QUIET_BYTES = 256 * 1024


def stream_many(port, bodies, timeout=600, path="/v1/chat/completions"):
    """Streaming (chat) completions sent together, one per body, timed from the client.
    Returns per request a dict with ttft (s to the first non-empty content delta),
    decode_s (first content delta to the end of the response), total_s, prompt_tokens,
    completion_tokens, finish_reason, text.

    The client must cost the measured server as little as possible: on a 2-CPU machine
    every microsecond it spends per token is taken from the server's compute threads.
    Woken for every event, even a client that only receives bytes costs ~120 µs of CPU
    per token here (http.client's chunked readline plus a JSON parse per event cost
    ~140). So each response is watched only until its first text arrives (that piece's
    arrival time is the first token's) — with several streams, until every one has
    shown its first text, so what each received by then is known; then `SO_RCVLOWAT`
    keeps the kernel from waking the client until the response has ended (or
    QUIET_BYTES are waiting), ~20 µs per token in all. The end of the response stands
    in for the last token's arrival: the events after it (finish, usage, `[DONE]`)
    follow within microseconds, so decode rates are, if anything, understated. HTTP
    framing and events are parsed after the responses have ended. All connections are
    served by one thread (no interpreter lock passed between threads per event)."""
    socks = []
    starts, ends = {}, {}
    pieces = {}  # socket -> [(arrival time, bytes)]
    watching = set()  # sockets whose first text has not arrived yet
    sel = selectors.DefaultSelector()
    try:
        for body in bodies:
            payload = json.dumps(body).encode()
            request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                       "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                       f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
                       ).encode() + payload
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append((sock, request))
        for sock, request in socks:
            starts[sock] = time.perf_counter()
            sock.sendall(request)
            pieces[sock] = []
            watching.add(sock)
            sel.register(sock, selectors.EVENT_READ)
        open_socks = len(socks)
        while open_socks:
            ready = sel.select(timeout)
            if not ready:
                raise BenchError(f"POST {path}: no data for {timeout} s")
            for key, _ in ready:
                sock = key.fileobj
                data = sock.recv(QUIET_BYTES)
                now = time.perf_counter()
                if data:
                    pieces[sock].append((now, data))
                    # The text may straddle two pieces: look at the last two.
                    tail = b"".join(p for _, p in pieces[sock][-2:])
                    if sock in watching and FIRST_TEXT.search(tail):
                        watching.discard(sock)
                        if not watching:  # every stream is decoding
                            for s, _ in socks:
                                with contextlib.suppress(OSError, AttributeError):
                                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, QUIET_BYTES)
                else:
                    ends[sock] = now
                    sel.unregister(sock)
                    open_socks -= 1
    finally:
        sel.close()
        for sock, _ in socks:
            sock.close()
    return [parse_stream(pieces[sock], starts[sock], ends[sock], path) for sock, _ in socks]


def parse_stream(pieces, t0, t_end, path):
    """A finished streaming completion's result (see `stream_many`) from its raw pieces."""
    events = sse_events(pieces, path)
    usage = timings = finish = None
    text = []
    times = []  # arrival of each content delta
    for now, data in events:
        if data == b"[DONE]":
            break
        event = json.loads(data)
        if "error" in event:
            raise BenchError(f"error in stream: {event['error']}")
        for choice in event.get("choices") or []:
            content = (choice.get("delta") or {}).get("content") or choice.get("text")
            if content:
                text.append(content)
                times.append(now)
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
        if event.get("usage"):
            usage = event["usage"]
        if event.get("timings"):
            timings = event["timings"]
    if not times:
        raise BenchError(f"no content streamed by POST {path}")
    t_first, t_last = times[0], times[-1]
    prompt_tokens = completion_tokens = None
    if usage:
        prompt_tokens = usage.get("prompt_tokens")
        completion_tokens = usage.get("completion_tokens")
    elif timings:  # llama-server without usage in the stream
        prompt_tokens = timings.get("prompt_n")
        completion_tokens = timings.get("predicted_n")
    if completion_tokens is None:
        completion_tokens = len(times)
    return {
        "t0": t0, "t_first": t_first, "t_last": t_last, "t_end": t_end,
        "ttft": t_first - t0, "decode_s": t_last - t_first, "total_s": t_end - t0,
        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "finish_reason": finish, "text": "".join(text), "times": times,
    }


def sse_events(pieces, path):
    """The `data:` payloads of a raw HTTP/1.1 server-sent-events response received as
    `pieces` of (arrival time, bytes), each with the arrival time of the piece holding
    its last byte. Handles chunked and close-delimited bodies."""
    raw = b"".join(p for _, p in pieces)
    ends = []  # cumulative end offset of each piece in `raw`
    total = 0
    for _, p in pieces:
        total += len(p)
        ends.append(total)
    head_end = raw.find(b"\r\n\r\n")
    if head_end < 0:
        raise BenchError(f"POST {path}: no HTTP response head in {raw[:200]!r}")
    head = raw[:head_end].decode("latin-1").split("\r\n")
    status = head[0].split(" ", 2)
    if len(status) < 2 or status[1] != "200":
        raise BenchError(f"POST {path}: {head[0]}: {raw[head_end + 4:][:500]!r}")
    chunked = any(h.lower().replace(" ", "") == "transfer-encoding:chunked" for h in head[1:])
    # The body as (offset in `raw`, bytes) spans, chunk framing removed.
    spans = []
    at = head_end + 4
    if chunked:
        while True:
            line_end = raw.find(b"\r\n", at)
            if line_end < 0:
                break
            size = int(raw[at:line_end].split(b";")[0], 16)
            if size == 0:
                break
            spans.append((line_end + 2, raw[line_end + 2:line_end + 2 + size]))
            at = line_end + 2 + size + 2
    else:
        spans.append((at, raw[at:]))
    body = b"".join(s for _, s in spans)
    # Map a body offset back to a raw offset, then to the piece that held it.
    body_offs, raw_offs = [], []
    n = 0
    for off, s in spans:
        body_offs.append(n)
        raw_offs.append(off)
        n += len(s)

    def arrival(body_off):
        i = max(bisect.bisect_right(body_offs, body_off) - 1, 0)
        raw_off = raw_offs[i] + body_off - body_offs[i] if raw_offs else 0
        return pieces[min(bisect.bisect_right(ends, raw_off), len(pieces) - 1)][0]

    events = []
    pos = 0
    for block in body.split(b"\n\n"):
        end = pos + len(block)
        pos = end + 2
        for line in block.split(b"\n"):
            line = line.strip()
            if line.startswith(b"data:"):
                events.append((arrival(max(end - 1, 0)), line[5:].strip()))
    return events


def unstreamed_decode_rate(srv, body):
    """Decode tok/s of chat request `body` sent with `stream: false`, after the first
    token, as the chat guest measured it: it logs `decode_tok_s` for every request (on
    its stderr, which goes to the server's log). A client sees no token of an unstreamed
    reply before the last, so this is the one clock that can time its decoding."""
    body = dict(body, stream=False)
    body.pop("stream_options", None)
    payload = json.dumps(body).encode()
    start = Path(srv.logfile).stat().st_size
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=600)
    conn.request("POST", "/v1/chat/completions", payload, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if resp.status != 200:
        raise BenchError(f"unstreamed chat: HTTP {resp.status}: {data[:300]!r}")
    want = json.loads(data)["usage"]["completion_tokens"]
    deadline = time.perf_counter() + 5
    while time.perf_counter() < deadline:  # the log line may trail the response a little
        with open(srv.logfile, "rb") as f:
            f.seek(start)
            lines = f.read().decode(errors="replace").splitlines()
        for line in reversed(lines):
            m = GUEST_DECODE.search(line)
            if m and m["stream"] == "false" and int(m["tokens"]) == want:
                return float(m["rate"])
        time.sleep(0.01)
    raise BenchError("the chat guest logged no decode rate for an unstreamed request")


# The chat guest's line for each finished request (`guests/chat/src/completion.rs`).
GUEST_DECODE = re.compile(r"chat model=\S+ status=200 stream=(?P<stream>true|false) .*?"
                          r"completion_tokens=(?P<tokens>\d+) .*?decode_tok_s=(?P<rate>[0-9.]+)")


def decode_rate(r):
    """Tokens/s after the first token: (completion_tokens - 1) / (last - first content delta)."""
    if r["completion_tokens"] is None or r["completion_tokens"] < 2 or r["decode_s"] <= 0:
        return None
    return (r["completion_tokens"] - 1) / r["decode_s"]


def steady_decode_rate(results):
    """Aggregate decode tok/s while every stream is generating: from the last stream's
    first token on, each stream's tokens after that moment ÷ the time from it to that
    stream's end, summed (the client sees each token's arrival only until every stream
    has begun; see `stream_many`). No prefill is inside; for one stream its decode
    rate."""
    lo = max(r["t_first"] for r in results)
    total = 0
    for r in results:
        if r["t_last"] <= lo:
            return None
        total += sum(1 for t in r["times"] if t > lo) / (r["t_last"] - lo)
    return total


# Sampling parameters of the sampled decode row (each server's defaults for the rest).
SAMPLED = {"temperature": 1.0, "top_p": 0.9}


def chat_body(content, max_tokens, extra):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    body.update(extra)
    return body


def completion_body(tokens, max_tokens, extra):
    body = {
        "model": MODEL,
        "prompt": tokens,
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    body.update(extra)
    return body


def prompt_ids(run, n):
    """n ordinary token ids (no special tokens), different for every run."""
    return [100 + (run * 7919 + i * 131) % 40000 for i in range(n)]


def filler(n):
    return " ".join(FILLER[i % len(FILLER)] for i in range(n))


def prefill_prompt(run, words):
    # A fixed-width run number first, so no server can reuse a cached prefix.
    return f"[{run:04d}] Repeat the last word of this text: {filler(words)}"


def decode_prompt(run):
    return f"[{run:04d}] {LONG_ANSWER}"


# --------------------------------------------------------------------------- servers

class Server:
    """A server process (sandpiper serve or llama-server) with its log in the work dir."""

    def __init__(self, name, cmd, env, logfile, port=None):
        self.name = name
        self.logfile = logfile
        self.port = port
        self.t_spawn = time.perf_counter()
        self.out = open(logfile, "ab")
        self.proc = subprocess.Popen([str(c) for c in cmd], env=env, stdout=subprocess.PIPE,
                                     stderr=self.out)
        self.lines = queue.Queue()
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self):
        for line in self.proc.stdout:
            self.out.write(line)
            self.out.flush()
            self.lines.put(line.decode(errors="replace"))

    def log_tail(self, n=30):
        try:
            return "\n".join(Path(self.logfile).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_ready(self, timeout):
        """Waits for the listening line (sandpiper) or a 200 from /health (llama-server)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.port is None:
                try:
                    line = self.lines.get(timeout=0.05)
                except queue.Empty:
                    continue
                if "listening on http://" in line:
                    self.port = int(line.rsplit(":", 1)[1].strip().rstrip("/"))
                    return
            else:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                    conn.request("GET", "/health")
                    resp = conn.getresponse()
                    resp.read()
                    conn.close()
                    if resp.status == 200:
                        return
                except OSError:
                    pass
                time.sleep(0.02)
        raise BenchError(f"{self.name} not ready after {timeout} s:\n{self.log_tail()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.pump.join(timeout=10)
        self.out.close()


# --------------------------------------------------------------------------- measurements

class Bench:
    def __init__(self, args, workdir):
        self.a = args
        self.work = workdir
        self.samples = {}  # (system, metric) -> [values, one per repetition]
        self.info = {}
        self.prefill_words = {}  # target prompt tokens -> filler words
        self.completions = False  # prefill measured with token ids on /v1/completions
        self.decode_context = None  # prompt tokens of the decode request, in the chat template
        self.prompt_tokens = {}  # (system, target) -> [prompt tokens actually sent]
        self.gguf = None

    def add(self, system, metric, value):
        if value is None:
            raise BenchError(f"{system}: no value for {metric}")
        self.samples.setdefault((system, metric), []).append(value)

    def thread_env(self):
        n = str(self.a.threads)
        return dict(os.environ, RAYON_NUM_THREADS=n, CANDLE_NUM_THREADS=n, SANDPIPER_THREADS=n)

    # ----------------------------------------------------------------- sandpiper

    def start_sandpiper(self, tag, reuse=False):
        env = self.thread_env()
        env.setdefault("SANDPIPER_LOG", "warn")
        cmd = [self.a.sandpiper_bin, "serve", "--listen", "127.0.0.1:0", "--model", MODEL]
        if not reuse:
            # No prompt prefix reused between requests, as llama-server's `cache_prompt:
            # false`: every prompt's prefill is measured, not a copy of an earlier request's
            # KV cache.
            cmd += ["--prefix-cache-mib", "0"]
        srv = Server("sandpiper serve", cmd, env, self.work / f"sandpiper-{tag}.log")
        srv.wait_ready(600)
        srv.t_ready = time.perf_counter()
        return srv

    def calibrate(self):
        """Starts sandpiper once (this also warms its compiled-guest cache) and finds how
        many filler words give each target prompt length in its chat template."""
        srv = self.start_sandpiper("calibrate")
        try:
            # The chat-templated length of the decode prompt: the in-process decode is
            # also timed after a prompt this long, so both decode at the same positions.
            r = stream_chat(srv.port, chat_body(decode_prompt(0), 1, {}))
            self.decode_context = r["prompt_tokens"]
            # With /v1/completions, prompts are token ids of exactly the right length.
            try:
                r = stream_chat(srv.port, completion_body(prompt_ids(0, 16), 1, {}),
                                path="/v1/completions")
                self.completions = r["prompt_tokens"] == 16
            except BenchError as e:
                log(f"no /v1/completions with token ids ({str(e)[:80]}): prefill over chat prompts")
            if self.completions:
                log("prefill over HTTP: token-id prompts on /v1/completions")
                return

            def count(words):
                r = stream_chat(srv.port, chat_body(prefill_prompt(0, words), 1, {}))
                if not r["prompt_tokens"]:
                    raise BenchError("sandpiper sent no usage.prompt_tokens")
                return r["prompt_tokens"]
            base = count(0)
            per = (count(40) - base) / 40
            for target in self.a.prompt_tokens:
                if target <= base:
                    raise BenchError(f"prompt of {target} tokens is shorter than the template ({base})")
                words = max(0, round((target - base) / per))
                for _ in range(6):
                    got = count(words)
                    if got == target:
                        break
                    words = max(0, words + (1 if got < target else -1) * max(1, round(abs(target - got) / per)))
                else:
                    log(f"prompt of {target} tokens: closest is {got}")
                self.prefill_words[target] = words
            log(f"prompt calibration (filler words per target): {self.prefill_words}")
        finally:
            srv.stop()

    def http_suite(self, system, srv, run, extra):
        """The HTTP measurements shared by sandpiper and llama-server."""
        a = self.a
        # Process start -> first streamed token (the server was spawned just before).
        r = stream_chat(srv.port, chat_body(decode_prompt(9000 + run), 4, extra))
        self.add(system, "ready_s", srv.t_ready - srv.t_spawn)
        self.add(system, "start_to_first_token_s", r["t_first"] - srv.t_spawn)
        for target in a.prompt_tokens:
            if self.completions:
                r = stream_chat(srv.port, completion_body(prompt_ids(run, target), 1, extra),
                                path="/v1/completions")
                r["prompt_tokens"] = r["prompt_tokens"] or target
            else:
                r = stream_chat(srv.port, chat_body(prefill_prompt(run, self.prefill_words[target]), 1, extra))
            self.add(system, f"ttft_{target}_s", r["ttft"])
            if r["prompt_tokens"]:
                self.prompt_tokens.setdefault((system, target), []).append(r["prompt_tokens"])
                self.add(system, f"http_prefill_{target}_tok_s", r["prompt_tokens"] / r["ttft"])
        r = stream_chat(srv.port, chat_body(decode_prompt(run), a.gen_tokens, extra))
        self.add(system, "http_decode_tok_s", decode_rate(r))
        self.add(system, "http_decode_tokens", r["completion_tokens"])
        # The same decode, sampled as most requests are (OpenAI's default temperature is
        # 1), with a nucleus: what choosing each token costs beside the forward pass.
        r = stream_chat(srv.port, chat_body(decode_prompt(run), a.gen_tokens,
                                            {**extra, **SAMPLED, "seed": run}))
        self.add(system, "http_sampled_decode_tok_s", decode_rate(r))
        self.add(system, "http_sampled_decode_tokens", r["completion_tokens"])
        # Round trips on one keep-alive connection.
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        for path in ("/v1/models", "/health"):
            http_get(conn, path)  # warm
            rtts = [http_get(conn, path)[0] for _ in range(a.rtt_requests)]
            key = path.strip("/").replace("/", "_")
            self.add(system, f"rtt_{key}_median_ms", median(rtts) * 1e3)
            self.add(system, f"rtt_{key}_p99_ms", percentile(rtts, 99) * 1e3)
        conn.close()
        self.concurrency_suite(system, srv.port, run, extra)

    def concurrency_suite(self, system, port, run, extra, key="conc"):
        """The concurrency runs (1, 2, 4 streams and one stream again), recorded under
        `key`, with the paired gains."""
        rates = {c: self.concurrency(system, port, c, run, extra, key=key) for c in self.a.concurrency}
        if 1 in rates and len(rates) > 1:
            # Paired gain: one stream again right after the most streams, so each
            # repetition divides by one-stream rates measured on either side.
            again = self.concurrency(system, port, 1, run + 500, extra, record=False, key=key)
            def mean(x, y):
                return (x + y) / 2 if x and y else None
            (agg1, steady1), (agg1b, steady1b) = rates[1], again
            one_agg, one_steady = mean(agg1, agg1b), mean(steady1, steady1b)
            for c, (agg, steady) in rates.items():
                if c > 1:
                    self.add(system, f"{key}{c}_paired_gain", agg / one_agg)
                    if steady and one_steady:
                        self.add(system, f"{key}{c}_paired_decode_gain", steady / one_steady)

    def concurrency(self, system, port, c, run, extra, record=True, key="conc"):
        """c streams at once; records their measures (unless not `record`) and
        returns (aggregate tok/s, steady-state decode tok/s)."""
        bodies = [chat_body(decode_prompt(run * 10 + i), self.a.gen_tokens, extra) for i in range(c)]
        try:
            results = stream_many(port, bodies)
        except (BenchError, OSError) as e:
            raise BenchError(f"{system}, {c} streams: {e}") from e
        wall = max(r["t_end"] for r in results) - min(r["t0"] for r in results)
        tokens = sum(r["completion_tokens"] for r in results)
        steady = steady_decode_rate(results)
        if not record:
            return tokens / wall, steady
        self.add(system, f"{key}{c}_aggregate_tok_s", tokens / wall)
        if steady:
            self.add(system, f"{key}{c}_steady_decode_tok_s", steady)
        self.add(system, f"{key}{c}_ttft_s", median([r["ttft"] for r in results]))
        self.add(system, f"{key}{c}_latency_s", median([r["total_s"] for r in results]))
        rates = [x for x in (decode_rate(r) for r in results) if x]
        self.add(system, f"{key}{c}_stream_tok_s", median(rates) if rates else None)
        return tokens / wall, steady

    def conversation_tokens(self):
        return min(CONVERSATION_TOKENS, self.a.gen_tokens)

    def conversation(self, system, port, run, extra, key):
        """The CONVERSATION, each turn's answer kept in the messages of the next; records
        the last turn's time to first token and prompt length as `conv_{key}_*`. The run
        number opens the system prompt, so no earlier conversation shares a prefix; a
        tenth of a second between turns stands in for the user's reading and typing."""
        messages = [{"role": "system", "content": f"[{run:04d}] You are a historian."}]
        for turn, question in enumerate(CONVERSATION):
            messages.append({"role": "user", "content": question})
            body = chat_body("", self.conversation_tokens(), extra)
            body["messages"] = list(messages)
            r = stream_chat(port, body)
            messages.append({"role": "assistant", "content": r["text"]})
            if turn + 1 < len(CONVERSATION):
                time.sleep(0.1)
        self.add(system, f"conv_{key}_ttft_s", r["ttft"])
        if r["prompt_tokens"]:
            self.add(system, f"conv_{key}_prompt_tokens", r["prompt_tokens"])

    def burst(self, system, port, run, extra):
        """BURST_QUESTIONS sent at once, each after the same BURST_SYSTEM prompt (opened by
        the run number, so nothing earlier shares it); records when the first and the last
        of their first tokens came, and the prompt length, as `burst_*`."""
        bodies = []
        for question in BURST_QUESTIONS:
            body = chat_body("", BURST_TOKENS, extra)
            body["messages"] = [{"role": "system", "content": f"[{run:04d}] {BURST_SYSTEM}"},
                                {"role": "user", "content": question}]
            bodies.append(body)
        results = stream_many(port, bodies)
        t0 = min(r["t0"] for r in results)
        firsts = sorted(r["t_first"] - t0 for r in results)
        self.add(system, "burst_first_ttft_s", firsts[0])
        self.add(system, "burst_last_ttft_s", firsts[-1])
        if results[0]["prompt_tokens"]:
            self.add(system, "burst_prompt_tokens", results[0]["prompt_tokens"])

    def native_decode_at_context(self):
        """bench_native's decode after a prompt as long as the HTTP decode request's
        (tokens/s): the in-process half of the paired sandbox-overhead measure."""
        cmd = [self.a.native_bin, self.gguf, "--prompt", "", "--gen", str(self.a.gen_tokens),
               "--reps", "1", "--threads", str(self.a.threads),
               "--decode-context", str(self.decode_context)]
        return self.bench_native(cmd)["decode_at_context"]["tok_s"]

    def bench_native(self, cmd, env=None):
        """Runs bench_native (`cmd`) and returns its JSON summary (its last line)."""
        out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                             env=env or self.thread_env())
        if out.returncode != 0:
            raise BenchError(f"bench_native exited with {out.returncode}:\n{out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def paired_overhead(self, srv, run):
        """The sandbox overhead on decode, measured so that a machine whose speed drifts
        (a shared VM) cannot fake it: in-process and HTTP decodes at the same positions
        alternate back to back (N H U N H U N ...); each HTTP decode's ratio is its rate ÷
        the mean of the in-process decodes on either side. Several pairs per repetition,
        since one burst of someone else's load can sink a single pair. U is the same
        request unstreamed, its rate from the guest's clock: the sandbox's cost without
        an SSE event written per token."""
        natives = [self.native_decode_at_context()]
        for k in range(OVERHEAD_PAIRS):
            body = chat_body(decode_prompt(5000 + run * OVERHEAD_PAIRS + k), self.a.gen_tokens, {})
            before, client0 = thread_cpu_ns(srv.proc.pid), time.process_time()
            r = stream_chat(srv.port, body)
            client1 = time.process_time()
            after = thread_cpu_ns(srv.proc.pid)
            quiet = unstreamed_decode_rate(srv, body)
            natives.append(self.native_decode_at_context())
            # Where the CPU went, per streamed token: on a machine with as many cores
            # as compute threads, whatever runs beside the kernels' threads is taken
            # from them (a measure that does not drift with the machine's speed).
            tokens = r["completion_tokens"] or 0
            if "sandpiper-http" in after and tokens:
                http_ns = after["sandpiper-http"] - before.get("sandpiper-http", 0)
                self.add("sandpiper", "cpu_us_per_token_http", http_ns / 1e3 / tokens)
                self.add("sandpiper", "cpu_us_per_token_client", (client1 - client0) * 1e6 / tokens)
            web = decode_rate(r)
            if web:
                around = (natives[-2] + natives[-1]) / 2
                self.add("sandpiper", "paired_http_decode_tok_s", web)
                self.add("native", "paired_decode_tok_s", around)
                self.add("sandpiper", "paired_overhead_ratio", web / around)
                self.add("sandpiper", "paired_unstreamed_decode_tok_s", quiet)
                self.add("sandpiper", "paired_unstreamed_ratio", quiet / around)

    def run_sandpiper(self, run):
        srv = self.start_sandpiper(f"run{run}")
        try:
            self.http_suite("sandpiper", srv, run, {})
            if self.decode_context:
                self.paired_overhead(srv, run)
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
            _, body = http_get(conn, "/metrics")
            conn.close()
            m = {}
            for line in body.decode().splitlines():
                if line and not line.startswith("#"):
                    k, _, v = line.partition(" ")
                    m[k] = float(v)
            n = m.get("sandpiper_guest_instantiations_total")
            total = m.get("sandpiper_guest_instantiate_microseconds_total")
            if not n or total is None:
                raise BenchError("sandpiper /metrics lacks the instantiation counters")
            self.add("sandpiper", "instantiate_mean_us", total / n)
            # Newer servers also export the median and p99 of recent instantiations.
            for q, key in (("0.5", "median"), ("0.99", "p99")):
                v = m.get(f'sandpiper_guest_instantiate_microseconds{{quantile="{q}"}}')
                if v is not None:
                    self.add("sandpiper", f"instantiate_{key}_us", v)
            self.add("sandpiper", "peak_rss_mib", vm_hwm_kib(srv.proc.pid) / 1024)
            self.conversation("sandpiper", srv.port, run, {}, "fresh")
        finally:
            srv.stop()
        srv = self.start_sandpiper(f"run{run}-reuse", reuse=True)
        try:
            self.conversation("sandpiper", srv.port, run + 100, {}, "reuse")
            self.concurrency_suite("sandpiper", srv.port, run + 200, {}, key="rconc")
            self.burst("sandpiper", srv.port, run + 300, {})
        finally:
            srv.stop()

    # ----------------------------------------------------------------- llama.cpp

    def run_llama_server(self, run):
        _, server = llama_bins()
        port = free_port()
        n = str(self.a.threads)
        cmd = [server, "-m", self.gguf, "--host", "127.0.0.1", "--port", port, "-t", n, "-tb", n,
               "-np", "4", "-c", "8192"]
        srv = Server("llama-server", cmd, dict(os.environ), self.work / f"llama-server-run{run}.log", port)
        try:
            srv.wait_ready(600)
            srv.t_ready = time.perf_counter()
            # No reuse of a cached prompt prefix between requests (nor in sandpiper's).
            self.http_suite("llama-server", srv, run, {"cache_prompt": False})
            self.add("llama-server", "peak_rss_mib", vm_hwm_kib(srv.proc.pid) / 1024)
            self.conversation("llama-server", srv.port, run, {"cache_prompt": False}, "fresh")
            self.conversation("llama-server", srv.port, run + 100, {"cache_prompt": True}, "reuse")
            self.concurrency_suite("llama-server", srv.port, run + 200, {"cache_prompt": True},
                                   key="rconc")
            self.burst("llama-server", srv.port, run + 300, {"cache_prompt": True})
        finally:
            srv.stop()

    def run_llama_bench(self, run):
        bench, _ = llama_bins()
        cmd = [bench, "-m", self.gguf, "-p", ",".join(map(str, self.a.prompt_tokens)),
               "-n", str(self.a.gen_tokens), "-t", str(self.a.threads), "-r", "1", "-o", "json"]
        out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
        if out.returncode != 0:
            raise BenchError(f"llama-bench exited with {out.returncode}:\n{out.stderr[-2000:]}")
        entries = json.loads(out.stdout)
        for e in entries:
            if e.get("build_commit") not in (None, "", "unknown"):
                self.info.setdefault("llama_build", f"commit {e['build_commit']}, ")
            self.info.setdefault("llama_backend", e.get("backends"))
            if e["n_gen"] == 0:
                self.add("llama.cpp", f"prefill_{e['n_prompt']}_tok_s", e["avg_ts"])
            elif e["n_prompt"] == 0:
                self.add("llama.cpp", "decode_tok_s", e["avg_ts"])
        if self.a.depth:
            # Decoding deep into a context (llama-bench fills the first `-d` positions
            # untimed): attention over the KV cache is then a large part of each step.
            cmd = [bench, "-m", self.gguf, "-p", "0", "-n", str(self.a.gen_tokens),
                   "-d", str(self.a.depth), "-t", str(self.a.threads), "-r", "1", "-o", "json"]
            out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
            if out.returncode != 0:
                raise BenchError(f"llama-bench -d exited with {out.returncode}:\n{out.stderr[-2000:]}")
            for e in json.loads(out.stdout):
                if e["n_prompt"] == 0 and e.get("n_depth") == self.a.depth:
                    self.add("llama.cpp", "decode_deep_tok_s", e["avg_ts"])

    def run_native(self, run):
        cmd = [self.a.native_bin, self.gguf, "--prompt", ",".join(map(str, self.a.prompt_tokens)),
               "--gen", str(self.a.gen_tokens), "--reps", "1", "--threads", str(self.a.threads),
               "--streams", ",".join(map(str, self.a.concurrency))]
        if self.decode_context:
            cmd += ["--decode-context", str(self.decode_context)]
        res = self.bench_native(cmd)
        for p in res["prefill"]:
            self.add("native", f"prefill_{p['tokens']}_tok_s", p["tok_s"])
        self.add("native", "decode_tok_s", res["decode"]["tok_s"])
        if res.get("decode_at_context"):
            self.add("native", "decode_at_context_tok_s", res["decode_at_context"]["tok_s"])
        for c in res.get("streams", []):
            self.add("native", f"conc{c['streams']}_aggregate_tok_s", c["tok_s"])
        # The same binary held to its AVX2 kernels: what a CPU without AVX-512 runs.
        flags = cpu_flags()
        if "avx512f" in flags and "avx2" in flags:
            cmd = cmd[:cmd.index("--streams")]
            res = self.bench_native(cmd, dict(self.thread_env(), SANDPIPER_KERNELS="avx2"))
            for p in res["prefill"]:
                self.add("native-avx2", f"prefill_{p['tokens']}_tok_s", p["tok_s"])
            self.add("native-avx2", "decode_tok_s", res["decode"]["tok_s"])
        if self.a.depth:
            deep = [self.a.native_bin, self.gguf, "--prompt", "", "--gen", str(self.a.gen_tokens),
                    "--reps", "1", "--threads", str(self.a.threads),
                    "--decode-context", str(self.a.depth)]
            res = self.bench_native(deep)
            self.add("native", "decode_deep_tok_s", res["decode_at_context"]["tok_s"])
            if "avx512f" in flags and "avx2" in flags:
                res = self.bench_native(deep, dict(self.thread_env(), SANDPIPER_KERNELS="avx2"))
                self.add("native-avx2", "decode_deep_tok_s", res["decode_at_context"]["tok_s"])


# --------------------------------------------------------------------------- report

def fmt(v, digits=None):
    if v is None:
        return "–"
    if digits is None:
        digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2 if abs(v) >= 1 else 3
    return f"{v:,.{digits}f}"


class Report:
    def __init__(self, bench):
        self.b = bench

    def vals(self, system, metric):
        return self.b.samples.get((system, metric))

    def med(self, system, metric):
        v = self.vals(system, metric)
        return median(v) if v else None

    def cell(self, system, metric, digits=None):
        v = self.vals(system, metric)
        if not v:
            return "–"
        s = fmt(median(v), digits)
        if len(v) > 1:
            s += f" ({fmt(min(v), digits)}–{fmt(max(v), digits)})"
        return s

    def ratio(self, num, den):
        if num is None or den is None or den == 0:
            return "–"
        return f"{num / den:.2f}×"

    def render(self):
        b, a, info = self.b, self.b.a, self.b.info
        L = []
        L.append("# Benchmark results")
        L.append("")
        L.append(f"Written by `bench/run{' --smoke' if a.smoke else ''}`; see [README.md](README.md) "
                 "for what each number means and how it is measured.")
        L.append("")
        L.append(f"- Date: {info['date']}")
        L.append(f"- CPU: {info['cpu']} ({os.cpu_count()} logical CPUs), {platform.system()} {platform.machine()}")
        L.append(f"- Threads: {a.threads} (llama.cpp `-t`/`-tb {a.threads}`; candle "
                 f"`RAYON_NUM_THREADS`/`CANDLE_NUM_THREADS={a.threads}`; native kernels `SANDPIPER_THREADS={a.threads}`; "
                 "`sandpiper serve` runs guests on its default pool, whose threads mostly wait for the kernels)")
        L.append(f"- Git commit: {info['commit']}")
        L.append(f"- Model: `{Path(b.gguf).name}` ({Path(b.gguf).stat().st_size / 1e6:.0f} MB), "
                 "the same file for every system")
        if a.llama:
            L.append(f"- llama.cpp: `vendor/llama.cpp` of llama-cpp-python {LLAMA_CPP_PYTHON}'s source "
                     f"distribution, {info.get('llama_build', '')}{info.get('llama_backend')} backend, "
                     f"{llama_arch()[1]}, built in Release")
        else:
            L.append("- llama.cpp: not run")
        L.append(f"- Sandpiper: `{a.sandpiper_bin}`; native backend: `{a.native_bin}`")
        L.append(f"- Repetitions: {a.reps}, interleaved (one pass over every system per repetition, "
                 "order rotated); cells are medians, with (min–max) over repetitions")
        L.append(f"- Load average (1 min): {info['load_start']:.2f} at start, {info['load_end']:.2f} at end; "
                 f"highest before a repetition {max(info['loads']):.2f}")
        if max(info["loads"] + [info["load_end"]]) > 0.5 * a.threads:
            L.append("- **The machine was busy with other work during this run: numbers are noisy.**")
        if a.note:
            L.append(f"- Note: {a.note}")
        L.append("")

        L.append("## Engine throughput, in-process (tokens/s, higher is better)")
        L.append("")
        avx2 = bool(self.vals("native-avx2", "decode_tok_s"))
        head = "| test | llama.cpp (`llama-bench`) | Sandpiper backend, in-process | backend ÷ llama.cpp |"
        if avx2:
            head += " backend held to AVX2 (`SANDPIPER_KERNELS=avx2`) | AVX2 backend ÷ llama.cpp |"
        L.append(head)
        L.append("|---|---|---|---|" + ("---|---|" if avx2 else ""))
        rows = [(f"prefill {p} tokens (pp{p})", f"prefill_{p}_tok_s") for p in a.prompt_tokens]
        rows.append((f"decode {a.gen_tokens} tokens (tg{a.gen_tokens})", "decode_tok_s"))
        if a.depth:
            rows.append((f"decode {a.gen_tokens} tokens after {a.depth} (tg{a.gen_tokens} @ d{a.depth})",
                         "decode_deep_tok_s"))
        for label, m in rows:
            line = (f"| {label} | {self.cell('llama.cpp', m)} | {self.cell('native', m)} | "
                    f"{self.ratio(self.med('native', m), self.med('llama.cpp', m))} |")
            if avx2:
                line += (f" {self.cell('native-avx2', m)} | "
                         f"{self.ratio(self.med('native-avx2', m), self.med('llama.cpp', m))} |")
            L.append(line)
        L.append("")

        L.append("## One streaming chat completion over HTTP (client side)")
        L.append("")
        L.append("| measure | llama-server | sandpiper serve | sandpiper ÷ llama-server |")
        L.append("|---|---|---|---|")
        for p in a.prompt_tokens:
            toks = {s: b.prompt_tokens.get((s, p)) for s in ("llama-server", "sandpiper")}
            sent = " / ".join(f"{int(median(v))}" if v else "–" for v in toks.values())
            m = f"ttft_{p}_s"
            how = ("token ids, `/v1/completions`" if b.completions
                   else "chat template included")
            L.append(f"| time to first token, {p}-token prompt (s) [{how}; prompt tokens, llama-server / sandpiper: {sent}] | "
                     f"{self.cell('llama-server', m)} | {self.cell('sandpiper', m)} | "
                     f"{self.ratio(self.med('sandpiper', m), self.med('llama-server', m))} |")
            m = f"http_prefill_{p}_tok_s"
            L.append(f"| prompt tokens ÷ time to first token, {p} (tok/s) | {self.cell('llama-server', m)} | "
                     f"{self.cell('sandpiper', m)} | "
                     f"{self.ratio(self.med('sandpiper', m), self.med('llama-server', m))} |")
        m = "http_decode_tok_s"
        L.append(f"| decode after the first token (tok/s) | {self.cell('llama-server', m)} | "
                 f"{self.cell('sandpiper', m)} | "
                 f"{self.ratio(self.med('sandpiper', m), self.med('llama-server', m))} |")
        m = "http_decode_tokens"
        L.append(f"| tokens generated (max_tokens {a.gen_tokens}) | {self.cell('llama-server', m, 0)} | "
                 f"{self.cell('sandpiper', m, 0)} | |")
        sampled = ", ".join(f"{k} {v}" for k, v in SAMPLED.items())
        m = "http_sampled_decode_tok_s"
        L.append(f"| decode after the first token, sampled ({sampled}, a seed) (tok/s) | "
                 f"{self.cell('llama-server', m)} | {self.cell('sandpiper', m)} | "
                 f"{self.ratio(self.med('sandpiper', m), self.med('llama-server', m))} |")
        m = "http_sampled_decode_tokens"
        L.append(f"| tokens generated, sampled (max_tokens {a.gen_tokens}) | {self.cell('llama-server', m, 0)} | "
                 f"{self.cell('sandpiper', m, 0)} | |")
        L.append("")
        web = self.med("sandpiper", "http_decode_tok_s")
        at, nat = self.med("native", "decode_at_context_tok_s"), self.med("native", "decode_tok_s")
        paired = self.med("sandpiper", "paired_overhead_ratio")
        if paired:
            L.append(f"**Sandbox overhead on decode, paired: Sandpiper over HTTP through the guest decodes at "
                     f"{self.cell('sandpiper', 'paired_overhead_ratio', 3)}× its backend in-process** "
                     f"(median over {len(self.vals('sandpiper', 'paired_overhead_ratio'))} pairs "
                     f"({OVERHEAD_PAIRS} per repetition) of HTTP ÷ in-process, each HTTP decode run between two "
                     f"in-process decodes after the same {self.b.decode_context}-token prompt, back to back: "
                     f"{self.cell('sandpiper', 'paired_http_decode_tok_s')} vs "
                     f"{self.cell('native', 'paired_decode_tok_s')} tok/s).")
            if self.vals("sandpiper", "paired_unstreamed_ratio"):
                L.append(f"The same requests unstreamed (`stream: false`, each sent right after its streamed "
                         f"twin and timed by the chat guest's own clock, which it logs for every request) "
                         f"decode at {self.cell('sandpiper', 'paired_unstreamed_ratio', 3)}× the in-process "
                         f"decodes around them ({self.cell('sandpiper', 'paired_unstreamed_decode_tok_s')} "
                         f"tok/s): the sandbox, wasi-nn and batching with no SSE event written per token.")
            http, client = (self.med("sandpiper", f"cpu_us_per_token_{g}") for g in ("http", "client"))
            step = self.med("sandpiper", "paired_http_decode_tok_s")
            if http is not None and client is not None and step:
                step = 1e6 / step
                L.append(f"CPU that served decodes cost outside the compute threads, per streamed token "
                         f"(median over the pairs, the whole request; a decode step takes {fmt(step)} µs): "
                         f"Sandpiper's HTTP runtime {fmt(http)} µs ({100 * http / step:.1f}%: writing each "
                         f"event to the socket, the kernel's loopback delivery to the client included), "
                         f"the benchmark's client {fmt(client)} µs ({100 * client / step:.1f}%). With "
                         f"{a.threads} compute threads on {os.cpu_count()} CPUs this time is taken from "
                         f"the kernels' threads.")
                L.append("")
        if web and at:
            L.append(f"Unpaired, from medians of runs minutes apart (noisy on a shared machine): "
                     f"Sandpiper over HTTP through the guest decodes at "
                     f"{web / at:.2f}× its backend in-process at the same positions (after the same "
                     f"{self.b.decode_context}-token prompt: {fmt(web)} vs {self.cell('native', 'decode_at_context_tok_s')} tok/s)"
                     + (f"; {web / nat:.2f}× the in-process decode from an empty context ({fmt(nat)} tok/s, "
                        "where attention is cheaper)." if nat else "."))
            L.append("")
        elif web and nat:
            L.append(f"Sandpiper's decode over HTTP through the guest is {web / nat:.2f}× its native "
                     f"decode from an empty context ({fmt(web)} vs {fmt(nat)} tok/s).")
            L.append("")
        lweb, lnat = self.med("llama-server", "http_decode_tok_s"), self.med("llama.cpp", "decode_tok_s")
        if lweb and lnat:
            L.append(f"For scale, serving without a sandbox: llama-server decodes over HTTP at "
                     f"{lweb / lnat:.2f}× llama-bench's tg{a.gen_tokens} ({fmt(lweb)} vs {fmt(lnat)} tok/s; "
                     f"unpaired, and llama-bench decodes from an empty context): what streaming to a "
                     "client on the same machine costs a server here before any sandbox.")
            L.append("")

        L.append("## Sandbox overhead")
        L.append("")
        L.append("| measure | llama-server | sandpiper serve |")
        L.append("|---|---|---|")
        for key, what in (("mean", "mean over the repetition"), ("median", "median of recent instances"),
                          ("p99", "p99 of recent instances")):
            if self.vals("sandpiper", f"instantiate_{key}_us"):
                L.append(f"| guest instantiation, {what}, from `/metrics` (µs) | – | "
                         f"{self.cell('sandpiper', f'instantiate_{key}_us', 0)} |")
        for key, what in (("v1_models", "`GET /v1/models` (sandpiper: a fresh guest instance each)"),
                          ("health", "`GET /health` (host only, no guest)")):
            for stat in ("median", "p99"):
                m = f"rtt_{key}_{stat}_ms"
                L.append(f"| {what}, {stat} of {a.rtt_requests} round trips (ms) | "
                         f"{self.cell('llama-server', m, 3)} | {self.cell('sandpiper', m, 3)} |")
        L.append("")

        L.append("## Start-up and memory")
        L.append("")
        L.append("| measure | llama-server | sandpiper serve | sandpiper ÷ llama-server |")
        L.append("|---|---|---|---|")
        for m, label in (("ready_s", "process start → ready to serve (s)"),
                         ("start_to_first_token_s", "process start → first streamed token (s)"),
                         ("peak_rss_mib", "peak RSS after the workload, VmHWM (MiB)")):
            L.append(f"| {label} | {self.cell('llama-server', m)} | {self.cell('sandpiper', m)} | "
                     f"{self.ratio(self.med('sandpiper', m), self.med('llama-server', m))} |")
        L.append("")

        if self.vals("sandpiper", "conv_reuse_ttft_s"):
            turns = len(CONVERSATION)
            L.append(f"## A conversation: turn {turns} of {turns} (max_tokens {b.conversation_tokens()} each)")
            L.append("")
            L.append("Each request resends the earlier turns, as chat clients do. With prompt reuse, "
                     "a server continues from the KV cache of the previous turn's request "
                     "(llama-server: `cache_prompt: true`, its slot's last prompt; Sandpiper: its "
                     "default `--prefix-cache-mib`, any finished request's) instead of computing "
                     "the whole conversation again.")
            L.append("")
            L.append("| measure | llama-server | sandpiper serve | sandpiper ÷ llama-server |")
            L.append("|---|---|---|---|")
            L.append(f"| prompt tokens of the last turn | {self.cell('llama-server', 'conv_reuse_prompt_tokens', 0)} | "
                     f"{self.cell('sandpiper', 'conv_reuse_prompt_tokens', 0)} | |")
            for key, what in (("reuse", "earlier turns reused"),
                              ("fresh", "everything computed (`cache_prompt: false`, `--prefix-cache-mib 0`)")):
                m = f"conv_{key}_ttft_s"
                L.append(f"| time to first token, {what} (s) | {self.cell('llama-server', m, 3)} | "
                         f"{self.cell('sandpiper', m, 3)} | "
                         f"{self.ratio(self.med('sandpiper', m), self.med('llama-server', m))} |")
            L.append("")

        if self.vals("sandpiper", "burst_last_ttft_s"):
            L.append(f"## {len(BURST_QUESTIONS)} requests at once, one long system prompt "
                     f"(max_tokens {BURST_TOKENS} each)")
            L.append("")
            L.append("Each request asks its own question after the same system prompt, new to the "
                     "server, with prompt reuse on (llama-server: `cache_prompt: true`; Sandpiper: "
                     "its default `--prefix-cache-mib`, where a prompt waits for one being computed "
                     "that shares its opening, then continues from it).")
            L.append("")
            L.append("| measure | llama-server | sandpiper serve | sandpiper ÷ llama-server |")
            L.append("|---|---|---|---|")
            L.append(f"| prompt tokens (the first question) | {self.cell('llama-server', 'burst_prompt_tokens', 0)} | "
                     f"{self.cell('sandpiper', 'burst_prompt_tokens', 0)} | |")
            for m, what in (("burst_first_ttft_s", "the first request's first token (s)"),
                            ("burst_last_ttft_s", "the last request's first token (s)")):
                L.append(f"| {what} | {self.cell('llama-server', m, 3)} | {self.cell('sandpiper', m, 3)} | "
                         f"{self.ratio(self.med('sandpiper', m), self.med('llama-server', m))} |")
            L.append("")
        L += self.concurrency_section("conc", f"## Concurrent streams (max_tokens {a.gen_tokens} each)", [],
                                      "each stream has its own prompt")
        L += self.concurrency_section(
            "rconc", "## Concurrent streams with prompt reuse on (each server's default)",
            ["The same runs against servers that reuse what earlier requests computed "
             "(llama-server: `cache_prompt: true`, each slot its own last prompt; Sandpiper: its "
             "default `--prefix-cache-mib`, any request's). The streams' prompts differ after the "
             "chat template's opening, which every request shares (its system prompt), so this "
             "is what a server started with its defaults gives concurrent chat clients.", ""],
            "each stream has its own prompt, opened by the template's shared system prompt")
        return "\n".join(L)

    def concurrency_section(self, key, title, intro, prompts):
        """The concurrency table of the runs recorded under `key`, with its gains."""
        a = self.b.a
        names = {"llama-server": "llama-server (`-np 4`)", "sandpiper": "sandpiper serve",
                 "native": "Sandpiper backend, in-process (a thread per stream, after the same prompt)"}
        if not any(self.vals(s, f"{key}1_aggregate_tok_s") for s in names):
            return []
        L = [title, ""] + intro
        L.append("| streams | server | aggregate tok/s | aggregate tok/s while all decode | "
                 "per-stream decode tok/s | time to first token (s) | request latency (s) |")
        L.append("|---|---|---|---|---|---|---|")
        for c in a.concurrency:
            for s in ("llama-server", "sandpiper", "native"):
                if not self.vals(s, f"{key}{c}_aggregate_tok_s"):
                    continue
                L.append(f"| {c} | {names[s]} | {self.cell(s, f'{key}{c}_aggregate_tok_s')} | "
                         f"{self.cell(s, f'{key}{c}_steady_decode_tok_s')} | "
                         f"{self.cell(s, f'{key}{c}_stream_tok_s')} | {self.cell(s, f'{key}{c}_ttft_s')} | "
                         f"{self.cell(s, f'{key}{c}_latency_s')} |")
        L.append("")
        top = max(a.concurrency)
        if top > 1:
            gains = [f"{names[s]} {self.ratio(self.med(s, f'{key}{top}_aggregate_tok_s'), self.med(s, f'{key}1_aggregate_tok_s'))}"
                     for s in ("sandpiper", "native", "llama-server")
                     if self.vals(s, f"{key}{top}_aggregate_tok_s") and self.vals(s, f"{key}1_aggregate_tok_s")]
            L.append(f"Aggregate tok/s of {top} streams ÷ 1 stream, from the medians above: "
                     + "; ".join(gains) + ".")
            L.append("")
            paired = [f"{names[s]} {self.cell(s, f'{key}{top}_paired_gain', 2)}×"
                      for s in ("sandpiper", "llama-server") if self.vals(s, f"{key}{top}_paired_gain")]
            if paired:
                L.append(f"**Paired, per repetition ({top} streams ÷ the mean of the one-stream runs that "
                         f"open and close the sequence {', '.join(map(str, a.concurrency))}, 1; median (min–max)): " + "; ".join(paired) + ".** "
                         f"Both include the prompts' prefill ({prompts}).")
                L.append("")
            steady = [f"{names[s]} {self.cell(s, f'{key}{top}_paired_decode_gain', 2)}×"
                      for s in ("sandpiper", "llama-server") if self.vals(s, f"{key}{top}_paired_decode_gain")]
            if steady:
                L.append(f"The same pairs, decode phase only (from the last of the {top} streams' first "
                         "tokens on: each stream's tokens after it ÷ the time to its end, summed, against "
                         "one stream's decode rate; what batching the steps gains, without the prompts): "
                         + "; ".join(steady) + ".")
                L.append("")
        return L


# --------------------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench/run",
        description="Benchmarks Sandpiper against llama.cpp on the same GGUF and writes bench/RESULTS.md.")
    p.add_argument("--threads", type=int, default=2, help="compute threads for every system (default 2)")
    p.add_argument("--reps", type=int, help="interleaved repetitions (default 5; 1 with --smoke)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny run for CI: few tokens, 1 repetition, llama.cpp only if already built, "
                        "results to a temp dir; exits non-zero on any failure")
    p.add_argument("--sandpiper-bin", type=Path,
                   help="an already-built sandpiper binary (default: cargo build --release)")
    p.add_argument("--native-bin", type=Path,
                   help="an already-built bench_native example (default: cargo builds it)")
    p.add_argument("--no-llama", action="store_true", help="skip llama.cpp (build and runs)")
    p.add_argument("--prepare", action="store_true", help="build and pull everything, measure nothing")
    p.add_argument("--out", type=Path, help="where to write the results (default bench/RESULTS.md; "
                                             "with --smoke a temp dir)")
    p.add_argument("--note", help="a line added to the results (e.g. what else ran on the machine)")
    p.add_argument("--prompt-tokens", help="prompt lengths for prefill (default 128,512)")
    p.add_argument("--gen-tokens", type=int, help="tokens to decode (default 128)")
    p.add_argument("--concurrency", help="simultaneous streams (default 1,2,4)")
    p.add_argument("--depth", type=int, help="positions already in the context for the deep decode "
                                              "row (default 1024; 32 with --smoke; 0 skips it)")
    p.add_argument("--rtt-requests", type=int, help="round trips per endpoint (default 500)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel jobs for the llama.cpp build")
    a = p.parse_args(argv)
    smoke = a.smoke
    a.reps = a.reps or (1 if smoke else 5)
    a.prompt_tokens = [int(x) for x in (a.prompt_tokens or ("64" if smoke else "128,512")).split(",")]
    a.gen_tokens = a.gen_tokens or (8 if smoke else 128)
    a.concurrency = [int(x) for x in (a.concurrency or ("1,2" if smoke else "1,2,4")).split(",")]
    a.rtt_requests = a.rtt_requests or (20 if smoke else 500)
    a.depth = (32 if smoke else 1024) if a.depth is None else a.depth
    if a.threads < 1 or a.reps < 1 or a.gen_tokens < 2 or min(a.concurrency) < 1 or a.depth < 0:
        p.error("--threads, --reps, --concurrency must be at least 1, --gen-tokens at least 2 "
                "and --depth not negative")
    return a


def cargo(*args):
    cmd = ["cargo", *args]
    log("$ " + " ".join(cmd))
    if subprocess.call(cmd, cwd=REPO) != 0:
        raise BenchError(" ".join(cmd) + " failed")


def prepare(a):
    """Builds what is missing, pulls the model, decides which systems run."""
    profile = [] if a.smoke else ["--release"]
    target = REPO / "target" / ("debug" if a.smoke else "release")
    if a.sandpiper_bin is None:
        cargo("build", "--locked", *profile, "-p", "sandpiper", "--bin", "sandpiper")
        a.sandpiper_bin = target / "sandpiper"
    if a.native_bin is None:
        cargo("build", "--locked", *profile, "-p", "sandpiper-llm", "--example", "bench_native")
        a.native_bin = target / "examples" / "bench_native"
    a.sandpiper_bin = a.sandpiper_bin.resolve()
    a.native_bin = a.native_bin.resolve()
    for b in (a.sandpiper_bin, a.native_bin):
        if not b.is_file():
            raise BenchError(f"{b} does not exist")
    a.llama = False
    if not a.no_llama:
        if a.smoke and not llama_cached():
            log("--smoke: llama.cpp is not built, skipping it (a full run builds it)")
        else:
            build_llama(a.jobs)
            a.llama = True
    log(f"$ {a.sandpiper_bin} pull {MODEL}")
    out = subprocess.run([str(a.sandpiper_bin), "pull", MODEL], capture_output=True, text=True)
    if out.returncode != 0:
        raise BenchError(f"sandpiper pull failed:\n{out.stderr[-2000:]}")
    for line in out.stdout.splitlines():
        name, _, path = line.partition(" ")
        if name == MODEL and path.strip():
            return Path(path.strip())
    raise BenchError(f"sandpiper pull did not print the path of {MODEL}:\n{out.stdout}")


def main(argv):
    a = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="sandpiper-bench-"))
    out = a.out or (workdir / "RESULTS.md" if a.smoke else REPO / "bench" / "RESULTS.md")
    try:
        gguf = prepare(a)
        if a.prepare:
            log("prepared; nothing measured")
            return 0
        b = Bench(a, workdir)
        b.gguf = gguf
        b.info.update(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                      cpu=cpu_model(), commit=git_commit(), load_start=loadavg(), loads=[])
        log(f"model {gguf}; {a.threads} threads; {a.reps} repetitions; logs in {workdir}")
        b.calibrate()
        systems = [("llama.cpp", b.run_llama_bench)] if a.llama else []
        systems.append(("native", b.run_native))
        systems.append(("sandpiper", b.run_sandpiper))
        if a.llama:
            systems.append(("llama-server", b.run_llama_server))
        for rep in range(a.reps):
            b.info["loads"].append(loadavg())
            k = rep % len(systems)
            for name, fn in systems[k:] + systems[:k]:
                log(f"repetition {rep + 1}/{a.reps}: {name}")
                t = time.perf_counter()
                fn(rep + 1)
                log(f"  {name} done in {time.perf_counter() - t:.1f} s")
        b.info["load_end"] = loadavg()
        text = Report(b).render()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        (workdir / "samples.json").write_text(json.dumps(
            {f"{s}/{m}": v for (s, m), v in sorted(b.samples.items())}, indent=1))
        print(text)
        log(f"wrote {out} (raw samples: {workdir / 'samples.json'})")
        return 0
    except BenchError as e:
        log(f"FAILED: {e}")
        log(f"logs in {workdir}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
