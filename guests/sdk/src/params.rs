//! Reading OpenAI request parameters from a JSON body, with OpenAI's error
//! wording: every problem is a 400 that names the exact parameter and says
//! what was expected, so clients can show it as is.

use crate::ApiError;
use serde_json::{Map, Value};

/// The request body as a JSON object: malformed JSON or another JSON type is a 400.
pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice(body).map_err(ApiError::invalid_json)? {
        Value::Object(obj) => Ok(obj),
        other => Err(ApiError::invalid_request(format!(
            "The request body must be a JSON object, but got {} instead.",
            describe(&other)
        ))),
    }
}

/// A required string parameter, such as `model` or `input`.
pub fn required_string(obj: &Map<String, Value>, key: &str) -> Result<String, ApiError> {
    match present(obj, key) {
        None => Err(missing(key)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(wrong_type(key, "a string", other)),
    }
}

/// The field's value, treating an explicit `null` like an absent field (as
/// OpenAI does for optional parameters).
pub fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// An optional integer that must be at least 1 (`max_tokens`, `dimensions`).
pub fn positive_integer(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, ApiError> {
    match present(obj, key) {
        None => Ok(None),
        Some(Value::Number(n)) if n.is_u64() && n.as_u64() != Some(0) => Ok(n.as_u64()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Err(ApiError::invalid_request(
            format!(
                "Invalid '{key}': integer below minimum value. Expected a value >= 1, but got {n} instead."
            ),
        )
        .with_param(key)
        .with_code("integer_below_min_value")),
        Some(other) => Err(wrong_type(key, "an integer", other)),
    }
}

/// 400 for a required parameter that is absent (or `null`).
pub fn missing(param: &str) -> ApiError {
    ApiError::invalid_request(format!("Missing required parameter: '{param}'."))
        .with_param(param)
        .with_code("missing_required_parameter")
}

/// 400 for a parameter of the wrong JSON type; `expected` reads "a string", "an array".
pub fn wrong_type(param: &str, expected: &str, got: &Value) -> ApiError {
    ApiError::invalid_request(format!(
        "Invalid type for '{param}': expected {expected}, but got {} instead.",
        describe(got)
    ))
    .with_param(param)
    .with_code("invalid_type")
}

/// 400 for an array parameter given as `[]`.
pub fn empty_array(param: &str) -> ApiError {
    ApiError::invalid_request(format!(
        "Invalid '{param}': empty array. Expected an array with minimum length 1, but got an empty array instead."
    ))
    .with_param(param)
    .with_code("empty_array")
}

/// 400 for an array parameter with more than `max` items.
pub fn array_too_long(param: &str, max: usize, len: usize) -> ApiError {
    ApiError::invalid_request(format!(
        "Invalid '{param}': array too long. Expected an array with maximum length {max}, but got an array with length {len} instead."
    ))
    .with_param(param)
    .with_code("array_above_max_length")
}

/// A JSON value's type as OpenAI's messages name it ("an integer", "a string").
pub fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn null_is_absent() {
        let obj = json!({"a": null, "b": 1});
        let obj = obj.as_object().unwrap();
        assert_eq!(present(obj, "a"), None);
        assert_eq!(present(obj, "b"), Some(&json!(1)));
        assert_eq!(present(obj, "c"), None);
    }

    #[test]
    fn errors_name_the_param() {
        let e = wrong_type("input", "a string", &json!(3));
        assert_eq!(e.param.as_deref(), Some("input"));
        assert_eq!(e.code.as_deref(), Some("invalid_type"));
        assert!(
            e.message.contains("but got an integer instead"),
            "{}",
            e.message
        );
        let e = missing("model");
        assert_eq!(e.code.as_deref(), Some("missing_required_parameter"));
        let obj = json!({"n": 0, "m": "x", "k": 5});
        let obj = obj.as_object().unwrap();
        assert_eq!(positive_integer(obj, "k").unwrap(), Some(5));
        assert_eq!(positive_integer(obj, "absent").unwrap(), None);
        assert!(positive_integer(obj, "n").is_err());
        assert!(positive_integer(obj, "m").is_err());
    }
}
