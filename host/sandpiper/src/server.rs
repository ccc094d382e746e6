//! The HTTP front: `/health` and `/metrics` stay in the host; every other path
//! goes to the guest whose route prefix matches it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use crate::metrics::Metrics;
use crate::sandbox::{GuestError, Sandbox};

pub struct App {
    pub sandbox: Arc<Sandbox>,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    pub api_key: Option<String>,
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(dispatch)
        .with_state(app)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

/// An OpenAI-shaped error body, for failures the host answers itself.
pub fn error(status: StatusCode, kind: &str, code: &str, message: impl Into<String>) -> Response {
    let body =
        json!({"error": {"message": message.into(), "type": kind, "param": null, "code": code}});
    (status, Json(body)).into_response()
}

async fn dispatch(State(app): State<Arc<App>>, req: Request) -> Response {
    if let Some(denied) = check_api_key(&app, &req) {
        return denied;
    }
    let path = req.uri().path().to_string();
    let Some(route) = app.sandbox.route(&path) else {
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            format!("no route for {} {path}", req.method()),
        );
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = app.max_body_bytes;
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(limit);
    }
    app.metrics.requests.fetch_add(1, Relaxed);
    // Bodies sent without a length are cut off at the limit as they stream.
    let req = req.map(|body| {
        Limited::new(body, limit)
            .map_err(move |e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    wasmtime_wasi_http::Error::HttpRequestBodySize(Some(limit as u64))
                } else {
                    wasmtime_wasi_http::Error::InternalError(Some(e.to_string()))
                }
            })
            .boxed_unsync()
    });
    match app.sandbox.handle(route, req).await {
        Ok(resp) => resp.map(Body::new),
        Err(e) => {
            tracing::error!(%path, error = %e, "request failed in guest");
            let message = match &e {
                GuestError::Trap(_) => "the request handler failed; see the server log".to_string(),
                other => other.to_string(),
            };
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "guest_failed",
                message,
            )
        }
    }
}

/// With an API key configured, a request without it gets OpenAI's 401.
fn check_api_key(app: &App, req: &Request) -> Option<Response> {
    let want = app.api_key.as_deref()?;
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // Compare without an early exit so timing does not reveal the key's prefix.
    let matches = given.is_some_and(|g| {
        g.len() == want.len()
            && g.bytes()
                .zip(want.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if matches {
        return None;
    }
    let message = match given {
        None => "You didn't provide an API key. Send it as `Authorization: Bearer KEY`.",
        Some(_) => "Incorrect API key provided.",
    };
    let mut resp = error(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        "invalid_api_key",
        message,
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    Some(resp)
}

fn too_large(limit: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        "request_too_large",
        format!("request body is larger than {limit} bytes"),
    )
}
