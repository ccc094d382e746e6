//! Continuous batching: the forward passes of concurrent sequences of one
//! model are gathered into a single [`Llama::forward`].
//!
//! A decode step of a small model reads every weight once for one token: it
//! is bound by memory bandwidth, so four sequences stepping together cost
//! little more than one. Each sequence's thread (a guest's wasi-nn call)
//! queues its step here and blocks; when no batch is running and the next
//! one is gathered (below), one caller leads it: it takes every queued step,
//! runs them as one forward pass on the kernel pool, hands each caller its
//! result and wakes them. No scheduler thread is involved, so a lone sequence
//! runs its steps on its own thread with nothing but an uncontended lock
//! added.
//!
//! Between two steps a sequence's guest does a little work of its own
//! (sampling is done; it writes the token to its stream and asks for the next
//! step). A batch therefore starts only once the sequences of the previous
//! batch have all queued their next step, or [`GATHER`] after the queue fell
//! idle, so that concurrent streams stay in one batch instead of splitting
//! into a batch of the quickest and one of the rest. The step that completes
//! the batch leads it at once, on its own thread: no thread sleeps through
//! the gathering only to be woken when the last step comes (on a VM, waking
//! a thread costs tens of microseconds, on every step of every batch).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crate::llama::{Cache, Llama, Scratch, Segment};
use crate::prefix::Prefixes;

/// How long queued steps wait for the previous batch's sequences to queue
/// their next step. Guest work between steps takes tens of microseconds; a
/// sequence that takes longer (it stopped generating but still holds its
/// context, or it is computing a grammar mask) is left for the next batch.
const GATHER: Duration = Duration::from_micros(1000);

/// At most this many tokens go into one forward pass (one prompt chunk of 256
/// plus the decode steps waiting beside it, with room to spare); a step that
/// would exceed it waits for the next batch. The first queued step always
/// goes, whatever its size.
const MAX_BATCH_TOKENS: usize = 512;

/// A model on the native forward pass, with its queue of pending steps (and
/// the KV caches of finished sequences, kept for prompts that start the same).
pub(crate) struct Batcher {
    llama: Llama,
    prefixes: Prefixes,
    queue: Mutex<Queue>,
    /// A batch finished (its callers' results are in, and a step left out of
    /// it may lead the next one), or a sequence left (the gathering may be
    /// complete): what every queued caller waits for.
    done: Condvar,
}

/// One sequence's queued step. The cache travels with it and comes back with
/// the result, so the leader can borrow every cache of the batch at once.
struct Step {
    ticket: u64,
    sequence: u64,
    cache: Cache,
    tokens: Vec<u32>,
    logits: bool,
}

/// How much batching happened: `steps / batches` is the mean batch size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Sequence steps (a decode step or a prompt chunk) run so far.
    pub steps: u64,
    /// Forward passes they took.
    pub batches: u64,
}

/// The result of a step: the cache, and the logits when asked for.
pub(crate) type Outcome = (Cache, Result<Option<Vec<f32>>>);

#[derive(Default)]
struct Queue {
    pending: Vec<Step>,
    finished: Vec<(u64, Outcome)>,
    /// A batch is running.
    running: bool,
    /// Since when steps have been queued with no batch running: the
    /// gathering ends [`GATHER`] after it.
    idle_since: Option<Instant>,
    next_ticket: u64,
    /// Sequences of the last batch that are still alive: the next batch
    /// waits for them.
    last: Vec<u64>,
    /// Activation buffers, lent to the running leader.
    scratch: Option<Box<Scratch>>,
    /// Steps in the batches run so far, and batches run.
    stepped: u64,
    batches: u64,
}

impl Batcher {
    /// `prefix_budget`: bytes of finished sequences' KV caches to keep.
    pub fn new(llama: Llama, prefix_budget: usize) -> Self {
        Batcher {
            llama,
            prefixes: Prefixes::new(prefix_budget),
            queue: Mutex::new(Queue::default()),
            done: Condvar::new(),
        }
    }

    pub fn llama(&self) -> &Llama {
        &self.llama
    }

    pub fn prefixes(&self) -> &Prefixes {
        &self.prefixes
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `tokens` through the model as the next positions of `sequence`'s
    /// `cache`, batched with whatever other sequences are stepping, and
    /// returns the cache with the logits after the last token (if `logits`).
    pub fn step(&self, sequence: u64, cache: Cache, tokens: Vec<u32>, logits: bool) -> Outcome {
        let mut q = self.lock();
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.pending.push(Step {
            ticket,
            sequence,
            cache,
            tokens,
            logits,
        });
        loop {
            if let Some(i) = q.finished.iter().position(|(t, _)| *t == ticket) {
                return q.finished.swap_remove(i).1;
            }
            if q.running {
                q = self.done.wait(q).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let now = Instant::now();
            let deadline = *q.idle_since.get_or_insert(now) + GATHER;
            if !all_here(&q) && now < deadline {
                q = self
                    .done
                    .wait_timeout(q, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            }
            q.running = true;
            q.idle_since = None;
            let mut steps = take_batch(&mut q.pending);
            let mut scratch = q.scratch.take().unwrap_or_default();
            drop(q);

            let results = self.run(&mut steps, &mut scratch);

            q = self.lock();
            q.scratch = Some(scratch);
            q.last = steps.iter().map(|s| s.sequence).collect();
            q.stepped += steps.len() as u64;
            q.batches += 1;
            for (step, result) in steps.into_iter().zip(results) {
                q.finished.push((step.ticket, (step.cache, result)));
            }
            q.running = false;
            self.done.notify_all();
        }
    }

    /// One forward pass over `steps`; a panic in it fails every step of the
    /// batch instead of leaving their callers waiting forever.
    fn run(&self, steps: &mut [Step], scratch: &mut Scratch) -> Vec<Result<Option<Vec<f32>>>> {
        let mut segments: Vec<Segment<'_>> = steps
            .iter_mut()
            .map(|s| Segment {
                cache: &mut s.cache,
                tokens: &s.tokens,
                logits: s.logits,
            })
            .collect();
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.llama.forward(&mut segments, scratch)
        }));
        match ran {
            Ok(Ok(logits)) => logits.into_iter().map(Ok).collect(),
            Ok(Err(e)) => {
                drop(segments);
                self.fail(steps, &format!("{e:#}"))
            }
            Err(_) => {
                drop(segments);
                *scratch = Scratch::default();
                self.fail(steps, "the forward pass panicked")
            }
        }
    }

    fn fail(&self, steps: &mut [Step], why: &str) -> Vec<Result<Option<Vec<f32>>>> {
        steps
            .iter_mut()
            .map(|s| {
                self.llama.rollback(&mut s.cache);
                Err(anyhow!("{why}"))
            })
            .collect()
    }

    /// A sequence is gone: the next batch must not wait for it.
    pub fn leave(&self, sequence: u64) {
        let mut q = self.lock();
        q.last.retain(|&id| id != sequence);
        self.done.notify_all();
    }

    pub fn stats(&self) -> BatchStats {
        let q = self.lock();
        BatchStats {
            steps: q.stepped,
            batches: q.batches,
        }
    }
}

/// Whether every live sequence of the last batch has queued its next step.
fn all_here(q: &Queue) -> bool {
    q.last
        .iter()
        .all(|id| q.pending.iter().any(|s| s.sequence == *id))
}

/// The queued steps that go into the next batch, oldest first, up to
/// [`MAX_BATCH_TOKENS`] (and at least one).
fn take_batch(pending: &mut Vec<Step>) -> Vec<Step> {
    let mut tokens = 0;
    let mut n = 0;
    for step in pending.iter() {
        if n > 0 && tokens + step.tokens.len() > MAX_BATCH_TOKENS {
            break;
        }
        tokens += step.tokens.len();
        n += 1;
    }
    pending.drain(..n).collect()
}
