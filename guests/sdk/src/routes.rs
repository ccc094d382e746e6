//! Matching a request to one of a guest's endpoints, with OpenAI's answers
//! when none matches: 404 for an unknown path, 405 (and an `allow` header)
//! for a known path asked with the wrong method.

use crate::ApiError;

/// A request no endpoint accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRoute {
    pub error: ApiError,
    /// The method the path does accept, for a 405.
    pub allow: Option<&'static str>,
}

impl NoRoute {
    /// No endpoint has this path.
    pub fn unknown(method: &str, path: &str) -> Self {
        NoRoute {
            error: ApiError::unknown_route(method, path),
            allow: None,
        }
    }

    /// Extra response headers: `allow` for a 405.
    pub fn headers(&self) -> Vec<(&'static str, &'static str)> {
        self.allow.map(|a| ("allow", a)).into_iter().collect()
    }
}

/// `route` when `method` is the one its path `allow`s, else a 405.
pub fn with_method<R>(
    route: R,
    allow: &'static str,
    method: &str,
    path: &str,
) -> Result<R, NoRoute> {
    if method == allow {
        Ok(route)
    } else {
        Err(NoRoute {
            error: ApiError::method_not_allowed(method, path, allow),
            allow: Some(allow),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_method_is_405_with_allow() {
        assert_eq!(with_method(1, "POST", "POST", "/x"), Ok(1));
        let no = with_method(1, "POST", "GET", "/x").unwrap_err();
        assert_eq!(
            (no.error.status, no.headers()),
            (405, vec![("allow", "POST")])
        );
        let no = NoRoute::unknown("GET", "/y");
        assert_eq!((no.error.status, no.headers()), (404, vec![]));
    }
}
