//! Speech voices as wasi-nn graphs: one graph per voice, run by
//! `sandpiper_voice` (espeak-ng phonemes + a VITS network on ONNX Runtime).
//! The guest sends one sentence of normalised text and gets mono f32 samples;
//! the tensor protocol is documented in wit/nn-protocol.md.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use sandpiper_voice::Voice;
use wasmtime_wasi_nn::backend::{BackendError, BackendGraph, NamedTensor};
use wasmtime_wasi_nn::wit::TensorType;
use wasmtime_wasi_nn::{ExecutionContext, Graph, Tensor};

use super::protocol::{self, named, NamedCompute};
use super::tensor::{bytes, invalid, to_text};
use crate::metrics::Metrics;

/// A loaded voice as a wasi-nn graph.
pub struct VoiceGraph {
    voice: Arc<Voice>,
    metrics: Arc<Metrics>,
}

impl VoiceGraph {
    /// Like `LlmGraph::new`: wasi-nn wants the graph boxed as a `Graph`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(voice: Arc<Voice>, metrics: Arc<Metrics>) -> Graph {
        protocol::graph(VoiceGraph { voice, metrics })
    }
}

impl BackendGraph for VoiceGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        Ok(protocol::context(VoiceContext {
            voice: self.voice.clone(),
            metrics: self.metrics.clone(),
        }))
    }
}

/// Stateless: every `compute` speaks one sentence on the shared voice.
struct VoiceContext {
    voice: Arc<Voice>,
    metrics: Arc<Metrics>,
}

fn error(code: &str, message: String) -> Vec<NamedTensor> {
    let body = serde_json::json!({"code": code, "message": message});
    vec![named("error", bytes(body.to_string().into_bytes()))]
}

/// The f32 in an `FP32 [1]` tensor.
fn to_f32(name: &str, t: &Tensor) -> Result<f32, BackendError> {
    if t.ty != TensorType::Fp32 || t.data.len() != 4 {
        return Err(invalid(format!(
            "`{name}` must be an FP32 tensor of one value"
        )));
    }
    Ok(f32::from_le_bytes(t.data[..4].try_into().unwrap()))
}

impl VoiceContext {
    fn metadata(&self) -> Vec<NamedTensor> {
        let c = self.voice.config();
        let json = serde_json::json!({
            "id": self.voice.name(),
            "sample_rate": c.sample_rate,
            "channels": 1,
            "language": c.language,
            "quality": c.quality,
            "espeak_voice": c.espeak_voice,
            "max_text_bytes": sandpiper_voice::MAX_TEXT_BYTES,
        });
        vec![named("metadata", bytes(json.to_string().into_bytes()))]
    }

    fn speak(&self, inputs: &[NamedTensor]) -> Result<Vec<NamedTensor>, BackendError> {
        let mut text = None;
        let mut speed = 1.0f32;
        for input in inputs {
            match input.name.as_str() {
                "text" => text = Some(to_text("text", &input.tensor)?),
                "speed" => speed = to_f32("speed", &input.tensor)?,
                other => return Err(invalid(format!("unknown input `{other}`"))),
            }
        }
        let text = text.ok_or_else(|| invalid("missing input `text`"))?;
        if text.len() > sandpiper_voice::MAX_TEXT_BYTES {
            return Ok(error(
                "text_too_long",
                format!(
                    "{} bytes of text; at most {} per compute (one sentence)",
                    text.len(),
                    sandpiper_voice::MAX_TEXT_BYTES
                ),
            ));
        }
        if !(speed.is_finite() && (0.25..=4.0).contains(&speed)) {
            return Ok(error(
                "invalid_speed",
                format!("speed {speed} is outside 0.25-4.0"),
            ));
        }
        let speech = self.voice.synthesize(text, speed).map_err(|e| {
            tracing::error!(voice = %self.voice.name(), error = %format!("{e:#}"), "synthesis failed");
            invalid(format!("{e:#}"))
        })?;
        let rate = self.voice.config().sample_rate as f32;
        let audio_secs = speech.samples.len() as f32 / rate;
        if audio_secs > 0.0 {
            tracing::debug!(
                voice = %self.voice.name(),
                audio_s = audio_secs,
                phonemize_ms = speech.phonemize_time.as_millis() as u64,
                infer_ms = speech.infer_time.as_millis() as u64,
                rtf = speech.infer_time.as_secs_f32() / audio_secs,
                "sentence synthesised"
            );
        }
        self.metrics
            .speech_samples
            .fetch_add(speech.samples.len() as u64, Relaxed);
        let data: Vec<u8> = speech
            .samples
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        Ok(vec![
            named(
                "audio",
                Tensor::new(vec![speech.samples.len() as u32], TensorType::Fp32, data),
            ),
            named("phonemes", bytes(speech.phonemes.into_bytes())),
        ])
    }
}

impl NamedCompute for VoiceContext {
    fn compute(&mut self, inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, BackendError> {
        let first = &inputs[0];
        let outputs = match first.name.as_str() {
            "metadata" => self.metadata(),
            _ => self.speak(&inputs)?,
        };
        Ok(outputs)
    }
}
