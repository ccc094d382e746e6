//! A streaming polyphase resampler for rational rate ratios (22,050 Hz voices
//! → the 24 kHz Opus codes at): a Kaiser-windowed sinc, low-passed just under
//! the lower rate's Nyquist frequency, with its coefficients tabulated once
//! per phase. The filter is centred, so output sample `n` is the input at time
//! `n · from / to` with no added delay.

/// Half the filter length, in input samples at the lower rate (more taps when
/// downsampling, so the transition band keeps its width in Hz).
const HALF_TAPS: usize = 24;
/// Cutoff as a fraction of the lower rate's Nyquist frequency.
const CUTOFF: f64 = 0.92;
/// Kaiser window shape: about 80 dB of stopband attenuation.
const BETA: f64 = 8.0;
/// Ratios with more phases than this use the nearest tabulated phase.
const MAX_PHASES: u64 = 1024;

pub struct Resampler {
    /// Output samples advance `down` units of `1/up` input samples each.
    up: u64,
    down: u64,
    half: usize,
    phases: u64,
    /// `phases` rows of `2 * half` coefficients.
    table: Vec<f32>,
    /// Input not yet consumed; `input[0]` is input sample number `base`.
    input: Vec<f32>,
    base: u64,
    received: u64,
    produced: u64,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The zeroth-order modified Bessel function, by its power series.
fn bessel_i0(x: f64) -> f64 {
    let (mut sum, mut term) = (1.0, 1.0);
    for k in 1..40 {
        term *= (x / (2.0 * k as f64)).powi(2);
        sum += term;
        if term < sum * 1e-12 {
            break;
        }
    }
    sum
}

impl Resampler {
    pub fn new(from: u32, to: u32) -> Resampler {
        assert!(from > 0 && to > 0, "sample rates must be positive");
        let g = gcd(u64::from(from), u64::from(to));
        let (up, down) = (u64::from(to) / g, u64::from(from) / g);
        // Cutoff in cycles per input sample.
        let scale = (up as f64 / down as f64).min(1.0);
        let fc = 0.5 * CUTOFF * scale;
        let half = (HALF_TAPS as f64 / scale).ceil() as usize;
        let phases = up.min(MAX_PHASES);
        let norm = bessel_i0(BETA);
        let mut table = Vec::with_capacity(phases as usize * 2 * half);
        for p in 0..phases {
            let frac = p as f64 / phases as f64;
            for k in 0..2 * half {
                // Distance from the output instant to input sample `i + k + 1 - half`.
                let d = frac - (k as f64 + 1.0 - half as f64);
                let x = 2.0 * fc * d;
                let sinc = if x.abs() < 1e-12 {
                    1.0
                } else {
                    (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
                };
                let r = d / half as f64;
                let window = if r.abs() >= 1.0 {
                    0.0
                } else {
                    bessel_i0(BETA * (1.0 - r * r).sqrt()) / norm
                };
                table.push((2.0 * fc * sinc * window) as f32);
            }
        }
        Resampler {
            up,
            down,
            half,
            phases,
            table,
            input: Vec::new(),
            base: 0,
            received: 0,
            produced: 0,
        }
    }

    /// The output samples that these (and earlier) inputs determine.
    pub fn push(&mut self, samples: &[f32]) -> Vec<f32> {
        self.input.extend_from_slice(samples);
        self.received += samples.len() as u64;
        self.run(false)
    }

    /// The rest, the input's end taken as silence: `ceil(inputs · to / from)`
    /// outputs in all.
    pub fn finish(&mut self) -> Vec<f32> {
        self.run(true)
    }

    fn run(&mut self, end: bool) -> Vec<f32> {
        let half = self.half as u64;
        let total = (self.received * self.up).div_ceil(self.down);
        let mut out = Vec::new();
        while self.produced < total {
            let pos = self.produced * self.down;
            let (i, phase) = (pos / self.up, pos % self.up);
            if !end && i + half >= self.received {
                break;
            }
            let row = (phase * self.phases + self.up / 2) / self.up;
            // Phase `phases` rounds to the next input sample's phase 0.
            let (i, row) = if row == self.phases {
                (i + 1, 0)
            } else {
                (i, row)
            };
            let coeffs = &self.table[row as usize * 2 * self.half..][..2 * self.half];
            let first = i as i64 + 1 - half as i64;
            let mut acc = 0.0f32;
            for (k, c) in coeffs.iter().enumerate() {
                let j = first + k as i64;
                if j >= self.base as i64 && (j as u64) < self.received {
                    acc += self.input[(j as u64 - self.base) as usize] * c;
                }
            }
            out.push(acc);
            self.produced += 1;
        }
        // Keep only what the next output still reads.
        let next = (self.produced * self.down / self.up + 1).saturating_sub(half);
        if next > self.base {
            let drop = ((next - self.base) as usize).min(self.input.len());
            self.input.drain(..drop);
            self.base += drop as u64;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn sine(freq: f64, rate: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (0.5 * (2.0 * PI * freq * i as f64 / rate).sin()) as f32)
            .collect()
    }

    /// Streams `input` through in uneven chunks.
    fn resample(from: u32, to: u32, input: &[f32]) -> Vec<f32> {
        let mut r = Resampler::new(from, to);
        let mut out = Vec::new();
        for chunk in input.chunks(1000).flat_map(|c| c.chunks(377)) {
            out.extend(r.push(chunk));
        }
        out.extend(r.finish());
        out
    }

    #[test]
    fn a_sine_keeps_its_frequency_and_the_length_scales() {
        for (from, to, freq) in [
            (22050, 24000, 1000.0),
            (22050, 24000, 7000.0),
            (22050, 48000, 440.0),
            (48000, 24000, 3000.0),
            (16000, 16000, 1234.0),
        ] {
            let n = from as usize; // one second
            let out = resample(from, to, &sine(freq, f64::from(from), n));
            let expected_len = (n as u64 * u64::from(to)).div_ceil(u64::from(from));
            assert_eq!(out.len() as u64, expected_len, "{from}->{to}");
            // Away from the edges, the output is the same sine at the new rate.
            let want = sine(freq, f64::from(to), out.len());
            let edge = out.len() / 20;
            let worst = out[edge..out.len() - edge]
                .iter()
                .zip(&want[edge..])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 0.005, "{from}->{to} at {freq} Hz: error {worst}");
        }
    }

    #[test]
    fn streaming_matches_one_call_and_blocks_above_the_new_nyquist() {
        let input = sine(500.0, 22050.0, 5000);
        let mut whole = Resampler::new(22050, 24000);
        let mut once = whole.push(&input);
        once.extend(whole.finish());
        let chunked = resample(22050, 24000, &input);
        assert_eq!(once.len(), chunked.len());
        assert!(once.iter().zip(&chunked).all(|(a, b)| (a - b).abs() < 1e-6));

        // 20 kHz cannot exist at 24 kHz: downsampling must remove it, not alias it.
        let out = resample(48000, 24000, &sine(20000.0, 48000.0, 48000));
        let rms = (out[1000..23000].iter().map(|s| s * s).sum::<f32>() / 22000.0).sqrt();
        assert!(rms < 0.005, "alias rms {rms}");
    }
}
