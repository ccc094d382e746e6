//! Context-free grammars over bytes, built in code.

/// A set of bytes (a character class).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteSet([u64; 4]);

impl ByteSet {
    pub const EMPTY: ByteSet = ByteSet([0; 4]);

    pub fn single(b: u8) -> Self {
        Self::range(b, b)
    }

    /// Bytes `lo..=hi`.
    pub fn range(lo: u8, hi: u8) -> Self {
        let mut set = Self::EMPTY;
        for b in lo..=hi {
            set.0[(b >> 6) as usize] |= 1 << (b & 63);
        }
        set
    }

    pub fn of(bytes: &[u8]) -> Self {
        bytes
            .iter()
            .fold(Self::EMPTY, |s, &b| s.union(Self::single(b)))
    }

    pub fn union(self, other: Self) -> Self {
        let mut out = self;
        for (a, b) in out.0.iter_mut().zip(other.0) {
            *a |= b;
        }
        out
    }

    pub fn minus(self, other: Self) -> Self {
        let mut out = self;
        for (a, b) in out.0.iter_mut().zip(other.0) {
            *a &= !b;
        }
        out
    }

    #[inline]
    pub fn contains(&self, b: u8) -> bool {
        self.0[(b >> 6) as usize] & (1 << (b & 63)) != 0
    }
}

/// A rule's index in its grammar.
pub type RuleId = u32;

/// One element of an alternative: a byte from a set, or a whole rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    Bytes(ByteSet),
    Rule(RuleId),
}

/// Builds a grammar rule by rule. Rules may refer to rules defined later
/// (declare first with [`GrammarBuilder::declare`]), which is how recursive
/// schemas (`$ref` to an enclosing definition) are expressed. Grammars must
/// not be left-recursive; the builders in this crate never are.
#[derive(Debug, Default)]
pub struct GrammarBuilder {
    rules: Vec<Option<Vec<Vec<Elem>>>>,
}

impl GrammarBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A rule to be defined later.
    pub fn declare(&mut self) -> RuleId {
        self.rules.push(None);
        (self.rules.len() - 1) as RuleId
    }

    pub fn define(&mut self, id: RuleId, alternatives: Vec<Vec<Elem>>) {
        self.rules[id as usize] = Some(alternatives);
    }

    /// Declares and defines a rule at once.
    pub fn rule(&mut self, alternatives: Vec<Vec<Elem>>) -> RuleId {
        let id = self.declare();
        self.define(id, alternatives);
        id
    }

    /// The bytes of `text`, one element each.
    pub fn literal(text: &str) -> Vec<Elem> {
        text.bytes()
            .map(|b| Elem::Bytes(ByteSet::single(b)))
            .collect()
    }

    /// `item*`: any number of `item`.
    pub fn star(&mut self, item: Vec<Elem>) -> RuleId {
        let id = self.declare();
        let mut more = item;
        more.push(Elem::Rule(id));
        self.define(id, vec![vec![], more]);
        id
    }

    /// `item{min,max}` (`max: None` for no upper bound).
    pub fn repeat(&mut self, item: &[Elem], min: usize, max: Option<usize>) -> Vec<Elem> {
        let mut seq: Vec<Elem> = Vec::new();
        for _ in 0..min {
            seq.extend_from_slice(item);
        }
        match max {
            None => seq.push(Elem::Rule(self.star(item.to_vec()))),
            Some(max) => {
                // Optional tail, nested: opt_k ::= "" | item opt_{k-1}.
                let mut tail: Option<RuleId> = None;
                for _ in min..max {
                    let mut more = item.to_vec();
                    more.extend(tail.map(Elem::Rule));
                    tail = Some(self.rule(vec![vec![], more]));
                }
                seq.extend(tail.map(Elem::Rule));
            }
        }
        seq
    }

    /// Finishes the grammar with `root` as its start rule.
    ///
    /// # Panics
    /// If a declared rule was never defined (a bug in the builder's caller).
    pub fn build(self, root: RuleId) -> Grammar {
        let mut elems = Vec::new();
        let mut alternatives = Vec::with_capacity(self.rules.len());
        for (id, rule) in self.rules.into_iter().enumerate() {
            let rule = rule.unwrap_or_else(|| panic!("grammar rule {id} declared but not defined"));
            let mut starts = Vec::with_capacity(rule.len());
            for alt in rule {
                starts.push(elems.len() as u32);
                elems.extend(alt.into_iter().map(Some));
                elems.push(None);
            }
            alternatives.push(starts);
        }
        Grammar {
            elems,
            alternatives,
            root,
        }
    }
}

/// A compiled grammar: every alternative's elements laid out one after
/// another, each alternative ended by `None`, so a position in the grammar
/// is one index.
#[derive(Debug, Clone)]
pub struct Grammar {
    pub(crate) elems: Vec<Option<Elem>>,
    /// Per rule: where each of its alternatives starts in `elems`.
    pub(crate) alternatives: Vec<Vec<u32>>,
    pub(crate) root: RuleId,
}
