//! Parsing and validating a legacy Completions request body
//! (`POST /v1/completions`).
//!
//! The parameters it shares with chat (sampling, `stream`/`stream_options`,
//! `stop`, `n`, refusing unsupported parameters) are read by the same
//! functions as in [`crate::request`]; what is read here is what differs:
//! `prompt` (a string, a list of strings, a token array or a list of token
//! arrays), `max_tokens` (default 16, as OpenAI), `logprobs` as an integer
//! 0–5, `echo`, `suffix` and `best_of`. Unknown fields and `user` are
//! ignored, as OpenAI ignores them.

use crate::request::{
    check_unsupported, optional_bool, out_of_range, parse_n, parse_stop, parse_stream, Accept,
    Sampling,
};
use sandpiper_guest_sdk::params::{
    json_object, positive_integer, present, required_string, wrong_type,
};
use sandpiper_guest_sdk::prompt::{self, TextsOrTokens};
use sandpiper_guest_sdk::ApiError;
use serde_json::{Map, Value};

/// `max_tokens` when the request does not say (OpenAI's default).
pub const DEFAULT_MAX_TOKENS: u64 = 16;

/// Most alternatives `logprobs` may ask for (OpenAI's limit).
pub const MAX_LOGPROBS: u64 = 5;

/// Most prompts one request may carry. Every prompt's `n` choices are
/// generated one after another inside the one request, so the list is kept
/// short enough that a request cannot occupy a guest thread for long.
pub const MAX_PROMPTS: usize = 32;

/// One prompt, as given: text to tokenise, or token ids of the model's own
/// vocabulary (used as they are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<i32>),
}

/// A validated Completions request, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct TextRequest {
    pub model: String,
    /// At least one, at most [`MAX_PROMPTS`]; each gets its own `n` choices.
    pub prompts: Vec<Prompt>,
    pub stream: bool,
    /// `stream_options.include_usage`: send a final usage chunk when streaming.
    pub include_usage: bool,
    /// Temperature, top-p, seed, penalties and `logit_bias`, as for chat.
    pub sampling: Sampling,
    /// Default [`DEFAULT_MAX_TOKENS`]; prompt + `max_tokens` must fit the context.
    pub max_tokens: u64,
    /// Non-empty stop sequences.
    pub stop: Vec<String>,
    /// `Some(k)`: log-probabilities of each output token with the `k`
    /// (0..=[`MAX_LOGPROBS`]) most likely alternatives.
    pub logprobs: Option<u64>,
    /// Put the prompt's text before each choice's text.
    pub echo: bool,
    /// Choices per prompt, 1..=[`crate::request::MAX_N`], default 1.
    pub n: u64,
}

impl TextRequest {
    /// The `sampling` tensor for choice `j` of a prompt (0..n): choice `j`
    /// samples with `seed + j`, whichever prompt it belongs to, so a prompt
    /// completes the same way alone or in a list.
    pub fn sampling_json(&self, j: u64) -> String {
        self.sampling
            .to_json(j, self.logprobs.is_some(), self.logprobs.unwrap_or(0))
    }

    /// `logit_bias` and token prompts may only name tokens of the model's
    /// vocabulary.
    pub fn check_vocab(&self, vocab_size: u64) -> Result<(), ApiError> {
        self.sampling.check_vocab(vocab_size)?;
        let single = self.prompts.len() == 1;
        for (i, prompt) in self.prompts.iter().enumerate() {
            let Prompt::Tokens(ids) = prompt else {
                continue;
            };
            if let Some(id) = ids.iter().find(|id| **id as u64 >= vocab_size) {
                let at = if single {
                    "prompt".to_string()
                } else {
                    format!("prompt[{i}]")
                };
                return Err(ApiError::invalid_request(format!(
                    "Invalid '{at}': token id {id} is outside the model's vocabulary (ids 0 to {}).",
                    vocab_size.saturating_sub(1)
                ))
                .with_param(at)
                .with_code("invalid_value"));
            }
        }
        Ok(())
    }
}

/// Parameters of the legacy API this server does not implement (see
/// [`check_unsupported`]): `suffix` (insertion) unless empty, and `best_of`
/// unless it equals `n` (then it asks for nothing beyond the `n` choices).
const UNSUPPORTED: &[(&str, Accept)] = &[
    ("suffix", Some(|v, _| v == "")),
    (
        "best_of",
        Some(|v, obj| v.as_u64() == Some(n_or_default(obj))),
    ),
];

fn n_or_default(obj: &Map<String, Value>) -> u64 {
    present(obj, "n").and_then(Value::as_u64).unwrap_or(1)
}

/// Parses and validates a request body.
pub fn parse(body: &[u8]) -> Result<TextRequest, ApiError> {
    let obj = json_object(body)?;
    let model = required_string(&obj, "model")?;
    let prompts = parse_prompt(present(&obj, "prompt"))?;
    let (stream, include_usage) = parse_stream(&obj)?;
    let sampling = Sampling::parse(&obj)?;
    let max_tokens = positive_integer(&obj, "max_tokens")?.unwrap_or(DEFAULT_MAX_TOKENS);
    let stop = parse_stop(present(&obj, "stop"))?;
    let logprobs = match present(&obj, "logprobs") {
        None => None,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|k| k <= MAX_LOGPROBS) => n.as_u64(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
            return Err(out_of_range(
                "logprobs",
                n.as_f64().unwrap_or(0.0),
                "between 0 and 5",
            ))
        }
        Some(other) => return Err(wrong_type("logprobs", "an integer", other)),
    };
    let echo = optional_bool(&obj, "echo")?.unwrap_or(false);
    match present(&obj, "suffix") {
        None | Some(Value::String(_)) => {}
        Some(other) => return Err(wrong_type("suffix", "a string", other)),
    }
    let n = parse_n(&obj)?;
    check_unsupported(&obj, UNSUPPORTED)?;

    if echo {
        check_echo(&prompts, logprobs)?;
    }
    Ok(TextRequest {
        model,
        prompts,
        stream,
        include_usage,
        sampling,
        max_tokens,
        stop,
        logprobs,
        echo,
        n,
    })
}

/// What `echo` cannot do here. Echoing a prompt's text needs its text, and
/// the backend has no way to turn token ids back into text; OpenAI's echo
/// with `logprobs` also scores every prompt token, which the backend cannot
/// do either (it returns log-probabilities for sampled tokens only). Both
/// are refused rather than answered with invented values.
fn check_echo(prompts: &[Prompt], logprobs: Option<u64>) -> Result<(), ApiError> {
    let refuse = |message: &str| {
        Err(ApiError::invalid_request(message)
            .with_param("echo")
            .with_code("unsupported_parameter"))
    };
    if logprobs.is_some() {
        return refuse(
            "Unsupported parameter: 'echo' together with 'logprobs' is not supported by this server: the model backend cannot compute log-probabilities of prompt tokens. Use 'echo' or 'logprobs', not both.",
        );
    }
    if prompts.iter().any(|p| matches!(p, Prompt::Tokens(_))) {
        return refuse(
            "Unsupported parameter: 'echo' with a token-id prompt is not supported by this server: it cannot turn token ids back into text. Send the prompt as text to use 'echo'.",
        );
    }
    Ok(())
}

/// Each text or token array of `prompt`, in request order.
fn parse_prompt(value: Option<&Value>) -> Result<Vec<Prompt>, ApiError> {
    Ok(match prompt::parse(value, "prompt", MAX_PROMPTS)? {
        TextsOrTokens::Texts(texts) => texts.into_iter().map(Prompt::Text).collect(),
        TextsOrTokens::Tokens(ids) => ids.into_iter().map(Prompt::Tokens).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(body: Value) -> TextRequest {
        parse(body.to_string().as_bytes()).unwrap()
    }

    fn err(body: Value) -> ApiError {
        parse(body.to_string().as_bytes()).unwrap_err()
    }

    fn text(s: &str) -> Prompt {
        Prompt::Text(s.into())
    }

    #[test]
    fn minimal_request_gets_openai_defaults() {
        let r = ok(json!({"model": "m", "prompt": "Once upon"}));
        assert_eq!(r.model, "m");
        assert_eq!(r.prompts, vec![text("Once upon")]);
        assert_eq!(r.max_tokens, 16);
        assert_eq!((r.n, r.logprobs, r.echo), (1, None, false));
        assert!(!r.stream && !r.include_usage && r.stop.is_empty());
        assert_eq!((r.sampling.temperature, r.sampling.top_p), (1.0, 1.0));
    }

    #[test]
    fn prompt_forms() {
        let r = ok(json!({"model": "m", "prompt": ["a", "b"]}));
        assert_eq!(r.prompts, vec![text("a"), text("b")]);
        let r = ok(json!({"model": "m", "prompt": [1, 2, 3]}));
        assert_eq!(r.prompts, vec![Prompt::Tokens(vec![1, 2, 3])]);
        let r = ok(json!({"model": "m", "prompt": [[1, 2], [3]]}));
        assert_eq!(
            r.prompts,
            vec![Prompt::Tokens(vec![1, 2]), Prompt::Tokens(vec![3])]
        );
        // An empty string is a valid JSON prompt; the handler refuses it once
        // it is known to tokenise to nothing.
        assert_eq!(
            ok(json!({"model": "m", "prompt": ""})).prompts,
            vec![text("")]
        );
    }

    #[test]
    fn bad_prompts_name_the_param() {
        for (bad, param) in [
            (Value::Null, "prompt"),
            (json!(5), "prompt"),
            (json!({"text": "x"}), "prompt"),
            (json!([]), "prompt"),
            (json!(["a", 1]), "prompt[1]"),
            (json!([[1], "a"]), "prompt[1]"),
            (json!([[]]), "prompt[0]"),
            (json!([-1]), "prompt[0]"),
            (json!([1.5]), "prompt[0]"),
            (json!([[1, 3000000000u64]]), "prompt[0][1]"),
            (json!([true]), "prompt[0]"),
        ] {
            let e = err(json!({"model": "m", "prompt": bad}));
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)), "{bad}");
            assert!(e.message.contains(&format!("'{param}'")), "{}", e.message);
        }
        let e = err(json!({"model": "m"}));
        assert_eq!(e.code.as_deref(), Some("missing_required_parameter"));
        let many: Vec<String> = (0..=MAX_PROMPTS).map(|i| i.to_string()).collect();
        let e = err(json!({"model": "m", "prompt": many}));
        assert_eq!(e.code.as_deref(), Some("array_above_max_length"));
        // A long single token prompt is one prompt, not many.
        let long: Vec<u64> = (0..100).collect();
        assert_eq!(ok(json!({"model": "m", "prompt": long})).prompts.len(), 1);
    }

    #[test]
    fn full_request_is_read() {
        let r = ok(json!({
            "model": "m", "prompt": ["x"], "max_tokens": 7, "temperature": 0, "top_p": 0.5,
            "n": 2, "best_of": 2, "stream": true, "stream_options": {"include_usage": true},
            "stop": ["\n", ""], "seed": 3, "frequency_penalty": 1, "presence_penalty": -1,
            "logit_bias": {"5": -100}, "logprobs": 5, "echo": false, "suffix": "", "user": "u",
            "some_future_field": 1,
        }));
        assert_eq!((r.max_tokens, r.n, r.logprobs), (7, 2, Some(5)));
        assert!(r.stream && r.include_usage);
        assert_eq!(r.stop, vec!["\n".to_string()]);
        assert_eq!(r.sampling.logit_bias, vec![(5, -100.0)]);
        assert_eq!((r.sampling.temperature, r.sampling.seed), (0.0, Some(3)));
        let nulls = ok(
            json!({"model": "m", "prompt": "x", "suffix": null, "best_of": null,
            "logprobs": null, "echo": null, "max_tokens": null}),
        );
        assert_eq!((nulls.max_tokens, nulls.logprobs), (16, None));
    }

    #[test]
    fn shared_params_are_validated_as_for_chat() {
        for (param, bad) in [
            ("temperature", json!(3)),
            ("top_p", json!(0)),
            ("n", json!(9)),
            ("stop", json!(["a", "b", "c", "d", "e"])),
            ("seed", json!("1")),
            ("frequency_penalty", json!(-3)),
            ("logit_bias", json!({"x": 1})),
            ("stream", json!("yes")),
            ("max_tokens", json!(0)),
            ("echo", json!("yes")),
        ] {
            let e = err(json!({"model": "m", "prompt": "x", param: bad}));
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)), "{bad}");
        }
    }

    #[test]
    fn logprobs_is_an_integer_up_to_5() {
        for k in 0..=5 {
            assert_eq!(
                ok(json!({"model": "m", "prompt": "x", "logprobs": k})).logprobs,
                Some(k)
            );
        }
        for bad in [json!(6), json!(-1), json!(true), json!(1.5), json!("2")] {
            let e = err(json!({"model": "m", "prompt": "x", "logprobs": bad}));
            assert_eq!(
                (e.status, e.param.as_deref()),
                (400, Some("logprobs")),
                "{bad}"
            );
        }
    }

    #[test]
    fn suffix_and_best_of_are_refused_by_name() {
        let e = err(json!({"model": "m", "prompt": "x", "suffix": "end"}));
        assert_eq!((e.status, e.param.as_deref()), (400, Some("suffix")));
        assert_eq!(e.code.as_deref(), Some("unsupported_parameter"));
        let e = err(json!({"model": "m", "prompt": "x", "suffix": 3}));
        assert_eq!(e.param.as_deref(), Some("suffix"));
        for (n, best_of) in [(None, json!(2)), (Some(2), json!(3)), (Some(2), json!(1))] {
            let mut body = json!({"model": "m", "prompt": "x", "best_of": best_of});
            if let Some(n) = n {
                body["n"] = json!(n);
            }
            let e = err(body);
            assert_eq!(e.param.as_deref(), Some("best_of"));
            assert_eq!(e.code.as_deref(), Some("unsupported_parameter"));
        }
        ok(json!({"model": "m", "prompt": "x", "best_of": 1}));
        ok(json!({"model": "m", "prompt": "x", "best_of": 3, "n": 3}));
    }

    #[test]
    fn echo_needs_text_and_no_logprobs() {
        assert!(ok(json!({"model": "m", "prompt": ["a", "b"], "echo": true})).echo);
        let e = err(json!({"model": "m", "prompt": "a", "echo": true, "logprobs": 0}));
        assert_eq!((e.status, e.param.as_deref()), (400, Some("echo")));
        assert!(e.message.contains("'logprobs'"), "{}", e.message);
        let e = err(json!({"model": "m", "prompt": [1, 2], "echo": true}));
        assert_eq!((e.status, e.param.as_deref()), (400, Some("echo")));
        ok(json!({"model": "m", "prompt": [1, 2], "echo": false, "logprobs": 2}));
    }

    #[test]
    fn choice_j_samples_with_seed_plus_j_and_logprobs() {
        let r = ok(json!({"model": "m", "prompt": ["a", "b"], "seed": 10, "n": 2, "logprobs": 3}));
        let v: Value = serde_json::from_str(&r.sampling_json(1)).unwrap();
        assert_eq!(v["seed"], json!(11));
        assert_eq!(
            (v["logprobs"].clone(), v["top_logprobs"].clone()),
            (json!(true), json!(3))
        );
        let r = ok(json!({"model": "m", "prompt": "a"}));
        let v: Value = serde_json::from_str(&r.sampling_json(0)).unwrap();
        assert_eq!(
            v,
            json!({"temperature": 1.0, "top_p": 1.0, "seed": null, "frequency_penalty": 0.0,
                "presence_penalty": 0.0, "logit_bias": {}, "logprobs": false, "top_logprobs": 0})
        );
    }

    #[test]
    fn token_prompts_and_bias_are_checked_against_the_vocabulary() {
        let r = ok(json!({"model": "m", "prompt": [[1, 49151], [7]]}));
        assert!(r.check_vocab(49152).is_ok());
        let r = ok(json!({"model": "m", "prompt": [[1], [7, 49152]]}));
        let e = r.check_vocab(49152).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (400, Some("prompt[1]")));
        assert!(e.message.contains("49152"), "{}", e.message);
        let r = ok(json!({"model": "m", "prompt": [1, 50000]}));
        assert_eq!(
            r.check_vocab(49152).unwrap_err().param.as_deref(),
            Some("prompt")
        );
        let r = ok(json!({"model": "m", "prompt": "x", "logit_bias": {"49152": 1}}));
        assert_eq!(
            r.check_vocab(49152).unwrap_err().param.as_deref(),
            Some("logit_bias")
        );
    }
}
