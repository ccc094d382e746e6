//! The Embeddings response body.

use crate::request::EncodingFormat;
use sandpiper_guest_sdk::base64;
use serde::Serialize;

#[derive(Serialize)]
struct Body<'a> {
    object: &'static str,
    data: Vec<Item<'a>>,
    model: &'a str,
    usage: Usage,
}

#[derive(Serialize)]
struct Item<'a> {
    object: &'static str,
    index: usize,
    embedding: Embedding<'a>,
}

/// serde writes `f32`s in their shortest round-tripping form (`0.0123`, not
/// the `f64` expansion `0.012300000526`), so clients parse back the exact
/// values the model produced.
#[derive(Serialize)]
#[serde(untagged)]
enum Embedding<'a> {
    Float(&'a [f32]),
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// The `list` of `embedding` objects, in input order, with usage.
///
/// `vectors` holds `vectors.len() / dim` vectors of `dim` values, row after row.
pub fn body(
    model: &str,
    vectors: &[f32],
    dim: usize,
    format: EncodingFormat,
    prompt_tokens: u64,
) -> String {
    let data = vectors
        .chunks(dim.max(1))
        .enumerate()
        .map(|(index, v)| Item {
            object: "embedding",
            index,
            embedding: match format {
                EncodingFormat::Float => Embedding::Float(v),
                EncodingFormat::Base64 => {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    Embedding::Base64(base64::encode(&bytes))
                }
            },
        })
        .collect();
    let body = Body {
        object: "list",
        data,
        model,
        usage: Usage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    };
    serde_json::to_string(&body).unwrap_or_default()
}

/// The `FP32 [n, dim]` tensor's bytes as values.
pub fn f32s(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn float_body_has_openai_shape() {
        let v: Value = serde_json::from_str(&body(
            "m",
            &[0.5, -0.25, 0.1, 1.0],
            2,
            EncodingFormat::Float,
            7,
        ))
        .unwrap();
        assert_eq!(
            v,
            json!({
                "object": "list",
                "data": [
                    {"object": "embedding", "index": 0, "embedding": [0.5, -0.25]},
                    {"object": "embedding", "index": 1, "embedding": [0.1, 1.0]},
                ],
                "model": "m",
                "usage": {"prompt_tokens": 7, "total_tokens": 7},
            })
        );
        // Shortest f32 form, not the f64 expansion of 0.1f32.
        assert!(body("m", &[0.1], 1, EncodingFormat::Float, 1).contains("[0.1]"));
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let v: Value =
            serde_json::from_str(&body("m", &[1.0, 1.0], 1, EncodingFormat::Base64, 2)).unwrap();
        assert_eq!(v["data"][0]["embedding"], "AACAPw==");
        assert_eq!(v["data"][1]["index"], 1);
        assert_eq!(f32s(&[0, 0, 0x80, 0x3f, 0, 0, 0, 0xbf]), vec![1.0, -0.5]);
    }
}
