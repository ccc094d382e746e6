//! Samples → bytes in the response formats: 16-bit PCM, WAV, FLAC and Ogg Opus.

use crate::flac::FlacEncoder;
use crate::opus::OggOpusEncoder;

/// The formats this guest produces. `mp3` and `aac` are refused: mp3's usual
/// encoder, LAME, is LGPL C code the guest does not include, and AAC's
/// encoders are patent-licensed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Wav,
    Pcm,
    Flac,
    Opus,
}

/// The names `response_format` accepts, for error messages.
pub const FORMAT_NAMES: &str = "wav, pcm, flac, opus";

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "wav" => Some(Format::Wav),
            "pcm" => Some(Format::Pcm),
            "flac" => Some(Format::Flac),
            "opus" => Some(Format::Opus),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Wav => "wav",
            Format::Pcm => "pcm",
            Format::Flac => "flac",
            Format::Opus => "opus",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Wav => "audio/wav",
            // Raw 16-bit little-endian mono; the rate is in `x-sample-rate`.
            Format::Pcm => "audio/pcm",
            Format::Flac => "audio/flac",
            // Ogg Opus (RFC 7845), under the type OpenAI sends for `opus`.
            Format::Opus => "audio/opus",
        }
    }
}

/// f32 samples → 16-bit, scaled as Piper does: the sentence's peak to full
/// scale (but never more than 10× gain, so near-silence stays quiet).
pub fn to_i16(samples: &[f32]) -> Vec<i16> {
    let peak = samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    let gain = 32767.0 / peak.max(0.1);
    samples
        .iter()
        .map(|s| (s * gain).round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

/// Little-endian bytes of 16-bit samples.
pub fn pcm_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// A 44-byte canonical WAV header for 16-bit mono. `data_len` None: the
/// length is unknown (streamed), written as the largest value, as streaming
/// servers do.
pub fn wav_header(sample_rate: u32, data_len: Option<u32>) -> Vec<u8> {
    let data = data_len.unwrap_or(u32::MAX - 36);
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&data.saturating_add(36).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes()); // PCM
    h.extend_from_slice(&1u16.to_le_bytes()); // mono
    h.extend_from_slice(&sample_rate.to_le_bytes());
    h.extend_from_slice(&(sample_rate * 2).to_le_bytes()); // byte rate
    h.extend_from_slice(&2u16.to_le_bytes()); // block align
    h.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data.to_le_bytes());
    h
}

/// Turns sentences of samples into a format's byte stream, piece by piece.
pub enum Encoder {
    /// WAV is sent whole: its header states the length.
    Wav {
        sample_rate: u32,
        pcm: Vec<u8>,
    },
    /// WAV inside SSE: a streaming header, then PCM.
    WavStreamed {
        sample_rate: u32,
        started: bool,
    },
    Pcm,
    Flac(FlacEncoder),
    Opus(Box<OggOpusEncoder>),
}

impl Encoder {
    pub fn new(format: Format, sample_rate: u32, streamed: bool) -> Encoder {
        match format {
            Format::Wav if streamed => Encoder::WavStreamed {
                sample_rate,
                started: false,
            },
            Format::Wav => Encoder::Wav {
                sample_rate,
                pcm: Vec::new(),
            },
            Format::Pcm => Encoder::Pcm,
            Format::Flac => Encoder::Flac(FlacEncoder::new(sample_rate)),
            Format::Opus => Encoder::Opus(Box::new(OggOpusEncoder::new(sample_rate))),
        }
    }

    /// Bytes ready to send after these samples (may be empty).
    pub fn push(&mut self, samples: &[i16]) -> Vec<u8> {
        match self {
            Encoder::Wav { pcm, .. } => {
                pcm.extend(pcm_bytes(samples));
                Vec::new()
            }
            Encoder::WavStreamed {
                sample_rate,
                started,
            } => {
                let mut out = Vec::new();
                if !*started {
                    out = wav_header(*sample_rate, None);
                    *started = true;
                }
                out.extend(pcm_bytes(samples));
                out
            }
            Encoder::Pcm => pcm_bytes(samples),
            Encoder::Flac(f) => f.push(samples),
            Encoder::Opus(o) => o.push(samples),
        }
    }

    /// The remaining bytes at the end of the audio.
    pub fn finish(self) -> Vec<u8> {
        match self {
            Encoder::Wav { sample_rate, pcm } => {
                let mut out = wav_header(sample_rate, Some(pcm.len() as u32));
                out.extend(pcm);
                out
            }
            Encoder::WavStreamed {
                sample_rate,
                started: false,
            } => wav_header(sample_rate, None),
            Encoder::WavStreamed { .. } | Encoder::Pcm => Vec::new(),
            Encoder::Flac(f) => f.finish(),
            Encoder::Opus(o) => o.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_normalises_with_bounded_gain() {
        assert_eq!(to_i16(&[0.5, -0.25, 0.0]), vec![32767, -16384, 0]);
        // Quiet input is not blown up to full scale.
        assert_eq!(to_i16(&[0.01]), vec![3277]);
        assert_eq!(to_i16(&[]), Vec::<i16>::new());
    }

    #[test]
    fn whole_wav_has_exact_lengths() {
        let mut e = Encoder::new(Format::Wav, 22050, false);
        assert!(e.push(&[1, -1, 2]).is_empty());
        let wav = e.finish();
        assert_eq!(wav.len(), 44 + 6);
        assert_eq!(&wav[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(wav[4..8].try_into().unwrap()), 36 + 6);
        assert_eq!(u32::from_le_bytes(wav[24..28].try_into().unwrap()), 22050);
        assert_eq!(u32::from_le_bytes(wav[40..44].try_into().unwrap()), 6);
        assert_eq!(&wav[44..], &[1, 0, 0xff, 0xff, 2, 0]);
    }

    #[test]
    fn wav_in_sse_streams_with_an_open_ended_header() {
        let mut e = Encoder::new(Format::Wav, 16000, true);
        let first = e.push(&[1]);
        assert_eq!(first.len(), 44 + 2);
        assert_eq!(
            u32::from_le_bytes(first[40..44].try_into().unwrap()),
            u32::MAX - 36
        );
        assert_eq!(e.push(&[2]), vec![2, 0]);
        assert!(e.finish().is_empty());
    }

    #[test]
    fn pcm_streams_as_is() {
        let mut e = Encoder::new(Format::Pcm, 22050, true);
        assert_eq!(e.push(&[256, -2]), vec![0, 1, 0xfe, 0xff]);
        assert!(e.finish().is_empty());
        assert_eq!(Format::parse("mp3"), None);
    }
}
