//! Drawing a token from logits at a temperature, from the whole vocabulary or
//! from its nucleus (top-p), and the log-partition behind logprobs.
//!
//! Sampling runs once per generated token over the whole vocabulary (49,152
//! logits for the default model), between two forward passes that nothing
//! else overlaps. candle's `LogitsProcessor`, used before, took ~0.6 ms per
//! token at temperature 1 (a softmax through tensor ops, then a cumulative
//! weight table) and ~2.2 ms with `top_p` (a sort of the whole vocabulary):
//! an eighth, then nearly half, of a 5 ms decode step (Zen 4, AVX-512). Here
//! the weights are one vector pass ([`kernels::exp_shifted`]), the draw two
//! passes over chunk sums (~30 µs in all), and the nucleus is found by
//! selection, not sorting, among the tokens that can be in it.

use rand::rngs::StdRng;
use rand::Rng;

use crate::kernels;

/// Tokens per partial sum: the draw finds its chunk among ~200 sums, then
/// its token among 256 weights.
const CHUNK: usize = 256;

/// Weights (relative to the largest, 1) above which the nucleus is first
/// looked for, then lower ones: it is selected among the tokens above the
/// first threshold whose tokens hold `top_p` of the mass, usually a handful.
const NUCLEUS_FLOORS: [f32; 4] = [1.0 / 64.0, 1.0 / 4096.0, 1.0 / (1 << 20) as f32, 0.0];

/// Buffers kept from one draw to the next (a sequence draws every token).
#[derive(Default)]
pub(crate) struct Draw {
    weights: Vec<f32>,
    sums: Vec<f64>,
    /// Sort keys of the tokens that may be in the nucleus.
    nucleus: Vec<u64>,
}

impl Draw {
    /// Draws a token with probability `softmax(logits / temperature)`, among
    /// the nucleus alone when `top_p < 1`: the most probable tokens, most
    /// probable first (ties by id), up to and including the one that brings
    /// their mass to `top_p` (the rule candle's `LogitsProcessor` followed).
    /// A logit of −∞ is never drawn. `None` when the logits hold no finite
    /// maximum or their weights no finite positive sum (NaNs): the caller
    /// picks greedily instead.
    pub(crate) fn draw(
        &mut self,
        logits: &[f32],
        temperature: f64,
        top_p: f64,
        rng: &mut StdRng,
    ) -> Option<u32> {
        let max = max(logits);
        if !max.is_finite() {
            return None;
        }
        self.weights.resize(logits.len(), 0.0);
        kernels::exp_shifted(logits, max, (1.0 / temperature) as f32, &mut self.weights);
        self.sums.clear();
        self.sums
            .extend(self.weights.chunks(CHUNK).map(|c| sum(c) as f64));
        let total: f64 = self.sums.iter().sum();
        if !(total > 0.0 && total.is_finite()) {
            return None;
        }
        if top_p < 1.0 {
            return Some(self.draw_nucleus(total * top_p, rng));
        }
        let u = rng.random::<f64>() * total;
        let mut below = 0.0;
        for (c, &s) in self.sums.iter().enumerate() {
            if below + s > u {
                let start = c * CHUNK;
                let chunk = &self.weights[start..(start + CHUNK).min(self.weights.len())];
                return Some(start as u32 + pick(chunk, u - below));
            }
            below += s;
        }
        // `u` fell past every partial sum (rounding: each sum is added in
        // its own order): the last token that has any weight.
        let last = self.weights.iter().rposition(|&w| w > 0.0)?;
        Some(last as u32)
    }

    /// The draw among the nucleus: the fewest most probable tokens whose
    /// weights reach `target` (`top_p` of the total).
    fn draw_nucleus(&mut self, target: f64, rng: &mut StdRng) -> u32 {
        let (kept, mass) = self.nucleus(target);
        let nucleus = &self.nucleus[..kept];
        let u = rng.random::<f64>() * mass;
        let mut below = 0.0;
        for &key in nucleus {
            below += key_weight(key);
            if below > u {
                return key as u32;
            }
        }
        nucleus[nucleus.len() - 1] as u32
    }

    /// Puts the nucleus's keys (see below) first in `self.nucleus`, in no
    /// particular order, and returns how many there are (at least one) and
    /// their weight.
    fn nucleus(&mut self, target: f64) -> (usize, f64) {
        let w = &self.weights;
        // The most probable tokens are those above some weight; the lowest
        // floor needed is the first whose tokens already hold the target.
        let floor = NUCLEUS_FLOORS
            .into_iter()
            .find(|&floor| floor == 0.0 || mass_above(w, floor) >= target)
            .unwrap_or(0.0);
        // Each token as one key: its weight's bits inverted (positive floats
        // order as their bits), then its id. Keys in ascending order are the
        // tokens most probable first, ties by id.
        self.nucleus.clear();
        self.nucleus.extend(
            w.iter()
                .enumerate()
                .filter(|&(_, &x)| x >= floor && x > 0.0)
                .map(|(i, &x)| (u64::from(!x.to_bits()) << 32) | i as u64),
        );
        let mass_of = |keys: &[u64]| keys.iter().map(|&k| key_weight(k)).sum::<f64>();
        // Where the mass in key order reaches the target, without sorting:
        // halve `keys[lo..hi]` around its median key (a selection, linear)
        // and keep the half the crossing lies in. Everything before `lo`
        // outranks the rest and weighs `mass` in all.
        let keys = &mut self.nucleus;
        let (mut lo, mut hi, mut mass) = (0, keys.len(), 0.0);
        while hi - lo > 32 {
            let mid = lo + (hi - lo) / 2;
            keys[lo..hi].select_nth_unstable(mid - lo);
            let upper = mass_of(&keys[lo..mid]);
            if mass + upper >= target {
                hi = mid;
            } else {
                mass += upper;
                lo = mid;
            }
        }
        keys[lo..hi].sort_unstable();
        let mut kept = lo;
        for &key in &keys[lo..hi] {
            if mass >= target {
                break;
            }
            mass += key_weight(key);
            kept += 1;
        }
        if kept == 0 {
            // A target of 0 (top_p 0): the most probable token alone, first
            // already (`lo` stayed 0, and `keys[..hi]` is sorted).
            return (1, key_weight(keys[0]));
        }
        (kept, mass)
    }

    /// `ln Σ e^logit`, for log-probabilities (`logit − log_z`): the largest
    /// logit plus the log of the weights' sum at temperature 1.
    pub(crate) fn log_z(&mut self, logits: &[f32]) -> f32 {
        let max = max(logits);
        if !max.is_finite() {
            return max;
        }
        self.weights.resize(logits.len(), 0.0);
        kernels::exp_shifted(logits, max, 1.0, &mut self.weights);
        let sum: f64 = self.weights.chunks(CHUNK).map(|c| sum(c) as f64).sum();
        max + sum.ln() as f32
    }
}

/// The weight in a nucleus key (its upper half, inverted).
fn key_weight(key: u64) -> f64 {
    f32::from_bits(!((key >> 32) as u32)) as f64
}

/// The first token of `chunk` at which the running sum of weights passes
/// `u`, or its last token with any weight.
fn pick(chunk: &[f32], u: f64) -> u32 {
    let mut below = 0.0;
    for (i, &w) in chunk.iter().enumerate() {
        below += w as f64;
        if below > u && w > 0.0 {
            return i as u32;
        }
    }
    chunk.iter().rposition(|&w| w > 0.0).unwrap_or(0) as u32
}

/// The largest value, ignoring NaNs (−∞ when there is none), in sixteen lanes
/// the compiler vectorises: a plain fold over a 49k vocabulary was a chain
/// of dependent comparisons (~23 µs on 49k logits, ~13 µs in lanes).
fn max(v: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for l in 0..LANES {
            acc[l] = acc[l].max(c[l]);
        }
    }
    acc.into_iter().fold(tail, f32::max)
}

/// `Σ v`, in sixteen lanes the compiler vectorises.
fn sum(v: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ v[i]` over the values at or above `floor`, in vectorised lanes.
fn mass_above(v: &[f32], floor: f32) -> f64 {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().filter(|&&x| x >= floor).sum();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += if c[l] >= floor { c[l] } else { 0.0 };
        }
    }
    (acc.iter().sum::<f32>() + tail) as f64
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn softmax(logits: &[f32], temperature: f64) -> Vec<f64> {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let w: Vec<f64> = logits
            .iter()
            .map(|&l| ((l as f64 - max) / temperature).exp())
            .collect();
        let s: f64 = w.iter().sum();
        w.into_iter().map(|x| x / s).collect()
    }

    /// Frequencies of `n` draws.
    fn frequencies(logits: &[f32], temperature: f64, top_p: f64, n: usize) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(99);
        let mut draw = Draw::default();
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..n {
            counts[draw.draw(logits, temperature, top_p, &mut rng).unwrap() as usize] += 1;
        }
        counts.into_iter().map(|c| c as f64 / n as f64).collect()
    }

    /// Each frequency within 4.5 standard deviations of its probability.
    fn assert_close(got: &[f64], want: &[f64], n: usize) {
        for (i, (&g, &p)) in got.iter().zip(want).enumerate() {
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            assert!(
                (g - p).abs() <= 4.5 * sd + 1e-12,
                "token {i}: frequency {g} vs probability {p}"
            );
        }
    }

    #[test]
    fn draws_follow_the_softmax_at_each_temperature() {
        let logits = [2.0f32, 1.0, 0.5, -1.0, 3.0, f32::NEG_INFINITY, 0.0];
        let n = 200_000;
        for t in [1.0, 0.5, 1.7] {
            assert_close(&frequencies(&logits, t, 1.0, n), &softmax(&logits, t), n);
        }
    }

    #[test]
    fn the_nucleus_is_the_most_probable_tokens_up_to_top_p() {
        // Probabilities 0.5, 0.3, 0.15, 0.05 (at temperature 1).
        let logits: Vec<f32> = [0.15f32, 0.5, 0.05, 0.3].iter().map(|p| p.ln()).collect();
        let n = 100_000;
        // 0.5 < 0.7, then 0.8 ≥ 0.7: tokens 1 and 3 with 0.5 : 0.3.
        assert_close(
            &frequencies(&logits, 1.0, 0.7, n),
            &[0.0, 0.625, 0.0, 0.375],
            n,
        );
        // Just 0.5 reaches 0.5: only the most probable.
        assert_eq!(frequencies(&logits, 1.0, 0.5, 1000)[1], 1.0);
        // 0.95: every token but the least probable, in proportion.
        assert_close(
            &frequencies(&logits, 1.0, 0.95, n),
            &[0.15 / 0.95, 0.5 / 0.95, 0.0, 0.3 / 0.95],
            n,
        );
    }

    /// A flat distribution over a vocabulary's worth of tokens: the nucleus
    /// lies below every floor but the last, and ties go to the lower ids.
    #[test]
    fn a_flat_nucleus_takes_the_lowest_ids() {
        let vocab = 49_152;
        let logits = vec![0.25f32; vocab];
        let mut rng = StdRng::seed_from_u64(5);
        let mut draw = Draw::default();
        let mut seen = vec![false; vocab];
        for _ in 0..20_000 {
            let t = draw.draw(&logits, 1.0, 0.25, &mut rng).unwrap() as usize;
            assert!(t <= vocab / 4, "{t} is outside the nucleus");
            seen[t] = true;
        }
        // 20k draws over ~12k tokens reach most of them.
        assert!(seen.iter().filter(|&&s| s).count() > vocab / 4 * 3 / 4);
    }

    /// The nucleus found by selection is the one a full sort finds, on
    /// vocabularies large enough to be halved many times, with tied weights.
    #[test]
    fn the_nucleus_by_selection_is_the_sorted_one() {
        let mut rng = StdRng::seed_from_u64(11);
        for n in [5, 40, 1000, 49_152] {
            for top_p in [0.05, 0.5, 0.9, 0.99, 1.0 - 1e-9] {
                let logits: Vec<f32> = (0..n)
                    .map(|_| (rng.random::<f32>() * 12.0).round() / 2.0)
                    .collect();
                let mut draw = Draw::default();
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                draw.weights = logits.iter().map(|&l| (l - max).exp()).collect();
                let total: f64 = draw.weights.iter().map(|&w| w as f64).sum();
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by(|&a, &b| draw.weights[b].total_cmp(&draw.weights[a]).then(a.cmp(&b)));
                let (mut want, mut mass) = (Vec::new(), 0.0);
                for &i in &order {
                    if mass >= total * top_p {
                        break;
                    }
                    mass += draw.weights[i] as f64;
                    want.push(i as u32);
                }
                let (kept, got_mass) = draw.nucleus(total * top_p);
                let mut got: Vec<u32> = draw.nucleus[..kept].iter().map(|&k| k as u32).collect();
                got.sort_unstable();
                want.sort_unstable();
                assert_eq!(got, want, "n={n} top_p={top_p}");
                assert!((got_mass - mass).abs() <= 1e-9 * mass);
            }
        }
    }

    #[test]
    fn ruled_out_tokens_are_never_drawn() {
        let vocab = 49_152;
        let mut logits = vec![f32::NEG_INFINITY; vocab];
        for id in [7, 300, 40_000] {
            logits[id] = -(id as f32) / 1e4;
        }
        let mut rng = StdRng::seed_from_u64(1);
        let mut draw = Draw::default();
        for top_p in [1.0, 0.9] {
            for _ in 0..5_000 {
                let t = draw.draw(&logits, 2.0, top_p, &mut rng).unwrap();
                assert!([7, 300, 40_000].contains(&t), "{t}");
            }
        }
        // Nothing allowed, or no number at all: no draw.
        assert_eq!(draw.draw(&[f32::NEG_INFINITY; 3], 1.0, 1.0, &mut rng), None);
        assert_eq!(draw.draw(&[f32::NAN; 3], 1.0, 1.0, &mut rng), None);
    }

    #[test]
    fn log_z_is_the_log_partition() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, f32::NEG_INFINITY];
        let want = (1f64.exp() + 2.0 * 3f64.exp() + 2f64.exp()).ln();
        assert!((Draw::default().log_z(&logits) as f64 - want).abs() < 1e-5);
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 / 20.0).collect();
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut draw = Draw::default();
            (0..50)
                .map(|_| draw.draw(&logits, 0.8, 0.9, &mut rng).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }
}
