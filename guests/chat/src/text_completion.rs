//! One `POST /v1/completions` (the legacy Completions API) on the guest
//! target: validate, tokenise each prompt as it is, generate through
//! `wasi:nn` with the same loop as chat, respond whole or streamed, log one
//! line.
//!
//! Prompts are raw text: no chat template is applied and no BOS token is
//! added (the `tokenize` compute adds none, and the model metadata does not
//! say whether the GGUF wants one; SmolLM2's GGUF has
//! `tokenizer.ggml.add_bos_token = false`, so llama.cpp's server adds none
//! either). Special-token text such as `<|im_start|>` in a prompt is parsed
//! as the special token, as the `tokenize` compute does for chat.
//!
//! Choices are ordered prompt-major (choice `i * n + j` is prompt `i`'s
//! `j`-th), each its own sequence, generated one after another; choice `j`
//! of every prompt samples with `seed + j`.

use crate::completion::{generation_error, open_model, tokenize, NnModel, MAX_BODY_BYTES};
use crate::generate::{generate, token_budget, Collected, GenError, Limits, Outcome, Sink};
use crate::response::{CompletionId, Usage};
use crate::text_request::{self, Prompt, TextRequest};
use crate::text_response::{text_completion, LegacyLogprobs, TextChoice, TextChunks, TextSseSink};
use sandpiper_guest_sdk::http::{fail, respond_json, Request, Streaming};
use sandpiper_guest_sdk::nn::{model_failed, Context, Graph};
use sandpiper_guest_sdk::{ids, log, sse, time, ApiError};
use wasi::http::types::ResponseOutparam;

/// Handles a text completion request end to end.
pub fn handle(http: Request, out: ResponseOutparam) {
    let req = match http
        .read_body(MAX_BODY_BYTES)
        .and_then(|body| text_request::parse(&body))
    {
        Ok(req) => req,
        Err(e) => return fail(out, "completions", "-", &e),
    };
    let session = match prepare(&req) {
        Ok(session) => session,
        Err(e) => return fail(out, "completions", &req.model, &e),
    };
    let ident = CompletionId {
        id: ids::random_id("cmpl-"),
        created: time::unix_secs(),
        model: req.model.clone(),
    };
    if req.stream {
        stream(&req, &session, ident, out);
    } else {
        whole(&req, &session, ident, out);
    }
}

/// A model loaded and every prompt tokenised and checked, ready to generate.
struct Session {
    /// Kept alive for the whole request: the contexts belong to it.
    graph: Graph,
    /// Tokenised the prompts; generates the first choice.
    context: Context,
    /// Each prompt's tokens, in request order.
    prompts: Vec<Vec<i32>>,
    limits: Limits,
}

/// Everything that can still be answered with a plain error response:
/// model lookup, metadata, tokenisation and the context checks (each
/// prompt + `max_tokens` must fit).
fn prepare(req: &TextRequest) -> Result<Session, ApiError> {
    let (graph, context, meta) = open_model(&req.model, "/v1/completions")?;
    if let Some(vocab_size) = meta.vocab_size {
        req.check_vocab(vocab_size)?;
    }
    let mut prompts = Vec::with_capacity(req.prompts.len());
    for (i, prompt) in req.prompts.iter().enumerate() {
        let at = prompt_param(req, i);
        let tokens = match prompt {
            Prompt::Text(text) => tokenize(&context, text)
                .map_err(|e| model_failed(&req.model, "could not tokenize the prompt", &e))?,
            Prompt::Tokens(ids) => ids.clone(),
        };
        if tokens.is_empty() {
            return Err(ApiError::invalid_request(format!(
                "Invalid '{at}': the prompt is empty. Give at least one token of text to complete."
            ))
            .with_param(at)
            .with_code("invalid_value"));
        }
        token_budget(
            tokens.len() as u64,
            meta.context_length,
            Some(req.max_tokens),
            &at,
        )?;
        prompts.push(tokens);
    }
    Ok(Session {
        graph,
        context,
        prompts,
        limits: Limits {
            max_new_tokens: req.max_tokens,
            eos_token_ids: meta.eos_token_ids,
            stop: req.stop.clone(),
        },
    })
}

/// `prompt` for a single prompt, `prompt[i]` in a list.
fn prompt_param(req: &TextRequest, i: usize) -> String {
    if req.prompts.len() == 1 {
        "prompt".to_string()
    } else {
        format!("prompt[{i}]")
    }
}

/// Why a choice could not be completed.
enum Failed {
    /// Tell the client (as a response, or in the stream once it started).
    Api(ApiError),
    /// The client went away.
    Gone,
}

/// Timings and counts for the request's log line.
#[derive(Default)]
struct Stats {
    steps: u64,
    /// Prompt tokens reused from earlier sequences, each prompt's as its
    /// first choice found it.
    cached_tokens: u64,
    /// Of the first choice.
    prefill_ms: f64,
    decode_tok_s: f64,
}

/// Generates choice `j` of prompt `i` into `sink`: the very first choice on
/// the context that tokenised the prompts, every other on a fresh one.
fn run_choice(
    req: &TextRequest,
    session: &Session,
    (i, j): (usize, u64),
    sink: &mut dyn Sink,
    stats: &mut Stats,
) -> Result<Outcome, Failed> {
    let fresh;
    let context = if i == 0 && j == 0 {
        &session.context
    } else {
        fresh = session
            .graph
            .context()
            .map_err(|e| Failed::Api(model_failed(&req.model, "could not start a sequence", &e)))?;
        &fresh
    };
    let mut model = NnModel::new(context, req.sampling_json(j));
    // No constrained decoding: the legacy API has no `response_format`.
    let result = generate(&mut model, &session.prompts[i], &session.limits, None, sink);
    if i == 0 && j == 0 {
        stats.prefill_ms = model.prefill_ms();
        stats.decode_tok_s = model.decode_tokens_per_sec();
    }
    if j == 0 {
        stats.cached_tokens += model.reused;
    }
    stats.steps += model.steps;
    result.map_err(|e| match e {
        GenError::Model {
            error,
            completion_tokens,
        } => Failed::Api(generation_error(
            &req.model,
            &error,
            completion_tokens,
            &prompt_param(req, i),
        )),
        GenError::Disconnected { .. } => Failed::Gone,
    })
}

/// The text echoed before prompt `i`'s choices (empty without `echo`).
fn echo_text(req: &TextRequest, i: usize) -> &str {
    match &req.prompts[i] {
        Prompt::Text(text) if req.echo => text,
        _ => "",
    }
}

/// Every `(prompt, j)` in choice order.
fn choice_order(req: &TextRequest, session: &Session) -> impl Iterator<Item = (usize, u64)> {
    let n = req.n;
    (0..session.prompts.len()).flat_map(move |i| (0..n).map(move |j| (i, j)))
}

fn whole(req: &TextRequest, session: &Session, ident: CompletionId, out: ResponseOutparam) {
    let mut stats = Stats::default();
    let mut choices = Vec::new();
    let mut outcomes = Vec::new();
    for (i, j) in choice_order(req, session) {
        let mut collected = Collected::default();
        match run_choice(req, session, (i, j), &mut collected, &mut stats) {
            Ok(outcome) => {
                let echo = echo_text(req, i);
                choices.push(TextChoice {
                    text: format!("{echo}{}", collected.content),
                    logprobs: req.logprobs.map(|_| {
                        LegacyLogprobs::new(echo).push(&collected.content, &collected.logprobs)
                    }),
                    finish: outcome.finish_reason,
                });
                outcomes.push(outcome);
            }
            Err(Failed::Api(e)) => return fail(out, "completions", &req.model, &e),
            // A collecting sink never disconnects.
            Err(Failed::Gone) => return,
        }
    }
    let body = text_completion(&ident, &choices, usage(session, &stats, &outcomes));
    respond_json(out, 200, &body.to_string());
    log_done(req, session, &stats, outcomes.last().copied(), "");
}

fn stream(req: &TextRequest, session: &Session, ident: CompletionId, out: ResponseOutparam) {
    let chunks = TextChunks {
        ident,
        include_usage: req.include_usage,
        logprobs: req.logprobs.is_some(),
    };
    let mut stats = Stats::default();
    let Ok(mut body) = Streaming::start(out, 200, sse::HEAD) else {
        return log_done(req, session, &stats, None, "client gone");
    };
    let mut outcomes = Vec::new();
    for (index, (i, j)) in choice_order(req, session).enumerate() {
        let index = index as u64;
        let result = TextSseSink::start(&chunks, index, echo_text(req, i), |bytes: &[u8]| {
            body.send(bytes)
        })
        .map_err(|_| Failed::Gone)
        .and_then(|mut sink| run_choice(req, session, (i, j), &mut sink, &mut stats));
        match result {
            Ok(outcome) => {
                if body
                    .send(&chunks.finish(index, outcome.finish_reason))
                    .is_err()
                {
                    return log_done(req, session, &stats, None, "client gone");
                }
                outcomes.push(outcome);
            }
            Err(Failed::Api(e)) => {
                // Status and headers are gone: the error travels in the stream.
                let _ = body.send(&sse::data_event(&e.to_json()));
                body.finish();
                return log_done(req, session, &stats, None, &e.message);
            }
            Err(Failed::Gone) => return log_done(req, session, &stats, None, "client gone"),
        }
    }
    // The client may leave during these last writes; nothing is left to
    // stop, so failures are ignored.
    if req.include_usage {
        let _ = body.send(&chunks.usage(usage(session, &stats, &outcomes)));
    }
    let _ = body.send(sse::DONE);
    body.finish();
    log_done(req, session, &stats, outcomes.last().copied(), "");
}

/// Each prompt counted once (its choices share it), plus every choice's
/// completion.
fn usage(session: &Session, stats: &Stats, outcomes: &[Outcome]) -> Usage {
    Usage {
        prompt_tokens: session.prompts.iter().map(|p| p.len() as u64).sum(),
        completion_tokens: outcomes.iter().map(|o| o.completion_tokens).sum(),
        cached_tokens: stats.cached_tokens,
    }
}

/// The request's one log line once generation ran. Timings are the first
/// choice's; `completion_tokens` counts every choice's steps; `finish` is
/// the last choice's.
fn log_done(
    req: &TextRequest,
    session: &Session,
    stats: &Stats,
    outcome: Option<Outcome>,
    note: &str,
) {
    let finish = outcome.map_or("aborted", |o| o.finish_reason.as_str());
    let mut line = format!(
        "completions model={} status=200 stream={} prompts={} n={} prompt_tokens={} completion_tokens={} prefill_ms={:.1} decode_tok_s={:.1} finish={finish}",
        req.model,
        req.stream,
        session.prompts.len(),
        req.n,
        session.prompts.iter().map(Vec::len).sum::<usize>(),
        stats.steps,
        stats.prefill_ms,
        stats.decode_tok_s,
    );
    if !note.is_empty() {
        line.push_str(&format!(" note={note:?}"));
    }
    log::line(&line);
}
