//! One `POST /v1/audio/speech` on the guest target: validate, normalise,
//! speak sentence by sentence through `wasi:nn`, encode and stream.

use crate::audio::{to_i16, Encoder, Format};
use crate::handler::installed_voices;
use crate::normalize::{normalize, sentences};
use crate::request::{self, SpeechRequest};
use crate::voices;
use sandpiper_guest_sdk::http::{respond, respond_error, Request, Streaming};
use sandpiper_guest_sdk::nn::{Context, ErrorCode, Graph, NnError, Tensor};
use sandpiper_guest_sdk::{base64, log, sse, time, ApiError};
use serde_json::{json, Value};
use wasi::http::types::ResponseOutparam;

const MAX_BODY_BYTES: usize = 1 << 20;

/// A voice's `metadata` (wit/nn-protocol.md).
pub struct VoiceInfo {
    pub sample_rate: u32,
    pub language: String,
}

/// A voice loaded for this request.
pub struct Voice {
    _graph: Graph,
    context: Context,
    pub id: String,
    pub info: VoiceInfo,
}

impl Voice {
    pub fn load(id: &str) -> Result<Voice, ApiError> {
        let failed = |what: &str, e: NnError| {
            ApiError::server_error(format!("The voice `{id}` {what}: {e}"))
        };
        let graph = Graph::load_by_name(id).map_err(|e| match e.code {
            ErrorCode::NotFound => ApiError::model_not_found(id),
            _ => failed("could not be loaded", e),
        })?;
        let context = graph.context().map_err(|e| failed("could not start", e))?;
        let meta = context
            .compute(vec![("metadata", Tensor::bytes(Vec::new()))])
            .and_then(|mut out| out.take("metadata")?.into_bytes())
            .map_err(|e| failed("has no metadata", e))?;
        let meta: Value = serde_json::from_slice(&meta)
            .map_err(|e| ApiError::server_error(format!("voice metadata: {e}")))?;
        let sample_rate = meta["sample_rate"]
            .as_u64()
            .filter(|r| *r > 0)
            .ok_or_else(|| ApiError::server_error("voice metadata has no sample_rate"))?
            as u32;
        Ok(Voice {
            _graph: graph,
            context,
            id: id.to_owned(),
            info: VoiceInfo {
                sample_rate,
                language: meta["language"].as_str().unwrap_or("und").to_owned(),
            },
        })
    }

    /// One sentence → 16-bit samples.
    fn speak(&self, sentence: &str, speed: f32) -> Result<Vec<i16>, NnError> {
        let mut out = self.context.compute(vec![
            ("text", Tensor::bytes(sentence.as_bytes())),
            ("speed", Tensor::f32s(&[speed])),
        ])?;
        Ok(to_i16(&out.take("audio")?.to_f32s()?))
    }
}

/// What one request did, for its log line.
struct Tally {
    sentences: usize,
    samples: u64,
    synth_ns: u64,
}

pub fn handle(http: Request, out: ResponseOutparam) {
    let started = time::monotonic_ns();
    let req = match http
        .read_body(MAX_BODY_BYTES)
        .and_then(|b| request::parse(&b))
    {
        Ok(r) => r,
        Err(e) => return fail(out, "-", &e),
    };
    let voice = match voices::resolve(
        &installed_voices(),
        req.model.as_deref(),
        req.voice.as_deref(),
    )
    .and_then(|id| Voice::load(&id))
    {
        Ok(v) => v,
        Err(e) => return fail(out, req.voice.as_deref().unwrap_or("-"), &e),
    };
    let pieces = sentences(&normalize(&req.input));
    if pieces.is_empty() {
        let e = ApiError::invalid_request("Invalid 'input': there is nothing to speak in it.")
            .with_param("input")
            .with_code("invalid_value");
        return fail(out, &voice.id, &e);
    }
    let mut tally = Tally {
        sentences: pieces.len(),
        samples: 0,
        synth_ns: 0,
    };
    let result = run(&req, &voice, &pieces, out, &mut tally);
    let audio_s = tally.samples as f64 / f64::from(voice.info.sample_rate);
    let synth_s = tally.synth_ns as f64 / 1e9;
    let rtf = if audio_s > 0.0 {
        synth_s / audio_s
    } else {
        0.0
    };
    log::line(&format!(
        "speech voice={} format={} stream={} speed={} chars={} sentences={} audio_s={audio_s:.2} synth_s={synth_s:.2} rtf={rtf:.3} total_ms={}{}",
        voice.id,
        req.format.name(),
        if req.sse { "sse" } else { "audio" },
        req.speed,
        req.input.chars().count(),
        tally.sentences,
        (time::monotonic_ns() - started) / 1_000_000,
        match result {
            Ok(()) => String::new(),
            Err(note) => format!(" note={note:?}"),
        }
    ));
}

fn fail(out: ResponseOutparam, voice: &str, error: &ApiError) {
    log::line(&format!(
        "speech voice={voice} status={} param={} error={:?}",
        error.status,
        error.param.as_deref().unwrap_or("-"),
        error.message
    ));
    respond_error(out, error, &[]);
}

/// Speaks every sentence, sending audio as it comes. The response starts
/// once the first sentence is synthesised, so a failure there is still a
/// proper 500; later failures can only end the stream early.
fn run(
    req: &SpeechRequest,
    voice: &Voice,
    pieces: &[String],
    out: ResponseOutparam,
    tally: &mut Tally,
) -> Result<(), String> {
    let speak = |i: usize, tally: &mut Tally| -> Result<Vec<i16>, NnError> {
        let t = time::monotonic_ns();
        let samples = voice.speak(&pieces[i], req.speed)?;
        tally.synth_ns += time::monotonic_ns() - t;
        tally.samples += samples.len() as u64;
        Ok(samples)
    };
    let first = match speak(0, tally) {
        Ok(s) => s,
        Err(e) => {
            let error = ApiError::server_error(format!("The voice `{}` failed: {e}", voice.id));
            respond_error(out, &error, &[]);
            return Err(error.message);
        }
    };
    let rate = voice.info.sample_rate.to_string();
    let content_type = if req.sse {
        "text/event-stream"
    } else {
        req.format.content_type()
    };
    let head = [
        ("content-type", content_type),
        ("x-sample-rate", rate.as_str()),
        ("x-channels", "1"),
        ("x-sample-format", "s16le"),
        ("x-voice", voice.id.as_str()),
        ("cache-control", "no-cache"),
    ];
    let mut encoder = Encoder::new(req.format, voice.info.sample_rate, req.sse);

    if req.format == Format::Wav && !req.sse {
        // WAV's header states the length: synthesise everything, send once.
        encoder.push(&first);
        for i in 1..pieces.len() {
            match speak(i, tally) {
                Ok(s) => {
                    encoder.push(&s);
                }
                Err(e) => {
                    let error =
                        ApiError::server_error(format!("The voice `{}` failed: {e}", voice.id));
                    respond_error(out, &error, &[]);
                    return Err(error.message);
                }
            }
        }
        respond(out, 200, &head, &encoder.finish());
        return Ok(());
    }

    let mut stream = Streaming::start(out, 200, &head).map_err(|_| "client gone".to_string())?;
    let send = |stream: &mut Streaming, bytes: &[u8]| -> Result<(), String> {
        if bytes.is_empty() {
            return Ok(());
        }
        let payload = if req.sse {
            let event = json!({"type": "speech.audio.delta", "audio": base64::encode(bytes)});
            sse::data_event(&event.to_string())
        } else {
            bytes.to_vec()
        };
        stream.send(&payload).map_err(|_| "client gone".to_string())
    };
    send(&mut stream, &encoder.push(&first))?;
    for i in 1..pieces.len() {
        let samples = match speak(i, tally) {
            Ok(s) => s,
            Err(e) => {
                let message = format!("The voice `{}` failed on sentence {}: {e}", voice.id, i + 1);
                if req.sse {
                    // Headers are gone: the error travels inside the stream.
                    let event = json!({"type": "error", "error": ApiError::server_error(message.clone()).to_value()["error"]});
                    let _ = stream.send(&sse::data_event(&event.to_string()));
                }
                return Err(message);
            }
        };
        send(&mut stream, &encoder.push(&samples))?;
    }
    send(&mut stream, &encoder.finish())?;
    if req.sse {
        let chars = req.input.chars().count();
        let done = json!({
            "type": "speech.audio.done",
            // Sandpiper counts input in characters, not tokens.
            "usage": {"input_tokens": chars, "output_tokens": 0, "total_tokens": chars},
        });
        stream
            .send(&sse::data_event(&done.to_string()))
            .map_err(|_| "client gone".to_string())?;
    }
    stream.finish();
    Ok(())
}
