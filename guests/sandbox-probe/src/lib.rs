//! A test-only guest that tries to escape the sandbox, so the host's tests
//! can prove it cannot. **Never embed it in a production build.**
//!
//! `/probe/<what>` tries one capability and answers 200 with
//! `{"probe": what, "ok": bool, "detail": "..."}` where `ok: true` means the
//! capability *worked* — the host's tests assert it is `false`:
//!
//! - `fs`: read `/etc/passwd` and list `/` (needs a preopened directory).
//! - `tcp`: connect to `127.0.0.1:<port>` (`?port=N`, needs wasi:sockets).
//! - `env`: count environment variables, look for `PATH` and `HOME`.
//! - `http`: outbound `GET http://127.0.0.1:<port>/` through
//!   `wasi:http/outgoing-handler`.
//! - `trap`: panics (a trap), so tests can check the server survives it.
//! - `spin`: loops forever, so tests can check the host stops it.
//!
//! The probe logic is plain std/WASI calls; only the HTTP glue is gated on
//! the guest target.

/// Longest `detail` returned: enough to recognise what was read, short
/// enough not to echo a whole file back.
pub const DETAIL_LIMIT: usize = 200;

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub what: String,
    /// The capability worked (the sandbox let it through).
    pub ok: bool,
    pub detail: String,
}

impl Probe {
    fn new(what: &str, ok: bool, detail: impl Into<String>) -> Self {
        Self {
            what: what.to_string(),
            ok,
            detail: truncate(detail.into(), DETAIL_LIMIT),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::json!({"probe": self.what, "ok": self.ok, "detail": self.detail}).to_string()
    }
}

/// Cuts `s` to at most `limit` bytes on a char boundary, marking the cut.
pub fn truncate(mut s: String, limit: usize) -> String {
    if s.len() > limit {
        let mut end = limit;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Filesystem: succeeds if either reading a host file or listing the root works.
pub fn probe_fs() -> Probe {
    let read = std::fs::read_to_string("/etc/passwd");
    let list = std::fs::read_dir("/").map(|entries| {
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    });
    let ok = read.is_ok() || list.is_ok();
    let read = match read {
        Ok(text) => format!("read /etc/passwd: {text:?}"),
        Err(e) => format!("read /etc/passwd: {e}"),
    };
    let list = match list {
        Ok(names) => format!("list /: {names:?}"),
        Err(e) => format!("list /: {e}"),
    };
    // The listing goes first: it is short and tells the most.
    Probe::new("fs", ok, format!("{list}; {read}"))
}

/// Environment: succeeds if any variable is visible.
pub fn probe_env() -> Probe {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let has = |name: &str| vars.iter().any(|(k, _)| k == name);
    Probe::new(
        "env",
        !vars.is_empty(),
        format!(
            "{} variables; PATH present: {}; HOME present: {}",
            vars.len(),
            has("PATH"),
            has("HOME")
        ),
    )
}

/// Sockets: succeeds if a TCP connection to the port opens.
pub fn probe_tcp(port: u16) -> Probe {
    match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Ok(stream) => Probe::new(
            "tcp",
            true,
            format!("connected to {:?}", stream.peer_addr().ok()),
        ),
        Err(e) => Probe::new("tcp", false, format!("connect 127.0.0.1:{port}: {e}")),
    }
}

#[cfg(target_arch = "wasm32")]
mod guest {
    use super::{probe_env, probe_fs, probe_tcp, Probe};
    use sandpiper_guest_sdk::http::{query_param, respond_error, respond_json, Request};
    use sandpiper_guest_sdk::{log, ApiError};
    use wasi::http::types::{Fields, IncomingRequest, OutgoingRequest, ResponseOutparam, Scheme};

    /// Outbound HTTP: succeeds if any response comes back.
    fn probe_http(port: u16) -> Probe {
        let request = OutgoingRequest::new(Fields::new());
        let authority = format!("127.0.0.1:{port}");
        let _ = request.set_scheme(Some(&Scheme::Http));
        let _ = request.set_authority(Some(&authority));
        let _ = request.set_path_with_query(Some("/"));
        match wasi::http::outgoing_handler::handle(request, None) {
            Err(e) => Probe::new("http", false, format!("handle: {e:?}")),
            Ok(future) => {
                future.subscribe().block();
                match future.get() {
                    Some(Ok(Ok(response))) => {
                        Probe::new("http", true, format!("got status {}", response.status()))
                    }
                    Some(Ok(Err(e))) => Probe::new("http", false, format!("request failed: {e:?}")),
                    Some(Err(())) => Probe::new("http", false, "response already taken"),
                    None => Probe::new("http", false, "no response"),
                }
            }
        }
    }

    fn port(request: &Request) -> Result<u16, ApiError> {
        request
            .query()
            .and_then(|q| query_param(q, "port"))
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| {
                ApiError::invalid_request("this probe needs ?port=N (1-65535)").with_param("port")
            })
    }

    struct SandboxProbe;

    impl wasi::exports::http::incoming_handler::Guest for SandboxProbe {
        fn handle(request: IncomingRequest, out: ResponseOutparam) {
            let request = Request::new(request);
            let what = request.path().strip_prefix("/probe/").unwrap_or("");
            if what == "trap" {
                // Lets the host's tests prove a trapping guest costs one 500,
                // not the server.
                panic!("sandbox-probe: trap requested");
            }
            if what == "spin" {
                // A guest that never returns: the host must stop it.
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            let probe = match what {
                "fs" => Ok(probe_fs()),
                "env" => Ok(probe_env()),
                "tcp" => port(&request).map(probe_tcp),
                "http" => port(&request).map(probe_http),
                _ => Err(ApiError::unknown_route(request.method(), request.path())),
            };
            match probe {
                Ok(probe) => {
                    log::line(&format!("sandbox-probe {} ok={}", probe.what, probe.ok));
                    respond_json(out, 200, &probe.to_json());
                }
                Err(e) => respond_error(out, &e, &[]),
            }
        }
    }

    wasi::http::proxy::export!(SandboxProbe);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundary() {
        assert_eq!(truncate("abc".into(), 5), "abc");
        assert_eq!(truncate("abcdef".into(), 3), "abc…");
        assert_eq!(truncate("aé".into(), 2), "a…");
    }

    #[test]
    fn json_shape() {
        let p = Probe::new("env", false, "0 variables");
        let v: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"probe": "env", "ok": false, "detail": "0 variables"})
        );
    }

    /// On the developer's machine nothing is sandboxed, so the probes work:
    /// this shows they really detect the capability.
    #[test]
    fn probes_succeed_outside_the_sandbox() {
        assert!(probe_fs().ok);
        assert!(probe_env().ok);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(probe_tcp(port).ok);
    }
}
