//! Texts or token ids: the legacy Completions `prompt` and the Embeddings
//! `input` take the same four forms, read here once.

use crate::params::{array_too_long, describe, empty_array, missing, wrong_type};
use crate::ApiError;
use serde_json::Value;

/// A `prompt` or `input`, as given: texts, or token ids of the model's own
/// vocabulary. Never empty; a list is all texts or all token arrays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextsOrTokens {
    Texts(Vec<String>),
    Tokens(Vec<Vec<i32>>),
}

impl TextsOrTokens {
    /// How many texts or token arrays.
    pub fn len(&self) -> usize {
        match self {
            TextsOrTokens::Texts(t) => t.len(),
            TextsOrTokens::Tokens(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const FORMS: &str =
    "a string, an array of strings, an array of integers or an array of arrays of integers";

/// Reads `param` (`prompt`, `input`): a string, an array of strings, an
/// array of token ids (one token prompt) or an array of arrays of token ids,
/// at most `max_items` of them. Errors name the exact element
/// (`prompt[1]`, `input[0][3]`). Empty strings are accepted: what they mean
/// is the caller's to decide.
pub fn parse(
    value: Option<&Value>,
    param: &str,
    max_items: usize,
) -> Result<TextsOrTokens, ApiError> {
    let items = match value {
        None => return Err(missing(param)),
        Some(Value::String(s)) => return Ok(TextsOrTokens::Texts(vec![s.clone()])),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(wrong_type(param, FORMS, other)),
    };
    if items.is_empty() {
        return Err(empty_array(param));
    }
    // One array of integers is a single token array.
    if items.iter().all(Value::is_number) {
        return Ok(TextsOrTokens::Tokens(vec![token_ids(param, items)?]));
    }
    if items.len() > max_items {
        return Err(array_too_long(param, max_items, items.len()));
    }
    let at = |i: usize| format!("{param}[{i}]");
    match &items[0] {
        Value::String(_) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(wrong_type(&at(i), "a string", other)),
            })
            .collect::<Result<_, _>>()
            .map(TextsOrTokens::Texts),
        Value::Array(_) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Array(ids) => token_ids(&at(i), ids),
                other => Err(wrong_type(&at(i), "an array of integers", other)),
            })
            .collect::<Result<_, _>>()
            .map(TextsOrTokens::Tokens),
        other => Err(wrong_type(
            &at(0),
            "a string or an array of integers",
            other,
        )),
    }
}

/// Token ids: non-negative integers that fit the `i32` token tensors of
/// `wit/nn-protocol.md`.
fn token_ids(param: &str, items: &[Value]) -> Result<Vec<i32>, ApiError> {
    if items.is_empty() {
        return Err(ApiError::invalid_request(format!(
            "Invalid '{param}': empty array. Expected at least one token id."
        ))
        .with_param(param)
        .with_code("empty_array"));
    }
    items
        .iter()
        .enumerate()
        .map(|(j, item)| {
            item.as_u64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| {
                    let at = format!("{param}[{j}]");
                    // A number is shown as itself (a token id out of range
                    // says which), anything else by its type.
                    let got = match item {
                        Value::Number(n) => n.to_string(),
                        other => describe(other).to_string(),
                    };
                    ApiError::invalid_request(format!(
                        "Invalid '{at}': expected a token id (a non-negative integer), but got {got} instead."
                    ))
                    .with_param(at)
                    .with_code("invalid_type")
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(value: Value) -> TextsOrTokens {
        parse(Some(&value), "prompt", 3).unwrap()
    }

    fn texts(t: &[&str]) -> TextsOrTokens {
        TextsOrTokens::Texts(t.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn four_forms() {
        assert_eq!(ok(json!("a")), texts(&["a"]));
        assert_eq!(ok(json!("")), texts(&[""]));
        assert_eq!(ok(json!(["a", "b"])), texts(&["a", "b"]));
        assert_eq!(
            ok(json!([1, 2, 3])),
            TextsOrTokens::Tokens(vec![vec![1, 2, 3]])
        );
        assert_eq!(
            ok(json!([[1, 2], [3]])),
            TextsOrTokens::Tokens(vec![vec![1, 2], vec![3]])
        );
        // A long single token array is one item, not many.
        let long: Vec<u64> = (0..100).collect();
        assert_eq!(ok(json!(long)).len(), 1);
    }

    #[test]
    fn errors_name_the_element() {
        for (bad, param, code) in [
            (Value::Null, "prompt", "missing_required_parameter"),
            (json!(5), "prompt", "invalid_type"),
            (json!({"text": "x"}), "prompt", "invalid_type"),
            (json!([]), "prompt", "empty_array"),
            (
                json!(["a", "b", "c", "d"]),
                "prompt",
                "array_above_max_length",
            ),
            (json!(["a", 1]), "prompt[1]", "invalid_type"),
            (json!([[1], "a"]), "prompt[1]", "invalid_type"),
            (json!([[]]), "prompt[0]", "empty_array"),
            (json!([-1]), "prompt[0]", "invalid_type"),
            (json!([1.5]), "prompt[0]", "invalid_type"),
            (json!([[1, 3000000000u64]]), "prompt[0][1]", "invalid_type"),
            (json!([true]), "prompt[0]", "invalid_type"),
            (json!([1, "a"]), "prompt[0]", "invalid_type"),
        ] {
            let e = parse(Some(&bad).filter(|v| !v.is_null()), "prompt", 3).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)), "{bad}");
            assert_eq!(e.code.as_deref(), Some(code), "{bad}");
            assert!(e.message.contains(&format!("'{param}'")), "{}", e.message);
        }
        let e = parse(Some(&json!([[7, -2]])), "input", 3).unwrap_err();
        assert!(e.message.contains("but got -2 instead"), "{}", e.message);
    }
}
