//! The `wasi:http/incoming-handler` export: routing and `/v1/audio/voices`.

use crate::routes::{route, Route};
use crate::voices;
use sandpiper_guest_sdk::http::{respond_error, respond_json, Request};
use sandpiper_guest_sdk::models::{self, ModelKind};
use serde_json::json;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Speech;

/// The ids of the voices the host serves.
pub fn installed_voices() -> Vec<String> {
    models::list()
        .into_iter()
        .filter(|m| m.kind == ModelKind::Speech)
        .map(|m| m.id)
        .collect()
}

impl wasi::exports::http::incoming_handler::Guest for Speech {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let request = Request::new(request);
        match route(request.method(), request.path()) {
            Err(no) => respond_error(out, &no.error, &no.headers()),
            Ok(Route::Voices) => {
                let installed = installed_voices();
                let data: Vec<_> = installed
                    .iter()
                    .map(|v| {
                        let aliases: Vec<&str> = voices::openai_mapping(&installed)
                            .into_iter()
                            .filter(|(_, to)| to == v)
                            .map(|(from, _)| from)
                            .collect();
                        let mut entry = json!({"id": v, "object": "voice", "aliases": aliases});
                        if let Ok(voice) = crate::speak::Voice::load(v) {
                            entry["sample_rate"] = json!(voice.info.sample_rate);
                            entry["language"] = json!(voice.info.language);
                        }
                        entry
                    })
                    .collect();
                let body = json!({"object": "list", "data": data});
                respond_json(out, 200, &body.to_string());
            }
            Ok(Route::Speech) => crate::speak::handle(request, out),
        }
    }
}

wasi::http::proxy::export!(Speech);
