//! JSON Schema → grammar, for `response_format` and tool arguments.
//!
//! The grammar produces JSON that validates against the schema; it does not
//! produce every such document (object properties come in the schema's
//! order, numbers have at most 16 digits before and after the point, so a
//! model cannot spin forever inside one). Keywords that constrain values in
//! ways a grammar here cannot enforce are refused by name rather than
//! ignored, so "the output validates" stays true. Annotations (`title`,
//! `description`, `default`, `examples`, `format`, …) are ignored, as JSON
//! Schema validators ignore them.

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::grammar::{ByteSet, Elem, Grammar, GrammarBuilder, RuleId};

/// A schema this crate cannot turn into a grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// JSON-pointer-like path of the offending schema (`""` for the root).
    pub path: String,
    pub message: String,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "at `{}`: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for SchemaError {}

/// Keywords that assert something this grammar compiler does not enforce.
const UNSUPPORTED: &[&str] = &[
    "allOf",
    "not",
    "if",
    "then",
    "else",
    "pattern",
    "patternProperties",
    "prefixItems",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minProperties",
    "maxProperties",
    "dependentRequired",
    "dependentSchemas",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
];

/// Longest `minLength`/`maxLength`/`minItems`/`maxItems` bound compiled
/// (bounded repetition costs one rule per step).
const MAX_BOUND: u64 = 4096;

/// Digits allowed before and after a number's decimal point.
const MAX_DIGITS: usize = 16;

/// The output is one JSON document that validates against `schema`.
pub fn json_schema(schema: &Value) -> Result<Grammar, SchemaError> {
    let mut c = Compiler::new(schema);
    let body = c.schema(schema, "")?;
    let root = c.g.rule(vec![body]);
    Ok(c.g.build(root))
}

/// The output is one JSON object (`response_format: json_object`).
pub fn any_json_object() -> Grammar {
    let mut c = Compiler::new(&Value::Null);
    let body = c.any_object();
    let root = c.g.rule(vec![vec![Elem::Rule(body)]]);
    c.g.build(root)
}

/// A function the model may call, and the JSON Schema of its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub parameters: Value,
}

/// One or more tool calls in the Hermes/Qwen format small open models are
/// trained on, each `<tool_call>{"name": …, "arguments": {…}}</tool_call>`,
/// the name one of `tools` and the arguments valid for that tool; one call
/// only unless `multiple`. Leading whitespace is allowed.
pub fn tool_calls(tools: &[ToolSpec], multiple: bool) -> Result<Grammar, (usize, SchemaError)> {
    let mut c = Compiler::new(&Value::Null);
    let ws = Elem::Rule(c.ws());
    let sp = Elem::Rule(c.space());
    let mut calls = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        c.root = tool.parameters.clone();
        c.refs.clear();
        let parameters = c.schema(&tool.parameters, "").map_err(|e| (i, e))?;
        let mut call = GrammarBuilder::literal("{");
        call.push(ws);
        call.extend(GrammarBuilder::literal("\"name\""));
        call.push(sp);
        call.extend(GrammarBuilder::literal(":"));
        call.push(sp);
        call.extend(GrammarBuilder::literal(&json_string(&tool.name)));
        call.push(sp);
        call.extend(GrammarBuilder::literal(","));
        call.push(ws);
        call.extend(GrammarBuilder::literal("\"arguments\""));
        call.push(sp);
        call.extend(GrammarBuilder::literal(":"));
        call.push(sp);
        call.extend(parameters);
        call.push(ws);
        call.extend(GrammarBuilder::literal("}"));
        calls.push(call);
    }
    let call = c.g.rule(calls);
    let mut block = GrammarBuilder::literal("<tool_call>");
    block.extend([ws, Elem::Rule(call), ws]);
    block.extend(GrammarBuilder::literal("</tool_call>"));
    let block = c.g.rule(vec![block]);
    let mut seq = vec![ws, Elem::Rule(block)];
    if multiple {
        seq.push(Elem::Rule(c.g.star(vec![ws, Elem::Rule(block)])));
    }
    let root = c.g.rule(vec![seq]);
    Ok(c.g.build(root))
}

fn json_string(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

struct Compiler {
    g: GrammarBuilder,
    /// The document `$ref`s point into.
    root: Value,
    refs: HashMap<String, RuleId>,
    ws: Option<RuleId>,
    space: Option<RuleId>,
    value: Option<RuleId>,
    string: Option<RuleId>,
    character: Option<RuleId>,
}

impl Compiler {
    fn new(root: &Value) -> Self {
        Self {
            g: GrammarBuilder::new(),
            root: root.clone(),
            refs: HashMap::new(),
            ws: None,
            space: None,
            value: None,
            string: None,
            character: None,
        }
    }

    /// Optional whitespace where a pretty-printer breaks lines (after `{`,
    /// `[` and `,`, before `}` and `]`): nothing, a space, or a newline and
    /// an indentation of up to 20 spaces or up to 5 tabs. Enough for any
    /// pretty-printed JSON, never an endless run of blank lines, and — unlike
    /// llama.cpp's rule (any whitespace between any two tokens, tabs and
    /// spaces mixed) — no room for a model that wanted prose to pad every
    /// slot of its answer with `\n \t \t…` until it runs out of tokens.
    fn ws(&mut self) -> RuleId {
        if let Some(id) = self.ws {
            return id;
        }
        let mut spaces = GrammarBuilder::literal("\n");
        spaces.extend(
            self.g
                .repeat(&[Elem::Bytes(ByteSet::of(b" "))], 0, Some(20)),
        );
        let mut tabs = GrammarBuilder::literal("\n");
        tabs.extend(
            self.g
                .repeat(&[Elem::Bytes(ByteSet::of(b"\t"))], 1, Some(5)),
        );
        let id = self
            .g
            .rule(vec![vec![], GrammarBuilder::literal(" "), spaces, tabs]);
        self.ws = Some(id);
        id
    }

    /// Optional whitespace inside a line (around `:`, before `,`): nothing
    /// or one space, as `{"a": 1, "b": 2}` has it.
    fn space(&mut self) -> RuleId {
        if let Some(id) = self.space {
            return id;
        }
        let id = self.g.rule(vec![vec![], GrammarBuilder::literal(" ")]);
        self.space = Some(id);
        id
    }

    /// One JSON string character: printable ASCII but `"` and `\`, an
    /// escape, or a well-formed multi-byte UTF-8 sequence.
    fn character(&mut self) -> RuleId {
        if let Some(id) = self.character {
            return id;
        }
        let b = |lo, hi| Elem::Bytes(ByteSet::range(lo, hi));
        let ascii = Elem::Bytes(ByteSet::range(0x20, 0x7f).minus(ByteSet::of(b"\"\\")));
        let hex = Elem::Bytes(
            ByteSet::range(b'0', b'9')
                .union(ByteSet::range(b'a', b'f'))
                .union(ByteSet::range(b'A', b'F')),
        );
        let cont = b(0x80, 0xbf);
        let id = self.g.rule(vec![
            vec![ascii],
            vec![
                Elem::Bytes(ByteSet::single(b'\\')),
                Elem::Bytes(ByteSet::of(b"\"\\/bfnrt")),
            ],
            vec![
                Elem::Bytes(ByteSet::single(b'\\')),
                Elem::Bytes(ByteSet::single(b'u')),
                hex,
                hex,
                hex,
                hex,
            ],
            vec![b(0xc2, 0xdf), cont],
            vec![b(0xe0, 0xef), cont, cont],
            vec![b(0xf0, 0xf4), cont, cont, cont],
        ]);
        self.character = Some(id);
        id
    }

    fn string(&mut self) -> RuleId {
        if let Some(id) = self.string {
            return id;
        }
        let ch = self.character();
        let chars = self.g.star(vec![Elem::Rule(ch)]);
        let quote = Elem::Bytes(ByteSet::single(b'"'));
        let id = self.g.rule(vec![vec![quote, Elem::Rule(chars), quote]]);
        self.string = Some(id);
        id
    }

    fn bounded_string(&mut self, min: usize, max: Option<usize>) -> RuleId {
        let ch = self.character();
        let quote = Elem::Bytes(ByteSet::single(b'"'));
        let mut seq = vec![quote];
        seq.extend(self.g.repeat(&[Elem::Rule(ch)], min, max));
        seq.push(quote);
        self.g.rule(vec![seq])
    }

    fn number(&mut self, integer: bool) -> RuleId {
        let digit = [Elem::Bytes(ByteSet::range(b'0', b'9'))];
        let minus = self.g.rule(vec![vec![], GrammarBuilder::literal("-")]);
        let mut nonzero = vec![Elem::Bytes(ByteSet::range(b'1', b'9'))];
        nonzero.extend(self.g.repeat(&digit, 0, Some(MAX_DIGITS - 1)));
        let int = self.g.rule(vec![GrammarBuilder::literal("0"), nonzero]);
        let mut seq = vec![Elem::Rule(minus), Elem::Rule(int)];
        if !integer {
            let mut frac = GrammarBuilder::literal(".");
            frac.extend(self.g.repeat(&digit, 1, Some(MAX_DIGITS)));
            let frac = self.g.rule(vec![vec![], frac]);
            let sign = self
                .g
                .rule(vec![vec![], vec![Elem::Bytes(ByteSet::of(b"+-"))]]);
            let mut exp = vec![Elem::Bytes(ByteSet::of(b"eE")), Elem::Rule(sign)];
            exp.extend(self.g.repeat(&digit, 1, Some(3)));
            let exp = self.g.rule(vec![vec![], exp]);
            seq.extend([Elem::Rule(frac), Elem::Rule(exp)]);
        }
        self.g.rule(vec![seq])
    }

    /// Any JSON value.
    fn value(&mut self) -> RuleId {
        if let Some(id) = self.value {
            return id;
        }
        let id = self.g.declare();
        self.value = Some(id);
        let object = self.any_object();
        let array = self.array_of(vec![Elem::Rule(id)], 0, None);
        let string = self.string();
        let number = self.number(false);
        self.g.define(
            id,
            vec![
                vec![Elem::Rule(object)],
                vec![Elem::Rule(array)],
                vec![Elem::Rule(string)],
                vec![Elem::Rule(number)],
                GrammarBuilder::literal("true"),
                GrammarBuilder::literal("false"),
                GrammarBuilder::literal("null"),
            ],
        );
        id
    }

    fn any_object(&mut self) -> RuleId {
        let value = self.value();
        self.map_of(vec![Elem::Rule(value)])
    }

    /// `{ "key": value, … }` with any keys.
    fn map_of(&mut self, value: Vec<Elem>) -> RuleId {
        let ws = Elem::Rule(self.ws());
        let sp = Elem::Rule(self.space());
        let string = self.string();
        let mut member = vec![Elem::Rule(string), sp];
        member.extend(GrammarBuilder::literal(":"));
        member.push(sp);
        member.extend(value);
        let mut more = vec![sp];
        more.extend(GrammarBuilder::literal(","));
        more.push(ws);
        more.extend(member.iter().copied());
        let more = self.g.star(more);
        let mut members = member;
        members.push(Elem::Rule(more));
        let members = self.g.rule(vec![vec![], members]);
        let mut seq = GrammarBuilder::literal("{");
        seq.extend([ws, Elem::Rule(members), ws]);
        seq.extend(GrammarBuilder::literal("}"));
        self.g.rule(vec![seq])
    }

    /// `[ item, … ]` with `min..=max` items.
    fn array_of(&mut self, item: Vec<Elem>, min: usize, max: Option<usize>) -> RuleId {
        let ws = Elem::Rule(self.ws());
        let sp = Elem::Rule(self.space());
        let mut seq = GrammarBuilder::literal("[");
        seq.push(ws);
        if max != Some(0) {
            let mut next = vec![sp];
            next.extend(GrammarBuilder::literal(","));
            next.push(ws);
            next.extend(item.iter().copied());
            let mut items = item;
            items.extend(
                self.g
                    .repeat(&next, min.saturating_sub(1), max.map(|m| m - 1)),
            );
            let items = if min == 0 {
                self.g.rule(vec![vec![], items])
            } else {
                self.g.rule(vec![items])
            };
            seq.push(Elem::Rule(items));
            seq.push(ws);
        }
        seq.extend(GrammarBuilder::literal("]"));
        self.g.rule(vec![seq])
    }

    /// The elements matching `schema` (found at `path`).
    fn schema(&mut self, schema: &Value, path: &str) -> Result<Vec<Elem>, SchemaError> {
        let err = |message: String| SchemaError {
            path: path.to_owned(),
            message,
        };
        let obj = match schema {
            Value::Bool(true) => return Ok(vec![Elem::Rule(self.value())]),
            Value::Bool(false) => return Err(err("the schema `false` allows no value".into())),
            Value::Object(obj) => obj,
            other => {
                return Err(err(format!(
                    "a schema must be an object or a boolean, not {other}"
                )))
            }
        };
        if let Some(key) = UNSUPPORTED.iter().find(|k| obj.contains_key(**k)) {
            return Err(err(format!(
                "the keyword `{key}` is not supported for constrained decoding"
            )));
        }
        if let Some(reference) = obj.get("$ref") {
            return self.reference(reference, path);
        }
        if let Some(value) = obj.get("const") {
            return Ok(GrammarBuilder::literal(&value.to_string()));
        }
        if let Some(values) = obj.get("enum") {
            let values = values
                .as_array()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| err("`enum` must be a non-empty array".into()))?;
            let alternatives = values
                .iter()
                .map(|v| GrammarBuilder::literal(&v.to_string()))
                .collect();
            return Ok(vec![Elem::Rule(self.g.rule(alternatives))]);
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(options) = obj.get(key) {
                let options = options
                    .as_array()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| err(format!("`{key}` must be a non-empty array")))?;
                let mut alternatives = Vec::with_capacity(options.len());
                for (i, option) in options.iter().enumerate() {
                    alternatives.push(self.schema(option, &format!("{path}/{key}/{i}"))?);
                }
                return Ok(vec![Elem::Rule(self.g.rule(alternatives))]);
            }
        }
        let types: Vec<&str> = match obj.get("type") {
            None => {
                if ["properties", "additionalProperties", "required"]
                    .iter()
                    .any(|k| obj.contains_key(*k))
                {
                    vec!["object"]
                } else if obj.contains_key("items") {
                    vec!["array"]
                } else {
                    return Ok(vec![Elem::Rule(self.value())]);
                }
            }
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts
                .iter()
                .map(|t| {
                    t.as_str()
                        .ok_or_else(|| err("`type` must name types".into()))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(err("`type` must be a string or an array of strings".into())),
        };
        let nullable = obj.get("nullable") == Some(&Value::Bool(true));
        let mut alternatives = Vec::new();
        for ty in &types {
            alternatives.push(self.typed(ty, obj, path)?);
        }
        if nullable && !types.contains(&"null") {
            alternatives.push(GrammarBuilder::literal("null"));
        }
        if alternatives.len() == 1 {
            return Ok(alternatives.pop().unwrap_or_default());
        }
        Ok(vec![Elem::Rule(self.g.rule(alternatives))])
    }

    fn reference(&mut self, reference: &Value, path: &str) -> Result<Vec<Elem>, SchemaError> {
        let err = |message: String| SchemaError {
            path: path.to_owned(),
            message,
        };
        let reference = reference
            .as_str()
            .ok_or_else(|| err("`$ref` must be a string".into()))?;
        if let Some(&id) = self.refs.get(reference) {
            return Ok(vec![Elem::Rule(id)]);
        }
        let pointer = reference.strip_prefix('#').ok_or_else(|| {
            err(format!(
                "only local references (`#/…`) are supported, not `{reference}`"
            ))
        })?;
        let target = self
            .root
            .pointer(pointer)
            .cloned()
            .ok_or_else(|| err(format!("`$ref` `{reference}` points at nothing")))?;
        let id = self.g.declare();
        self.refs.insert(reference.to_owned(), id);
        let body = self.schema(&target, pointer)?;
        self.g.define(id, vec![body]);
        Ok(vec![Elem::Rule(id)])
    }

    fn typed(
        &mut self,
        ty: &str,
        obj: &Map<String, Value>,
        path: &str,
    ) -> Result<Vec<Elem>, SchemaError> {
        let err = |message: String| SchemaError {
            path: path.to_owned(),
            message,
        };
        let bound = |key: &str| -> Result<Option<usize>, SchemaError> {
            match obj.get(key) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(n) if n <= MAX_BOUND => Ok(Some(n as usize)),
                    _ => Err(err(format!(
                        "`{key}` must be an integer from 0 to {MAX_BOUND}"
                    ))),
                },
            }
        };
        let rule = match ty {
            "string" => {
                let (min, max) = (bound("minLength")?, bound("maxLength")?);
                if min.is_none() && max.is_none() {
                    self.string()
                } else {
                    let min = min.unwrap_or(0);
                    if max.is_some_and(|max| max < min) {
                        return Err(err("`maxLength` is below `minLength`".into()));
                    }
                    self.bounded_string(min, max)
                }
            }
            "number" => self.number(false),
            "integer" => self.number(true),
            "boolean" => self.g.rule(vec![
                GrammarBuilder::literal("true"),
                GrammarBuilder::literal("false"),
            ]),
            "null" => return Ok(GrammarBuilder::literal("null")),
            "array" => {
                let item = match obj.get("items") {
                    None => vec![Elem::Rule(self.value())],
                    Some(items) => self.schema(items, &format!("{path}/items"))?,
                };
                let (min, max) = (bound("minItems")?.unwrap_or(0), bound("maxItems")?);
                if max.is_some_and(|max| max < min) {
                    return Err(err("`maxItems` is below `minItems`".into()));
                }
                self.array_of(item, min, max)
            }
            "object" => self.object(obj, path)?,
            other => return Err(err(format!("unknown type `{other}`"))),
        };
        Ok(vec![Elem::Rule(rule)])
    }

    /// An object with the schema's `properties` in order: required ones
    /// always, optional ones possibly skipped. Without `properties`, any
    /// keys with values valid for `additionalProperties`.
    fn object(&mut self, obj: &Map<String, Value>, path: &str) -> Result<RuleId, SchemaError> {
        let err = |message: String| SchemaError {
            path: path.to_owned(),
            message,
        };
        let properties = match obj.get("properties") {
            None => None,
            Some(Value::Object(p)) => Some(p),
            Some(_) => return Err(err("`properties` must be an object".into())),
        };
        let required: Vec<&str> = match obj.get("required") {
            None => Vec::new(),
            Some(Value::Array(r)) => r
                .iter()
                .map(|k| {
                    k.as_str()
                        .ok_or_else(|| err("`required` must list names".into()))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(err("`required` must be an array".into())),
        };
        let additional = obj.get("additionalProperties");
        let Some(properties) = properties.filter(|p| !p.is_empty()) else {
            if let Some(missing) = required.first() {
                return Err(err(format!(
                    "`{missing}` is required but not among `properties`"
                )));
            }
            return Ok(match additional {
                Some(Value::Bool(false)) => {
                    let ws = Elem::Rule(self.ws());
                    let mut seq = GrammarBuilder::literal("{");
                    seq.push(ws);
                    seq.extend(GrammarBuilder::literal("}"));
                    self.g.rule(vec![seq])
                }
                None | Some(Value::Bool(true)) => self.any_object(),
                Some(schema) => {
                    let value = self.schema(schema, &format!("{path}/additionalProperties"))?;
                    self.map_of(value)
                }
            });
        };
        if let Some(missing) = required.iter().find(|k| !properties.contains_key(**k)) {
            return Err(err(format!(
                "`{missing}` is required but not among `properties`"
            )));
        }
        let ws = Elem::Rule(self.ws());
        let sp = Elem::Rule(self.space());
        let mut members = Vec::with_capacity(properties.len());
        for (name, schema) in properties {
            let mut member = GrammarBuilder::literal(&json_string(name));
            member.push(sp);
            member.extend(GrammarBuilder::literal(":"));
            member.push(sp);
            member.extend(self.schema(schema, &format!("{path}/properties/{name}"))?);
            members.push((required.contains(&name.as_str()), member));
        }
        // first[k]: members k.. when none was written yet; rest[k]: the same
        // after at least one (so each starts with a comma).
        let n = members.len();
        let mut first_next = self.g.rule(vec![vec![]]);
        let mut rest_next = first_next;
        for k in (0..n).rev() {
            let (is_required, member) = &members[k];
            let mut with = member.clone();
            with.push(Elem::Rule(rest_next));
            let mut comma_with = vec![sp];
            comma_with.extend(GrammarBuilder::literal(","));
            comma_with.push(ws);
            comma_with.extend(member.iter().copied());
            comma_with.push(Elem::Rule(rest_next));
            let (first, rest) = if *is_required {
                (vec![with], vec![comma_with])
            } else {
                (
                    vec![with, vec![Elem::Rule(first_next)]],
                    vec![comma_with, vec![Elem::Rule(rest_next)]],
                )
            };
            first_next = self.g.rule(first);
            rest_next = self.g.rule(rest);
        }
        let mut seq = GrammarBuilder::literal("{");
        seq.extend([ws, Elem::Rule(first_next), ws]);
        seq.extend(GrammarBuilder::literal("}"));
        Ok(self.g.rule(vec![seq]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Matcher;
    use serde_json::json;
    use std::sync::Arc;

    fn accepts(g: &Grammar, text: &str) -> bool {
        Matcher::new(Arc::new(g.clone()))
            .advanced_by(text.as_bytes())
            .is_some_and(|m| m.is_complete())
    }

    #[test]
    fn any_object_accepts_json_objects_only() {
        let g = any_json_object();
        for ok in [
            "{}",
            r#"{"a": 1}"#,
            "{\n  \"a\": [1, 2.5e-3, true, null, \"x\\n\\u00e9\"],\n  \"b\": {\"c\": {}}\n}",
            "{\"é\": \"日本\"}",
        ] {
            assert!(accepts(&g, ok), "{ok}");
        }
        for bad in [
            "[]",
            "{",
            r#"{"a" 1}"#,
            r#"{"a": 01}"#,
            "{\"a\":\"\x01\"}",
            "{} ",
            "{\"a\": tru}",
        ] {
            assert!(!accepts(&g, bad), "{bad:?}");
        }
        // A lone continuation byte is not UTF-8.
        let m = Matcher::new(Arc::new(g));
        assert!(m.advanced_by(b"{\"\x80").is_none());
    }

    #[test]
    fn whitespace_where_pretty_printers_put_it() {
        let g = json_schema(&json!({
            "type": "object",
            "properties": {"a": {"type": "array", "items": {"type": "integer"}}, "b": {}},
            "required": ["a", "b"]
        }))
        .unwrap();
        let doc = json!({"a": [1, 2], "b": {"c": [true, {"d": null}]}});
        let pretty = serde_json::to_string_pretty(&doc).unwrap();
        for ok in [
            doc.to_string(),
            pretty.clone(),
            pretty.replace("  ", "\t"),
            r#"{ "a" : [ 1 , 2 ] , "b" : { "c" : [ true , { "d" : null } ] } }"#.into(),
        ] {
            assert!(accepts(&g, &ok), "{ok:?}");
            assert!(accepts(&any_json_object(), &ok), "{ok:?}");
        }
        for bad in [
            "{\"a\"\n: [1, 2], \"b\": 0}",
            "{\"a\":\n[1, 2], \"b\": 0}",
            "{\"a\": [1\n, 2], \"b\": 0}",
            "{\"a\":  [1, 2], \"b\": 0}",
            "{\n \t\"a\": [1, 2], \"b\": 0}",
            "{\n\n\"a\": [1, 2], \"b\": 0}",
            &format!("{{\n{}\"a\": [1, 2], \"b\": 0}}", " ".repeat(21)),
        ] {
            assert!(!accepts(&g, bad), "{bad:?}");
            assert!(!accepts(&any_json_object(), bad), "{bad:?}");
        }
    }

    #[test]
    fn properties_in_order_required_and_optional() {
        let g = json_schema(&json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer"},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}
            },
            "required": ["name", "age"],
            "additionalProperties": false
        }))
        .unwrap();
        assert!(accepts(&g, r#"{"name": "Ann", "age": 31}"#));
        assert!(accepts(&g, r#"{"name":"Ann","age":-3,"tags":["a","b"]}"#));
        assert!(!accepts(&g, r#"{"name": "Ann"}"#), "age is required");
        assert!(!accepts(&g, r#"{"age": 3, "name": "Ann"}"#), "schema order");
        assert!(!accepts(&g, r#"{"name": "Ann", "age": 3.5}"#), "integer");
        assert!(!accepts(&g, r#"{"name":"A","age":1,"tags":["c"]}"#), "enum");
        assert!(
            !accepts(&g, r#"{"name":"A","age":1,"tags":["a","a","a"]}"#),
            "maxItems"
        );
        assert!(!accepts(&g, r#"{"name":"A","age":1,"x":1}"#));
    }

    #[test]
    fn refs_any_of_nullable_and_const() {
        let g = json_schema(&json!({
            "$defs": {"node": {"type": "object", "properties": {
                "v": {"const": 1},
                "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}
            }, "required": ["v", "next"]}},
            "$ref": "#/$defs/node"
        }))
        .unwrap();
        assert!(accepts(&g, r#"{"v": 1, "next": {"v": 1, "next": null}}"#));
        assert!(!accepts(&g, r#"{"v": 2, "next": null}"#));
        let g = json_schema(&json!({"type": ["string", "null"], "maxLength": 3})).unwrap();
        assert!(accepts(&g, r#""abc""#) && accepts(&g, "null"));
        assert!(!accepts(&g, r#""abcd""#));
    }

    #[test]
    fn unsupported_keywords_are_named() {
        let e = json_schema(
            &json!({"type": "object", "properties": {"x": {"type": "string", "pattern": "^a"}}}),
        )
        .unwrap_err();
        assert_eq!(e.path, "/properties/x");
        assert!(e.message.contains("`pattern`"), "{e}");
        let e = json_schema(&json!({"type": "object", "required": ["a"]})).unwrap_err();
        assert!(e.message.contains("`a`"));
        assert!(json_schema(&json!({"$ref": "http://x/y"})).is_err());
        assert!(json_schema(&json!({"type": "thing"})).is_err());
    }

    #[test]
    fn tool_calls_name_a_tool_and_fit_its_schema() {
        let tools = [
            ToolSpec {
                name: "get_weather".into(),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
            },
            ToolSpec {
                name: "noop".into(),
                parameters: json!({"type": "object", "properties": {}}),
            },
        ];
        let g = tool_calls(&tools, true).unwrap();
        let single = tool_calls(&tools, false).unwrap();
        assert!(!accepts(&single, "<tool_call>{\"name\":\"noop\",\"arguments\":{}}</tool_call><tool_call>{\"name\":\"noop\",\"arguments\":{}}</tool_call>"));
        assert!(accepts(
            &single,
            "<tool_call>{\"name\":\"noop\",\"arguments\":{}}</tool_call>"
        ));
        assert!(accepts(&g, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"));
        assert!(accepts(&g, "\n<tool_call>{\"name\":\"noop\",\"arguments\":{}}</tool_call>\n<tool_call>{\"name\":\"noop\",\"arguments\":{}}</tool_call>"));
        assert!(!accepts(
            &g,
            "<tool_call>{\"name\":\"other\",\"arguments\":{}}</tool_call>"
        ));
        assert!(!accepts(
            &g,
            "<tool_call>{\"name\":\"get_weather\",\"arguments\":{}}</tool_call>"
        ));
        assert!(!accepts(&g, "Hello"));
        let bad = [ToolSpec {
            name: "f".into(),
            parameters: json!({"type": "string", "format": "x", "pattern": "y"}),
        }];
        assert_eq!(tool_calls(&bad, true).unwrap_err().0, 0);
    }
}
