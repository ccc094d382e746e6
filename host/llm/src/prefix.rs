//! Reusing the KV caches of earlier sequences for prompts that start the
//! same way.
//!
//! Chat prompts repeat themselves: every request to a model opens with the
//! same template header and system prompt, and each turn of a conversation
//! sends all of the earlier turns again. A sequence's prompt is kept here as
//! soon as it is computed (a copy, so requests that arrive while it generates
//! can reuse it), and when the sequence ends its tokens and KV cache replace
//! that copy (moved, not copied), within a memory budget; a new sequence
//! whose prompt starts with tokens kept here copies that part of the cache,
//! ~23 KB per token for SmolLM2-135M, instead of computing it again.
//!
//! The copy is exact: a position's keys and values depend only on the tokens
//! up to it, and the forward pass computes every token the same way whatever
//! else shares its batch (see [`crate::llama::Llama::forward`]), so a prompt
//! continued from a kept prefix gives bit-identical logits
//! (`tests/prefix.rs`).
//!
//! Prompts that arrive together find nothing kept yet: each would compute
//! the opening they share (a long system prompt) in the same forward pass.
//! So a prompt being computed is marked here until it is kept, and a prompt
//! that shares enough with it waits for it, then continues from its copy:
//! the shared opening is computed once, and the waiting prompts' own tokens
//! follow in one pass together. Enough: at least [`MIN_WAIT_TOKENS`] more
//! tokens than anything kept gives, and no fewer than the marked prompt has
//! beyond them (a short question does not wait for a long document that
//! merely opens with the same system prompt; it goes in that prompt's
//! passes instead).
//!
//! Only the native forward pass keeps prefixes: candle's `quantized_llama`
//! holds its cache inside the model weights' layers.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::llama::{Cache, Llama};

/// The default memory budget of a model's kept prefixes.
pub const DEFAULT_BUDGET: usize = 128 << 20;

/// A prompt waits for one being computed only when that one shares at least
/// this many more tokens with it than any kept sequence does: waiting adds a
/// forward pass (its own tokens no longer go in the other prompt's), which
/// costs about what computing a few tokens does.
const MIN_WAIT_TOKENS: usize = 16;

/// The longest a prompt waits for another to be computed (a prompt computed
/// behind a long queue does not hold the others up without end).
const MAX_WAIT: Duration = Duration::from_secs(10);

/// Counters of prefix reuse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixStats {
    /// Prompts that started from a kept prefix.
    pub hits: u64,
    /// Prompt tokens whose keys and values were copied instead of computed.
    pub reused_tokens: u64,
    /// Sequences kept now, and the memory they take.
    pub entries: u64,
    pub bytes: u64,
    /// Prompts being computed now, which others may wait for.
    pub computing: u64,
}

/// The kept sequences of one model, least recently used dropped first.
pub(crate) struct Prefixes {
    budget: usize,
    kept: Mutex<Kept>,
    /// A prompt being computed is done (kept, or given up): what waiting
    /// prompts wait for.
    computed: Condvar,
}

#[derive(Default)]
struct Kept {
    entries: Vec<Entry>,
    bytes: usize,
    /// Advances at every use: an entry's `used` orders the evictions.
    clock: u64,
    hits: u64,
    reused_tokens: u64,
    /// Prompts being computed now, by sequence id.
    computing: Vec<(u64, Vec<u32>)>,
}

struct Entry {
    /// Shared, so a hit copies the cache outside the lock.
    seq: Arc<KeptSequence>,
    used: u64,
}

struct KeptSequence {
    tokens: Vec<u32>,
    cache: Cache,
    bytes: usize,
}

impl Prefixes {
    /// Keeps up to `budget` bytes of KV caches (0: none).
    pub fn new(budget: usize) -> Self {
        Prefixes {
            budget,
            kept: Mutex::new(Kept::default()),
            computed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The longest kept prefix of `prompt` (short of its last token, whose
    /// logits the caller needs computed), as a new cache, with its length.
    ///
    /// First waits (up to [`MAX_WAIT`]) while a prompt being computed shares
    /// enough of its tokens (see the module's documentation).
    /// Then marks `prompt` as being computed by sequence `id` until
    /// [`Prefixes::computed`], so that prompts arriving meanwhile may wait
    /// for it in turn.
    pub fn lookup(&self, llama: &Llama, id: u64, prompt: &[u32]) -> Option<(usize, Cache)> {
        if self.budget == 0 || prompt.len() < 2 {
            return None;
        }
        let wanted = &prompt[..prompt.len() - 1];
        let deadline = Instant::now() + MAX_WAIT;
        let mut kept = self.lock();
        let best = loop {
            let best = kept
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| (common_prefix(&e.seq.tokens, wanted), i))
                .max()
                .filter(|&(n, _)| n > 0);
            let have = best.map_or(0, |(n, _)| n);
            let worth_waiting = kept.computing.iter().any(|(_, tokens)| {
                let shared = common_prefix(tokens, wanted);
                shared >= have + MIN_WAIT_TOKENS && tokens.len() - shared <= shared - have
            });
            let now = Instant::now();
            if !worth_waiting || now >= deadline {
                break best;
            }
            kept = self
                .computed
                .wait_timeout(kept, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        kept.computing.push((id, prompt.to_vec()));
        let (n, at) = best?;
        kept.hits += 1;
        kept.reused_tokens += n as u64;
        kept.touch(at);
        let seq = kept.entries[at].seq.clone();
        drop(kept);
        Some((n, llama.copy_prefix(&seq.cache, n)))
    }

    /// Sequence `id`'s prompt is no longer being computed (it is kept, or
    /// failed): prompts waiting for it look again.
    pub fn computed(&self, id: u64) {
        let mut kept = self.lock();
        let before = kept.computing.len();
        kept.computing.retain(|(i, _)| *i != id);
        if kept.computing.len() != before {
            self.computed.notify_all();
        }
    }

    /// Keeps a copy of a live sequence's cache (`tokens` its positions so
    /// far), unless a kept sequence starts with all of them already.
    pub fn insert_copy(&self, llama: &Llama, tokens: &[u32], cache: &Cache) {
        if self.budget == 0 || tokens.len() != cache.len() || self.lock().holder(tokens).is_some() {
            return;
        }
        self.insert(tokens.to_vec(), llama.copy_prefix(cache, tokens.len()));
    }

    /// Keeps a finished sequence: `tokens` are the tokens whose keys and
    /// values `cache` holds, in order.
    pub fn insert(&self, tokens: Vec<u32>, mut cache: Cache) {
        if self.budget == 0 || tokens.is_empty() || tokens.len() != cache.len() {
            return;
        }
        cache.shrink_to_fit();
        let bytes = cache.bytes();
        if bytes > self.budget {
            return;
        }
        let mut dropped = Vec::new();
        let mut kept = self.lock();
        if let Some(at) = kept.holder(&tokens) {
            kept.touch(at);
            return;
        }
        // Kept sequences these tokens start with are covered by them.
        let (covered, rest): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut kept.entries)
            .into_iter()
            .partition(|e| tokens.starts_with(&e.seq.tokens));
        kept.entries = rest;
        dropped.extend(covered);
        kept.entries.push(Entry {
            seq: Arc::new(KeptSequence {
                tokens,
                cache,
                bytes,
            }),
            used: 0,
        });
        let newest = kept.entries.len() - 1;
        kept.touch(newest);
        kept.bytes = kept.entries.iter().map(|e| e.seq.bytes).sum();
        while kept.bytes > self.budget {
            let oldest = (0..kept.entries.len())
                .min_by_key(|&i| kept.entries[i].used)
                .expect("over budget, so not empty");
            let e = kept.entries.swap_remove(oldest);
            kept.bytes -= e.seq.bytes;
            dropped.push(e);
        }
        // The caches are freed after the lock is released.
        drop(kept);
        drop(dropped);
    }

    pub fn stats(&self) -> PrefixStats {
        let kept = self.lock();
        PrefixStats {
            hits: kept.hits,
            reused_tokens: kept.reused_tokens,
            entries: kept.entries.len() as u64,
            bytes: kept.bytes as u64,
            computing: kept.computing.len() as u64,
        }
    }
}

impl Kept {
    /// A kept sequence that starts with all of `tokens` (and so has them).
    fn holder(&self, tokens: &[u32]) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.seq.tokens.starts_with(tokens))
    }

    /// Entry `at` is the most recently used now.
    fn touch(&mut self, at: usize) {
        self.clock += 1;
        self.entries[at].used = self.clock;
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefix_counts_equal_leading_tokens() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert_eq!(common_prefix(&[1, 2], &[1, 2, 3]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
        assert_eq!(common_prefix(&[7], &[1]), 0);
    }

    /// One position of these caches: 2 layers × (K + V) × 32 values × 2
    /// bytes (a whole cache line of each: caches are held in lines).
    const POSITION: usize = 2 * 2 * 32 * 2;

    fn keep(p: &Prefixes, tokens: &[u32]) {
        p.insert(tokens.to_vec(), Cache::zeros(2, tokens.len(), 32));
    }

    fn kept(p: &Prefixes) -> Vec<Vec<u32>> {
        let mut all: Vec<_> = p
            .lock()
            .entries
            .iter()
            .map(|e| e.seq.tokens.clone())
            .collect();
        all.sort();
        all
    }

    #[test]
    fn a_sequence_covers_the_prefixes_it_extends() {
        let p = Prefixes::new(1 << 20);
        keep(&p, &[1, 2, 3]);
        keep(&p, &[1, 2, 3, 4, 5]);
        assert_eq!(kept(&p), [vec![1, 2, 3, 4, 5]]);
        // Already held by the longer one.
        keep(&p, &[1, 2]);
        keep(&p, &[1, 2, 9]);
        assert_eq!(kept(&p), [vec![1, 2, 3, 4, 5], vec![1, 2, 9]]);
        let stats = p.stats();
        assert_eq!((stats.entries, stats.bytes), (2, 8 * POSITION as u64));
    }

    #[test]
    fn the_least_recently_used_go_first_when_over_budget() {
        let p = Prefixes::new(10 * POSITION);
        keep(&p, &[1, 1, 1, 1]);
        keep(&p, &[2, 2, 2, 2]);
        // Using the first makes the second the oldest.
        p.lock().touch(0);
        keep(&p, &[3, 3, 3, 3]);
        assert_eq!(kept(&p), [vec![1, 1, 1, 1], vec![3, 3, 3, 3]]);
        assert!(p.stats().bytes <= 10 * POSITION as u64);
        // Larger than the whole budget: not kept, nothing dropped for it.
        keep(&p, &[4; 11]);
        assert_eq!(kept(&p), [vec![1, 1, 1, 1], vec![3, 3, 3, 3]]);
    }

    #[test]
    fn no_budget_keeps_nothing() {
        let p = Prefixes::new(0);
        keep(&p, &[1, 2, 3]);
        assert_eq!(p.stats(), PrefixStats::default());
    }
}
