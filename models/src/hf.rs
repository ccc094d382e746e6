//! Pulling a file from a Hugging Face model repo with the `hf-hub` crate (sync API).
//!
//! `hf-hub` offers no timeout setting, and its HTTP client waits up to 30 s to connect and
//! forever to read. On a machine without internet that would look like a hang at startup, so
//! before downloading we check that the hub's host resolves and accepts a TCP connection
//! within a few seconds, and fail with a clear message if not. (Once a download has started,
//! a stalled connection can still block; that is hf-hub's behaviour and is not bounded here.)

use std::fs::File;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hf_hub::api::sync::{ApiBuilder, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};

use crate::store::ModelFile;
use crate::{Progress, Store};

/// How long the reachability check may take in all, name lookup included.
const REACH_TIMEOUT: Duration = Duration::from_secs(5);

/// Copies each of `files` (their `remote` is the path in the repo) of `repo` at `revision`
/// into place: from the user's existing Hugging Face cache if it is there (no network
/// needed), else by downloading it.
pub(crate) fn pull(
    store: &Store,
    repo: &str,
    revision: Option<&str>,
    files: &[ModelFile],
    progress: Progress,
) -> Result<()> {
    let revision = revision.unwrap_or("main");
    let hf_repo = Repo::with_revision(repo.to_owned(), RepoType::Model, revision.to_owned());
    // hf-hub downloads into a cache of its own layout; point it at a temporary one under the
    // store, then move the finished blobs into our layout. Set up on the first download.
    let mut client: Option<(tempfile::TempDir, ApiRepo)> = None;
    for model_file in files {
        let file = model_file.remote.as_str();
        // Reuse what other tools already downloaded; copied, not linked, because that cache
        // may be pruned under us. A copy that fails verification (an older revision, say) is
        // skipped.
        if let Some(cached) = Cache::from_env().repo(hf_repo.clone()).get(file) {
            tracing::info!("copying {repo}@{revision}/{file} from the Hugging Face cache");
            let copied = File::open(&cached)
                .with_context(|| format!("cannot open {}", cached.display()))
                .and_then(|src| {
                    let len = src.metadata().ok().map(|m| m.len());
                    store.install_from_reader(model_file, src, len, progress, "copying")
                });
            match copied {
                Ok(()) => continue,
                Err(e) => tracing::warn!(
                    "not using {} from the Hugging Face cache: {e:#}; downloading instead",
                    cached.display()
                ),
            }
        }

        if client.is_none() {
            client = Some(connect(store, &hf_repo, file, progress)?);
        }
        let (_, api_repo) = client.as_ref().expect("set just above");

        tracing::info!("downloading {repo}@{revision}/{file} from the Hugging Face hub");
        let pointer = api_repo.download(file).with_context(|| {
            format!("cannot download {file} from Hugging Face repo {repo}@{revision}")
        })?;
        // hf-hub returns a symlink into its blob store; move the blob itself.
        let blob = std::fs::canonicalize(&pointer)
            .with_context(|| format!("cannot follow {}", pointer.display()))?;
        store.install_by_rename(model_file, &blob, progress)?;
    }
    Ok(())
}

/// An hf-hub client downloading into a fresh temporary directory under the store, once the
/// hub is known to be reachable (probed with the URL of `file`).
fn connect(
    store: &Store,
    hf_repo: &Repo,
    file: &str,
    progress: Progress,
) -> Result<(tempfile::TempDir, ApiRepo)> {
    let download_dir = tempfile::Builder::new()
        .prefix("hf-")
        .tempdir_in(store.tmp_dir()?)
        .context("cannot create a download directory")?;
    let mut builder = ApiBuilder::from_env()
        .with_cache_dir(download_dir.path().to_owned())
        .with_progress(progress.shown());
    // hf-hub reads a token only from its token file; honour the usual variable too, so
    // gated repos work in containers.
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
        builder = builder.with_token(Some(token));
    }
    let api = builder
        .build()
        .context("cannot set up the Hugging Face client")?;
    let api_repo = api.repo(hf_repo.clone());
    check_reachable(&api_repo.url(file))?;
    Ok((download_dir, api_repo))
}

/// Fails within [`REACH_TIMEOUT`] if the host of `url` cannot be resolved or connected to.
///
/// Skipped when a proxy is configured: then the proxy, not the hub, is what we would reach,
/// and ureq handles it.
fn check_reachable(url: &str) -> Result<()> {
    let proxied = [
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    if proxied {
        return Ok(());
    }
    let (host, port) = host_port(url).with_context(|| format!("cannot parse the URL {url}"))?;
    let offline_hint = "this machine may be offline; use a `pip:` or local source instead, or \
                        set HF_ENDPOINT to a reachable mirror";
    let started = Instant::now();

    // Name lookup has no timeout of its own, so run it on a thread and stop waiting for it.
    let (tx, rx) = mpsc::channel();
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    std::thread::spawn(move || {
        let _ = tx.send(
            target
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<SocketAddr>>()),
        );
    });
    let addrs = match rx.recv_timeout(REACH_TIMEOUT) {
        Ok(Ok(addrs)) if !addrs.is_empty() => addrs,
        Ok(Ok(_)) => bail!("cannot resolve {host}: no addresses; {offline_hint}"),
        Ok(Err(e)) => bail!("cannot resolve {host}: {e}; {offline_hint}"),
        Err(_) => bail!(
            "cannot resolve {host} within {}s; {offline_hint}",
            REACH_TIMEOUT.as_secs()
        ),
    };
    let mut last_error = None;
    for addr in &addrs {
        let left = REACH_TIMEOUT.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(addr, left) {
            Ok(_) => return Ok(()),
            Err(e) => last_error = Some(e),
        }
    }
    let why = last_error.map_or_else(|| "timed out".to_owned(), |e| e.to_string());
    bail!("cannot connect to {host}:{port}: {why}; {offline_hint}")
}

/// `("host", 443)` from `https://host/...`; handles `host:port` and `[v6]:port`.
fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let default_port = if scheme.eq_ignore_ascii_case("http") {
        80
    } else {
        443
    };
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default_port,
        };
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None => Some((authority.to_owned(), default_port)),
    }
    .filter(|(host, _)| !host.is_empty())
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            host_port("https://example.test/a/b"),
            Some(("example.test".into(), 443))
        );
        assert_eq!(
            host_port("http://example.test"),
            Some(("example.test".into(), 80))
        );
        assert_eq!(
            host_port("https://example.test:8443/x"),
            Some(("example.test".into(), 8443))
        );
        assert_eq!(host_port("https://[::1]:9/x"), Some(("::1".into(), 9)));
        assert_eq!(host_port("no-scheme"), None);
    }
}
