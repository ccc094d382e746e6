//! Which endpoint a request is for, decided from method and path alone.

use sandpiper_guest_sdk::routes::with_method;
pub use sandpiper_guest_sdk::routes::NoRoute;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/audio/speech`
    Speech,
    /// `GET /v1/audio/voices`
    Voices,
}

pub fn route(method: &str, path: &str) -> Result<Route, NoRoute> {
    let (route, allow) = match path {
        "/v1/audio/speech" => (Route::Speech, "POST"),
        "/v1/audio/voices" => (Route::Voices, "GET"),
        _ => return Err(NoRoute::unknown(method, path)),
    };
    with_method(route, allow, method, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("POST", "/v1/audio/speech"), Ok(Route::Speech));
        assert_eq!(route("GET", "/v1/audio/voices"), Ok(Route::Voices));
        let e = route("GET", "/v1/audio/speech").unwrap_err();
        assert_eq!((e.error.status, e.allow), (405, Some("POST")));
        let e = route("POST", "/v1/audio/transcriptions").unwrap_err();
        assert_eq!((e.error.status, e.allow), (404, None));
    }
}
