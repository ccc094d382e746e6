//! A model's vocabulary, arranged for computing token masks.

use crate::Matcher;

/// Every token's bytes, with the non-empty ones in sorted order so that
/// tokens sharing a prefix are neighbours.
#[derive(Debug, Clone)]
pub struct Vocab {
    bytes: Vec<u8>,
    /// Token `i` is `bytes[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<u32>,
    /// Ids of tokens with text, sorted by their bytes.
    order: Vec<u32>,
    /// `shared[j]`: bytes `order[j]` has in common with `order[j - 1]`.
    shared: Vec<u32>,
}

impl Vocab {
    /// From the `vocab` compute of wit/nn-protocol.md. `None` if `offsets`
    /// do not describe `bytes`.
    pub fn new(bytes: Vec<u8>, offsets: Vec<u32>) -> Option<Self> {
        if offsets.is_empty()
            || offsets.windows(2).any(|w| w[0] > w[1])
            || *offsets.last()? as usize != bytes.len()
        {
            return None;
        }
        let token =
            |id: u32| &bytes[offsets[id as usize] as usize..offsets[id as usize + 1] as usize];
        let mut order: Vec<u32> = (0..offsets.len() as u32 - 1)
            .filter(|&id| !token(id).is_empty())
            .collect();
        order.sort_unstable_by(|&a, &b| token(a).cmp(token(b)));
        let mut shared = vec![0; order.len()];
        for j in 1..order.len() {
            let (a, b) = (token(order[j - 1]), token(order[j]));
            shared[j] = a.iter().zip(b).take_while(|(x, y)| x == y).count() as u32;
        }
        Some(Self {
            bytes,
            offsets,
            order,
            shared,
        })
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token `id`'s bytes (empty for control tokens and unknown ids).
    pub fn token(&self, id: u32) -> &[u8] {
        let id = id as usize;
        match (self.offsets.get(id), self.offsets.get(id + 1)) {
            (Some(&a), Some(&b)) => &self.bytes[a as usize..b as usize],
            _ => &[],
        }
    }

    /// The tokens `matcher` can follow with, as a bit mask (`⌈len / 8⌉`
    /// bytes, bit `i % 8` of byte `i / 8` for token `i`), plus `end_ids`
    /// (end-of-sequence tokens) when the text is already complete.
    ///
    /// Walks the sorted vocabulary keeping the matcher after each prefix of
    /// the current token; a rejected prefix skips every following token
    /// that shares it.
    pub fn mask(&self, matcher: &Matcher, end_ids: &[u32]) -> Vec<u8> {
        let mut mask = vec![0u8; self.len().div_ceil(8)];
        let mut allow = |id: u32| mask[id as usize / 8] |= 1 << (id % 8);
        if matcher.is_complete() {
            end_ids
                .iter()
                .filter(|&&id| (id as usize) < self.len())
                .for_each(|&id| allow(id));
        }
        // states[d]: the matcher after the first d bytes of the current token.
        let mut states: Vec<Matcher> = vec![matcher.clone()];
        let mut j = 0;
        while j < self.order.len() {
            let id = self.order[j];
            let token = self.token(id);
            states.truncate((self.shared[j] as usize + 1).min(states.len()));
            let mut dead_at = None;
            for d in states.len() - 1..token.len() {
                match states[d].advanced(token[d]) {
                    Some(next) => states.push(next),
                    None => {
                        dead_at = Some(d);
                        break;
                    }
                }
            }
            j += 1;
            match dead_at {
                None => allow(id),
                // Every following token with the same first d + 1 bytes is
                // rejected at the same byte.
                Some(d) => {
                    while j < self.order.len() && self.shared[j] as usize > d {
                        j += 1;
                    }
                }
            }
        }
        mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::any_json_object;
    use std::sync::Arc;

    fn vocab(tokens: &[&str]) -> Vocab {
        let mut bytes = Vec::new();
        let mut offsets = vec![0];
        for t in tokens {
            bytes.extend_from_slice(t.as_bytes());
            offsets.push(bytes.len() as u32);
        }
        Vocab::new(bytes, offsets).unwrap()
    }

    fn allowed(mask: &[u8], v: &Vocab) -> Vec<u32> {
        (0..v.len() as u32)
            .filter(|&i| mask[i as usize / 8] & (1 << (i % 8)) != 0)
            .collect()
    }

    #[test]
    fn mask_matches_token_by_token_checks() {
        let tokens = [
            "", "{", "{\"", "{}", "}", "\"", "\"a", "a", "ab", ":", " ", "\n", "1", "12", "x",
            "\":", ",", "}\n", "{\"a\":", "[", "true", "tr", "\u{e9}",
        ];
        let v = vocab(&tokens);
        let g = Arc::new(any_json_object());
        for prefix in [
            "",
            "{",
            "{\"a",
            "{\"a\"",
            "{\"a\":",
            "{\"a\": 1",
            "{\"a\":tr",
            "{}",
        ] {
            let m = Matcher::new(g.clone())
                .advanced_by(prefix.as_bytes())
                .unwrap();
            let mask = v.mask(&m, &[0]);
            let expected: Vec<u32> = (0..tokens.len() as u32)
                .filter(|&i| {
                    if tokens[i as usize].is_empty() {
                        m.is_complete()
                    } else {
                        m.advanced_by(tokens[i as usize].as_bytes()).is_some()
                    }
                })
                .collect();
            assert_eq!(allowed(&mask, &v), expected, "after {prefix:?}");
        }
        assert!(Vocab::new(vec![1, 2], vec![0, 3]).is_none());
    }
}
