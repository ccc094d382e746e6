//! One `POST /v1/chat/completions` on the guest target: validate, prompt,
//! generate through `wasi:nn`, respond whole or streamed, log one line.

use crate::generate::{generate, token_budget, Collected, GenError, Limits, Model, Outcome, Step};
use crate::logprobs::StepLogprobs;
use crate::metadata::ModelMetadata;
use crate::request::{self, ChatRequest};
use crate::response::{completion, CompletionId, Usage};
use crate::stream::{Chunks, SseSink};
use crate::template::{self, TemplateError};
use sandpiper_guest_sdk::http::{respond_error, respond_json, Request, Streaming};
use sandpiper_guest_sdk::models::{self, ModelKind};
use sandpiper_guest_sdk::nn::{Context, ErrorCode, Graph, NnError, Tensor};
use sandpiper_guest_sdk::{ids, log, sse, time, ApiError};
use wasi::http::types::ResponseOutparam;

/// Largest request body accepted. Generous for long conversations, small
/// enough that a hostile client cannot exhaust the instance's memory.
const MAX_BODY_BYTES: usize = 8 << 20;

/// Handles a chat completion request end to end.
pub fn handle(http: Request, out: ResponseOutparam) {
    let chat = match http
        .read_body(MAX_BODY_BYTES)
        .and_then(|body| request::parse(&body))
    {
        Ok(chat) => chat,
        Err(e) => return fail(out, "-", &e),
    };
    let session = match prepare(&chat) {
        Ok(session) => session,
        Err(e) => return fail(out, &chat.model, &e),
    };
    let ident = CompletionId {
        id: ids::random_id("chatcmpl-"),
        created: time::unix_secs(),
        model: chat.model.clone(),
    };
    let mut model = NnModel::new(&session.context, chat.sampling_json());
    if chat.stream {
        stream(&chat, &session, &mut model, ident, out);
    } else {
        whole(&chat, &session, &mut model, ident, out);
    }
}

/// A model loaded and prompted, ready to generate.
struct Session {
    /// Kept alive for the whole request: the context belongs to it.
    _graph: Graph,
    context: Context,
    prompt: Vec<i32>,
    limits: Limits,
}

/// Everything that can still be answered with a plain error response:
/// model lookup, metadata, template, tokenisation and the context check.
fn prepare(chat: &ChatRequest) -> Result<Session, ApiError> {
    check_model(&chat.model)?;
    let graph = Graph::load_by_name(&chat.model).map_err(|e| match e.code {
        ErrorCode::NotFound => ApiError::model_not_found(&chat.model),
        _ => model_failed(&chat.model, "could not be loaded", &e),
    })?;
    let context = graph
        .context()
        .map_err(|e| model_failed(&chat.model, "could not start a sequence", &e))?;
    let meta = metadata(&context).map_err(|e| model_failed(&chat.model, "has no metadata", &e))?;

    let text = template::render(
        meta.chat_template.as_deref(),
        &chat.messages,
        meta.bos_token.as_deref().unwrap_or(""),
        meta.eos_token.as_deref().unwrap_or(""),
    )
    .map_err(|e| match e {
        TemplateError::Rejected(message) => {
            ApiError::invalid_request(message).with_param("messages")
        }
        TemplateError::Failed(message) => ApiError::server_error(message),
    })?;
    let prompt = tokenize(&context, &text)
        .map_err(|e| model_failed(&chat.model, "could not tokenize the prompt", &e))?;
    if prompt.is_empty() {
        return Err(
            ApiError::invalid_request("The messages rendered to an empty prompt.")
                .with_param("messages"),
        );
    }
    if let Some(vocab_size) = meta.vocab_size {
        chat.check_vocab(vocab_size)?;
    }
    let max_new_tokens = token_budget(prompt.len() as u64, meta.context_length, chat.max_tokens)?;
    Ok(Session {
        _graph: graph,
        context,
        prompt,
        limits: Limits {
            max_new_tokens,
            eos_token_ids: meta.eos_token_ids,
            stop: chat.stop.clone(),
        },
    })
}

/// The model must be served and be a chat model.
fn check_model(id: &str) -> Result<(), ApiError> {
    match models::list().into_iter().find(|m| m.id == id) {
        None => Err(ApiError::model_not_found(id)),
        Some(m) if m.kind != ModelKind::Chat => Err(ApiError::invalid_request(format!(
            "The model `{id}` is not a chat model (its kind is {}); /v1/chat/completions needs a chat model.",
            m.kind.as_str()
        ))
        .with_param("model")
        .with_code("model_not_supported")),
        Some(_) => Ok(()),
    }
}

fn metadata(context: &Context) -> Result<ModelMetadata, NnError> {
    let mut out = context.compute(vec![("metadata", Tensor::bytes(Vec::new()))])?;
    let bytes = out.take("metadata")?.into_bytes()?;
    ModelMetadata::parse(&bytes).map_err(NnError::protocol)
}

fn tokenize(context: &Context, text: &str) -> Result<Vec<i32>, NnError> {
    let mut out = context.compute(vec![("tokenize", Tensor::bytes(text.as_bytes()))])?;
    out.take("tokens")?.to_i32s()
}

fn model_failed(model: &str, what: &str, e: &NnError) -> ApiError {
    ApiError::server_error(format!("The model `{model}` {what}: {e}"))
}

/// The error for a compute that failed during generation.
fn generation_error(model: &str, error: &NnError, sampled: u64) -> ApiError {
    if error.code == ErrorCode::TooLarge && sampled == 0 {
        // The prompt passed our check against `context_length` but the
        // sequence still did not fit.
        ApiError::invalid_request(format!(
            "The prompt does not fit in the context of `{model}`: {}",
            error.message
        ))
        .with_param("messages")
        .with_code("context_length_exceeded")
    } else {
        model_failed(model, "failed while generating", error)
    }
}

fn whole(
    chat: &ChatRequest,
    session: &Session,
    model: &mut NnModel,
    ident: CompletionId,
    out: ResponseOutparam,
) {
    let mut out_text = Collected::default();
    match generate(model, &session.prompt, &session.limits, &mut out_text) {
        Ok(outcome) => {
            let usage = usage(session, &outcome);
            let logprobs = chat.logprobs.then_some(out_text.logprobs.as_slice());
            let body = completion(
                &ident,
                &out_text.content,
                logprobs,
                outcome.finish_reason,
                usage,
            );
            respond_json(out, 200, &body.to_string());
            log_done(chat, 200, session, model, Some(outcome), "");
        }
        Err(GenError::Model {
            error,
            completion_tokens,
        }) => {
            let e = generation_error(&chat.model, &error, completion_tokens);
            fail(out, &chat.model, &e);
        }
        // A String sink never disconnects.
        Err(GenError::Disconnected { .. }) => {}
    }
}

fn stream(
    chat: &ChatRequest,
    session: &Session,
    model: &mut NnModel,
    ident: CompletionId,
    out: ResponseOutparam,
) {
    let chunks = Chunks {
        ident,
        include_usage: chat.include_usage,
        logprobs: chat.logprobs,
    };
    let head = [
        ("content-type", "text/event-stream"),
        ("cache-control", "no-cache"),
    ];
    let Ok(mut body) = Streaming::start(out, 200, &head) else {
        return log_done(chat, 200, session, model, None, "client gone");
    };
    if body.send(&chunks.role()).is_err() {
        return log_done(chat, 200, session, model, None, "client gone");
    }
    let result = {
        let mut sink = SseSink {
            chunks: &chunks,
            write: |bytes: &[u8]| body.send(bytes),
        };
        generate(model, &session.prompt, &session.limits, &mut sink)
    };
    match result {
        Ok(outcome) => {
            // The client may leave during these last writes; nothing is
            // left to stop, so failures are ignored.
            let _ = body.send(&chunks.finish(outcome.finish_reason));
            if chat.include_usage {
                let _ = body.send(&chunks.usage(usage(session, &outcome)));
            }
            let _ = body.send(sse::DONE);
            body.finish();
            log_done(chat, 200, session, model, Some(outcome), "");
        }
        Err(GenError::Model {
            error,
            completion_tokens,
        }) => {
            // Status and headers are gone: the error travels in the stream.
            let e = generation_error(&chat.model, &error, completion_tokens);
            let _ = body.send(&sse::data_event(&e.to_json()));
            body.finish();
            log_done(chat, 200, session, model, None, &e.message);
        }
        Err(GenError::Disconnected { .. }) => {
            log_done(chat, 200, session, model, None, "client gone");
        }
    }
}

fn usage(session: &Session, outcome: &Outcome) -> Usage {
    Usage {
        prompt_tokens: session.prompt.len() as u64,
        completion_tokens: outcome.completion_tokens,
    }
}

/// Responds with `error` and logs the request's one line.
fn fail(out: ResponseOutparam, model: &str, error: &ApiError) {
    log::line(&format!(
        "chat model={model} status={} code={} error={:?}",
        error.status,
        error.code.as_deref().unwrap_or("-"),
        error.message
    ));
    respond_error(out, error, &[]);
}

/// The request's one log line once generation ran (the host forwards guest
/// stderr to its log).
fn log_done(
    chat: &ChatRequest,
    status: u16,
    session: &Session,
    model: &NnModel,
    outcome: Option<Outcome>,
    note: &str,
) {
    let finish = outcome.map_or("aborted", |o| o.finish_reason.as_str());
    let mut line = format!(
        "chat model={} status={status} stream={} prompt_tokens={} completion_tokens={} prefill_ms={:.1} decode_tok_s={:.1} finish={finish}",
        chat.model,
        chat.stream,
        session.prompt.len(),
        model.steps,
        model.prefill_ms(),
        model.decode_tokens_per_sec(),
    );
    if !note.is_empty() {
        line.push_str(&format!(" note={note:?}"));
    }
    log::line(&line);
}

/// [`Model`] over a `wasi:nn` execution context, timing each compute.
struct NnModel<'a> {
    context: &'a Context,
    /// Sent with the first compute only: the protocol makes it sticky.
    sampling: Option<String>,
    steps: u64,
    started_ns: u64,
    first_done_ns: u64,
    last_done_ns: u64,
}

impl<'a> NnModel<'a> {
    fn new(context: &'a Context, sampling: String) -> Self {
        Self {
            context,
            sampling: Some(sampling),
            steps: 0,
            started_ns: 0,
            first_done_ns: 0,
            last_done_ns: 0,
        }
    }

    /// Prompt processing plus the first sample.
    fn prefill_ms(&self) -> f64 {
        self.first_done_ns.saturating_sub(self.started_ns) as f64 / 1e6
    }

    /// Tokens per second after the first one (one token fed per compute).
    fn decode_tokens_per_sec(&self) -> f64 {
        let ns = self.last_done_ns.saturating_sub(self.first_done_ns);
        if self.steps < 2 || ns == 0 {
            return 0.0;
        }
        (self.steps - 1) as f64 / (ns as f64 / 1e9)
    }
}

impl Model for NnModel<'_> {
    fn step(&mut self, tokens: &[i32]) -> Result<Step, NnError> {
        if self.steps == 0 {
            self.started_ns = time::monotonic_ns();
        }
        let mut inputs = vec![("tokens", Tensor::i32s(tokens))];
        if let Some(sampling) = self.sampling.take() {
            inputs.push(("sampling", Tensor::bytes(sampling)));
        }
        let mut out = self.context.compute(inputs)?;
        let token = *out
            .take("token")?
            .to_i32s()?
            .first()
            .ok_or_else(|| NnError::protocol("`token` output is empty"))?;
        let bytes = out.take("bytes")?.into_bytes()?;
        let logprobs = match out.take("logprobs") {
            Ok(tensor) => {
                Some(StepLogprobs::parse(&tensor.into_bytes()?).map_err(NnError::protocol)?)
            }
            Err(_) => None,
        };
        let now = time::monotonic_ns();
        if self.steps == 0 {
            self.first_done_ns = now;
        }
        self.last_done_ns = now;
        self.steps += 1;
        Ok(Step {
            token,
            bytes,
            logprobs,
        })
    }
}
