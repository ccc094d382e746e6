//! One `POST /v1/chat/completions` on the guest target: validate, prompt,
//! generate through `wasi:nn`, respond whole or streamed, log one line.

use crate::generate::{
    generate, token_budget, Collected, FinishReason, GenError, Limits, Model, Outcome, Sink, Step,
};
use crate::logprobs::StepLogprobs;
use crate::metadata::ModelMetadata;
use crate::request::{self, ChatRequest};
use crate::response::{completion, Choice, CompletionId, Usage};
use crate::stream::{Chunks, SseSink};
use crate::template::{self, TemplateError};
use crate::tools::{self, ToolCall, ToolSink};
use sandpiper_grammar::Vocab;
use sandpiper_guest_sdk::http::{fail, respond_json, Request, Streaming};
use sandpiper_guest_sdk::models::{self, ModelKind};
use sandpiper_guest_sdk::nn::{model_failed, Context, ErrorCode, Graph, NnError, Tensor};
use sandpiper_guest_sdk::{ids, log, sse, time, ApiError};
use wasi::http::types::ResponseOutparam;

/// Largest request body accepted. Generous for long conversations, small
/// enough that a hostile client cannot exhaust the instance's memory.
pub(crate) const MAX_BODY_BYTES: usize = 8 << 20;

/// Handles a chat completion request end to end.
pub fn handle(http: Request, out: ResponseOutparam) {
    let chat = match http
        .read_body(MAX_BODY_BYTES)
        .and_then(|body| request::parse(&body))
    {
        Ok(chat) => chat,
        Err(e) => return fail(out, "chat", "-", &e),
    };
    let session = match prepare(&chat) {
        Ok(session) => session,
        Err(e) => return fail(out, "chat", &chat.model, &e),
    };
    let ident = CompletionId {
        id: ids::random_id("chatcmpl-"),
        created: time::unix_secs(),
        model: chat.model.clone(),
    };
    // One sequence per choice: the first reuses the context that tokenised
    // the prompt, the others get fresh ones from the same graph.
    let extra = match (1..chat.n)
        .map(|_| session.graph.context())
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(extra) => extra,
        Err(e) => {
            let e = model_failed(&chat.model, "could not start a sequence", &e);
            return fail(out, "chat", &chat.model, &e);
        }
    };
    let mut models: Vec<NnModel> = std::iter::once(&session.context)
        .chain(&extra)
        .zip(0..)
        .map(|(context, index)| NnModel::new(context, chat.sampling_json(index)))
        .collect();
    if chat.stream {
        stream(&chat, &session, &mut models, ident, out);
    } else {
        whole(&chat, &session, &mut models, ident, out);
    }
}

/// A model loaded and prompted, ready to generate.
struct Session {
    /// Kept alive for the whole request: the contexts belong to it.
    graph: Graph,
    context: Context,
    prompt: Vec<i32>,
    limits: Limits,
}

/// Everything that can still be answered with a plain error response:
/// model lookup, metadata, template, tokenisation and the context check.
fn prepare(chat: &ChatRequest) -> Result<Session, ApiError> {
    let (graph, context, meta) = open_model(&chat.model, "/v1/chat/completions")?;

    let text = template::render(
        meta.chat_template.as_deref(),
        &tools::prompt_messages(&chat.messages, &chat.tools),
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
    let max_new_tokens = token_budget(
        prompt.len() as u64,
        meta.context_length,
        chat.max_tokens,
        "messages",
    )?;
    Ok(Session {
        graph,
        context,
        prompt,
        limits: Limits {
            max_new_tokens,
            eos_token_ids: meta.eos_token_ids,
            stop: chat.stop.clone(),
        },
    })
}

/// Generates one choice into `sink`. When the model may call tools, text
/// that is a call is held back and returned as calls instead (and the
/// finish reason says so).
fn run_choice(
    chat: &ChatRequest,
    session: &Session,
    model: &mut NnModel,
    sink: &mut dyn Sink,
) -> Result<(Outcome, Option<Vec<ToolCall>>), GenError> {
    // Each choice follows the request's constraint from the start.
    let mut constraint = chat.constraint.clone();
    if !chat.tools.active() {
        let outcome = generate(
            model,
            &session.prompt,
            &session.limits,
            constraint.as_mut(),
            sink,
        )?;
        return Ok((outcome, None));
    }
    let mut tool_sink = ToolSink::new(sink, chat.tools.forced());
    let mut outcome = generate(
        model,
        &session.prompt,
        &session.limits,
        constraint.as_mut(),
        &mut tool_sink,
    )?;
    let completion_tokens = outcome.completion_tokens;
    let calls = tool_sink
        .finish(|| ids::random_id("call_"))
        .map_err(|_| GenError::Disconnected { completion_tokens })?;
    if calls.is_some() {
        outcome.finish_reason = FinishReason::ToolCalls;
    }
    Ok((outcome, calls))
}

/// The chat model `id` (see [`check_model`]) loaded, with a first
/// sequence started and its metadata read.
pub(crate) fn open_model(
    id: &str,
    endpoint: &str,
) -> Result<(Graph, Context, ModelMetadata), ApiError> {
    check_model(id, endpoint)?;
    let graph = Graph::load_model(id)?;
    let context = graph
        .context()
        .map_err(|e| model_failed(id, "could not start a sequence", &e))?;
    let meta = metadata(&context).map_err(|e| model_failed(id, "has no metadata", &e))?;
    Ok((graph, context, meta))
}

/// The model must be served and be a chat model; `endpoint`
/// (`/v1/chat/completions`, `/v1/completions`) is named when it is not.
fn check_model(id: &str, endpoint: &str) -> Result<(), ApiError> {
    match models::list().into_iter().find(|m| m.id == id) {
        None => Err(ApiError::model_not_found(id)),
        Some(m) if m.kind != ModelKind::Chat => Err(ApiError::invalid_request(format!(
            "The model `{id}` is not a chat model (its kind is {}); {endpoint} needs a chat model.",
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

pub(crate) fn tokenize(context: &Context, text: &str) -> Result<Vec<i32>, NnError> {
    let mut out = context.compute(vec![("tokenize", Tensor::bytes(text.as_bytes()))])?;
    out.take("tokens")?.to_i32s()
}

/// The error for a compute that failed during generation; `param` is what
/// the prompt came from (`messages`, `prompt`, `prompt[i]`).
pub(crate) fn generation_error(
    model: &str,
    error: &NnError,
    sampled: u64,
    param: &str,
) -> ApiError {
    if error.code == ErrorCode::TooLarge && sampled == 0 {
        // The prompt passed our check against `context_length` but the
        // sequence still did not fit.
        ApiError::invalid_request(format!(
            "The prompt does not fit in the context of `{model}`: {}",
            error.message
        ))
        .with_param(param)
        .with_code("context_length_exceeded")
    } else {
        model_failed(model, "failed while generating", error)
    }
}

fn whole(
    chat: &ChatRequest,
    session: &Session,
    models: &mut [NnModel],
    ident: CompletionId,
    out: ResponseOutparam,
) {
    let mut results = Vec::with_capacity(models.len());
    for model in models.iter_mut() {
        let mut out_text = Collected::default();
        match run_choice(chat, session, model, &mut out_text) {
            Ok((outcome, calls)) => results.push((out_text, outcome, calls)),
            Err(GenError::Model {
                error,
                completion_tokens,
            }) => {
                let e = generation_error(&chat.model, &error, completion_tokens, "messages");
                return fail(out, "chat", &chat.model, &e);
            }
            // A String sink never disconnects.
            Err(GenError::Disconnected { .. }) => return,
        }
    }
    let choices: Vec<Choice> = results
        .iter()
        .map(|(text, outcome, calls)| Choice {
            content: &text.content,
            logprobs: chat.logprobs.then_some(text.logprobs.as_slice()),
            finish: outcome.finish_reason,
            tool_calls: calls.as_deref(),
        })
        .collect();
    let outcomes: Vec<Outcome> = results.iter().map(|(_, outcome, _)| *outcome).collect();
    let body = completion(&ident, &choices, usage(session, models, &outcomes));
    respond_json(out, 200, &body.to_string());
    log_done(chat, 200, session, models, outcomes.last().copied(), "");
}

fn stream(
    chat: &ChatRequest,
    session: &Session,
    models: &mut [NnModel],
    ident: CompletionId,
    out: ResponseOutparam,
) {
    let chunks = Chunks {
        ident,
        include_usage: chat.include_usage,
        logprobs: chat.logprobs,
    };
    let Ok(mut body) = Streaming::start(out, 200, sse::HEAD) else {
        return log_done(chat, 200, session, models, None, "client gone");
    };
    // Choices one after another (see `stream.rs`), each with its own role,
    // content and finish chunks.
    let mut outcomes = Vec::with_capacity(models.len());
    for index in 0..models.len() {
        if body.send(&chunks.role(index as u64)).is_err() {
            return log_done(chat, 200, session, models, None, "client gone");
        }
        let result = {
            let mut sink = SseSink::new(&chunks, index as u64, |bytes: &[u8]| body.send(bytes));
            run_choice(chat, session, &mut models[index], &mut sink)
        };
        match result {
            Ok((outcome, calls)) => {
                if let Some(calls) = calls {
                    if body.send(&chunks.tool_calls(index as u64, &calls)).is_err() {
                        return log_done(chat, 200, session, models, None, "client gone");
                    }
                }
                if body
                    .send(&chunks.finish(index as u64, outcome.finish_reason))
                    .is_err()
                {
                    return log_done(chat, 200, session, models, None, "client gone");
                }
                outcomes.push(outcome);
            }
            Err(GenError::Model {
                error,
                completion_tokens,
            }) => {
                // Status and headers are gone: the error travels in the stream.
                let e = generation_error(&chat.model, &error, completion_tokens, "messages");
                let _ = body.send(&sse::data_event(&e.to_json()));
                body.finish();
                return log_done(chat, 200, session, models, None, &e.message);
            }
            Err(GenError::Disconnected { .. }) => {
                return log_done(chat, 200, session, models, None, "client gone");
            }
        }
    }
    // The client may leave during these last writes; nothing is left to
    // stop, so failures are ignored.
    if chat.include_usage {
        let _ = body.send(&chunks.usage(usage(session, models, &outcomes)));
    }
    let _ = body.send(sse::DONE);
    body.finish();
    log_done(chat, 200, session, models, outcomes.last().copied(), "");
}

/// The prompt counted once (it is shared), plus every choice's completion;
/// the prompt's reuse as the first choice found it.
fn usage(session: &Session, models: &[NnModel], outcomes: &[Outcome]) -> Usage {
    Usage {
        prompt_tokens: session.prompt.len() as u64,
        completion_tokens: outcomes.iter().map(|o| o.completion_tokens).sum(),
        cached_tokens: models.first().map_or(0, |m| m.reused),
    }
}

/// The request's one log line once generation ran (the host forwards guest
/// stderr to its log). Timings are the first choice's; `completion_tokens`
/// counts every choice's steps; `finish` is the last choice's.
fn log_done(
    chat: &ChatRequest,
    status: u16,
    session: &Session,
    models: &[NnModel],
    outcome: Option<Outcome>,
    note: &str,
) {
    let finish = outcome.map_or("aborted", |o| o.finish_reason.as_str());
    let first = &models[0];
    let mut line = format!(
        "chat model={} status={status} stream={} n={} prompt_tokens={} completion_tokens={} prefill_ms={:.1} decode_tok_s={:.1} resamples={} mask_ms={:.1} finish={finish}",
        chat.model,
        chat.stream,
        chat.n,
        session.prompt.len(),
        models.iter().map(|m| m.steps).sum::<u64>(),
        first.prefill_ms(),
        first.decode_tokens_per_sec(),
        models.iter().map(|m| m.resamples).sum::<u64>(),
        models.iter().map(|m| m.mask_ns).sum::<u64>() as f64 / 1e6,
    );
    if !note.is_empty() {
        line.push_str(&format!(" note={note:?}"));
    }
    log::line(&line);
}

/// [`Model`] over a `wasi:nn` execution context, timing each compute.
pub(crate) struct NnModel<'a> {
    context: &'a Context,
    /// Sent with the first compute only: the protocol makes it sticky.
    sampling: Option<String>,
    pub(crate) steps: u64,
    started_ns: u64,
    first_done_ns: u64,
    last_done_ns: u64,
    /// Fetched the first time constrained decoding needs a mask.
    vocab: Option<Vocab>,
    /// Tokens the constraint refused, and the time spent computing masks
    /// for them (from handing out the vocabulary to the resample), logged.
    pub(crate) resamples: u64,
    mask_ns: u64,
    mask_started_ns: u64,
    /// Prompt tokens the host took from an earlier sequence's KV cache
    /// (its `reused` output, on the first step).
    pub(crate) reused: u64,
}

impl<'a> NnModel<'a> {
    pub(crate) fn new(context: &'a Context, sampling: String) -> Self {
        Self {
            context,
            sampling: Some(sampling),
            steps: 0,
            started_ns: 0,
            first_done_ns: 0,
            last_done_ns: 0,
            vocab: None,
            resamples: 0,
            mask_ns: 0,
            mask_started_ns: 0,
            reused: 0,
        }
    }

    /// Prompt processing plus the first sample.
    pub(crate) fn prefill_ms(&self) -> f64 {
        self.first_done_ns.saturating_sub(self.started_ns) as f64 / 1e6
    }

    /// Tokens per second after the first one (one token fed per compute).
    pub(crate) fn decode_tokens_per_sec(&self) -> f64 {
        let ns = self.last_done_ns.saturating_sub(self.first_done_ns);
        if self.steps < 2 || ns == 0 {
            return 0.0;
        }
        (self.steps - 1) as f64 / (ns as f64 / 1e9)
    }
}

impl NnModel<'_> {
    /// The `token`, `bytes` and optional `logprobs` outputs of a `tokens`
    /// or `resample` compute.
    fn read_step(mut out: sandpiper_guest_sdk::nn::Outputs) -> Result<Step, NnError> {
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
        Ok(Step {
            token,
            bytes,
            logprobs,
        })
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
        let now = time::monotonic_ns();
        if self.steps == 0 {
            self.first_done_ns = now;
            // Optional: hosts without prefix reuse do not send it.
            if let Ok(reused) = out.take("reused") {
                self.reused = reused.to_i32s()?.first().map_or(0, |&n| n.max(0) as u64);
            }
        }
        let step = Self::read_step(out)?;
        self.last_done_ns = now;
        self.steps += 1;
        Ok(step)
    }

    fn resample(&mut self, mask: &[u8]) -> Result<Step, NnError> {
        self.resamples += 1;
        self.mask_ns += time::monotonic_ns().saturating_sub(self.mask_started_ns);
        Self::read_step(
            self.context
                .compute(vec![("resample", Tensor::bytes(mask))])?,
        )
    }

    fn vocab(&mut self) -> Result<&Vocab, NnError> {
        if self.vocab.is_none() {
            let mut out = self
                .context
                .compute(vec![("vocab", Tensor::bytes(Vec::new()))])?;
            let bytes = out.take("vocab")?.into_bytes()?;
            let offsets = out
                .take("offsets")?
                .to_i32s()?
                .into_iter()
                .map(|o| o as u32)
                .collect();
            let vocab = Vocab::new(bytes, offsets)
                .ok_or_else(|| NnError::protocol("`vocab` and `offsets` do not match"))?;
            self.vocab = Some(vocab);
        }
        // The generation loop computes a mask next (see `resample`).
        self.mask_started_ns = time::monotonic_ns();
        Ok(self.vocab.as_ref().expect("set above"))
    }
}
