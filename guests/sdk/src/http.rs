//! A small layer over `wasi:http` for request/response guests.
//!
//! The raw bindings need several resources and fallible calls per response;
//! guests only need "read the body", "answer with this", and "stream these
//! chunks, telling me when the client went away". URL helpers are pure and
//! host-testable; the rest exists on the guest target only.

/// Splits `path?query` into the path and the query (without `?`).
pub fn split_path_query(path_with_query: &str) -> (&str, Option<&str>) {
    match path_with_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_with_query, None),
    }
}

/// The first value of `name` in a query string (`a=1&b=2`), percent-decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

/// Decodes `%XX` escapes (and `+` stays `+`: it only means space in forms).
/// Invalid escapes are kept literally and invalid UTF-8 is replaced, so any
/// input decodes to something that can be reported back.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The client stopped reading (closed the connection); stop producing output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnected;

#[cfg(target_arch = "wasm32")]
pub use guest::*;

#[cfg(target_arch = "wasm32")]
mod guest {
    use super::{split_path_query, Disconnected};
    use crate::ApiError;
    use wasi::http::types::{
        Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
    };
    use wasi::io::streams::{OutputStream, StreamError};

    /// `wasi:io` output streams accept at most 4096 bytes per
    /// `blocking-write-and-flush`.
    const WRITE_CHUNK: usize = 4096;

    /// An incoming request with its method and path already extracted.
    pub struct Request {
        inner: IncomingRequest,
        method: String,
        path: String,
        query: Option<String>,
    }

    impl Request {
        pub fn new(inner: IncomingRequest) -> Self {
            let method = match inner.method() {
                Method::Get => "GET".to_string(),
                Method::Head => "HEAD".to_string(),
                Method::Post => "POST".to_string(),
                Method::Put => "PUT".to_string(),
                Method::Delete => "DELETE".to_string(),
                Method::Connect => "CONNECT".to_string(),
                Method::Options => "OPTIONS".to_string(),
                Method::Trace => "TRACE".to_string(),
                Method::Patch => "PATCH".to_string(),
                Method::Other(m) => m,
            };
            let full = inner.path_with_query().unwrap_or_else(|| "/".to_string());
            let (path, query) = split_path_query(&full);
            let (path, query) = (path.to_string(), query.map(str::to_string));
            Self {
                inner,
                method,
                path,
                query,
            }
        }

        /// Upper-case method name (`"POST"`).
        pub fn method(&self) -> &str {
            &self.method
        }

        /// The path without the query string.
        pub fn path(&self) -> &str {
            &self.path
        }

        /// The query string without `?`, if any.
        pub fn query(&self) -> Option<&str> {
            self.query.as_deref()
        }

        /// Reads the whole body. Bodies over `limit` bytes are refused with
        /// 413 instead of exhausting the instance's memory.
        pub fn read_body(&self, limit: usize) -> Result<Vec<u8>, ApiError> {
            let failed = |what: &str| {
                ApiError::invalid_request(format!("could not read the request body: {what}"))
            };
            let body = self
                .inner
                .consume()
                .map_err(|()| failed("already consumed"))?;
            let stream = body.stream().map_err(|()| failed("no stream"))?;
            let mut buf = Vec::new();
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(chunk) => {
                        if buf.len() + chunk.len() > limit {
                            return Err(ApiError::invalid_request(format!(
                                "request body is larger than {limit} bytes"
                            ))
                            .with_status(413)
                            .with_code("request_too_large"));
                        }
                        buf.extend_from_slice(&chunk);
                    }
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(failed(&e.to_debug_string()))
                    }
                }
            }
            drop(stream);
            drop(body);
            Ok(buf)
        }
    }

    fn headers(list: &[(&str, &str)]) -> Fields {
        let entries: Vec<(String, Vec<u8>)> = list
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        // Only fails for forbidden or malformed names, which are constants here.
        Fields::from_list(&entries).unwrap_or_else(|_| Fields::new())
    }

    fn write_all(stream: &OutputStream, bytes: &[u8]) -> Result<(), Disconnected> {
        for chunk in bytes.chunks(WRITE_CHUNK) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|_| Disconnected)?;
        }
        Ok(())
    }

    /// Sends a complete response. Failures to write mean the client is gone;
    /// there is nobody left to tell, so they are ignored.
    pub fn respond(out: ResponseOutparam, status: u16, head: &[(&str, &str)], body: &[u8]) {
        if let Ok(mut stream) = Streaming::start(out, status, head) {
            let _ = stream.send(body);
            stream.finish();
        }
    }

    /// Sends a JSON body with `content-type: application/json`.
    pub fn respond_json(out: ResponseOutparam, status: u16, body: &str) {
        respond(
            out,
            status,
            &[("content-type", "application/json")],
            body.as_bytes(),
        );
    }

    /// Sends an OpenAI error body with its status, plus `extra` headers
    /// (such as `allow` on a 405).
    pub fn respond_error(out: ResponseOutparam, error: &ApiError, extra: &[(&str, &str)]) {
        let mut head = vec![("content-type", "application/json")];
        head.extend_from_slice(extra);
        respond(out, error.status, &head, error.to_json().as_bytes());
    }

    /// Responds with `error` and logs the request's one line:
    /// `{api} model={model} status=… code=… error=…`.
    pub fn fail(out: ResponseOutparam, api: &str, model: &str, error: &ApiError) {
        crate::log::line(&format!(
            "{api} model={model} status={} code={} error={:?}",
            error.status,
            error.code.as_deref().unwrap_or("-"),
            error.message
        ));
        respond_error(out, error, &[]);
    }

    /// A response whose status and headers are already sent and whose body
    /// is written piece by piece (server-sent events).
    pub struct Streaming {
        stream: Option<OutputStream>,
        body: Option<OutgoingBody>,
    }

    impl Streaming {
        /// Sends status and headers now; the body follows through [`send`](Self::send).
        pub fn start(
            out: ResponseOutparam,
            status: u16,
            head: &[(&str, &str)],
        ) -> Result<Self, Disconnected> {
            let response = OutgoingResponse::new(headers(head));
            let _ = response.set_status_code(status);
            let body = response.body().map_err(|()| Disconnected)?;
            ResponseOutparam::set(out, Ok(response));
            let stream = body.write().map_err(|()| Disconnected)?;
            Ok(Self {
                stream: Some(stream),
                body: Some(body),
            })
        }

        /// Writes and flushes `bytes`, so the client sees them now.
        /// `Err(Disconnected)` means the client went away: stop working.
        pub fn send(&mut self, bytes: &[u8]) -> Result<(), Disconnected> {
            match &self.stream {
                Some(stream) => write_all(stream, bytes),
                None => Err(Disconnected),
            }
        }

        /// Ends the body (the stream must be dropped before `finish`).
        pub fn finish(mut self) {
            self.close();
        }

        fn close(&mut self) {
            drop(self.stream.take());
            if let Some(body) = self.body.take() {
                let _ = OutgoingBody::finish(body, None);
            }
        }
    }

    impl Drop for Streaming {
        /// Ends the body properly even on early returns.
        fn drop(&mut self) {
            self.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_query() {
        assert_eq!(split_path_query("/a/b?x=1"), ("/a/b", Some("x=1")));
        assert_eq!(split_path_query("/a"), ("/a", None));
    }

    #[test]
    fn finds_query_params() {
        assert_eq!(
            query_param("a=1&port=8080", "port").as_deref(),
            Some("8080")
        );
        assert_eq!(query_param("port", "port").as_deref(), Some(""));
        assert_eq!(query_param("a=1", "port"), None);
    }

    #[test]
    fn percent_decodes() {
        assert_eq!(percent_decode("org%2Fmodel"), "org/model");
        assert_eq!(percent_decode("a%zzb%"), "a%zzb%");
        assert_eq!(percent_decode("%E2%82%AC"), "€");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
