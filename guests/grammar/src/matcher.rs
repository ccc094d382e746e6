//! Following text through a grammar, one byte at a time.

use std::sync::Arc;

use crate::grammar::{Elem, Grammar};

/// Positions of the elements still to match, innermost last. Every
/// position on top of a stack points at a byte set: rule references are
/// expanded as soon as they reach the top. An empty stack has matched the
/// whole grammar.
type Stack = Vec<u32>;

/// Where text stands in a grammar: every way it can continue.
///
/// Cloning is cheap enough to do per byte (a few short vectors); the mask
/// computation in [`crate::Vocab`] relies on it.
#[derive(Debug, Clone)]
pub struct Matcher {
    grammar: Arc<Grammar>,
    stacks: Vec<Stack>,
}

impl Matcher {
    /// At the start of `grammar`'s root rule.
    pub fn new(grammar: Arc<Grammar>) -> Self {
        let mut stacks = Vec::new();
        let root = grammar.root;
        for &start in &grammar.alternatives[root as usize] {
            let mut stack = Vec::new();
            if grammar.elems[start as usize].is_some() {
                stack.push(start);
            }
            expand(&grammar, stack, &mut stacks);
        }
        normalise(&mut stacks);
        Self { grammar, stacks }
    }

    /// The text so far is the whole of a sentence of the grammar.
    pub fn is_complete(&self) -> bool {
        self.stacks.iter().any(Vec::is_empty)
    }

    /// More bytes may follow.
    pub fn can_continue(&self) -> bool {
        self.stacks.iter().any(|s| !s.is_empty())
    }

    /// The text so far is no prefix of any sentence (only after a failed
    /// [`advance`](Self::advance), which leaves the matcher like this).
    pub fn is_dead(&self) -> bool {
        self.stacks.is_empty()
    }

    /// The matcher after one more byte, if the grammar allows it.
    pub fn advanced(&self, byte: u8) -> Option<Matcher> {
        let mut next = Vec::new();
        for stack in &self.stacks {
            let Some(&top) = stack.last() else { continue };
            let Some(Elem::Bytes(set)) = self.grammar.elems[top as usize] else {
                continue;
            };
            if !set.contains(byte) {
                continue;
            }
            let mut rest = stack.clone();
            rest.pop();
            if self.grammar.elems[top as usize + 1].is_some() {
                rest.push(top + 1);
            }
            expand(&self.grammar, rest, &mut next);
        }
        if next.is_empty() {
            return None;
        }
        normalise(&mut next);
        Some(Matcher {
            grammar: self.grammar.clone(),
            stacks: next,
        })
    }

    /// Follows `byte`; false (and the matcher is dead) if it is not allowed.
    pub fn advance(&mut self, byte: u8) -> bool {
        match self.advanced(byte) {
            Some(next) => {
                *self = next;
                true
            }
            None => {
                self.stacks.clear();
                false
            }
        }
    }

    /// The matcher after all of `bytes`, if the grammar allows them.
    pub fn advanced_by(&self, bytes: &[u8]) -> Option<Matcher> {
        let mut m = self.clone();
        for &b in bytes {
            m = m.advanced(b)?;
        }
        Some(m)
    }
}

/// Replaces a rule reference on top of `stack` by each of the rule's
/// alternatives (with what follows the reference underneath), recursively,
/// until every resulting stack has a byte set on top or is empty.
fn expand(grammar: &Grammar, mut stack: Stack, out: &mut Vec<Stack>) {
    let Some(&top) = stack.last() else {
        out.push(stack);
        return;
    };
    match grammar.elems[top as usize] {
        Some(Elem::Bytes(_)) => out.push(stack),
        Some(Elem::Rule(rule)) => {
            stack.pop();
            if grammar.elems[top as usize + 1].is_some() {
                stack.push(top + 1);
            }
            for &start in &grammar.alternatives[rule as usize] {
                let mut next = stack.clone();
                if grammar.elems[start as usize].is_some() {
                    next.push(start);
                }
                expand(grammar, next, out);
            }
        }
        None => unreachable!("stacks never hold the end of an alternative"),
    }
}

/// The same continuation reached twice is followed once: keeps the number
/// of stacks bounded by the grammar, not by the text.
fn normalise(stacks: &mut Vec<Stack>) {
    stacks.sort_unstable();
    stacks.dedup();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::{ByteSet, GrammarBuilder};

    fn matches(m: &Matcher, text: &str) -> Option<Matcher> {
        m.advanced_by(text.as_bytes())
    }

    #[test]
    fn alternatives_and_repetition() {
        // root ::= "ab" | "a" [0-9]*
        let mut g = GrammarBuilder::new();
        let digits = g.star(vec![Elem::Bytes(ByteSet::range(b'0', b'9'))]);
        let mut a_digits = GrammarBuilder::literal("a");
        a_digits.push(Elem::Rule(digits));
        let root = g.rule(vec![GrammarBuilder::literal("ab"), a_digits]);
        let m = Matcher::new(Arc::new(g.build(root)));
        assert!(!m.is_complete());
        let a = matches(&m, "a").unwrap();
        assert!(a.is_complete() && a.can_continue());
        let ab = matches(&m, "ab").unwrap();
        assert!(ab.is_complete() && !ab.can_continue());
        assert!(matches(&m, "a123").unwrap().is_complete());
        assert!(matches(&m, "abc").is_none());
        assert!(matches(&m, "b").is_none());
        let mut dead = m.clone();
        assert!(!dead.advance(b'x'));
        assert!(dead.is_dead());
    }

    #[test]
    fn bounded_repetition() {
        let mut g = GrammarBuilder::new();
        let x = [Elem::Bytes(ByteSet::single(b'x'))];
        let seq = g.repeat(&x, 2, Some(4));
        let root = g.rule(vec![seq]);
        let m = Matcher::new(Arc::new(g.build(root)));
        assert!(!matches(&m, "x").unwrap().is_complete());
        for n in 2..=4 {
            assert!(matches(&m, &"x".repeat(n)).unwrap().is_complete(), "{n}");
        }
        assert!(matches(&m, "xxxxx").is_none());
    }
}
