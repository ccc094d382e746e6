//! Stop sequences over streamed text.
//!
//! OpenAI's contract: generation ends at the first stop sequence and neither
//! the stop text nor anything after it is returned. When streaming, a stop
//! sequence can straddle two or more tokens (`"\n"` then `"\n"` for a `"\n\n"`
//! stop), so text that might be the start of a stop sequence is held back
//! until the following text proves it is or is not one.

/// What [`StopMatcher::push`] decided for the text it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// Text that is now known not to be part of a stop sequence.
    pub emit: String,
    /// A stop sequence was found; `emit` is everything before it and
    /// generation must end.
    pub stopped: bool,
}

/// Finds stop sequences in text that arrives piece by piece.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not yet emitted: a suffix that is a prefix of some
    /// stop sequence.
    held: String,
}

impl StopMatcher {
    /// `stops` should be non-empty strings; empty ones are ignored.
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Adds text; returns what can be emitted now.
    pub fn push(&mut self, text: &str) -> Pushed {
        self.held.push_str(text);
        if let Some(at) = self.earliest_stop() {
            let emit = self.held[..at].to_string();
            self.held.clear();
            return Pushed {
                emit,
                stopped: true,
            };
        }
        let keep = self.longest_partial_suffix();
        let emit = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        Pushed {
            emit,
            stopped: false,
        }
    }

    /// Ends the text without a stop: whatever was held back was not a stop
    /// sequence after all and is returned.
    pub fn finish(self) -> String {
        self.held
    }

    /// Byte offset of the first stop sequence occurrence in `held`.
    fn earliest_stop(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
    }

    /// Length of the longest suffix of `held` that is a proper prefix of a
    /// stop sequence (0 if none). Only whole characters are considered, so
    /// the split point is always a char boundary.
    fn longest_partial_suffix(&self) -> usize {
        let held = &self.held;
        let mut best = 0;
        for stop in &self.stops {
            // Candidate lengths, longest first, that are char boundaries in both.
            let max = (stop.len() - 1).min(held.len());
            for len in (best + 1..=max).rev() {
                let start = held.len() - len;
                if held.is_char_boundary(start)
                    && stop.is_char_boundary(len)
                    && stop.as_bytes()[..len] == held.as_bytes()[start..]
                {
                    best = len;
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(stops: &[&str]) -> StopMatcher {
        StopMatcher::new(&stops.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    /// Feeds pieces and returns (emitted text, stopped).
    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = matcher(stops);
        let mut out = String::new();
        for p in pieces {
            let r = m.push(p);
            out.push_str(&r.emit);
            if r.stopped {
                return (out, true);
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn no_stops_passes_everything() {
        let mut m = matcher(&[]);
        assert_eq!(m.push("abc").emit, "abc");
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }

    #[test]
    fn stop_inside_one_piece_cuts_it() {
        assert_eq!(run(&["END"], &["abcENDxyz"]), ("abc".into(), true));
    }

    #[test]
    fn stop_straddling_pieces_is_held_then_dropped() {
        let mut m = matcher(&["\n\n"]);
        assert_eq!(
            m.push("Hi\n"),
            Pushed {
                emit: "Hi".into(),
                stopped: false
            }
        );
        assert_eq!(
            m.push("\nmore"),
            Pushed {
                emit: "".into(),
                stopped: true
            }
        );
    }

    #[test]
    fn stop_across_three_pieces() {
        assert_eq!(run(&["STOP"], &["aS", "T", "OPb"]), ("a".into(), true));
        assert_eq!(run(&["STOP"], &["aS", "T", "Ob"]), ("aSTOb".into(), false));
    }

    #[test]
    fn false_alarm_is_released() {
        let mut m = matcher(&["END"]);
        assert_eq!(m.push("xE").emit, "x");
        assert_eq!(m.push("N").emit, "");
        assert_eq!(m.push("x").emit, "ENx");
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn held_prefix_released_at_finish() {
        assert_eq!(run(&["END"], &["abcEN"]), ("abcEN".into(), false));
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        assert_eq!(run(&["xyz", "b"], &["abxyz"]), ("a".into(), true));
        assert_eq!(run(&["abc", "bcd"], &["zab", "cd"]), ("z".into(), true));
    }

    #[test]
    fn multibyte_stop_and_text() {
        assert_eq!(run(&["→é"], &["añ→", "é!"]), ("añ".into(), true));
        let mut m = matcher(&["é"]);
        assert_eq!(m.push("ü").emit, "ü");
    }

    #[test]
    fn overlapping_prefix_keeps_longest() {
        // "aab" with stop "aab": after "aa" both "a" and "aa" are prefixes.
        assert_eq!(run(&["aab"], &["xa", "a", "b"]), ("x".into(), true));
        assert_eq!(
            run(&["aab"], &["xa", "a", "a", "c"]),
            ("xaaac".into(), false)
        );
    }
}
