//! Text → IPA phonemes with the `espeak-ng` program.
//!
//! espeak-ng is GPL-3, so it runs as a separate process and the server binary
//! keeps its own license. One process per sentence: the sentence is split into
//! clauses at punctuation (which espeak-ng's `--ipa` output drops) and all
//! clauses go to one call, one per line, because every call costs ~17 ms and
//! a newline ends a clause for espeak-ng. Each clause's punctuation is put back
//! after its phonemes, as Piper does, so the voice pauses and inflects.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use unicode_normalization::UnicodeNormalization;

/// Environment variable naming the espeak-ng program (default: `espeak-ng` on `PATH`).
pub const ESPEAK_ENV: &str = "SANDPIPER_ESPEAK";

/// Runs `espeak-ng -q --ipa -b 1 -v VOICE`.
#[derive(Debug, Clone)]
pub struct Espeak {
    program: PathBuf,
    voice: String,
}

const INSTALL_HINT: &str =
    "install espeak-ng (Debian/Ubuntu: `apt-get install espeak-ng`; macOS: `brew install espeak-ng`) \
     or set SANDPIPER_ESPEAK to its path";

impl Espeak {
    /// The program from `SANDPIPER_ESPEAK` or `PATH`, checked by running it once
    /// with `voice`, so a missing program or voice fails at start-up.
    pub fn new(voice: &str) -> Result<Self> {
        let program = std::env::var_os(ESPEAK_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("espeak-ng"));
        let espeak = Espeak {
            program,
            voice: voice.to_owned(),
        };
        let probe = espeak
            .run("test")
            .with_context(|| format!("espeak-ng is needed for speech: {INSTALL_HINT}"))?;
        if probe.trim().is_empty() {
            bail!(
                "espeak-ng produced no phonemes for voice {voice:?}; is the voice installed? ({INSTALL_HINT})"
            );
        }
        Ok(espeak)
    }

    /// One espeak-ng call: its output lines, without language-switch markers.
    fn run(&self, input: &str) -> Result<String> {
        let mut child = Command::new(&self.program)
            .args(["-q", "--ipa", "-b", "1", "-v", &self.voice])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run `{}`", self.program.display()))?;
        let mut stdin = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let (out, err) = std::thread::scope(|s| {
            // Write from another thread: a large input must not deadlock
            // against espeak-ng's full stdout pipe.
            s.spawn(move || {
                let _ = stdin.write_all(input.as_bytes());
                let _ = stdin.write_all(b"\n");
            });
            let err = s.spawn(move || {
                let mut e = String::new();
                let _ = stderr.read_to_string(&mut e);
                e
            });
            let mut out = Vec::new();
            let read = stdout.read_to_end(&mut out);
            (read.map(|_| out), err.join().unwrap_or_default())
        });
        let status = child.wait().context("waiting for espeak-ng")?;
        let out = out.context("reading espeak-ng's output")?;
        if !status.success() {
            bail!(
                "`{}` failed ({status}): {}",
                self.program.display(),
                err.trim()
            );
        }
        Ok(strip_language_markers(&String::from_utf8_lossy(&out)))
    }

    /// IPA phonemes for one sentence, NFD-normalised, with clause punctuation.
    pub fn phonemize(&self, text: &str) -> Result<String> {
        let clauses = clauses(text);
        if clauses.is_empty() {
            return Ok(String::new());
        }
        let batch: Vec<&str> = clauses.iter().map(|c| c.text.as_str()).collect();
        let output = self.run(&batch.join("\n"))?;
        let lines: Vec<&str> = output
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let per_clause: Vec<String> = if lines.len() == clauses.len() {
            lines.iter().map(|l| l.to_string()).collect()
        } else {
            // espeak-ng split a clause of its own accord (a very long one, an
            // abbreviation): fall back to one call per clause.
            tracing::debug!(
                clauses = clauses.len(),
                lines = lines.len(),
                "espeak-ng clause count differs; phonemising clause by clause"
            );
            let mut v = Vec::with_capacity(clauses.len());
            for c in &clauses {
                let out = self.run(&c.text)?;
                let joined: Vec<&str> = out
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                v.push(joined.join(" "));
            }
            v
        };
        let mut phonemes = String::new();
        for (clause, ipa) in clauses.iter().zip(&per_clause) {
            if ipa.is_empty() {
                continue;
            }
            if !phonemes.is_empty() {
                phonemes.push(' ');
            }
            phonemes.push_str(ipa);
            if let Some(p) = clause.terminator {
                phonemes.push(p);
            }
        }
        Ok(phonemes.nfd().collect())
    }
}

/// A clause and the punctuation that ended it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    pub text: String,
    pub terminator: Option<char>,
}

/// Splits text at clause punctuation (`, ; : . ! ?` followed by a space or the
/// end; closing quotes and brackets after it stay with the clause). Newlines
/// become spaces: to espeak-ng a newline ends a clause.
pub fn clauses(text: &str) -> Vec<Clause> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut current = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let term = match c {
            '.' | '…' => Some('.'),
            ',' | ';' | ':' | '!' | '?' => Some(c),
            _ => None,
        };
        if let Some(t) = term {
            let mut j = i + 1;
            // Runs of punctuation ("?!", "...") and closing quotes/brackets.
            while j < chars.len()
                && matches!(
                    chars[j],
                    '.' | '!' | '?' | '…' | '"' | '\'' | '”' | '’' | ')' | ']' | '»'
                )
            {
                j += 1;
            }
            if j >= chars.len() || chars[j].is_whitespace() {
                push_clause(&mut out, &current, Some(t));
                current.clear();
                i = j;
                continue;
            }
        }
        current.push(if c.is_control() || c == '\n' { ' ' } else { c });
        i += 1;
    }
    push_clause(&mut out, &current, None);
    out
}

fn push_clause(out: &mut Vec<Clause>, text: &str, terminator: Option<char>) {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().any(char::is_alphanumeric) {
        out.push(Clause { text, terminator });
    } else if let (Some(last), Some(t)) = (out.last_mut(), terminator) {
        // "Wait... what?!" — a bare terminator strengthens the previous clause.
        last.terminator = Some(t);
    }
}

/// Removes espeak-ng's language-switch markers such as `(fr)` or `(en-us)`,
/// which it emits around words it reads with another language's rules.
pub fn strip_language_markers(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('(') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(')') {
            Some(close)
                if close > 0
                    && close <= 8
                    && after[..close]
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '-') =>
            {
                rest = &after[close + 1..];
            }
            _ => {
                out.push('(');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_clauses_keeping_punctuation() {
        let c = clauses("Hello, world! Is it 3.5? \"Yes.\" Well…\nok");
        let got: Vec<(&str, Option<char>)> =
            c.iter().map(|c| (c.text.as_str(), c.terminator)).collect();
        assert_eq!(
            got,
            vec![
                ("Hello", Some(',')),
                ("world", Some('!')),
                ("Is it 3.5", Some('?')),
                ("\"Yes", Some('.')),
                ("Well", Some('.')),
                ("ok", None),
            ]
        );
        assert!(clauses(" ... !! ").is_empty());
    }

    #[test]
    fn strips_language_markers_only() {
        assert_eq!(
            strip_language_markers("(fr)bɔ̃ʒuʁ(en) wˈɜːld (a b) (x"),
            "bɔ̃ʒuʁ wˈɜːld (a b) (x"
        );
    }
}
