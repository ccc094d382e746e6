//! A Piper voice's `.onnx.json`: sample rate, espeak-ng voice, default scales and
//! the phoneme → id table.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// What synthesis needs from a voice's `.onnx.json`.
#[derive(Debug, Clone)]
pub struct VoiceConfig {
    pub sample_rate: u32,
    /// espeak-ng voice name (`en-us`).
    pub espeak_voice: String,
    /// Language code as the voice states it (`en_US`).
    pub language: String,
    pub quality: Option<String>,
    pub noise_scale: f32,
    pub length_scale: f32,
    pub noise_w: f32,
    pub num_speakers: u32,
    /// Phoneme (one code point) → ids.
    pub phoneme_ids: HashMap<char, Vec<i64>>,
}

#[derive(Deserialize)]
struct Raw {
    audio: RawAudio,
    espeak: RawEspeak,
    #[serde(default)]
    inference: Option<RawInference>,
    #[serde(default)]
    phoneme_type: Option<String>,
    #[serde(default)]
    num_speakers: Option<u32>,
    #[serde(default)]
    language: Option<RawLanguage>,
    phoneme_id_map: HashMap<String, Vec<i64>>,
}

#[derive(Deserialize)]
struct RawAudio {
    sample_rate: u32,
    #[serde(default)]
    quality: Option<String>,
}

#[derive(Deserialize)]
struct RawEspeak {
    voice: String,
}

#[derive(Deserialize)]
struct RawInference {
    noise_scale: Option<f32>,
    length_scale: Option<f32>,
    noise_w: Option<f32>,
}

#[derive(Deserialize)]
struct RawLanguage {
    code: Option<String>,
}

/// Symbols every Piper voice has.
pub const PAD: char = '_';
pub const BOS: char = '^';
pub const EOS: char = '$';

impl VoiceConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("voice config {}", path.display()))
    }

    pub fn parse(json: &str) -> Result<Self> {
        let raw: Raw = serde_json::from_str(json).context("not a Piper voice config")?;
        if let Some(t) = raw.phoneme_type.as_deref() {
            if t != "espeak" {
                bail!("phoneme_type {t:?} is not supported (only \"espeak\" voices are)");
            }
        }
        let mut phoneme_ids = HashMap::new();
        for (symbol, ids) in raw.phoneme_id_map {
            let mut chars = symbol.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => {
                    phoneme_ids.insert(c, ids);
                }
                _ => bail!("phoneme_id_map key {symbol:?} is not one character"),
            }
        }
        for required in [PAD, BOS, EOS] {
            if !phoneme_ids.contains_key(&required) {
                bail!("phoneme_id_map lacks {required:?}");
            }
        }
        if raw.audio.sample_rate == 0 {
            bail!("audio.sample_rate is 0");
        }
        let inference = raw.inference.unwrap_or(RawInference {
            noise_scale: None,
            length_scale: None,
            noise_w: None,
        });
        Ok(VoiceConfig {
            sample_rate: raw.audio.sample_rate,
            espeak_voice: raw.espeak.voice,
            language: raw
                .language
                .and_then(|l| l.code)
                .unwrap_or_else(|| "und".into()),
            quality: raw.audio.quality,
            noise_scale: inference.noise_scale.unwrap_or(0.667),
            length_scale: inference.length_scale.unwrap_or(1.0),
            noise_w: inference.noise_w.unwrap_or(0.8),
            num_speakers: raw.num_speakers.unwrap_or(1),
            phoneme_ids,
        })
    }

    /// Piper's ids for one sentence's phonemes: `^ _`, then each phoneme code
    /// point followed by the pad `_`, then `$`. Code points the voice does not
    /// know are skipped (and returned, for the log).
    pub fn ids(&self, phonemes: &str) -> (Vec<i64>, Vec<char>) {
        let id = |c: char| self.phoneme_ids[&c].iter().copied();
        let mut ids: Vec<i64> = id(BOS).chain(id(PAD)).collect();
        let mut unknown = Vec::new();
        for c in phonemes.chars() {
            match self.phoneme_ids.get(&c) {
                Some(p) => {
                    ids.extend(p.iter().copied());
                    ids.extend(id(PAD));
                }
                None => unknown.push(c),
            }
        }
        ids.extend(id(EOS));
        (ids, unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINI: &str = r#"{"audio": {"sample_rate": 22050, "quality": "medium"},
        "espeak": {"voice": "en-us"},
        "inference": {"noise_scale": 0.667, "length_scale": 1, "noise_w": 0.8},
        "phoneme_type": "espeak", "num_speakers": 1,
        "language": {"code": "en_US"},
        "phoneme_id_map": {"_": [0], "^": [1], "$": [2], " ": [3], "a": [14], "ˈ": [120]}}"#;

    #[test]
    fn parses_and_maps_ids_piper_style() {
        let c = VoiceConfig::parse(MINI).unwrap();
        assert_eq!(c.sample_rate, 22050);
        assert_eq!(c.espeak_voice, "en-us");
        assert_eq!(c.length_scale, 1.0);
        let (ids, unknown) = c.ids("ˈa a?");
        assert_eq!(ids, vec![1, 0, 120, 0, 14, 0, 3, 0, 14, 0, 2]);
        assert_eq!(unknown, vec!['?']);
    }

    #[test]
    fn rejects_configs_without_the_special_symbols() {
        let bad = MINI.replace(r#""$": [2], "#, "");
        assert!(VoiceConfig::parse(&bad).is_err());
        assert!(VoiceConfig::parse("{}").is_err());
    }
}
