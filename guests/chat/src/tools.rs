//! Tool calling: `tools`, `tool_choice` and `parallel_tool_calls`, the
//! prompt that shows the model its tools, and the calls it makes.
//!
//! Tools are presented, and calls expected, in the Hermes/Qwen format most
//! small open models learn function calling in: function signatures inside
//! `<tools></tools>` in the system prompt, each call as
//! `<tool_call>{"name": …, "arguments": {…}}</tool_call>`, results returned
//! inside `<tool_response>`. The chat template sees plain messages (the
//! GGUF templates of small models rarely know tools), so earlier assistant
//! calls and tool results are written into message content in that format.
//!
//! With `tool_choice` `required` or a named function the output is
//! constrained to tool calls from its first byte; with `auto` the model may
//! answer in text, and once its output starts with `<tool_call>` the rest is
//! constrained (see [`crate::constraint`]). Either way the arguments are
//! generated against the function's JSON Schema, so they always parse and
//! validate.

use crate::generate::Sink;
use crate::logprobs::TokenLogprob;
use crate::request::{Message, Role};
use sandpiper_grammar::{Grammar, ToolSpec};
use sandpiper_guest_sdk::http::Disconnected;
use sandpiper_guest_sdk::params::{missing, present, wrong_type};
use sandpiper_guest_sdk::ApiError;
use serde_json::{json, Map, Value};

/// The text that opens a call in the model's output.
pub const CALL_OPEN: &str = "<tool_call>";
const CALL_CLOSE: &str = "</tool_call>";

/// A function the client offers.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    /// `{"type": "function", "function": {…}}` as the client sent it, shown
    /// to the model.
    pub definition: Value,
    /// The arguments' JSON Schema (an object without properties when absent).
    pub parameters: Value,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    Function(String),
}

/// The request's tools and how they may be used.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    /// `parallel_tool_calls` (default true): more than one call per turn
    /// *may* be made. This server makes at most one per turn either way:
    /// small models given the choice repeat the same call until the token
    /// limit.
    pub parallel: bool,
}

impl Default for Tools {
    fn default() -> Self {
        Self {
            tools: Vec::new(),
            choice: ToolChoice::None,
            parallel: true,
        }
    }
}

/// A call in an earlier assistant message (`messages[].tool_calls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastCall {
    pub name: String,
    /// The JSON text of the arguments, as the API carries it.
    pub arguments: String,
}

fn invalid(param: &str, message: String) -> ApiError {
    ApiError::invalid_request(message)
        .with_param(param)
        .with_code("invalid_value")
}

impl Tools {
    /// Reads `tools`, `tool_choice` and `parallel_tool_calls`.
    pub fn parse(obj: &Map<String, Value>) -> Result<Self, ApiError> {
        let tools = match present(obj, "tools") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| parse_tool(i, item))
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(wrong_type("tools", "an array", other)),
        };
        for (i, tool) in tools.iter().enumerate() {
            if tools[..i].iter().any(|t: &Tool| t.name == tool.name) {
                return Err(invalid(
                    &format!("tools[{i}].function.name"),
                    format!(
                        "Invalid 'tools': the function name '{}' is used twice.",
                        tool.name
                    ),
                ));
            }
        }
        let choice = match present(obj, "tool_choice") {
            None if tools.is_empty() => ToolChoice::None,
            None => ToolChoice::Auto,
            Some(Value::String(s)) => match s.as_str() {
                "none" => ToolChoice::None,
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Required,
                _ => {
                    return Err(invalid(
                        "tool_choice",
                        format!("Invalid value: '{s}'. Supported values are: 'none', 'auto', 'required', or an object naming a function."),
                    ))
                }
            },
            Some(Value::Object(choice)) => {
                let name = choice
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| missing("tool_choice.function.name"))?;
                ToolChoice::Function(name.to_owned())
            }
            Some(other) => {
                return Err(wrong_type("tool_choice", "a string or an object", other))
            }
        };
        if choice != ToolChoice::None && tools.is_empty() {
            return Err(invalid(
                "tool_choice",
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.".into(),
            ));
        }
        if let ToolChoice::Function(name) = &choice {
            if !tools.iter().any(|t| &t.name == name) {
                return Err(invalid(
                    "tool_choice",
                    format!("Invalid value for 'tool_choice': no function named '{name}' was specified in 'tools'."),
                ));
            }
        }
        let parallel = match present(obj, "parallel_tool_calls") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(wrong_type("parallel_tool_calls", "a boolean", other)),
        };
        Ok(Self {
            tools,
            choice,
            parallel,
        })
    }

    /// The model is shown tools and may call them.
    pub fn active(&self) -> bool {
        self.choice != ToolChoice::None
    }

    /// The output must be tool calls (`required` or a named function).
    pub fn forced(&self) -> bool {
        matches!(self.choice, ToolChoice::Required | ToolChoice::Function(_))
    }

    /// The grammar of the calls the model may make: every tool, or only the
    /// named one. `None` when no call may be made. Schemas the grammar
    /// compiler refuses are the client's error, naming the tool.
    pub fn grammar(&self) -> Result<Option<Grammar>, ApiError> {
        if !self.active() {
            return Ok(None);
        }
        let (specs, indexes): (Vec<ToolSpec>, Vec<usize>) = self
            .tools
            .iter()
            .enumerate()
            .filter(|(_, t)| match &self.choice {
                ToolChoice::Function(name) => &t.name == name,
                _ => true,
            })
            .map(|(i, t)| {
                (
                    ToolSpec {
                        name: t.name.clone(),
                        parameters: t.parameters.clone(),
                    },
                    i,
                )
            })
            .unzip();
        sandpiper_grammar::tool_calls(&specs, false)
            .map(Some)
            .map_err(|(i, e)| {
                invalid(
                    &format!("tools[{}].function.parameters", indexes[i]),
                    format!("Invalid schema for function '{}': {e}.", specs[i].name),
                )
            })
    }

    /// The system prompt section that lists the tools.
    pub fn system_text(&self) -> String {
        let mut text = String::from(
            "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
             You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
        );
        for tool in &self.tools {
            text.push('\n');
            text.push_str(&tool.definition.to_string());
        }
        text.push_str(
            "\n</tools>\n\nFor each function call, return a json object with function name and arguments \
             within <tool_call></tool_call> XML tags:\n<tool_call>\n\
             {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
        );
        text
    }
}

fn parse_tool(i: usize, item: &Value) -> Result<Tool, ApiError> {
    let at = |field: &str| format!("tools[{i}].{field}");
    let Value::Object(obj) = item else {
        return Err(wrong_type(&format!("tools[{i}]"), "an object", item));
    };
    match present(obj, "type") {
        Some(Value::String(t)) if t == "function" => {}
        None => return Err(missing(&at("type"))),
        Some(other) => {
            return Err(invalid(
                &at("type"),
                format!("Invalid value: {other}. Supported values are: 'function'."),
            ))
        }
    }
    let function = match present(obj, "function") {
        Some(Value::Object(f)) => f,
        None => return Err(missing(&at("function"))),
        Some(other) => return Err(wrong_type(&at("function"), "an object", other)),
    };
    let name = match present(function, "name") {
        Some(Value::String(s)) => s.clone(),
        None => return Err(missing(&at("function.name"))),
        Some(other) => return Err(wrong_type(&at("function.name"), "a string", other)),
    };
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid_name {
        return Err(invalid(
            &at("function.name"),
            format!("Invalid 'tools[{i}].function.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]{{1,64}}$', but got '{name}'."),
        ));
    }
    let parameters = match present(function, "parameters") {
        None => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(other) => return Err(wrong_type(&at("function.parameters"), "an object", other)),
    };
    Ok(Tool {
        name,
        definition: json!({"type": "function", "function": Value::Object(function.clone())}),
        parameters,
    })
}

/// Reads `messages[i].tool_calls` (assistant messages).
pub fn parse_past_calls(i: usize, value: Option<&Value>) -> Result<Vec<PastCall>, ApiError> {
    let items = match value {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(wrong_type(
                &format!("messages[{i}].tool_calls"),
                "an array",
                other,
            ))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(j, call)| {
            let at = format!("messages[{i}].tool_calls[{j}].function");
            let function = call.get("function").ok_or_else(|| missing(&at))?;
            let field = |name: &str| match function.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                None => Err(missing(&format!("{at}.{name}"))),
                Some(other) => Err(wrong_type(&format!("{at}.{name}"), "a string", other)),
            };
            Ok(PastCall {
                name: field("name")?,
                arguments: field("arguments")?,
            })
        })
        .collect()
}

/// The messages as the chat template gets them: the tools in the system
/// prompt (when the model may call them), past calls and tool results
/// written in the model's format.
pub fn prompt_messages(messages: &[Message], tools: &Tools) -> Vec<Message> {
    let mut out: Vec<Message> = messages
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if m.role == Role::Tool {
                m.content = format!("<tool_response>\n{}\n</tool_response>", m.content);
            }
            for call in std::mem::take(&mut m.tool_calls) {
                let arguments = serde_json::from_str::<Value>(&call.arguments)
                    .unwrap_or(Value::String(call.arguments));
                if !m.content.is_empty() {
                    m.content.push('\n');
                }
                m.content.push_str(&format!(
                    "{CALL_OPEN}\n{}\n{CALL_CLOSE}",
                    json!({"name": call.name, "arguments": arguments})
                ));
            }
            m
        })
        .collect();
    if tools.active() {
        let text = tools.system_text();
        match out.first_mut() {
            Some(first) if matches!(first.role, Role::System | Role::Developer) => {
                first.content = format!("{}\n\n{text}", first.content);
            }
            _ => out.insert(
                0,
                Message {
                    role: Role::System,
                    content: text,
                    tool_calls: Vec::new(),
                },
            ),
        }
    }
    out
}

/// A call the model made, as returned to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// Compact JSON text.
    pub arguments: String,
}

impl ToolCall {
    pub fn to_value(&self, index: Option<usize>) -> Value {
        let mut v = json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        });
        if let Some(index) = index {
            v["index"] = json!(index);
        }
        v
    }
}

/// The calls in `text` if it is nothing but `<tool_call>` blocks with a
/// name and arguments each; ids come from `new_id`.
pub fn parse_calls(text: &str, mut new_id: impl FnMut() -> String) -> Option<Vec<ToolCall>> {
    let mut rest = text.trim();
    let mut calls = Vec::new();
    while !rest.is_empty() {
        let body = rest.strip_prefix(CALL_OPEN)?;
        let end = body.find(CALL_CLOSE)?;
        let call: Value = serde_json::from_str(body[..end].trim()).ok()?;
        let name = call.get("name")?.as_str()?.to_owned();
        let arguments = match call.get("arguments")? {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        calls.push(ToolCall {
            id: new_id(),
            name,
            arguments,
        });
        rest = body[end + CALL_CLOSE.len()..].trim_start();
    }
    (!calls.is_empty()).then_some(calls)
}

/// Sits between the generation loop and the response's sink when the model
/// may call tools: text that is (or may still become) a tool call is held
/// back; anything else passes through as it comes.
pub struct ToolSink<'a> {
    inner: &'a mut dyn Sink,
    /// Everything is a call (`required` or a named function).
    forced: bool,
    held: String,
    held_logprobs: Vec<TokenLogprob>,
    passing: bool,
}

impl<'a> ToolSink<'a> {
    pub fn new(inner: &'a mut dyn Sink, forced: bool) -> Self {
        Self {
            inner,
            forced,
            held: String::new(),
            held_logprobs: Vec::new(),
            passing: false,
        }
    }

    /// After generation: the calls, if the output was calls. Otherwise the
    /// held text (a truncated or malformed call) goes out as content.
    pub fn finish(
        self,
        new_id: impl FnMut() -> String,
    ) -> Result<Option<Vec<ToolCall>>, Disconnected> {
        if self.passing {
            return Ok(None);
        }
        if let Some(calls) = parse_calls(&self.held, new_id) {
            return Ok(Some(calls));
        }
        if !self.held.is_empty() || !self.held_logprobs.is_empty() {
            self.inner.text(&self.held, &self.held_logprobs)?;
        }
        Ok(None)
    }
}

/// Whether text that starts like this may still be a call.
fn may_be_call(text: &str) -> bool {
    let t = text.trim_start();
    t.starts_with(CALL_OPEN) || CALL_OPEN.starts_with(t)
}

impl Sink for ToolSink<'_> {
    fn text(&mut self, delta: &str, logprobs: &[TokenLogprob]) -> Result<(), Disconnected> {
        if self.passing {
            return self.inner.text(delta, logprobs);
        }
        self.held.push_str(delta);
        self.held_logprobs.extend_from_slice(logprobs);
        if !self.forced && !may_be_call(&self.held) {
            self.passing = true;
            let held = std::mem::take(&mut self.held);
            let logprobs = std::mem::take(&mut self.held_logprobs);
            return self.inner.text(&held, &logprobs);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::Collected;

    fn tools(choice: Value) -> Result<Tools, ApiError> {
        let body = json!({
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
            "tool_choice": choice,
        });
        Tools::parse(body.as_object().unwrap())
    }

    #[test]
    fn choices_parse_and_are_checked() {
        assert_eq!(tools(json!("auto")).unwrap().choice, ToolChoice::Auto);
        assert_eq!(
            tools(json!("required")).unwrap().choice,
            ToolChoice::Required
        );
        let named =
            tools(json!({"type": "function", "function": {"name": "get_weather"}})).unwrap();
        assert_eq!(named.choice, ToolChoice::Function("get_weather".into()));
        assert!(named.forced() && named.grammar().unwrap().is_some());
        let e = tools(json!({"type": "function", "function": {"name": "nope"}})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
        let e = Tools::parse(json!({"tool_choice": "auto"}).as_object().unwrap()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
        let bad = json!({"tools": [{"type": "function", "function": {"name": "f",
            "parameters": {"type": "object", "properties": {"x": {"type": "string", "pattern": "a+"}}}}}]});
        let e = Tools::parse(bad.as_object().unwrap())
            .unwrap()
            .grammar()
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools[0].function.parameters"));
        assert!(e.message.contains("pattern"), "{}", e.message);
        let e = Tools::parse(
            json!({"tools": [{"type": "function", "function": {"name": "a b"}}]})
                .as_object()
                .unwrap(),
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools[0].function.name"));
    }

    #[test]
    fn calls_parse_from_the_model_format() {
        let mut n = 0;
        let mut id = || {
            n += 1;
            format!("call_{n}")
        };
        let calls = parse_calls(
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call>\n<tool_call>{\"name\":\"g\",\"arguments\":\"{}\"}</tool_call>",
            &mut id,
        )
        .unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (calls[0].name.as_str(), calls[0].arguments.as_str()),
            ("f", "{\"a\":1}")
        );
        assert_eq!(
            (calls[1].id.as_str(), calls[1].arguments.as_str()),
            ("call_2", "{}")
        );
        assert!(parse_calls("Hello", &mut id).is_none());
        assert!(parse_calls("<tool_call>{\"name\": \"f\"", &mut id).is_none());
    }

    #[test]
    fn sink_holds_calls_and_passes_text() {
        let mut out = Collected::default();
        let mut sink = ToolSink::new(&mut out, false);
        sink.text("<tool", &[]).unwrap();
        sink.text(
            "_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>",
            &[],
        )
        .unwrap();
        let calls = sink.finish(|| "id".into()).unwrap().unwrap();
        assert_eq!(calls[0].name, "f");
        assert_eq!(out.content, "");

        let mut out = Collected::default();
        let mut sink = ToolSink::new(&mut out, false);
        sink.text("\n<b", &[]).unwrap();
        sink.text("old>", &[]).unwrap();
        assert!(sink.finish(|| "id".into()).unwrap().is_none());
        assert_eq!(out.content, "\n<bold>");
    }

    #[test]
    fn prompt_shows_tools_calls_and_results() {
        let t = tools(json!("auto")).unwrap();
        let messages = vec![
            Message {
                role: Role::User,
                content: "Weather?".into(),
                tool_calls: vec![],
            },
            Message {
                role: Role::Assistant,
                content: String::new(),
                tool_calls: vec![PastCall {
                    name: "get_weather".into(),
                    arguments: "{\"city\":\"Paris\"}".into(),
                }],
            },
            Message {
                role: Role::Tool,
                content: "sunny".into(),
                tool_calls: vec![],
            },
        ];
        let out = prompt_messages(&messages, &t);
        assert_eq!(out[0].role, Role::System);
        assert!(out[0].content.contains("<tools>\n{\"type\":\"function\""));
        assert_eq!(out[2].content, "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}\n</tool_call>");
        assert_eq!(out[3].content, "<tool_response>\nsunny\n</tool_response>");
        let none = prompt_messages(&messages[..1], &Tools::default());
        assert_eq!(none, messages[..1].to_vec());
    }
}
