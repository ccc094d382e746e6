//! A small persistent worker pool for the forward pass.
//!
//! A 135M model runs a few hundred matmuls per token, each well under a
//! millisecond, so threads are started once and a job is handed to them by
//! bumping an epoch counter they spin on (briefly; then they sleep on a
//! condvar). The calling thread does part 0 of every job itself.
//!
//! One job runs at a time: a caller that finds the pool busy (another
//! sequence decoding concurrently) runs its job alone on its own thread, so
//! parallel requests still use the cores side by side.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

type Job = dyn Fn(usize, usize) + Sync;

/// How long an idle worker polls for the next job before it sleeps.
const SPIN: Duration = Duration::from_micros(300);
/// Busy-wait iterations before a waiting thread starts yielding its CPU
/// instead (so an oversubscribed machine still makes progress).
const SPIN_ITERS: u32 = 512;

struct Shared {
    epoch: AtomicU64,
    /// The current job; written before `epoch` is bumped, read after.
    job: UnsafeCell<Option<&'static Job>>,
    pending: AtomicUsize,
    panicked: AtomicBool,
    sleepers: AtomicUsize,
    /// Idle workers sleep at once instead of spinning ([`Pool::rest`]),
    /// until the next job.
    resting: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is only written by the one thread holding `Pool::busy`, while
// no worker reads it (all have finished the previous job: `pending == 0`).
unsafe impl Sync for Shared {}

pub struct Pool {
    shared: Arc<Shared>,
    threads: usize,
    busy: AtomicBool,
}

/// The process-wide pool: `SANDPIPER_THREADS` threads, or one per CPU.
pub fn global() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::env::var("SANDPIPER_THREADS")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Pool::new(n)
    })
}

impl Pool {
    /// A pool running jobs on `threads` threads, the caller's included.
    pub fn new(threads: usize) -> Pool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            resting: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        for part in 1..threads {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("sandpiper-llm-{part}"))
                .spawn(move || worker(&shared, part, threads))
                .expect("starting a kernel worker thread");
        }
        Pool {
            shared,
            threads,
            busy: AtomicBool::new(false),
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Lets the idle workers sleep now instead of spinning for the next job.
    /// They spin up to [`SPIN`] after a job so that the jobs of one forward
    /// pass follow each other without a wake-up; that is wasted, and worse,
    /// when the caller hands the CPUs to other work before its next pass. A
    /// server's guest writing the token just sampled wakes the HTTP thread
    /// that sends it, which then has to take a CPU from a busy thread (2
    /// vCPUs: streamed decode 1.4% faster resting, 200 alternated
    /// pairs of two servers). The next [`run`](Self::run)
    /// wakes them (tens of µs on a VM: not worth it between the jobs of a pass).
    pub fn rest(&self) {
        self.shared.resting.store(true, Ordering::Relaxed);
    }

    /// Runs `job(part, parts)` for every part, in parallel, and returns when
    /// all are done. `parts` is the pool's thread count, or 1 when the pool
    /// is busy with another caller's job.
    pub fn run(&self, job: &(dyn Fn(usize, usize) + Sync + '_)) {
        if self.threads == 1
            || self
                .busy
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            job(0, 1);
            return;
        }
        struct Release<'a>(&'a AtomicBool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _release = Release(&self.busy);
        let s = &*self.shared;
        // SAFETY: the workers are idle (the previous job finished) and the
        // job outlives its use: we wait below until every worker is done.
        unsafe {
            *s.job.get() = Some(std::mem::transmute::<
                &(dyn Fn(usize, usize) + Sync + '_),
                &'static Job,
            >(job));
        }
        s.resting.store(false, Ordering::Relaxed);
        s.pending.store(self.threads - 1, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| job(0, self.threads)));
        let mut spins = 0u32;
        while s.pending.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < SPIN_ITERS {
                std::hint::spin_loop();
            } else {
                // A worker may have been preempted (a busy machine): let it run.
                std::thread::yield_now();
            }
        }
        if let Err(e) = mine {
            std::panic::resume_unwind(e);
        }
        if s.panicked.swap(false, Ordering::Relaxed) {
            panic!("a kernel worker thread panicked");
        }
    }
}

fn worker(s: &Shared, part: usize, parts: usize) {
    let mut seen = 0u64;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            let resting = s.resting.load(Ordering::Relaxed);
            spins = spins.saturating_add(1);
            if spins < SPIN_ITERS && !resting {
                std::hint::spin_loop();
                continue;
            }
            if start.elapsed() < SPIN && !resting {
                std::thread::yield_now();
                continue;
            }
            let mut g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            while s.epoch.load(Ordering::SeqCst) == seen {
                g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        // SAFETY: written before the epoch we just observed (Acquire).
        let job = unsafe { (*s.job.get()).expect("a job comes with each epoch") };
        if catch_unwind(AssertUnwindSafe(|| job(part, parts))).is_err() {
            s.panicked.store(true, Ordering::Relaxed);
        }
        s.pending.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_once_per_job() {
        let pool = Pool::new(3);
        for _ in 0..1000 {
            let hits: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
            pool.run(&|part, parts| {
                assert_eq!(parts, 3);
                hits[part].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
        // After the workers have gone to sleep, a job still wakes them.
        std::thread::sleep(Duration::from_millis(5));
        let count = AtomicUsize::new(0);
        pool.run(&|_, _| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_rested_pool_runs_every_part_of_the_next_job() {
        let pool = Pool::new(3);
        for _ in 0..200 {
            pool.rest();
            let hits: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
            pool.run(&|part, _| {
                hits[part].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn a_busy_pool_runs_the_job_inline() {
        let pool = Pool::new(2);
        let inner_parts = AtomicUsize::new(0);
        pool.run(&|part, _| {
            if part == 0 {
                pool.run(&|_, parts| {
                    inner_parts.fetch_max(parts, Ordering::Relaxed);
                });
            }
        });
        assert_eq!(inner_parts.load(Ordering::Relaxed), 1);
    }
}
