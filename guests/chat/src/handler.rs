//! The `wasi:http/incoming-handler` export: routing and the `/v1/models`
//! endpoints.

use crate::routes::{route, Route};
use sandpiper_guest_sdk::http::{respond_error, respond_json, Request};
use sandpiper_guest_sdk::{models, ApiError};
use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Chat;

impl wasi::exports::http::incoming_handler::Guest for Chat {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let request = Request::new(request);
        match route(request.method(), request.path()) {
            Err(no) => respond_error(out, &no.error, &no.headers()),
            Ok(Route::ListModels) => {
                respond_json(out, 200, &models::list_value(&models::list()).to_string());
            }
            Ok(Route::GetModel(id)) => match models::list().into_iter().find(|m| m.id == id) {
                Some(model) => respond_json(out, 200, &model.to_value().to_string()),
                None => respond_error(out, &ApiError::model_not_found(&id), &[]),
            },
            Ok(Route::ChatCompletions) => crate::completion::handle(request, out),
            Ok(Route::Completions) => crate::text_completion::handle(request, out),
        }
    }
}

wasi::http::proxy::export!(Chat);
