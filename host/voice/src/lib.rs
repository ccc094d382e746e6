//! Neural text-to-speech for Sandpiper: Piper VITS voices on ONNX Runtime.
//!
//! A [`Voice`] turns one sentence of (already normalised) text into mono f32
//! samples: [`phonemes`] runs the `espeak-ng` program for IPA phonemes, the
//! voice's `.onnx.json` ([`config`]) maps them to ids, and a VITS graph on
//! ONNX Runtime (`ort`, library found by [`runtime`]) makes the waveform.
//! Text normalisation, sentence splitting and audio encoding are the guest's.

pub mod config;
pub mod phonemes;
pub mod runtime;
mod vits;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub use config::VoiceConfig;
pub use phonemes::Espeak;

/// Longest sentence [`Voice::synthesize`] accepts, in bytes.
pub const MAX_TEXT_BYTES: usize = 8192;

/// A loaded voice, shared by all requests.
pub struct Voice {
    name: String,
    config: VoiceConfig,
    espeak: Espeak,
    vits: vits::Vits,
}

/// One synthesised sentence.
#[derive(Debug, Clone)]
pub struct Speech {
    /// Mono samples at the voice's sample rate, roughly in [-1, 1].
    pub samples: Vec<f32>,
    /// The phonemes that were spoken.
    pub phonemes: String,
    /// Time spent in the network (not counting espeak-ng).
    pub infer_time: Duration,
    /// Time spent in espeak-ng.
    pub phonemize_time: Duration,
}

impl Voice {
    /// Loads the voice `model` (`.onnx`) with its `config` (`.onnx.json`) on
    /// the ONNX Runtime `library`; up to `parallel` requests synthesise at once.
    pub fn load(
        name: &str,
        model: &Path,
        config: &Path,
        library: &Path,
        parallel: usize,
    ) -> Result<Self> {
        let config = VoiceConfig::load(config)?;
        let espeak = Espeak::new(&config.espeak_voice)?;
        let env = runtime::environment(library)?;
        let vits =
            vits::Vits::load(env, model, parallel).with_context(|| format!("voice {name:?}"))?;
        Ok(Voice {
            name: name.to_owned(),
            config,
            espeak,
            vits,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &VoiceConfig {
        &self.config
    }

    /// Speaks one sentence. `speed` 1.0 is the voice's own pace; 2.0 twice as
    /// fast (it divides the length scale). Text with nothing to pronounce gives
    /// no samples.
    pub fn synthesize(&self, text: &str, speed: f32) -> Result<Speech> {
        if text.len() > MAX_TEXT_BYTES {
            bail!(
                "text is {} bytes; at most {MAX_TEXT_BYTES} per call",
                text.len()
            );
        }
        if !(speed.is_finite() && speed > 0.0) {
            bail!("speed must be a positive number, got {speed}");
        }
        let started = Instant::now();
        let phonemes = self.espeak.phonemize(text)?;
        let phonemize_time = started.elapsed();
        if phonemes.trim().is_empty() {
            return Ok(Speech {
                samples: Vec::new(),
                phonemes,
                infer_time: Duration::ZERO,
                phonemize_time,
            });
        }
        let (ids, unknown) = self.config.ids(&phonemes);
        if !unknown.is_empty() {
            tracing::debug!(voice = %self.name, ?unknown, "phonemes the voice does not know were skipped");
        }
        let scales = [
            self.config.noise_scale,
            self.config.length_scale / speed,
            self.config.noise_w,
        ];
        let started = Instant::now();
        let samples = self.vits.infer(&ids, scales)?;
        Ok(Speech {
            samples,
            phonemes,
            infer_time: started.elapsed(),
            phonemize_time,
        })
    }
}
