//! Choosing the next token from the logits.

use std::collections::HashMap;

use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::distribution::Draw;

/// Most alternatives [`SamplingParams::top_logprobs`] may ask for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// What a request asks of sampling; guests send it as JSON.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f64,
    pub top_p: f64,
    /// `None` draws a random seed.
    pub seed: Option<u64>,
    /// OpenAI's penalty: `logit[j] -= count[j] * frequency_penalty`, where
    /// `count[j]` is how often `j` was sampled so far in this sequence.
    pub frequency_penalty: f32,
    /// `logit[j] -= presence_penalty` once `j` was sampled in this sequence.
    pub presence_penalty: f32,
    /// Added to the logits of the given token ids (JSON keys are id strings).
    pub logit_bias: HashMap<u32, f32>,
    /// Return the sampled token's log-probability.
    pub logprobs: bool,
    /// Also return this many most likely alternatives (at most
    /// [`MAX_TOP_LOGPROBS`]; needs `logprobs`).
    pub top_logprobs: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            seed: None,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: HashMap::new(),
            logprobs: false,
            top_logprobs: 0,
        }
    }
}

impl SamplingParams {
    /// Whether the logits must be changed before sampling.
    fn adjusts_logits(&self) -> bool {
        self.frequency_penalty != 0.0 || self.presence_penalty != 0.0 || !self.logit_bias.is_empty()
    }
}

/// One alternative in [`Logprobs::top`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
}

/// Log-probabilities of one sampled position, from the model's own
/// distribution (`log_softmax` of the raw logits, before penalties,
/// `logit_bias` and temperature).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Logprobs {
    /// The sampled token's log-probability.
    pub logprob: f32,
    /// The `top_logprobs` most likely tokens, most likely first.
    pub top: Vec<TokenLogprob>,
}

/// A sampled token, with its log-probabilities when they were asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub token: u32,
    pub logprobs: Option<Logprobs>,
}

pub(crate) struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    draw: Draw,
    /// The logits after penalties, bias or a mask (kept: one per token).
    adjusted: Vec<f32>,
    /// How often each token was sampled so far (for the penalties).
    counts: HashMap<u32, u32>,
}

impl Sampler {
    pub(crate) fn new(p: &SamplingParams) -> Self {
        let seed = p.seed.unwrap_or_else(rand::random);
        Self {
            params: p.clone(),
            rng: StdRng::seed_from_u64(seed),
            draw: Draw::default(),
            adjusted: Vec::new(),
            counts: HashMap::new(),
        }
    }

    /// Keeps the counts of tokens sampled so far when the parameters change
    /// (they belong to the sequence, not to one set of parameters).
    pub(crate) fn replace(&mut self, p: &SamplingParams) {
        let counts = std::mem::take(&mut self.counts);
        *self = Self::new(p);
        self.counts = counts;
    }

    pub(crate) fn sample(&mut self, logits: &Tensor) -> candle_core::Result<Sampled> {
        self.sample_allowed(logits, None)
    }

    /// Takes back the sample `previous` drawn from `logits` and draws again
    /// among the tokens `mask` allows (bit `i % 8` of byte `i / 8` set).
    ///
    /// Guests check a sampled token against their grammar and only ask for
    /// this when it was rejected. Drawing from the full distribution and, on
    /// rejection, again from the masked one samples each allowed token `t`
    /// with probability `p(t) + (1 - Z) p(t) / Z = p(t) / Z` (`Z` the allowed
    /// mass): exactly the masked distribution, without a mask on every step.
    pub(crate) fn resample(
        &mut self,
        logits: &Tensor,
        previous: u32,
        mask: &[u8],
    ) -> candle_core::Result<Sampled> {
        if let Some(count) = self.counts.get_mut(&previous) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&previous);
            }
        }
        self.sample_allowed(logits, Some(mask))
    }

    fn sample_allowed(
        &mut self,
        logits: &Tensor,
        mask: Option<&[u8]>,
    ) -> candle_core::Result<Sampled> {
        with_values(logits, |raw| {
            let p = &self.params;
            let adjusting = p.adjusts_logits() || mask.is_some();
            if adjusting {
                self.adjusted.clear();
                self.adjusted.extend_from_slice(raw);
                adjust(&mut self.adjusted, p, &self.counts);
                if let Some(mask) = mask {
                    apply_mask(&mut self.adjusted, mask);
                }
            }
            let from = if adjusting { &self.adjusted[..] } else { raw };
            let token = if p.temperature <= GREEDY {
                first_max(from)
            } else {
                self.draw
                    .draw(from, p.temperature, p.top_p, &mut self.rng)
                    .unwrap_or_else(|| first_max(from))
            };
            *self.counts.entry(token).or_insert(0) += 1;
            let logprobs = p
                .logprobs
                .then(|| logprobs(raw, self.draw.log_z(raw), token, p.top_logprobs));
            Sampled { token, logprobs }
        })
    }
}

/// Runs `f` on the logits as a slice: read in place when they are one
/// contiguous f32 vector on the CPU (always, from the native forward pass;
/// a copy of 49k logits per token is not free), else copied out.
fn with_values<R>(logits: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let (storage, layout) = logits.storage_and_layout();
    if let (candle_core::Storage::Cpu(cpu), Some((from, to)), 1) =
        (&*storage, layout.contiguous_offsets(), logits.rank())
    {
        if let Ok(all) = cpu.as_slice::<f32>() {
            return Ok(f(&all[from..to]));
        }
    }
    drop(storage);
    Ok(f(&logits.flatten_all()?.to_vec1::<f32>()?))
}

/// Temperatures up to this are greedy.
const GREEDY: f64 = 1e-6;

/// The index of the first maximum, comparing as candle's CPU `argmax` does
/// (a later value wins only if strictly greater, so NaNs never win unless
/// first).
///
/// Sixteen lanes each keep the first maximum of their own positions (a loop
/// the compiler vectorises; one branchy pass over a 49k vocabulary cost
/// ~40 µs per token); the first of the lanes' maxima is then the first
/// overall, the smallest index among the lanes holding the largest value.
fn first_max(v: &[f32]) -> u32 {
    const LANES: usize = 16;
    if v[0].is_nan() {
        return 0;
    }
    let mut best = [f32::NEG_INFINITY; LANES];
    let mut at = [0u32; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for (c, chunk) in chunks.enumerate() {
        for l in 0..LANES {
            let better = chunk[l] > best[l];
            best[l] = if better { chunk[l] } else { best[l] };
            at[l] = if better {
                (c * LANES + l) as u32
            } else {
                at[l]
            };
        }
    }
    let (mut top, mut first) = (v[0], 0u32);
    for l in 0..LANES {
        if best[l] > top || (best[l] == top && at[l] < first) {
            (top, first) = (best[l], at[l]);
        }
    }
    let start = v.len() - tail.len();
    for (i, &x) in tail.iter().enumerate() {
        if x > top {
            (top, first) = (x, (start + i) as u32);
        }
    }
    first
}

/// Applies OpenAI's penalties and `logit_bias` in place.
fn adjust(logits: &mut [f32], p: &SamplingParams, counts: &HashMap<u32, u32>) {
    for (&id, &count) in counts {
        if let Some(l) = logits.get_mut(id as usize) {
            *l -= count as f32 * p.frequency_penalty
                + if count > 0 { p.presence_penalty } else { 0.0 };
        }
    }
    for (&id, &bias) in &p.logit_bias {
        if let Some(l) = logits.get_mut(id as usize) {
            *l += bias;
        }
    }
}

/// Rules out every token whose bit in `mask` is clear (ids past the mask's
/// end included).
fn apply_mask(logits: &mut [f32], mask: &[u8]) {
    for (id, l) in logits.iter_mut().enumerate() {
        if mask
            .get(id / 8)
            .is_none_or(|byte| byte & (1 << (id % 8)) == 0)
        {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// Whether `mask` allows at least one of the first `vocab` tokens.
pub(crate) fn mask_allows_any(mask: &[u8], vocab: usize) -> bool {
    (0..vocab).any(|id| {
        mask.get(id / 8)
            .is_some_and(|byte| byte & (1 << (id % 8)) != 0)
    })
}

/// `log_softmax` of `logits` at `token`, and the `top` most likely tokens;
/// `log_z` is `ln Σ e^logit` ([`Draw::log_z`]).
fn logprobs(logits: &[f32], log_z: f32, token: u32, top: usize) -> Logprobs {
    let lp = |id: u32| {
        logits
            .get(id as usize)
            .map_or(f32::NEG_INFINITY, |&l| l - log_z)
    };
    let ids = most_likely(logits, top.min(MAX_TOP_LOGPROBS));
    Logprobs {
        logprob: lp(token),
        top: ids
            .into_iter()
            .map(|id| TokenLogprob {
                id,
                logprob: lp(id),
            })
            .collect(),
    }
}

/// The ids of the `k` largest logits, largest first, ties by lower id (the
/// order of `total_cmp`, so NaNs sort above everything).
///
/// One pass keeping the best `k` in order, sixteen logits at a time: once
/// `k` are kept, a block with nothing above the k-th best (nearly all of a
/// vocabulary) costs one vectorised comparison. Selecting from a list of all
/// 49k ids, as before, took ~0.2 ms per token.
fn most_likely(logits: &[f32], k: usize) -> Vec<u32> {
    /// `total_cmp`'s order as plain integers.
    fn key(x: f32) -> i32 {
        let b = x.to_bits() as i32;
        b ^ (((b >> 31) as u32) >> 1) as i32
    }
    if k == 0 {
        return Vec::new();
    }
    let mut best: Vec<(i32, u32)> = Vec::with_capacity(k + 1);
    for (c, block) in logits.chunks(16).enumerate() {
        if best.len() == k {
            let floor = best[k - 1].0;
            if !block.iter().fold(false, |any, &l| any | (key(l) > floor)) {
                continue;
            }
        }
        for (i, &l) in block.iter().enumerate() {
            let l = key(l);
            if best.len() == k && l <= best[k - 1].0 {
                continue;
            }
            // After every kept logit at least as large: an equal one has a
            // lower id.
            let at = best.partition_point(|&(b, _)| b >= l);
            best.insert(at, (l, (c * 16 + i) as u32));
            best.truncate(k);
        }
    }
    best.into_iter().map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator of test values.
    fn lcg(mut state: u64) -> impl FnMut() -> u32 {
        move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        }
    }

    /// The one-pass top-k against sorting every id, with ties and NaNs.
    #[test]
    fn most_likely_is_the_sorted_prefix() {
        let mut next = lcg(7u64);
        for n in [1, 5, 20, 21, 300, 49_152] {
            let mut v: Vec<f32> = (0..n).map(|_| (next() % 50) as f32 / 4.0).collect();
            if n > 3 {
                v[n / 3] = f32::NAN;
                v[n / 2] = f32::NEG_INFINITY;
            }
            for k in [0, 1, 3, 20] {
                let mut ids: Vec<u32> = (0..n as u32).collect();
                ids.sort_by(|&a, &b| v[b as usize].total_cmp(&v[a as usize]).then(a.cmp(&b)));
                ids.truncate(k);
                assert_eq!(most_likely(&v, k), ids, "n={n} k={k}");
            }
        }
    }

    fn lp(logits: &[f32], token: u32, top: usize) -> Logprobs {
        logprobs(logits, Draw::default().log_z(logits), token, top)
    }

    #[test]
    fn penalties_follow_openai() {
        let p = SamplingParams {
            frequency_penalty: 0.5,
            presence_penalty: 1.0,
            logit_bias: HashMap::from([(0, 10.0), (9, 1.0)]),
            ..Default::default()
        };
        let mut logits = vec![0.0; 4];
        let counts = HashMap::from([(1, 3), (2, 1)]);
        adjust(&mut logits, &p, &counts);
        assert_eq!(logits, vec![10.0, -2.5, -1.5, 0.0]);
    }

    #[test]
    fn logprobs_are_log_softmax_sorted() {
        let l = lp(&[1.0, 3.0, 2.0, 3.0], 2, 3);
        let z = (1f32.exp() + 2.0 * 3f32.exp() + 2f32.exp()).ln();
        assert!((l.logprob - (2.0 - z)).abs() < 1e-5);
        let ids: Vec<u32> = l.top.iter().map(|t| t.id).collect();
        assert_eq!(ids, vec![1, 3, 2]);
        assert!(l.top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
        assert!(lp(&[1.0, 2.0], 0, 0).top.is_empty());
        assert_eq!(lp(&[1.0, 2.0], 0, 20).top.len(), 2);
    }

    #[test]
    fn greedy_picks_as_candle_argmax() {
        let dev = candle_core::Device::Cpu;
        let full = Tensor::new(&[9.0f32, 1.0, 5.0, 5.0, -2.0, f32::NAN, 5.0], &dev).unwrap();
        // Ties, a NaN, and a view that starts inside its storage.
        for t in [
            full.clone(),
            full.narrow(0, 1, 6).unwrap(),
            full.narrow(0, 5, 2).unwrap(),
        ] {
            let want = t
                .argmax(candle_core::D::Minus1)
                .unwrap()
                .to_scalar::<u32>()
                .unwrap();
            assert_eq!(with_values(&t, first_max).unwrap(), want, "{t}");
            assert_eq!(first_max(&t.to_vec1::<f32>().unwrap()), want, "{t}");
        }
    }

    /// The lane-wise search against the plain loop it replaces, on lengths
    /// around the lane count and a vocabulary's, with ties and NaNs.
    #[test]
    fn first_max_is_the_first_strict_maximum() {
        fn plain(v: &[f32]) -> u32 {
            let (mut best, mut at) = (v[0], 0);
            for (i, &x) in v.iter().enumerate() {
                if best < x {
                    (best, at) = (x, i);
                }
            }
            at as u32
        }
        let mut next = lcg(12345u64);
        for n in [1, 2, 15, 16, 17, 31, 33, 100, 49152] {
            for _ in 0..20 {
                // Few distinct values, so the maximum is often tied.
                let mut v: Vec<f32> = (0..n).map(|_| (next() % 7) as f32 - 3.0).collect();
                if next().is_multiple_of(3) {
                    let i = next() as usize % n;
                    v[i] = f32::NAN;
                }
                if next().is_multiple_of(4) {
                    v[0] = f32::NEG_INFINITY;
                }
                assert_eq!(first_max(&v), plain(&v), "{n}: {:?}", &v[..n.min(40)]);
            }
        }
    }

    #[test]
    fn greedy_obeys_bias_and_counts_samples() {
        let logits = Tensor::new(&[1.0f32, 5.0, 2.0], &candle_core::Device::Cpu).unwrap();
        let mut s = Sampler::new(&SamplingParams {
            temperature: 0.0,
            logprobs: true,
            top_logprobs: 1,
            ..Default::default()
        });
        let a = s.sample(&logits).unwrap();
        assert_eq!(a.token, 1);
        let lp = a.logprobs.unwrap();
        assert_eq!(lp.top[0].id, 1);
        assert_eq!(lp.top[0].logprob, lp.logprob);
        s.replace(&SamplingParams {
            temperature: 0.0,
            presence_penalty: 0.5,
            frequency_penalty: 1.0,
            ..Default::default()
        });
        // The first sample (before `replace`) counts too.
        assert_eq!(s.sample(&logits).unwrap().token, 1, "5 - 1.5 > 2");
        assert_eq!(s.sample(&logits).unwrap().token, 1, "5 - 2.5 > 2");
        assert_eq!(s.sample(&logits).unwrap().token, 2, "5 - 3.5 < 2");
        let mut s = Sampler::new(&SamplingParams {
            temperature: 0.0,
            logit_bias: HashMap::from([(0, 100.0)]),
            ..Default::default()
        });
        let b = s.sample(&logits).unwrap();
        assert_eq!((b.token, b.logprobs), (0, None));
    }

    #[test]
    fn resample_draws_among_allowed_and_takes_the_count_back() {
        let logits = Tensor::new(&[1.0f32, 5.0, 2.0, 4.0], &candle_core::Device::Cpu).unwrap();
        let mut s = Sampler::new(&SamplingParams {
            temperature: 0.0,
            frequency_penalty: 10.0,
            logprobs: true,
            ..Default::default()
        });
        let a = s.sample(&logits).unwrap();
        assert_eq!(a.token, 1);
        // Allow tokens 0 and 2 only: greedy picks 2; logprobs stay the model's.
        let b = s.resample(&logits, a.token, &[0b0000_0101]).unwrap();
        assert_eq!(b.token, 2);
        assert!(
            (b.logprobs.unwrap().logprob - lp(&[1.0, 5.0, 2.0, 4.0], 2, 0).logprob).abs() < 1e-6
        );
        // The rejected 1 was never counted: no penalty on it now.
        assert_eq!(s.sample(&logits).unwrap().token, 1);
        // Sampling with temperature never leaves the mask.
        let mut s = Sampler::new(&SamplingParams {
            temperature: 1.0,
            seed: Some(7),
            ..Default::default()
        });
        for _ in 0..50 {
            let t = s.sample(&logits).unwrap().token;
            assert_eq!(s.resample(&logits, t, &[0b0000_1000]).unwrap().token, 3);
        }
        assert!(mask_allows_any(&[0, 0b10], 10));
        assert!(!mask_allows_any(&[0, 0b100], 10));
    }
}
