//! What the output must look like: `response_format` and tool calls, as a
//! [`Constraint`] the generation loop checks every sampled token against.
//!
//! The loop lets the model sample freely and asks the backend to resample
//! (among the tokens [`Constraint::mask`] allows) only when the token breaks
//! the grammar; wit/nn-protocol.md explains why that is exactly sampling
//! from the masked distribution.

use std::sync::Arc;

use crate::tools::{Tools, CALL_OPEN};
use sandpiper_grammar::{Grammar, Matcher, Vocab};
use sandpiper_guest_sdk::params::{missing, present, wrong_type};
use sandpiper_guest_sdk::ApiError;
use serde_json::{Map, Value};

/// `response_format`.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    /// Any JSON object.
    JsonObject,
    /// A JSON document valid against `schema`.
    JsonSchema {
        name: String,
        schema: Value,
    },
}

impl ResponseFormat {
    pub fn parse(obj: &Map<String, Value>) -> Result<Self, ApiError> {
        let format = match present(obj, "response_format") {
            None => return Ok(Self::Text),
            Some(Value::Object(f)) => f,
            Some(other) => return Err(wrong_type("response_format", "an object", other)),
        };
        let parsed = match present(format, "type") {
            Some(Value::String(t)) if t == "text" => Self::Text,
            Some(Value::String(t)) if t == "json_object" => Self::JsonObject,
            Some(Value::String(t)) if t == "json_schema" => {
                let spec = match present(format, "json_schema") {
                    Some(Value::Object(s)) => s,
                    None => return Err(missing("response_format.json_schema")),
                    Some(other) => {
                        return Err(wrong_type("response_format.json_schema", "an object", other))
                    }
                };
                let name = match present(spec, "name") {
                    Some(Value::String(n)) => n.clone(),
                    None => return Err(missing("response_format.json_schema.name")),
                    Some(other) => {
                        return Err(wrong_type("response_format.json_schema.name", "a string", other))
                    }
                };
                let schema = match present(spec, "schema") {
                    None => serde_json::json!({"type": "object"}),
                    Some(s @ Value::Object(_)) => s.clone(),
                    Some(other) => {
                        return Err(wrong_type("response_format.json_schema.schema", "an object", other))
                    }
                };
                Self::JsonSchema { name, schema }
            }
            Some(Value::String(t)) => {
                return Err(ApiError::invalid_request(format!(
                    "Invalid value: '{t}'. Supported values are: 'text', 'json_object', and 'json_schema'."
                ))
                .with_param("response_format.type")
                .with_code("invalid_value"))
            }
            None => return Err(missing("response_format.type")),
            Some(other) => return Err(wrong_type("response_format.type", "a string", other)),
        };
        Ok(parsed)
    }

    /// The grammar of the output, `None` for free text; a schema it cannot
    /// enforce is a 400 naming `response_format.json_schema.schema`.
    pub fn grammar(&self) -> Result<Option<Grammar>, ApiError> {
        match self {
            Self::Text => Ok(None),
            Self::JsonObject => Ok(Some(sandpiper_grammar::any_json_object())),
            Self::JsonSchema { schema, .. } => sandpiper_grammar::json_schema(schema)
                .map(Some)
                .map_err(|e| {
                    ApiError::invalid_request(format!("Invalid schema for response_format: {e}."))
                        .with_param("response_format.json_schema.schema")
                        .with_code("invalid_value")
                }),
        }
    }
}

/// How a constraint applies.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// Every token must fit the grammar.
    Enforce,
    /// The model may write anything; while its output fits the grammar and
    /// has not yet written `trigger`, watch. Once `trigger` is written,
    /// enforce; once the output leaves the grammar before that, stop
    /// watching.
    Watch {
        trigger: &'static str,
        seen: String,
    },
    Off,
}

/// A grammar the output follows, and where the output is in it.
#[derive(Debug, Clone)]
pub struct Constraint {
    matcher: Matcher,
    mode: Mode,
}

impl Constraint {
    /// The output constraint for a request: tool calls when forced or
    /// possible (auto: enforced once the model opens a call), else the
    /// response format's grammar, else none.
    pub fn for_request(tools: &Tools, format: &ResponseFormat) -> Result<Option<Self>, ApiError> {
        if let Some(grammar) = tools.grammar()? {
            let matcher = Matcher::new(Arc::new(grammar));
            let mode = if tools.forced() {
                Mode::Enforce
            } else {
                Mode::Watch {
                    trigger: CALL_OPEN,
                    seen: String::new(),
                }
            };
            return Ok(Some(Self { matcher, mode }));
        }
        Ok(format.grammar()?.map(|g| Self {
            matcher: Matcher::new(Arc::new(g)),
            mode: Mode::Enforce,
        }))
    }

    /// Takes a sampled token (`bytes`, or the end of the sequence when
    /// `end`) if it is allowed now; false means resample.
    pub fn accept(&mut self, bytes: &[u8], end: bool) -> bool {
        match &mut self.mode {
            Mode::Off => true,
            Mode::Enforce if end => self.matcher.is_complete(),
            Mode::Enforce => match self.matcher.advanced_by(bytes) {
                Some(next) => {
                    self.matcher = next;
                    true
                }
                None => false,
            },
            Mode::Watch { .. } if end => true,
            Mode::Watch { trigger, seen } => {
                match self.matcher.advanced_by(bytes) {
                    Some(next) => {
                        self.matcher = next;
                        seen.push_str(&String::from_utf8_lossy(bytes));
                        if seen.contains(*trigger) {
                            self.mode = Mode::Enforce;
                        }
                    }
                    None => self.mode = Mode::Off,
                }
                true
            }
        }
    }

    /// The tokens allowed now (see [`Vocab::mask`]); only asked after
    /// [`accept`](Self::accept) refused one, so only while enforcing.
    pub fn mask(&self, vocab: &Vocab, end_ids: &[u32]) -> Vec<u8> {
        vocab.mask(&self.matcher, end_ids)
    }

    /// The output is complete and nothing may follow: stop generating.
    pub fn finished(&self) -> bool {
        self.mode == Mode::Enforce && self.matcher.is_complete() && !self.matcher.can_continue()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn format(v: Value) -> Result<ResponseFormat, ApiError> {
        ResponseFormat::parse(json!({"response_format": v}).as_object().unwrap())
    }

    #[test]
    fn response_formats_parse() {
        assert_eq!(
            format(json!({"type": "text"})).unwrap(),
            ResponseFormat::Text
        );
        assert_eq!(
            format(json!({"type": "json_object"})).unwrap(),
            ResponseFormat::JsonObject
        );
        let f = format(json!({"type": "json_schema", "json_schema": {"name": "x", "strict": true,
            "schema": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}}))
        .unwrap();
        assert!(matches!(f, ResponseFormat::JsonSchema { ref name, .. } if name == "x"));
        let e = format(json!({"type": "json_schema", "json_schema": {"name": "x",
            "schema": {"type": "string", "pattern": "a"}}}))
        .unwrap()
        .grammar()
        .unwrap_err();
        assert_eq!(
            e.param.as_deref(),
            Some("response_format.json_schema.schema")
        );
        assert!(e.message.contains("pattern"));
        let e = format(json!({"type": "json_schema", "json_schema": {}})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("response_format.json_schema.name"));
        let e = format(json!({"type": "yaml"})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("response_format.type"));
    }

    #[test]
    fn enforce_refuses_and_finishes() {
        let tools = Tools::default();
        let mut c = Constraint::for_request(&tools, &ResponseFormat::JsonObject)
            .unwrap()
            .unwrap();
        assert!(!c.accept(b"Sure", false));
        assert!(!c.accept(b"", true), "nothing is not an object");
        assert!(c.accept(b"{\"a\"", false));
        assert!(c.accept(b": 1", false));
        assert!(!c.finished());
        assert!(c.accept(b"}", false));
        assert!(c.finished());
        assert!(Constraint::for_request(&tools, &ResponseFormat::Text)
            .unwrap()
            .is_none());
    }

    #[test]
    fn auto_tools_watch_then_enforce_or_let_go() {
        let body = json!({"tools": [{"type": "function", "function": {"name": "f",
            "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}}]});
        let tools = Tools::parse(body.as_object().unwrap()).unwrap();
        let mut c = Constraint::for_request(&tools, &ResponseFormat::Text)
            .unwrap()
            .unwrap();
        assert!(c.accept(b"Hello", false));
        assert!(
            c.accept(b"<tool_call>", false),
            "free text once it left the grammar"
        );

        let mut c = Constraint::for_request(&tools, &ResponseFormat::Text)
            .unwrap()
            .unwrap();
        assert!(c.accept(b"\n<tool", false));
        assert!(c.accept(b"_call>", false));
        assert!(
            !c.accept(b"{'name'", false),
            "enforced after the opening tag"
        );
        assert!(c.accept(
            b"{\"name\": \"f\", \"arguments\": {\"x\": 1}}</tool_call>",
            false
        ));
        assert!(c.accept(b"", true));
    }
}
