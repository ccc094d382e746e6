//! Parsing and validating an Embeddings request body, with OpenAI's 400s
//! naming the parameter at fault.

use sandpiper_guest_sdk::params::{
    json_object, positive_integer, present, required_string, wrong_type,
};
use sandpiper_guest_sdk::prompt::{self, TextsOrTokens};
use sandpiper_guest_sdk::ApiError;
use serde_json::Value;

/// Most inputs one request may carry (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

/// How vectors are written in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingFormat {
    /// JSON arrays of numbers.
    Float,
    /// Base64 of the little-endian `f32` bytes.
    Base64,
}

/// A validated Embeddings request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingsRequest {
    pub model: String,
    /// What to embed: texts, or token-id arrays of the model's own vocabulary.
    pub input: TextsOrTokens,
    pub encoding_format: EncodingFormat,
    /// Checked against the model's dimension once it is known: Sandpiper
    /// does not shorten vectors.
    pub dimensions: Option<u64>,
}

/// Parses and validates a request body. `user` is accepted and ignored, as
/// are unknown fields.
pub fn parse(body: &[u8]) -> Result<EmbeddingsRequest, ApiError> {
    let obj = json_object(body)?;
    let model = required_string(&obj, "model")?;
    let input = parse_input(present(&obj, "input"))?;
    let encoding_format = match present(&obj, "encoding_format") {
        None => EncodingFormat::Float,
        Some(Value::String(s)) if s == "float" => EncodingFormat::Float,
        Some(Value::String(s)) if s == "base64" => EncodingFormat::Base64,
        Some(Value::String(s)) => {
            return Err(ApiError::invalid_request(format!(
                "Invalid value: '{s}'. Supported values are: 'float' and 'base64'."
            ))
            .with_param("encoding_format")
            .with_code("invalid_value"))
        }
        Some(other) => return Err(wrong_type("encoding_format", "a string", other)),
    };
    let dimensions = positive_integer(&obj, "dimensions")?;
    Ok(EmbeddingsRequest {
        model,
        input,
        encoding_format,
        dimensions,
    })
}

/// The error for a `dimensions` other than the model's own.
pub fn check_dimensions(requested: Option<u64>, model: &str, dim: u64) -> Result<(), ApiError> {
    match requested {
        Some(n) if n != dim => Err(ApiError::invalid_request(format!(
            "Invalid 'dimensions': {n} is not supported; the model `{model}` gives {dim}-dimensional vectors and Sandpiper does not shorten them (omit 'dimensions' or set it to {dim})."
        ))
        .with_param("dimensions")
        .with_code("unsupported_value")),
        _ => Ok(()),
    }
}

/// The texts or token arrays to embed; texts must not be empty.
fn parse_input(value: Option<&Value>) -> Result<TextsOrTokens, ApiError> {
    let input = prompt::parse(value, "input", MAX_INPUTS)?;
    if let TextsOrTokens::Texts(texts) = &input {
        if let Some(i) = texts.iter().position(String::is_empty) {
            let at = match value {
                Some(Value::Array(_)) => format!("input[{i}]"),
                _ => "input".to_string(),
            };
            return Err(ApiError::invalid_request(format!(
                "Invalid '{at}': empty string. Expected a non-empty string."
            ))
            .with_param(at)
            .with_code("invalid_value"));
        }
    }
    Ok(input)
}

/// The `wasi:nn` input (`texts` or `tokens`, U8 JSON) that embeds `input`.
pub fn tensor_name_and_json(input: &TextsOrTokens) -> (&'static str, String) {
    match input {
        TextsOrTokens::Texts(t) => ("texts", serde_json::to_string(t).unwrap_or_default()),
        TextsOrTokens::Tokens(t) => ("tokens", serde_json::to_string(t).unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(body: Value) -> EmbeddingsRequest {
        parse(body.to_string().as_bytes()).unwrap()
    }

    fn err(body: Value) -> ApiError {
        parse(body.to_string().as_bytes()).unwrap_err()
    }

    #[test]
    fn input_forms() {
        let r = ok(json!({"model": "m", "input": "hi"}));
        assert_eq!(r.input, TextsOrTokens::Texts(vec!["hi".into()]));
        assert_eq!(r.encoding_format, EncodingFormat::Float);
        assert_eq!(r.dimensions, None);
        let r = ok(json!({"model": "m", "input": ["a", "b"], "user": "u-1", "extra": 1}));
        assert_eq!(r.input, TextsOrTokens::Texts(vec!["a".into(), "b".into()]));
        let r = ok(json!({"model": "m", "input": [1, 2, 3]}));
        assert_eq!(r.input, TextsOrTokens::Tokens(vec![vec![1, 2, 3]]));
        let r = ok(
            json!({"model": "m", "input": [[1], [2, 3]], "encoding_format": "base64", "dimensions": 384}),
        );
        assert_eq!(r.input, TextsOrTokens::Tokens(vec![vec![1], vec![2, 3]]));
        assert_eq!(r.encoding_format, EncodingFormat::Base64);
        assert_eq!(r.dimensions, Some(384));
        assert_eq!(
            tensor_name_and_json(&r.input),
            ("tokens", "[[1],[2,3]]".to_string())
        );
        let r =
            ok(json!({"model": "m", "input": "x", "encoding_format": null, "dimensions": null}));
        assert_eq!(r.encoding_format, EncodingFormat::Float);
    }

    #[test]
    fn bad_inputs_name_the_param() {
        for (body, param, code) in [
            (json!({"input": "x"}), "model", "missing_required_parameter"),
            (json!({"model": 1, "input": "x"}), "model", "invalid_type"),
            (json!({"model": "m"}), "input", "missing_required_parameter"),
            (json!({"model": "m", "input": ""}), "input", "invalid_value"),
            (json!({"model": "m", "input": []}), "input", "empty_array"),
            (
                json!({"model": "m", "input": ["a", ""]}),
                "input[1]",
                "invalid_value",
            ),
            (
                json!({"model": "m", "input": [[]]}),
                "input[0]",
                "empty_array",
            ),
            (json!({"model": "m", "input": 5}), "input", "invalid_type"),
            (
                json!({"model": "m", "input": {"a": 1}}),
                "input",
                "invalid_type",
            ),
            (
                json!({"model": "m", "input": ["a", 1]}),
                "input[1]",
                "invalid_type",
            ),
            (
                json!({"model": "m", "input": [[1], "a"]}),
                "input[1]",
                "invalid_type",
            ),
            (
                json!({"model": "m", "input": [1, -2]}),
                "input[1]",
                "invalid_type",
            ),
            (
                json!({"model": "m", "input": [1.5]}),
                "input[0]",
                "invalid_type",
            ),
            (
                json!({"model": "m", "input": [[1, 5_000_000_000u64]]}),
                "input[0][1]",
                "invalid_type",
            ),
            (
                json!({"model": "m", "input": [true]}),
                "input[0]",
                "invalid_type",
            ),
            (
                json!({"model": "m", "input": "x", "encoding_format": "int8"}),
                "encoding_format",
                "invalid_value",
            ),
            (
                json!({"model": "m", "input": "x", "encoding_format": 1}),
                "encoding_format",
                "invalid_type",
            ),
            (
                json!({"model": "m", "input": "x", "dimensions": 0}),
                "dimensions",
                "integer_below_min_value",
            ),
            (
                json!({"model": "m", "input": "x", "dimensions": "384"}),
                "dimensions",
                "invalid_type",
            ),
        ] {
            let e = err(body.clone());
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {e}");
            assert_eq!(e.code.as_deref(), Some(code), "{body}: {e}");
        }
        assert_eq!(
            parse(b"{").unwrap_err().code.as_deref(),
            Some("invalid_json")
        );
        assert_eq!(parse(b"[]").unwrap_err().status, 400);
    }

    #[test]
    fn too_many_inputs() {
        let many = vec!["x"; MAX_INPUTS + 1];
        let e = err(json!({"model": "m", "input": many}));
        assert_eq!(e.code.as_deref(), Some("array_above_max_length"));
        let many = vec!["x"; MAX_INPUTS];
        assert_eq!(
            ok(json!({"model": "m", "input": many})).input.len(),
            MAX_INPUTS
        );
    }

    #[test]
    fn dimensions_must_match() {
        assert!(check_dimensions(None, "m", 384).is_ok());
        assert!(check_dimensions(Some(384), "m", 384).is_ok());
        let e = check_dimensions(Some(128), "m", 384).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("dimensions"));
        assert!(e.message.contains("not supported"), "{}", e.message);
    }
}
