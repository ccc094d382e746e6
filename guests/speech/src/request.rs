//! `POST /v1/audio/speech` bodies, validated with OpenAI's error shapes.

use crate::audio::{Format, FORMAT_NAMES};
use sandpiper_guest_sdk::params::{json_object, present, required_string, wrong_type};
use sandpiper_guest_sdk::ApiError;
use serde_json::{Map, Value};

/// Longest `input`, in characters (OpenAI's limit).
pub const MAX_INPUT_CHARS: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
pub struct SpeechRequest {
    pub model: Option<String>,
    pub input: String,
    pub voice: Option<String>,
    pub format: Format,
    pub speed: f32,
    /// `stream_format: "sse"`.
    pub sse: bool,
}

fn optional_string<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, ApiError> {
    match present(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(key, "a string", other)),
    }
}

fn invalid_value(param: &str, message: String) -> ApiError {
    ApiError::invalid_request(message)
        .with_param(param)
        .with_code("invalid_value")
}

pub fn parse(body: &[u8]) -> Result<SpeechRequest, ApiError> {
    let obj = &json_object(body)?;
    let input = required_string(obj, "input")?;
    if input.trim().is_empty() {
        return Err(invalid_value(
            "input",
            "Invalid 'input': the text to speak is empty.".into(),
        ));
    }
    let chars = input.chars().count();
    if chars > MAX_INPUT_CHARS {
        return Err(ApiError::invalid_request(format!(
            "Invalid 'input': string too long. Expected a string with maximum length {MAX_INPUT_CHARS}, but got a string with length {chars} instead."
        ))
        .with_param("input")
        .with_code("string_above_max_length"));
    }

    // OpenAI's default is mp3, which we do not produce: wav is ours.
    let format = match optional_string(obj, "response_format")? {
        None => Format::Wav,
        Some(f) => Format::parse(f).ok_or_else(|| {
            let why = if f == "mp3" {
                "'mp3' is not produced by this server (its usual encoder, LAME, is LGPL C code, which its WebAssembly guests do not include)".to_string()
            } else if f == "aac" {
                "'aac' is not produced by this server (AAC encoders are patent-licensed)".to_string()
            } else {
                format!("'{f}' is not a supported format")
            };
            invalid_value(
                "response_format",
                format!("Invalid 'response_format': {why}. Supported formats: {FORMAT_NAMES}."),
            )
        })?,
    };

    let speed = match present(obj, "speed") {
        None => 1.0,
        Some(Value::Number(n)) => {
            let v = n.as_f64().unwrap_or(f64::NAN);
            if !(0.25..=4.0).contains(&v) {
                return Err(ApiError::invalid_request(format!(
                    "Invalid 'speed': {n} is outside the supported range. Expected a value between 0.25 and 4.0."
                ))
                .with_param("speed")
                .with_code("invalid_value"));
            }
            v as f32
        }
        Some(other) => return Err(wrong_type("speed", "a number", other)),
    };

    let sse = match optional_string(obj, "stream_format")? {
        None | Some("audio") => false,
        Some("sse") => true,
        Some(other) => {
            return Err(invalid_value(
                "stream_format",
                format!("Invalid 'stream_format': '{other}'. Supported values: 'audio', 'sse'."),
            ))
        }
    };

    // `instructions` (voice steering for gpt-4o-mini-tts) cannot apply to
    // these voices; accepted and ignored like other unknown fields.
    Ok(SpeechRequest {
        model: optional_string(obj, "model")?.map(str::to_owned),
        input,
        voice: optional_string(obj, "voice")?.map(str::to_owned),
        format,
        speed,
        sse,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> ApiError {
        parse(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn parses_openai_requests() {
        let r = parse(br#"{"model": "tts-1", "input": "Hi.", "voice": "alloy", "response_format": "flac", "speed": 1.5, "stream_format": "sse"}"#).unwrap();
        assert_eq!(r.format, Format::Flac);
        assert_eq!(r.speed, 1.5);
        assert!(r.sse);
        assert_eq!(r.voice.as_deref(), Some("alloy"));
        let r = parse(br#"{"input": "Hi.", "speed": 1}"#).unwrap();
        assert_eq!((r.format, r.speed, r.sse), (Format::Wav, 1.0, false));
    }

    #[test]
    fn bad_inputs_name_their_parameter() {
        let long = format!(r#"{{"input": "{}"}}"#, "a".repeat(4097));
        for (body, param) in [
            (r#"{"voice": "alloy"}"#, "input"),
            (r#"{"input": "   "}"#, "input"),
            (long.as_str(), "input"),
            (r#"{"input": 5}"#, "input"),
            (r#"{"input": "hi", "speed": 0.1}"#, "speed"),
            (r#"{"input": "hi", "speed": 4.5}"#, "speed"),
            (r#"{"input": "hi", "speed": "fast"}"#, "speed"),
            (
                r#"{"input": "hi", "response_format": "mp3"}"#,
                "response_format",
            ),
            (
                r#"{"input": "hi", "response_format": "ogg"}"#,
                "response_format",
            ),
            (
                r#"{"input": "hi", "stream_format": "chunks"}"#,
                "stream_format",
            ),
            (r#"{"input": "hi", "voice": 3}"#, "voice"),
        ] {
            let e = err(body);
            assert_eq!(
                (e.status, e.param.as_deref()),
                (400, Some(param)),
                "{body}: {e}"
            );
        }
        assert!(err(r#"{"input": "hi", "response_format": "mp3"}"#)
            .message
            .contains("wav, pcm, flac, opus"));
        assert!(err(r#"{"input": "hi", "response_format": "aac"}"#)
            .message
            .contains("patent"));
        assert_eq!(
            parse(br#"{"input": "hi", "response_format": "opus"}"#)
                .unwrap()
                .format,
            Format::Opus
        );
        assert_eq!(err("not json").code.as_deref(), Some("invalid_json"));
        // Exactly the limit is fine.
        let max = format!(r#"{{"input": "{}"}}"#, "é".repeat(4096));
        assert!(parse(max.as_bytes()).is_ok());
    }
}
