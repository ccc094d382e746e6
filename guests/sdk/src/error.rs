//! OpenAI-shaped error bodies.
//!
//! OpenAI clients (the official SDKs, LangChain, curl scripts) parse
//! `{"error":{"message","type","param","code"}}` and surface `message` to the
//! user, so every failure a guest reports — bad input, unknown model, a model
//! failing mid-generation — uses this one shape.

use serde_json::{json, Value};

/// `type` for anything the client can fix by changing its request.
pub const INVALID_REQUEST: &str = "invalid_request_error";
/// `type` for failures on our side (the client may retry).
pub const SERVER_ERROR: &str = "server_error";

/// An error response: HTTP status plus the OpenAI error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code of the response carrying this error.
    pub status: u16,
    /// Human-readable explanation; clients show it verbatim.
    pub message: String,
    /// OpenAI's `type`: [`INVALID_REQUEST`] or [`SERVER_ERROR`].
    pub kind: &'static str,
    /// The request parameter at fault (`"messages"`, `"max_tokens"`, …), if any.
    pub param: Option<String>,
    /// A machine-readable code (`"model_not_found"`, …), if any.
    pub code: Option<String>,
}

impl ApiError {
    /// A 400 `invalid_request_error` with no param and no code.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
            kind: INVALID_REQUEST,
            param: None,
            code: None,
        }
    }

    /// A 500 `server_error`: something failed that the client cannot fix.
    pub fn server_error(message: impl Into<String>) -> Self {
        Self {
            status: 500,
            message: message.into(),
            kind: SERVER_ERROR,
            param: None,
            code: None,
        }
    }

    /// The body OpenAI sends for a malformed JSON request.
    pub fn invalid_json(detail: impl std::fmt::Display) -> Self {
        Self::invalid_request(format!(
            "We could not parse the JSON body of your request: {detail}"
        ))
        .with_code("invalid_json")
    }

    /// 404 for a model id the host does not serve (OpenAI's wording and code).
    pub fn model_not_found(model: &str) -> Self {
        Self::invalid_request(format!(
            "The model `{model}` does not exist or you do not have access to it."
        ))
        .with_status(404)
        .with_code("model_not_found")
    }

    /// 404 for a path no route matches (OpenAI's wording).
    pub fn unknown_route(method: &str, path: &str) -> Self {
        Self::invalid_request(format!("Invalid URL ({method} {path})"))
            .with_status(404)
            .with_code("unknown_url")
    }

    /// 405 for a known path called with the wrong method; the response should
    /// also carry an `allow` header.
    pub fn method_not_allowed(method: &str, path: &str, allow: &str) -> Self {
        Self::invalid_request(format!(
            "Method {method} is not allowed for {path}; use {allow}."
        ))
        .with_status(405)
        .with_code("method_not_allowed")
    }

    /// Sets the parameter at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Sets the machine-readable code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Sets the HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// The `{"error":{...}}` object.
    pub fn to_value(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }

    /// The response body, serialised.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.kind, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let e = ApiError::invalid_request("bad").with_param("messages");
        let v: Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"error": {"message": "bad", "type": "invalid_request_error",
                             "param": "messages", "code": null}})
        );
        assert_eq!(e.status, 400);
    }

    #[test]
    fn model_not_found_is_404_with_code() {
        let e = ApiError::model_not_found("nope");
        assert_eq!(e.status, 404);
        assert_eq!(e.kind, INVALID_REQUEST);
        assert_eq!(e.code.as_deref(), Some("model_not_found"));
        assert!(e.message.contains("`nope`"));
    }

    #[test]
    fn server_error_is_500() {
        let e = ApiError::server_error("boom");
        assert_eq!((e.status, e.kind), (500, SERVER_ERROR));
    }
}
