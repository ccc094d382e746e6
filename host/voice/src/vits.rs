//! A Piper VITS graph on ONNX Runtime, as a small pool of sessions.
//!
//! `ort`'s `Session::run` takes `&mut self`, so parallel requests each need a
//! session of their own. Sessions are made on demand, up to `max`, and reused;
//! each runs on one intra-op thread (the measured sweet spot on 2 cores:
//! requests run side by side instead of fighting over the same cores).

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use anyhow::{anyhow, Context, Result};
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::Tensor;

pub(crate) struct Vits {
    env: Environment,
    model: PathBuf,
    max: usize,
    pool: Mutex<PoolState>,
    returned: Condvar,
    /// Whether the graph takes a speaker id (`sid`).
    multi_speaker: bool,
}

struct PoolState {
    idle: Vec<Session>,
    live: usize,
}

impl Vits {
    /// Loads one session now (so a bad model fails at start-up); up to `max`
    /// exist at once.
    pub fn load(env: Environment, model: &Path, max: usize) -> Result<Self> {
        let first = new_session(&env, model)?;
        let multi_speaker = first.inputs().iter().any(|i| i.name() == "sid");
        for name in ["input", "input_lengths", "scales"] {
            if !first.inputs().iter().any(|i| i.name() == name) {
                anyhow::bail!(
                    "{} is not a Piper VITS voice: it has no `{name}` input",
                    model.display()
                );
            }
        }
        Ok(Vits {
            env,
            model: model.to_owned(),
            max: max.max(1),
            pool: Mutex::new(PoolState {
                idle: vec![first],
                live: 1,
            }),
            returned: Condvar::new(),
            multi_speaker,
        })
    }

    /// Runs the graph: phoneme ids and `[noise_scale, length_scale, noise_w]`
    /// → mono f32 samples.
    pub fn infer(&self, ids: &[i64], scales: [f32; 3]) -> Result<Vec<f32>> {
        let mut session = self.checkout()?;
        let result = run(
            session.0.as_mut().expect("present"),
            ids,
            scales,
            self.multi_speaker,
        );
        if result.is_err() {
            // Do not reuse a session that failed mid-run.
            session.discard();
        }
        result
    }

    fn checkout(&self) -> Result<Lease<'_>> {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(session) = pool.idle.pop() {
                return Ok(Lease(Some(session), self));
            }
            if pool.live < self.max {
                pool.live += 1;
                drop(pool);
                return match new_session(&self.env, &self.model) {
                    Ok(session) => Ok(Lease(Some(session), self)),
                    Err(e) => {
                        self.pool.lock().unwrap_or_else(|e| e.into_inner()).live -= 1;
                        self.returned.notify_one();
                        Err(e)
                    }
                };
            }
            pool = self.returned.wait(pool).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A session out of the pool; goes back when dropped.
struct Lease<'a>(Option<Session>, &'a Vits);

impl Lease<'_> {
    fn discard(&mut self) {
        if self.0.take().is_some() {
            self.1.pool.lock().unwrap_or_else(|e| e.into_inner()).live -= 1;
            self.1.returned.notify_one();
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.0.take() {
            self.1
                .pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .idle
                .push(session);
            self.1.returned.notify_one();
        }
    }
}

fn new_session(env: &Environment, model: &Path) -> Result<Session> {
    let fail = |e: ort::Error<ort::session::builder::SessionBuilder>| anyhow!("{e}");
    Session::builder(env)
        .map_err(|e| anyhow!("{e}"))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(fail)?
        .with_intra_threads(1)
        .map_err(fail)?
        .with_inter_threads(1)
        .map_err(fail)?
        // Busy-waiting threads would steal the CPU from parallel requests.
        .with_intra_op_spinning(false)
        .map_err(fail)?
        .commit_from_file(model)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("loading voice model {}", model.display()))
}

fn run(session: &mut Session, ids: &[i64], scales: [f32; 3], sid: bool) -> Result<Vec<f32>> {
    let n = ids.len();
    let err = |e: ort::Error| anyhow!("{e}");
    let input = Tensor::from_array(([1usize, n], ids.to_vec())).map_err(err)?;
    let lengths = Tensor::from_array(([1usize], vec![n as i64])).map_err(err)?;
    let scales = Tensor::from_array(([3usize], scales.to_vec())).map_err(err)?;
    let outputs = if sid {
        let sid = Tensor::from_array(([1usize], vec![0i64])).map_err(err)?;
        session.run(ort::inputs![
            "input" => input, "input_lengths" => lengths, "scales" => scales, "sid" => sid
        ])
    } else {
        session.run(ort::inputs!["input" => input, "input_lengths" => lengths, "scales" => scales])
    }
    .map_err(err)?;
    let (_, audio) = outputs["output"].try_extract_tensor::<f32>().map_err(err)?;
    Ok(audio.to_vec())
}
