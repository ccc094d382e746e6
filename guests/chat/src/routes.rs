//! Which endpoint a request is for, decided from method and path alone.
//!
//! Kept apart from the handlers so the 404/405 rules are testable off-wasm.

use sandpiper_guest_sdk::http::percent_decode;
use sandpiper_guest_sdk::routes::with_method;
pub use sandpiper_guest_sdk::routes::NoRoute;

/// The endpoints this guest serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/chat/completions`
    ChatCompletions,
    /// `POST /v1/completions` (the legacy text Completions API)
    Completions,
    /// `GET /v1/models`
    ListModels,
    /// `GET /v1/models/{id}` (id percent-decoded, may contain `/`)
    GetModel(String),
}

/// Matches `method` and `path` (without the query string).
pub fn route(method: &str, path: &str) -> Result<Route, NoRoute> {
    let (route, allow) = if path == "/v1/chat/completions" {
        (Route::ChatCompletions, "POST")
    } else if path == "/v1/completions" {
        (Route::Completions, "POST")
    } else if path == "/v1/models" {
        (Route::ListModels, "GET")
    } else if let Some(id) = path.strip_prefix("/v1/models/").filter(|id| !id.is_empty()) {
        (Route::GetModel(percent_decode(id)), "GET")
    } else {
        return Err(NoRoute::unknown(method, path));
    };
    with_method(route, allow, method, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_routes() {
        assert_eq!(
            route("POST", "/v1/chat/completions"),
            Ok(Route::ChatCompletions)
        );
        assert_eq!(route("POST", "/v1/completions"), Ok(Route::Completions));
        assert_eq!(route("GET", "/v1/models"), Ok(Route::ListModels));
        assert_eq!(
            route("GET", "/v1/models/org%2Fmodel"),
            Ok(Route::GetModel("org/model".into()))
        );
        assert_eq!(
            route("GET", "/v1/models/smollm2"),
            Ok(Route::GetModel("smollm2".into()))
        );
    }

    #[test]
    fn wrong_method_is_405_with_allow() {
        let e = route("GET", "/v1/chat/completions").unwrap_err();
        assert_eq!((e.error.status, e.allow), (405, Some("POST")));
        let e = route("GET", "/v1/completions").unwrap_err();
        assert_eq!((e.error.status, e.allow), (405, Some("POST")));
        let e = route("DELETE", "/v1/models/x").unwrap_err();
        assert_eq!((e.error.status, e.allow), (405, Some("GET")));
    }

    #[test]
    fn unknown_path_is_404() {
        for path in [
            "/",
            "/v1/chat",
            "/v1/models/",
            "/v1/chat/completions/x",
            "/v1/completions/x",
        ] {
            let e = route("POST", path).unwrap_err();
            assert_eq!((e.error.status, e.allow), (404, None), "{path}");
            assert_eq!(e.error.kind, "invalid_request_error");
        }
    }
}
