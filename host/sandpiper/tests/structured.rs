//! Structured output on the real default model: `response_format` JSON and
//! tool calls, enforced by constrained decoding (guest grammar, backend
//! `resample`), over real HTTP.

mod common;

use common::{assert_openai_error, streamed_text, Server, MODEL};
use serde_json::{json, Value};

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 40},
            "age": {"type": "integer"},
            "pets": {"type": "array", "items": {"enum": ["cat", "dog", "fish"]}, "maxItems": 3}
        },
        "required": ["name", "age", "pets"],
        "additionalProperties": false
    })
}

/// What `person_schema` says, checked by hand.
fn assert_person(text: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {text}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["age", "name", "pets"], "{text}");
    assert!(
        obj["name"]
            .as_str()
            .is_some_and(|n| n.chars().count() <= 40),
        "{text}"
    );
    assert!(obj["age"].is_i64() || obj["age"].is_u64(), "{text}");
    let pets = obj["pets"].as_array().unwrap();
    assert!(pets.len() <= 3, "{text}");
    assert!(
        pets.iter()
            .all(|p| ["cat", "dog", "fish"].contains(&p.as_str().unwrap())),
        "{text}"
    );
}

#[test]
fn json_schema_output_validates_even_when_the_prompt_asks_for_prose() {
    let server = Server::start(&[]);
    let request = json!({
        "model": MODEL,
        "temperature": 0,
        "max_tokens": 60,
        // Nothing here asks for JSON: unconstrained, the model writes prose.
        "messages": [{"role": "user", "content": "Tell me a short story about a girl and her pets."}],
        "response_format": {"type": "json_schema",
            "json_schema": {"name": "person", "strict": true, "schema": person_schema()}},
    });
    let (status, body) = server.post("/v1/chat/completions", &request);
    assert_eq!(status, 200, "{body}");
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert_person(text);
    assert_eq!(
        body["choices"][0]["finish_reason"], "stop",
        "ends when the object closes"
    );

    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    assert_eq!(streamed_text(&server.stream(&streaming)), text);

    // Any JSON object. As OpenAI requires for this mode, the messages ask
    // for JSON: free-form objects give a small model no keys to follow.
    let mut object = request;
    object["messages"] = json!([{"role": "user",
        "content": "Describe a cat as a JSON object with the keys name, color and age."}]);
    object["response_format"] = json!({"type": "json_object"});
    let (status, body) = server.post("/v1/chat/completions", &object);
    assert_eq!(status, 200, "{body}");
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    assert!(v.is_object(), "{text}");
}

#[test]
fn schemas_that_cannot_be_enforced_are_refused_by_name() {
    let server = Server::start(&[]);
    let (status, body) = server.post(
        "/v1/chat/completions",
        &json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x",
                "schema": {"type": "object", "properties": {"id": {"type": "string", "pattern": "^[a-z]+$"}}}}}}),
    );
    let error = assert_openai_error(status, &body, 400);
    assert_eq!(error["param"], "response_format.json_schema.schema");
    assert!(
        error["message"].as_str().unwrap().contains("pattern"),
        "{body}"
    );
    let (status, body) = server.post(
        "/v1/chat/completions",
        &json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
            "tools": [weather_tool()], "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
    );
    assert_eq!(
        assert_openai_error(status, &body, 400)["param"],
        "tool_choice"
    );
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"], "additionalProperties": false}}})
}

fn assert_weather_call(call: &Value) -> Value {
    assert_eq!(call["type"], "function", "{call}");
    assert!(
        call["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("call_")),
        "{call}"
    );
    assert_eq!(call["function"]["name"], "get_weather", "{call}");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "{args}");
    assert!(
        ["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap()),
        "{args}"
    );
    args
}

#[test]
fn forced_tool_calls_parse_streamed_and_not() {
    let server = Server::start(&[]);
    let request = json!({
        "model": MODEL,
        "temperature": 0,
        "max_tokens": 60,
        "messages": [{"role": "user", "content": "Should I take an umbrella in Paris today?"}],
        "tools": [weather_tool()],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    });
    let (status, body) = server.post("/v1/chat/completions", &request);
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    assert!(choice["message"]["content"].is_null(), "{body}");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    let args = assert_weather_call(&calls[0]);

    let mut streaming = request;
    streaming["stream"] = json!(true);
    let events = server.stream(&streaming);
    let deltas: Vec<&Value> = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(deltas.len(), 1, "{events:?}");
    assert_eq!(deltas[0]["index"], 0);
    assert_eq!(
        assert_weather_call(deltas[0]),
        args,
        "streamed call differs"
    );
    let finish = events
        .iter()
        .find_map(|e| e["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish, Some("tool_calls"));
}

#[test]
fn auto_parses_the_models_own_tool_call_format() {
    let server = Server::start(&[]);
    // Shown one call of its own in the history, the model calls again for
    // the next city in its trained `<tool_call>` format.
    let tool = json!({"type": "function", "function": {"name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}});
    let request = json!({
        "model": MODEL,
        "temperature": 0,
        "max_tokens": 60,
        "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "user", "content": "What is the weather in London?"}
        ],
        "tools": [tool],
    });
    let (status, body) = server.post("/v1/chat/completions", &request);
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "London"}));

    // With `tool_choice: none` the tools are not offered and text comes back.
    let mut none = request;
    none["tool_choice"] = json!("none");
    let (status, body) = server.post("/v1/chat/completions", &none);
    assert_eq!(status, 200, "{body}");
    assert!(
        body["choices"][0]["message"].get("tool_calls").is_none(),
        "{body}"
    );
    assert_ne!(body["choices"][0]["finish_reason"], "tool_calls");
}
