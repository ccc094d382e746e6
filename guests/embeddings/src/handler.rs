//! The `wasi:http/incoming-handler` export: `POST /v1/embeddings`.

use crate::request::{self, EmbeddingsRequest};
use crate::response;
use sandpiper_guest_sdk::http::{fail, respond_error, respond_json, Request};
use sandpiper_guest_sdk::models::{self, ModelKind};
use sandpiper_guest_sdk::nn::{model_failed, ErrorCode, Graph, NnError, Tensor};
use sandpiper_guest_sdk::{log, time, ApiError};
use wasi::http::types::{IncomingRequest, ResponseOutparam};

/// Largest request body accepted: 2048 inputs of a few KB each.
const MAX_BODY_BYTES: usize = 16 << 20;

const PATH: &str = "/v1/embeddings";

struct Embeddings;

impl wasi::exports::http::incoming_handler::Guest for Embeddings {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let request = Request::new(request);
        if request.path() != PATH {
            let e = ApiError::unknown_route(request.method(), request.path());
            return respond_error(out, &e, &[]);
        }
        if request.method() != "POST" {
            let e = ApiError::method_not_allowed(request.method(), PATH, "POST");
            return respond_error(out, &e, &[("allow", "POST")]);
        }
        let started = time::monotonic_ns();
        let req = match request
            .read_body(MAX_BODY_BYTES)
            .and_then(|body| request::parse(&body))
        {
            Ok(req) => req,
            Err(e) => return fail(out, "embeddings", "-", &e),
        };
        match embed(&req) {
            Ok((body, inputs, tokens)) => {
                log::line(&format!(
                    "embeddings model={} status=200 inputs={inputs} tokens={tokens} ms={}",
                    req.model,
                    (time::monotonic_ns() - started) / 1_000_000
                ));
                respond_json(out, 200, &body);
            }
            Err(e) => fail(out, "embeddings", &req.model, &e),
        }
    }
}

wasi::http::proxy::export!(Embeddings);

/// Runs the model; returns the body, the input count and the token count.
fn embed(req: &EmbeddingsRequest) -> Result<(String, usize, u64), ApiError> {
    check_model(&req.model)?;
    let graph = Graph::load_model(&req.model)?;
    let context = graph
        .context()
        .map_err(|e| model_failed(&req.model, "could not start", &e))?;
    let dim =
        metadata_dim(&context).map_err(|e| model_failed(&req.model, "has no metadata", &e))?;
    request::check_dimensions(req.dimensions, &req.model, dim)?;

    let (name, json) = request::tensor_name_and_json(&req.input);
    let mut outputs = context
        .compute(vec![(name, Tensor::bytes(json))])
        .map_err(|e| match e.code {
            ErrorCode::InvalidArgument => {
                ApiError::invalid_request(format!("Invalid 'input': {}", e.message))
                    .with_param("input")
                    .with_code("invalid_value")
            }
            _ => model_failed(&req.model, "failed", &e),
        })?;
    let protocol = |e: NnError| model_failed(&req.model, "broke the protocol", &e);
    let embeddings = outputs.take("embeddings").map_err(protocol)?;
    let counts = outputs
        .take("token_counts")
        .and_then(|t| t.to_i32s())
        .map_err(protocol)?;
    let n = req.input.len();
    if embeddings.dims != [n as u32, dim as u32] || counts.len() != n {
        return Err(protocol(NnError::protocol(format!(
            "expected embeddings [{n}, {dim}] and {n} token counts, got {:?} and {}",
            embeddings.dims,
            counts.len()
        ))));
    }
    let vectors = response::f32s(&embeddings.data);
    let tokens: u64 = counts.iter().map(|&c| c.max(0) as u64).sum();
    let body = response::body(
        &req.model,
        &vectors,
        dim as usize,
        req.encoding_format,
        tokens,
    );
    Ok((body, n, tokens))
}

/// The model must be served and be an embedding model.
fn check_model(id: &str) -> Result<(), ApiError> {
    match models::list().into_iter().find(|m| m.id == id) {
        None => Err(ApiError::model_not_found(id)),
        Some(m) if m.kind != ModelKind::Embedding => Err(ApiError::invalid_request(format!(
            "The model `{id}` is not an embedding model (its kind is {}); /v1/embeddings needs an embedding model.",
            m.kind.as_str()
        ))
        .with_param("model")
        .with_code("model_not_supported")),
        Some(_) => Ok(()),
    }
}

/// The vector length from the graph's `metadata`.
fn metadata_dim(context: &sandpiper_guest_sdk::nn::Context) -> Result<u64, NnError> {
    let mut out = context.compute(vec![("metadata", Tensor::bytes(Vec::new()))])?;
    let bytes = out.take("metadata")?.into_bytes()?;
    let meta: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| NnError::protocol(e.to_string()))?;
    meta["dim"]
        .as_u64()
        .ok_or_else(|| NnError::protocol("metadata has no `dim`"))
}
