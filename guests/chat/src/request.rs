//! Parsing and validating a Chat Completions request body.
//!
//! The body is first read as a generic JSON value and then checked field by
//! field, rather than deserialised straight into a struct, so that every
//! problem can be reported the way OpenAI does: a 400 that names the exact
//! parameter (`"max_tokens"`, `"messages[2].role"`) and says what was
//! expected. Unknown fields are ignored, as OpenAI ignores them.
//!
//! The parameters chat shares with the legacy Completions API (sampling,
//! `stream`/`stream_options`, `stop`, `n`, refusing unsupported parameters)
//! are read here by one set of functions that `text_request` uses too.

use crate::constraint::{Constraint, ResponseFormat};
use crate::tools::{parse_past_calls, PastCall, Tools};
use sandpiper_guest_sdk::params::{
    array_too_long, describe, empty_array, json_object, missing, positive_integer, present,
    required_string, wrong_type,
};
use sandpiper_guest_sdk::ApiError;
use serde_json::{json, Map, Value};

/// Most stop sequences a request may give (OpenAI's limit).
pub const MAX_STOP_SEQUENCES: usize = 4;

/// Most alternatives `top_logprobs` may ask for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u64 = 20;

/// Most choices `n` may ask for: each is a sequence of its own.
pub const MAX_N: u64 = 8;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

impl Role {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "system" => Role::System,
            "developer" => Role::Developer,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => return None,
        })
    }

    /// The name chat templates expect in `message['role']`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One message with its content flattened to text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    /// Text parts are joined with `\n` (as vLLM does); a `null` assistant
    /// content becomes `""` so templates that concatenate strings still work.
    pub content: String,
    /// An assistant message's `tool_calls` (see [`crate::tools`]).
    pub tool_calls: Vec<PastCall>,
}

/// A validated Chat Completions request, defaults applied.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    pub stream: bool,
    /// `stream_options.include_usage`: send a final usage chunk when streaming.
    pub include_usage: bool,
    /// Temperature, top-p, seed, penalties and `logit_bias`.
    pub sampling: Sampling,
    /// `max_completion_tokens`, else `max_tokens`; `None` means "until the
    /// context is full".
    pub max_tokens: Option<u64>,
    /// Non-empty stop sequences (empty strings are dropped: they would match
    /// before any output).
    pub stop: Vec<String>,
    /// Return the log-probability of each output token.
    pub logprobs: bool,
    /// 0..=20 alternatives per token (only with `logprobs`).
    pub top_logprobs: u64,
    /// Choices to generate, 1..=[`MAX_N`], default 1.
    pub n: u64,
    /// `tools`, `tool_choice`, `parallel_tool_calls`.
    pub tools: Tools,
    pub response_format: ResponseFormat,
    /// What `tools` and `response_format` make of the output, compiled once
    /// here (an unenforceable schema is a 400 before anything runs); each
    /// choice starts from a copy.
    pub constraint: Option<Constraint>,
}

impl ChatRequest {
    /// The `sampling` tensor for choice `index` (see [`Sampling::to_json`]).
    pub fn sampling_json(&self, index: u64) -> String {
        self.sampling
            .to_json(index, self.logprobs, self.top_logprobs)
    }

    /// `logit_bias` may only name tokens of the model's vocabulary.
    pub fn check_vocab(&self, vocab_size: u64) -> Result<(), ApiError> {
        self.sampling.check_vocab(vocab_size)
    }
}

/// The sampling parameters chat and text completions share, read the same
/// way for both.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// 0..=2, default 1; 0 means greedy.
    pub temperature: f64,
    /// In (0, 1], default 1.
    pub top_p: f64,
    /// OpenAI allows any integer; negative seeds are wrapped to `u64` (two's
    /// complement) because backends take an unsigned seed.
    pub seed: Option<u64>,
    /// -2..=2, default 0.
    pub frequency_penalty: f64,
    /// -2..=2, default 0.
    pub presence_penalty: f64,
    /// Token id → bias in -100..=100, ids ascending. Ids are checked against
    /// the model's vocabulary by [`Sampling::check_vocab`].
    pub logit_bias: Vec<(u64, f64)>,
}

impl Sampling {
    /// Reads `temperature`, `top_p`, `seed`, `frequency_penalty`,
    /// `presence_penalty` and `logit_bias`, defaults applied.
    pub fn parse(obj: &Map<String, Value>) -> Result<Self, ApiError> {
        let temperature = optional_number(obj, "temperature")?.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(out_of_range("temperature", temperature, "between 0 and 2"));
        }
        let top_p = optional_number(obj, "top_p")?.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(out_of_range("top_p", top_p, "greater than 0 and at most 1"));
        }
        let seed = match present(obj, "seed") {
            None => None,
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
                Some(n.as_u64().unwrap_or_else(|| n.as_i64().unwrap_or(0) as u64))
            }
            Some(other) => return Err(wrong_type("seed", "an integer", other)),
        };
        Ok(Self {
            temperature,
            top_p,
            seed,
            frequency_penalty: penalty(obj, "frequency_penalty")?,
            presence_penalty: penalty(obj, "presence_penalty")?,
            logit_bias: parse_logit_bias(present(obj, "logit_bias"))?,
        })
    }

    /// The `sampling` tensor of `nn-protocol.md` for the choice whose seed
    /// offset is `index`: with a seed, it samples with `seed + index`
    /// (wrapping), so choices differ from each other yet the whole response
    /// reproduces. `top_logprobs` is only used with `logprobs`.
    pub fn to_json(&self, index: u64, logprobs: bool, top_logprobs: u64) -> String {
        let bias: Map<String, Value> = self
            .logit_bias
            .iter()
            .map(|(id, b)| (id.to_string(), json!(b)))
            .collect();
        json!({
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed.map(|seed| seed.wrapping_add(index)),
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
            "logit_bias": bias,
            "logprobs": logprobs,
            "top_logprobs": top_logprobs,
        })
        .to_string()
    }

    /// `logit_bias` may only name tokens of the model's vocabulary.
    pub fn check_vocab(&self, vocab_size: u64) -> Result<(), ApiError> {
        match self.logit_bias.iter().find(|(id, _)| *id >= vocab_size) {
            None => Ok(()),
            Some((id, _)) => Err(ApiError::invalid_request(format!(
                "Invalid 'logit_bias': token id {id} is outside the model's vocabulary (ids 0 to {}).",
                vocab_size.saturating_sub(1)
            ))
            .with_param("logit_bias")
            .with_code("invalid_value")),
        }
    }
}

/// Known OpenAI parameters this server does not implement. A request using
/// one is refused (400 `unsupported_parameter`) rather than answered as if it
/// had not been sent. `None`: any non-null value is refused; `Some(f)`: values
/// for which `f` is true are harmless defaults and accepted.
pub type Accept = Option<fn(&Value, &Map<String, Value>) -> bool>;
const UNSUPPORTED: &[(&str, Accept)] = &[
    // The pre-`tools` function-calling parameters.
    ("functions", Some(|v, _| is_empty_array(v))),
    ("function_call", Some(|v, _| v == "none")),
    ("audio", None),
    ("modalities", Some(|v, _| *v == json!(["text"]))),
    ("prediction", None),
    ("web_search_options", None),
    ("reasoning_effort", None),
    ("verbosity", None),
];

fn is_empty_array(v: &Value) -> bool {
    v.as_array().is_some_and(|a| a.is_empty())
}

/// Refuses the first parameter of `table` the request uses with a value its
/// [`Accept`] does not allow: 400 `unsupported_parameter` naming it.
pub fn check_unsupported(
    obj: &Map<String, Value>,
    table: &[(&str, Accept)],
) -> Result<(), ApiError> {
    for (param, accept) in table {
        let Some(value) = present(obj, param) else {
            continue;
        };
        if accept.is_some_and(|ok| ok(value, obj)) {
            continue;
        }
        return Err(ApiError::invalid_request(format!(
            "Unsupported parameter: '{param}' is not supported by this server."
        ))
        .with_param(*param)
        .with_code("unsupported_parameter"));
    }
    Ok(())
}

/// Parses and validates a request body.
pub fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let obj = json_object(body)?;
    let model = required_string(&obj, "model")?;

    let messages = parse_messages(present(&obj, "messages"))?;

    let (stream, include_usage) = parse_stream(&obj)?;
    let sampling = Sampling::parse(&obj)?;

    // `max_completion_tokens` is OpenAI's current name; `max_tokens` the
    // deprecated one most clients still send. Either is validated as given.
    let max_completion = positive_integer(&obj, "max_completion_tokens")?;
    let max_tokens = positive_integer(&obj, "max_tokens")?;
    let max_tokens = max_completion.or(max_tokens);

    let stop = parse_stop(present(&obj, "stop"))?;

    let logprobs = optional_bool(&obj, "logprobs")?.unwrap_or(false);
    let top_logprobs = match present(&obj, "top_logprobs") {
        None => 0,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|k| k <= MAX_TOP_LOGPROBS) => {
            n.as_u64().unwrap_or(0)
        }
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
            return Err(out_of_range(
                "top_logprobs",
                n.as_f64().unwrap_or(0.0),
                "between 0 and 20",
            ))
        }
        Some(other) => return Err(wrong_type("top_logprobs", "an integer", other)),
    };
    if present(&obj, "top_logprobs").is_some() && !logprobs {
        return Err(ApiError::invalid_request(
            "Invalid 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is given.",
        )
        .with_param("top_logprobs")
        .with_code("invalid_value"));
    }
    check_unsupported(&obj, UNSUPPORTED)?;
    let n = parse_n(&obj)?;
    let tools = Tools::parse(&obj)?;
    let response_format = ResponseFormat::parse(&obj)?;
    if tools.active() && !tools.forced() && response_format != ResponseFormat::Text {
        return Err(ApiError::invalid_request(
            "Unsupported parameter combination: 'response_format' other than 'text' together with 'tools' and 'tool_choice' 'auto' is not supported by this server; use 'tool_choice' 'required' or a named function, or no tools.",
        )
        .with_param("response_format")
        .with_code("unsupported_parameter"));
    }
    let constraint = Constraint::for_request(&tools, &response_format)?;

    Ok(ChatRequest {
        model,
        messages,
        stream,
        include_usage,
        sampling,
        max_tokens,
        stop,
        logprobs,
        top_logprobs,
        n,
        tools,
        response_format,
        constraint,
    })
}

/// `stream` and `stream_options.include_usage` (both default false).
pub fn parse_stream(obj: &Map<String, Value>) -> Result<(bool, bool), ApiError> {
    let stream = optional_bool(obj, "stream")?.unwrap_or(false);
    let include_usage = match present(obj, "stream_options") {
        None => false,
        Some(Value::Object(opts)) => match present(opts, "include_usage") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(wrong_type(
                    "stream_options.include_usage",
                    "a boolean",
                    other,
                ))
            }
        },
        Some(other) => return Err(wrong_type("stream_options", "an object", other)),
    };
    Ok((stream, include_usage))
}

/// `n`: 1..=[`MAX_N`], default 1.
pub fn parse_n(obj: &Map<String, Value>) -> Result<u64, ApiError> {
    match present(obj, "n") {
        None => Ok(1),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|k| (1..=MAX_N).contains(&k)) => {
            Ok(n.as_u64().unwrap_or(1))
        }
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Err(out_of_range(
            "n",
            n.as_f64().unwrap_or(0.0),
            "between 1 and 8",
        )),
        Some(other) => Err(wrong_type("n", "an integer", other)),
    }
}

fn penalty(obj: &Map<String, Value>, key: &str) -> Result<f64, ApiError> {
    let value = optional_number(obj, key)?.unwrap_or(0.0);
    if !(-2.0..=2.0).contains(&value) {
        return Err(out_of_range(key, value, "between -2 and 2"));
    }
    Ok(value)
}

/// `{"50256": -100}`: token-id strings to biases in -100..=100.
fn parse_logit_bias(value: Option<&Value>) -> Result<Vec<(u64, f64)>, ApiError> {
    let map = match value {
        None => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(other) => return Err(wrong_type("logit_bias", "an object", other)),
    };
    let invalid = |message: String| {
        ApiError::invalid_request(message)
            .with_param("logit_bias")
            .with_code("invalid_value")
    };
    let mut out = Vec::with_capacity(map.len());
    for (key, bias) in map {
        let id: u64 = key
            .parse()
            .ok()
            .filter(|_| key.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                invalid(format!(
                    "Invalid 'logit_bias': keys must be token ids (non-negative integers as strings), but got {key:?}."
                ))
            })?;
        let bias = match bias {
            Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            other => {
                return Err(invalid(format!(
                    "Invalid 'logit_bias': the bias for token {id} must be a number, but got {} instead.",
                    describe(other)
                )))
            }
        };
        if !(-100.0..=100.0).contains(&bias) {
            return Err(invalid(format!(
                "Invalid 'logit_bias': the bias for token {id} must be between -100 and 100, but got {bias} instead."
            )));
        }
        out.push((id, bias));
    }
    out.sort_by_key(|(id, _)| *id);
    Ok(out)
}

fn parse_messages(value: Option<&Value>) -> Result<Vec<Message>, ApiError> {
    let items = match value {
        None => return Err(missing("messages")),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(wrong_type("messages", "an array", other)),
    };
    if items.is_empty() {
        return Err(empty_array("messages"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_message(i, item))
        .collect()
}

fn parse_message(i: usize, item: &Value) -> Result<Message, ApiError> {
    let at = |field: &str| format!("messages[{i}].{field}");
    let Value::Object(obj) = item else {
        return Err(wrong_type(&format!("messages[{i}]"), "an object", item));
    };
    let role = match present(obj, "role") {
        None => return Err(missing(&at("role"))),
        Some(Value::String(s)) => Role::parse(s).ok_or_else(|| {
            ApiError::invalid_request(format!(
                "Invalid value: '{s}'. Supported values are: 'system', 'developer', 'user', 'assistant', and 'tool'."
            ))
            .with_param(at("role"))
            .with_code("invalid_value")
        })?,
        Some(other) => return Err(wrong_type(&at("role"), "a string", other)),
    };
    let content = match present(obj, "content") {
        // An assistant turn that only made tool calls has no content.
        None if role == Role::Assistant => String::new(),
        None => return Err(missing(&at("content"))),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => join_parts(&at("content"), parts)?,
        Some(other) => {
            return Err(wrong_type(
                &at("content"),
                "a string or an array of content parts",
                other,
            ))
        }
    };
    let tool_calls = match role {
        Role::Assistant => parse_past_calls(i, present(obj, "tool_calls"))?,
        _ => Vec::new(),
    };
    Ok(Message {
        role,
        content,
        tool_calls,
    })
}

fn join_parts(param: &str, parts: &[Value]) -> Result<String, ApiError> {
    let mut texts = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let at = format!("{param}[{j}]");
        let Value::Object(obj) = part else {
            return Err(wrong_type(&at, "an object", part));
        };
        match present(obj, "type") {
            Some(Value::String(t)) if t == "text" => {}
            Some(Value::String(t)) => {
                return Err(ApiError::invalid_request(format!(
                    "Invalid content part type '{t}': only 'text' parts are supported."
                ))
                .with_param(format!("{at}.type"))
                .with_code("invalid_value"))
            }
            None => return Err(missing(&format!("{at}.type"))),
            Some(other) => return Err(wrong_type(&format!("{at}.type"), "a string", other)),
        }
        match present(obj, "text") {
            Some(Value::String(t)) => texts.push(t.as_str()),
            None => return Err(missing(&format!("{at}.text"))),
            Some(other) => return Err(wrong_type(&format!("{at}.text"), "a string", other)),
        }
    }
    Ok(texts.join("\n"))
}

/// `stop`: a string or up to [`MAX_STOP_SEQUENCES`]; empty strings dropped.
pub fn parse_stop(value: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let stops = match value {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            if items.len() > MAX_STOP_SEQUENCES {
                return Err(array_too_long("stop", MAX_STOP_SEQUENCES, items.len()));
            }
            items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(wrong_type("stop", "a string or an array of strings", other)),
                })
                .collect::<Result<_, _>>()?
        }
        Some(other) => return Err(wrong_type("stop", "a string or an array of strings", other)),
    };
    Ok(stops.into_iter().filter(|s| !s.is_empty()).collect())
}

/// An optional boolean (`null` is absent).
pub fn optional_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match present(obj, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(wrong_type(key, "a boolean", other)),
    }
}

/// An optional number (`null` is absent).
pub fn optional_number(obj: &Map<String, Value>, key: &str) -> Result<Option<f64>, ApiError> {
    match present(obj, key) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(wrong_type(key, "a number", other)),
    }
}

/// 400 `invalid_value` for a number outside its range.
pub fn out_of_range(param: &str, got: f64, expected: &str) -> ApiError {
    ApiError::invalid_request(format!(
        "Invalid '{param}': expected a value {expected}, but got {got} instead."
    ))
    .with_param(param)
    .with_code("invalid_value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: Value) -> ChatRequest {
        parse(body.to_string().as_bytes()).unwrap()
    }

    fn err(body: Value) -> ApiError {
        parse(body.to_string().as_bytes()).unwrap_err()
    }

    fn user(text: &str) -> Value {
        json!([{"role": "user", "content": text}])
    }

    #[test]
    fn minimal_request_gets_defaults() {
        let r = ok(json!({"model": "m", "messages": user("hi")}));
        assert_eq!(r.model, "m");
        assert_eq!(
            r.messages,
            vec![Message {
                role: Role::User,
                content: "hi".into(),
                tool_calls: Vec::new(),
            }]
        );
        assert!(!r.stream && !r.include_usage);
        assert_eq!((r.sampling.temperature, r.sampling.top_p), (1.0, 1.0));
        assert_eq!((r.max_tokens, r.sampling.seed), (None, None));
        assert!(r.stop.is_empty());
    }

    #[test]
    fn full_request_is_read() {
        let r = ok(json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": null, "tool_calls": []},
                {"role": "tool", "content": "42", "tool_call_id": "x"},
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "temperature": 0,
            "top_p": 0.5,
            "max_tokens": 16,
            "stop": ["\n\n", "", "END"],
            "seed": -1,
            "n": 1,
            "frequency_penalty": 0.5,
            "presence_penalty": -1,
            "logit_bias": {"42": -100, "7": 2.5},
            "logprobs": true,
            "top_logprobs": 3,
            "response_format": {"type": "text"},
            "user": "u1",
            "metadata": {"k": "v"},
            "store": false,
            "service_tier": "auto",
            "some_future_field": {"x": 1},
        }));
        assert_eq!(r.messages[1].content, "a\nb");
        assert_eq!(r.messages[2].content, "");
        assert_eq!(r.messages[3].role, Role::Tool);
        assert!(r.stream && r.include_usage);
        assert_eq!((r.sampling.temperature, r.sampling.top_p), (0.0, 0.5));
        assert_eq!(r.max_tokens, Some(16));
        assert_eq!(r.stop, vec!["\n\n".to_string(), "END".to_string()]);
        assert_eq!(r.sampling.seed, Some(u64::MAX));
        let s = &r.sampling;
        assert_eq!((s.frequency_penalty, s.presence_penalty), (0.5, -1.0));
        assert_eq!(s.logit_bias, vec![(7, 2.5), (42, -100.0)]);
        assert!(r.logprobs);
        assert_eq!(r.top_logprobs, 3);
    }

    #[test]
    fn penalties_and_bias_are_validated() {
        for (param, bad) in [
            ("frequency_penalty", json!(2.5)),
            ("frequency_penalty", json!("1")),
            ("presence_penalty", json!(-2.01)),
            ("logit_bias", json!({"abc": 1})),
            ("logit_bias", json!({"-5": 1})),
            ("logit_bias", json!({"1.5": 1})),
            ("logit_bias", json!({"5": 101})),
            ("logit_bias", json!({"5": "1"})),
            ("logit_bias", json!([1])),
            ("top_logprobs", json!(21)),
            ("top_logprobs", json!(-1)),
            ("top_logprobs", json!(1.5)),
            ("logprobs", json!(1)),
        ] {
            let mut body = json!({"model": "m", "messages": user("x"), "logprobs": true});
            body[param] = bad.clone();
            let e = err(body);
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)), "{bad}");
        }
        let r = ok(json!({"model": "m", "messages": user("x"), "logit_bias": {"49151": 1}}));
        assert!(r.check_vocab(49152).is_ok());
        let r = ok(json!({"model": "m", "messages": user("x"), "logit_bias": {"49152": 1}}));
        let e = r.check_vocab(49152).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("logit_bias"));
    }

    #[test]
    fn top_logprobs_needs_logprobs() {
        for logprobs in [json!(false), Value::Null] {
            let e = err(
                json!({"model": "m", "messages": user("x"), "logprobs": logprobs, "top_logprobs": 2}),
            );
            assert_eq!(e.param.as_deref(), Some("top_logprobs"));
        }
        let r =
            ok(json!({"model": "m", "messages": user("x"), "logprobs": true, "top_logprobs": 0}));
        assert_eq!((r.logprobs, r.top_logprobs), (true, 0));
    }

    #[test]
    fn unsupported_params_are_refused() {
        for (param, bad) in [
            ("functions", json!([{"name": "f"}])),
            ("function_call", json!("auto")),
            ("audio", json!({"voice": "alloy", "format": "wav"})),
            ("modalities", json!(["text", "audio"])),
            ("prediction", json!({"type": "content", "content": "x"})),
            ("web_search_options", json!({})),
        ] {
            let e = err(json!({"model": "m", "messages": user("x"), param: bad}));
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)));
            assert_eq!(e.code.as_deref(), Some("unsupported_parameter"));
        }
        // Harmless values are accepted.
        ok(
            json!({"model": "m", "messages": user("x"), "tools": [], "tool_choice": "none",
            "parallel_tool_calls": true, "modalities": ["text"], "response_format": {"type": "text"},
            "logprobs": false, "n": 1, "store": false, "audio": null}),
        );
    }

    #[test]
    fn tools_and_response_format_are_read() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let r = ok(json!({"model": "m", "messages": user("x"), "tools": tools,
            "tool_choice": "required", "parallel_tool_calls": false,
            "response_format": {"type": "json_object"}}));
        assert!(r.tools.forced() && !r.tools.parallel);
        assert_eq!(r.response_format, ResponseFormat::JsonObject);
        // Free choice between text and calls cannot also force JSON text.
        let e = err(json!({"model": "m", "messages": user("x"), "tools": tools,
            "response_format": {"type": "json_object"}}));
        assert_eq!(e.param.as_deref(), Some("response_format"));
        let r = ok(json!({"model": "m", "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "done"}]}));
        assert_eq!(
            r.messages[1].tool_calls,
            vec![PastCall {
                name: "f".into(),
                arguments: "{}".into()
            }]
        );
    }

    #[test]
    fn nulls_mean_defaults() {
        let r = ok(
            json!({"model": "m", "messages": user("x"), "temperature": null,
            "max_tokens": null, "stop": null, "stream": null, "stream_options": null, "n": null}),
        );
        assert_eq!(r.sampling.temperature, 1.0);
        assert_eq!(r.max_tokens, None);
    }

    #[test]
    fn max_completion_tokens_wins() {
        let r = ok(
            json!({"model": "m", "messages": user("x"), "max_tokens": 5, "max_completion_tokens": 7}),
        );
        assert_eq!(r.max_tokens, Some(7));
    }

    #[test]
    fn single_stop_string() {
        let r = ok(json!({"model": "m", "messages": user("x"), "stop": "###"}));
        assert_eq!(r.stop, vec!["###".to_string()]);
    }

    #[test]
    fn malformed_json_is_400_invalid_json() {
        let e = parse(b"{\"model\": ").unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (400, None));
        assert_eq!(e.code.as_deref(), Some("invalid_json"));
        let e = parse(b"[1,2]").unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (400, None));
    }

    #[test]
    fn messages_missing_or_empty() {
        let e = err(json!({"model": "m"}));
        assert_eq!(e.param.as_deref(), Some("messages"));
        let e = err(json!({"model": "m", "messages": []}));
        assert_eq!((e.status, e.param.as_deref()), (400, Some("messages")));
        let e = err(json!({"model": "m", "messages": "hi"}));
        assert_eq!(e.param.as_deref(), Some("messages"));
    }

    #[test]
    fn bad_messages_name_the_field() {
        let e = err(json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}));
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let e = err(json!({"model": "m", "messages": [{"role": "user"}]}));
        assert_eq!(e.param.as_deref(), Some("messages[0].content"));
        let e = err(json!({"model": "m", "messages": [{"role": "user", "content": 3}]}));
        assert_eq!(e.param.as_deref(), Some("messages[0].content"));
        let e = err(
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
        );
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0].type"));
        let e = err(json!({"model": "m", "messages": [user("ok")[0].clone(), 5]}));
        assert_eq!(e.param.as_deref(), Some("messages[1]"));
    }

    #[test]
    fn model_required_and_string() {
        assert_eq!(
            err(json!({"messages": user("x")})).param.as_deref(),
            Some("model")
        );
        assert_eq!(
            err(json!({"model": 3, "messages": user("x")}))
                .param
                .as_deref(),
            Some("model")
        );
    }

    #[test]
    fn max_tokens_must_be_positive_integer() {
        for bad in [json!(0), json!(-5), json!(1.5), json!("10")] {
            let e = err(json!({"model": "m", "messages": user("x"), "max_tokens": bad}));
            assert_eq!((e.status, e.param.as_deref()), (400, Some("max_tokens")));
        }
        let e = err(json!({"model": "m", "messages": user("x"), "max_completion_tokens": 0}));
        assert_eq!(e.param.as_deref(), Some("max_completion_tokens"));
    }

    #[test]
    fn wrong_types_name_the_param() {
        for (param, bad) in [
            ("temperature", json!("hot")),
            ("top_p", json!(true)),
            ("stream", json!("yes")),
            ("seed", json!(1.5)),
            ("stop", json!(5)),
            ("stop", json!(["a", 1])),
            ("n", json!("1")),
            ("stream_options", json!(true)),
        ] {
            let e = err(json!({"model": "m", "messages": user("x"), param: bad}));
            assert_eq!(e.status, 400, "{param}");
            assert_eq!(e.param.as_deref(), Some(param), "{param}");
        }
        let e = err(
            json!({"model": "m", "messages": user("x"), "stream_options": {"include_usage": 1}}),
        );
        assert_eq!(e.param.as_deref(), Some("stream_options.include_usage"));
    }

    #[test]
    fn ranges_are_checked() {
        for (param, bad) in [
            ("temperature", json!(2.5)),
            ("temperature", json!(-0.1)),
            ("top_p", json!(0)),
            ("top_p", json!(1.01)),
        ] {
            let e = err(json!({"model": "m", "messages": user("x"), param: bad}));
            assert_eq!(e.param.as_deref(), Some(param));
        }
        ok(json!({"model": "m", "messages": user("x"), "temperature": 2, "top_p": 1}));
    }

    #[test]
    fn n_from_1_to_8() {
        assert_eq!(ok(json!({"model": "m", "messages": user("x")})).n, 1);
        for n in [1, 2, 8] {
            assert_eq!(
                ok(json!({"model": "m", "messages": user("x"), "n": n})).n,
                n
            );
        }
        for bad in [json!(0), json!(9), json!(-1), json!(100)] {
            let e = err(json!({"model": "m", "messages": user("x"), "n": bad}));
            assert_eq!((e.status, e.param.as_deref()), (400, Some("n")), "{bad}");
            assert_eq!(e.code.as_deref(), Some("invalid_value"));
        }
        let e = err(json!({"model": "m", "messages": user("x"), "n": 1.5}));
        assert_eq!(e.param.as_deref(), Some("n"));
    }

    #[test]
    fn choice_i_samples_with_seed_plus_i() {
        let r = ok(json!({"model": "m", "messages": user("x"), "seed": 10, "n": 3}));
        let seeds: Vec<Value> = (0..3)
            .map(|i| serde_json::from_str::<Value>(&r.sampling_json(i)).unwrap()["seed"].clone())
            .collect();
        assert_eq!(seeds, [json!(10), json!(11), json!(12)]);
        let wrap = ok(json!({"model": "m", "messages": user("x"), "seed": -1}));
        let v: Value = serde_json::from_str(&wrap.sampling_json(1)).unwrap();
        assert_eq!(v["seed"], json!(0));
    }

    #[test]
    fn at_most_four_stops() {
        let e =
            err(json!({"model": "m", "messages": user("x"), "stop": ["a", "b", "c", "d", "e"]}));
        assert_eq!(e.param.as_deref(), Some("stop"));
    }

    #[test]
    fn sampling_json_matches_protocol() {
        let mut r = ok(json!({"model": "m", "messages": user("x"), "temperature": 0, "seed": 42}));
        let v: Value = serde_json::from_str(&r.sampling_json(0)).unwrap();
        assert_eq!(
            v,
            json!({"temperature": 0.0, "top_p": 1.0, "seed": 42, "frequency_penalty": 0.0,
                "presence_penalty": 0.0, "logit_bias": {}, "logprobs": false, "top_logprobs": 0})
        );
        let b = ok(
            json!({"model": "m", "messages": user("x"), "logit_bias": {"5": -1},
            "presence_penalty": 1, "logprobs": true, "top_logprobs": 2}),
        );
        let v: Value = serde_json::from_str(&b.sampling_json(0)).unwrap();
        assert_eq!(v["logit_bias"], json!({"5": -1.0}));
        assert_eq!(v["presence_penalty"], json!(1.0));
        assert_eq!(v["top_logprobs"], json!(2));
        assert_eq!(v["logprobs"], true);
        r.sampling.seed = None;
        let v: Value = serde_json::from_str(&r.sampling_json(0)).unwrap();
        assert_eq!(v["seed"], Value::Null);
    }
}
