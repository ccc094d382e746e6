//! Written text → text to be read aloud, split into sentences.
//!
//! The voice (espeak-ng underneath) reads plain words well but guesses at
//! written forms, so numbers, money, percentages, ordinals, dates, times,
//! common abbreviations and symbols are spelled out here first. Sentences are
//! then synthesised one at a time, which is what lets audio stream.

use crate::numbers::{cardinal, money, number, ordinal, year};

/// Longest sentence sent to the voice, in characters; longer ones are cut at
/// a clause (or word) boundary. VITS cost grows with length, and a shorter
/// first piece starts streaming sooner.
pub const MAX_SENTENCE_CHARS: usize = 300;

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Abbreviations written with a period, and how to read them. `true`: the
/// period belongs to the abbreviation (a title, never ends a sentence).
const ABBREVIATIONS: &[(&str, &str, bool)] = &[
    ("Mr", "Mister", true),
    ("Mrs", "Missus", true),
    ("Ms", "Miz", true),
    ("Dr", "Doctor", true),
    ("Prof", "Professor", true),
    ("St", "Saint", true),
    ("Jr", "Junior", false),
    ("Sr", "Senior", false),
    ("vs", "versus", true),
    ("etc", "et cetera", false),
    ("e.g", "for example", true),
    ("i.e", "that is", true),
    ("approx", "approximately", true),
    ("Mt", "Mount", true),
    ("Inc", "Incorporated", false),
    ("Ltd", "Limited", false),
    ("Co", "Company", false),
    ("Jan", "January", true),
    ("Feb", "February", true),
    ("Mar", "March", true),
    ("Apr", "April", true),
    ("Aug", "August", true),
    ("Sep", "September", true),
    ("Sept", "September", true),
    ("Oct", "October", true),
    ("Nov", "November", true),
    ("Dec", "December", true),
];

/// Spells out what the voice would misread; see the module docs.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    // Keep line breaks (they separate sentences), normalise other spacing.
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut first = true;
        let mut j = 0;
        while j < words.len() {
            // "No. 5" → "number five".
            let w = words[j];
            let bare = w.trim_start_matches(LEADING);
            let next_is_number = words
                .get(j + 1)
                .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()));
            let word = if matches!(bare, "No." | "no." | "Nr.") && next_is_number {
                format!("{}number", &w[..w.len() - bare.len()])
            } else {
                word(w)
            };
            j += 1;
            if word.is_empty() {
                continue;
            }
            if !first {
                out.push(' ');
            }
            first = false;
            out.push_str(&word);
        }
    }
    out
}

const LEADING: &[char] = &['"', '\'', '(', '[', '{', '“', '‘', '«', '¿', '¡'];
const TRAILING: &[char] = &[
    '"', '\'', ')', ']', '}', '”', '’', '»', '.', ',', ';', ':', '!', '?', '…',
];

/// One whitespace-separated word, with its surrounding punctuation kept.
fn word(w: &str) -> String {
    let core_start = w.find(|c| !LEADING.contains(&c)).unwrap_or(w.len());
    let lead = &w[..core_start];
    let rest = &w[core_start..];
    let core_end = rest
        .rfind(|c| !TRAILING.contains(&c))
        .map_or(0, |i| i + rest[i..].chars().next().unwrap().len_utf8());
    let (core, trail) = rest.split_at(core_end);
    if core.is_empty() {
        return w.to_string();
    }
    // Abbreviations: the period after them is part of the word.
    if let Some(after) = trail.strip_prefix('.') {
        if let Some((_, spoken, title)) = ABBREVIATIONS.iter().find(|(a, _, _)| *a == core) {
            let trail = if *title { after } else { trail };
            return format!("{lead}{spoken}{trail}");
        }
    }
    let spoken = core_words(core).unwrap_or_else(|| symbols(core));
    format!("{lead}{spoken}{trail}")
}

/// A word that is a number, money, a date, a time… spelled out.
fn core_words(core: &str) -> Option<String> {
    // Money: $5, $1,234.56, €3, £2.50, 5€.
    for (sign, unit, sub) in [
        ('$', ("dollar", "dollars"), ("cent", "cents")),
        ('€', ("euro", "euros"), ("cent", "cents")),
        ('£', ("pound", "pounds"), ("penny", "pence")),
        ('¥', ("yen", "yen"), ("sen", "sen")),
    ] {
        if let Some(amount) = core.strip_prefix(sign).or_else(|| core.strip_suffix(sign)) {
            if let Some(words) = money(amount, unit, sub) {
                return Some(words);
            }
        }
    }
    if let Some(n) = core.strip_suffix('%') {
        return number(n).map(|w| format!("{w} percent"));
    }
    // Ordinals: 1st 2nd 3rd 4th 21st.
    for suffix in ["st", "nd", "rd", "th"] {
        if let Some(n) = core.strip_suffix(suffix) {
            if !n.is_empty() && n.len() <= 9 && n.chars().all(|c| c.is_ascii_digit()) {
                return Some(ordinal(n.parse().ok()?));
            }
        }
    }
    if let Some(d) = date(core) {
        return Some(d);
    }
    if let Some(t) = time(core) {
        return Some(t);
    }
    // A lone four-digit integer in year range reads as a year.
    if core.len() == 4 && core.chars().all(|c| c.is_ascii_digit()) {
        let n: u64 = core.parse().ok()?;
        if (1100..=2099).contains(&n) {
            return Some(year(n));
        }
    }
    if let Some(words) = number(core) {
        return Some(words);
    }
    // Decades: 1990s, '90s.
    if let Some(n) = core.strip_suffix('s') {
        if n.len() == 4 && n.ends_with('0') && n.chars().all(|c| c.is_ascii_digit()) {
            let y = year(n.parse().ok()?);
            return Some(plural_decade(&y));
        }
    }
    // Ranges and scores: 1990-2000, 3-2.
    if let Some((a, b)) = core.split_once(['-', '–']) {
        if let (Some(a), Some(b)) = (core_words(a), core_words(b)) {
            if a.chars().all(|c| !c.is_ascii_digit()) && b.chars().all(|c| !c.is_ascii_digit()) {
                return Some(format!("{a} to {b}"));
            }
        }
    }
    None
}

fn plural_decade(y: &str) -> String {
    match y.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{y}s"),
    }
}

/// ISO `2024-03-15` or US `3/15/2024` → "March fifteenth, twenty twenty-four".
fn date(core: &str) -> Option<String> {
    let parts: Vec<&str> = core.split(['-', '/']).collect();
    if parts.len() != 3
        || !parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    let nums: Vec<u64> = parts
        .iter()
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (y, m, d) = if core.contains('-') && parts[0].len() == 4 {
        (nums[0], nums[1], nums[2])
    } else if core.contains('/') && parts[2].len() == 4 {
        (nums[2], nums[0], nums[1])
    } else {
        return None;
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(format!(
        "{} {}, {}",
        MONTHS[m as usize - 1],
        ordinal(d),
        year(y)
    ))
}

/// `3:05` → "three oh five", `14:30` → "fourteen thirty", `3:00pm` → "three p m".
fn time(core: &str) -> Option<String> {
    let lower = core.to_ascii_lowercase();
    let (clock, suffix) = if let Some(c) = lower.strip_suffix("pm") {
        (c, " p m")
    } else if let Some(c) = lower.strip_suffix("am") {
        (c, " a m")
    } else {
        (lower.as_str(), "")
    };
    if clock.is_empty() {
        return None;
    }
    let (h, m) = match clock.split_once(':') {
        Some((h, m)) => (h, Some(m)),
        None if !suffix.is_empty() => (clock, None),
        None => return None,
    };
    if h.is_empty() || h.len() > 2 || !h.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let hour: u64 = h.parse().ok()?;
    if hour > 24 {
        return None;
    }
    let minutes = match m {
        None => String::new(),
        Some(m) if m.len() == 2 && m.chars().all(|c| c.is_ascii_digit()) => {
            let min: u64 = m.parse().ok()?;
            match min {
                0 if suffix.is_empty() => " o'clock".to_string(),
                0 => String::new(),
                1..=9 => format!(" oh {}", cardinal(min)),
                10..=59 => format!(" {}", cardinal(min)),
                _ => return None,
            }
        }
        Some(_) => return None,
    };
    Some(format!("{}{minutes}{suffix}", cardinal(hour)))
}

/// Symbols inside a word: `&` "and", `+` "plus", `@` "at", `=` "equals",
/// and digit runs inside other words ("MP3" → "MP three").
fn symbols(core: &str) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if !digits.is_empty() {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
            out.push_str(&number(digits).unwrap_or_else(|| digits.clone()));
            out.push(' ');
            digits.clear();
        }
    };
    for c in core.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        flush(&mut digits, &mut out);
        let spoken = match c {
            '&' => Some("and"),
            '+' => Some("plus"),
            '@' => Some("at"),
            '=' => Some("equals"),
            '#' if core.len() > 1 => Some("number"),
            '*' | '_' | '~' | '`' | '|' | '^' | '<' | '>' | '\\' => Some(""),
            _ => None,
        };
        match spoken {
            Some(w) => {
                if !w.is_empty() {
                    if !out.is_empty() && !out.ends_with(' ') {
                        out.push(' ');
                    }
                    out.push_str(w);
                    out.push(' ');
                }
            }
            None => out.push(c),
        }
    }
    flush(&mut digits, &mut out);
    let trimmed = out.split_whitespace().collect::<Vec<_>>().join(" ");
    trimmed
}

/// Splits normalised text into sentences to synthesise one at a time: at
/// `.`, `!`, `?` or `…` followed by a space (closing quotes stay with their
/// sentence), at line breaks, and, for very long sentences, at a clause or
/// word boundary before [`MAX_SENTENCE_CHARS`].
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.split('\n') {
        let chars: Vec<char> = line.chars().collect();
        let mut start = 0;
        let mut i = 0;
        while i < chars.len() {
            if matches!(chars[i], '.' | '!' | '?' | '…') {
                let mut j = i + 1;
                while j < chars.len()
                    && matches!(
                        chars[j],
                        '.' | '!' | '?' | '…' | '"' | '\'' | '”' | '’' | ')' | '»'
                    )
                {
                    j += 1;
                }
                if j >= chars.len() || chars[j].is_whitespace() {
                    push_sentence(&mut out, &chars[start..j]);
                    start = j;
                    i = j;
                    continue;
                }
            }
            i += 1;
        }
        push_sentence(&mut out, &chars[start..]);
    }
    out
}

fn push_sentence(out: &mut Vec<String>, chars: &[char]) {
    let s: String = chars.iter().collect();
    let mut s = s.trim().to_string();
    while s.chars().count() > MAX_SENTENCE_CHARS {
        let cut = cut_point(&s);
        let (head, tail) = s.split_at(cut);
        push_speakable(out, head.trim());
        s = tail.trim().to_string();
    }
    push_speakable(out, &s);
}

/// Where to cut an over-long sentence: after the last clause punctuation
/// before the limit, else the last space, else at the limit.
fn cut_point(s: &str) -> usize {
    let limit = s
        .char_indices()
        .nth(MAX_SENTENCE_CHARS)
        .map_or(s.len(), |(i, _)| i);
    let head = &s[..limit];
    head.rfind([',', ';', ':'])
        .map(|i| i + 1)
        .filter(|i| *i > limit / 3)
        .or_else(|| head.rfind(' ').filter(|i| *i > 0))
        .unwrap_or(limit)
}

fn push_speakable(out: &mut Vec<String>, s: &str) {
    if s.chars().any(char::is_alphanumeric) {
        out.push(s.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spells_out_written_forms() {
        let cases = [
            ("It costs $5.50.", "It costs five dollars and fifty cents."),
            ("Mr. Smith paid €1,200 on 2024-03-15.", "Mister Smith paid one thousand two hundred euros on March fifteenth, twenty twenty-four."),
            ("We grew 12% in the 1990s!", "We grew twelve percent in the nineteen nineties!"),
            ("Meet at 3:30pm, not 4:00.", "Meet at three thirty p m, not four o'clock."),
            ("The 21st time, (No. 7) & more", "The twenty-first time, (number seven) and more"),
            ("Pi is 3.14159; -2 is negative.", "Pi is three point one four one five nine; minus two is negative."),
            ("Dr. Who, etc. In 1905 it was 1,000,000 people", "Doctor Who, et cetera. In nineteen oh five it was one million people"),
            ("Score: 3-2 on 12/25/2023.", "Score: three to two on December twenty-fifth, twenty twenty-three."),
            ("MP3 files", "MP three files"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), want, "{input:?}");
        }
    }

    #[test]
    fn splits_sentences() {
        let s =
            sentences("Hello there. How are you? \"Fine!\" she said.\nNew line… and more\n\n ... ");
        assert_eq!(
            s,
            vec![
                "Hello there.",
                "How are you?",
                "\"Fine!\"",
                "she said.",
                "New line…",
                "and more",
            ]
        );
        assert_eq!(sentences("3.5 is a number."), vec!["3.5 is a number."]);
    }

    #[test]
    fn cuts_long_sentences_at_clauses_then_words() {
        let clause = "word ".repeat(50);
        let long = format!("{}, {}", clause.trim(), clause.trim());
        let s = sentences(&long);
        assert_eq!(s.len(), 2, "{s:?}");
        assert!(s[0].ends_with(','));
        let words = "word ".repeat(200);
        for piece in sentences(&words) {
            assert!(piece.chars().count() <= MAX_SENTENCE_CHARS);
            assert!(piece.starts_with("word") && piece.ends_with("word"));
        }
    }
}
