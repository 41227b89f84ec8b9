//! Outbound HTTP through the host (`wasi:http/outgoing-handler`).
//!
//! The host decides every request: hosts not on the skill's allow-list, private or
//! link-local addresses (unless explicitly allowed) and anything the policy forbids are
//! refused with [`HttpError::Denied`] before a connection is made. Credentials for allowed
//! hosts are added by the host, so the skill never sees them. Response bodies are read up to
//! a size limit ([`Request::max_response_bytes`]) so a large answer cannot exhaust the
//! sandbox's memory.
//!
//! ```no_run
//! use warden_sdk::http::Request;
//!
//! # fn run() -> Result<(), warden_sdk::http::HttpError> {
//! let response = Request::get("https://api.example.com/v1/items?limit=10")
//!     .header("accept", "application/json")
//!     .send()?;
//! let items: serde_json::Value = response.json()?;
//! # Ok(()) }
//! ```

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, Method as WitMethod, OutgoingBody, OutgoingRequest, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;
use std::fmt;

/// Default cap on a response body: 16 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Largest write the host accepts in one call on an output stream.
const WRITE_CHUNK: usize = 4096;
/// Largest read asked for in one call on an input stream.
const READ_CHUNK: u64 = 64 * 1024;

/// An HTTP method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
    /// Any other method.
    Other(String),
}

impl Method {
    /// Parses a method name (case-insensitive for the standard ones).
    pub fn parse(name: &str) -> Result<Self, HttpError> {
        Ok(match name.to_ascii_uppercase().as_str() {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            "OPTIONS" => Self::Options,
            other if !other.is_empty() && other.bytes().all(|b| b.is_ascii_alphabetic()) => {
                Self::Other(other.to_owned())
            }
            _ => {
                return Err(HttpError::InvalidRequest(format!(
                    "invalid method `{name}`"
                )));
            }
        })
    }

    fn to_wit(&self) -> WitMethod {
        match self {
            Self::Get => WitMethod::Get,
            Self::Head => WitMethod::Head,
            Self::Post => WitMethod::Post,
            Self::Put => WitMethod::Put,
            Self::Patch => WitMethod::Patch,
            Self::Delete => WitMethod::Delete,
            Self::Options => WitMethod::Options,
            Self::Other(m) => WitMethod::Other(m.clone()),
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The host refused the request (host not allowed, private address, policy).
    Denied,
    /// The request itself is malformed (URL, header, method).
    InvalidRequest(String),
    /// The response body is larger than the configured limit.
    ResponseTooLarge(usize),
    /// The request failed on the network or protocol level.
    Transport(String),
    /// The body is not what the caller expected (not UTF-8, not JSON).
    Body(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied => f.write_str("outbound request denied by the host"),
            Self::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            Self::ResponseTooLarge(n) => write!(f, "response body larger than {n} bytes"),
            Self::Transport(m) => write!(f, "request failed: {m}"),
            Self::Body(m) => write!(f, "unexpected response body: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for crate::ToolError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Denied => Self::Denied(e.to_string()),
            HttpError::InvalidRequest(_) => Self::InvalidArguments(e.to_string()),
            _ => Self::Failed(e.to_string()),
        }
    }
}

fn transport(code: ErrorCode) -> HttpError {
    match code {
        ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited => HttpError::Denied,
        other => HttpError::Transport(format!("{other:?}")),
    }
}

/// An outbound request, built fluently and sent with [`Request::send`].
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    max_response_bytes: usize,
    max_redirects: u8,
}

/// Redirects [`Request::send`] follows unless told otherwise.
pub const DEFAULT_MAX_REDIRECTS: u8 = 5;

impl Request {
    /// A request with the given method and absolute `http`/`https` URL.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Self {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_redirects: DEFAULT_MAX_REDIRECTS,
        }
    }
    /// A GET request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }
    /// A POST request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new(Method::Post, url)
    }
    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }
    /// Sets a JSON body and the `content-type` header.
    pub fn json<T: serde::Serialize>(self, value: &T) -> Result<Self, HttpError> {
        let body =
            serde_json::to_vec(value).map_err(|e| HttpError::InvalidRequest(e.to_string()))?;
        Ok(self.header("content-type", "application/json").body(body))
    }
    /// Caps the response body size (default [`DEFAULT_MAX_RESPONSE_BYTES`]).
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// Follows at most `n` redirects (default [`DEFAULT_MAX_REDIRECTS`]; 0 returns the
    /// 3xx response itself).
    pub fn max_redirects(mut self, n: u8) -> Self {
        self.max_redirects = n;
        self
    }

    /// Sends the request through the host and reads the whole response, following
    /// redirects: each hop is a new request the host decides anew (a redirect to a host the
    /// skill may not reach is refused like any other request). A 303, or a 301/302 after a
    /// POST, continues as a GET without body; credentials the skill set itself
    /// (`authorization`, `cookie`) are not carried to another host.
    pub fn send(mut self) -> Result<Response, HttpError> {
        let mut hops = 0u8;
        loop {
            let response = self.send_once()?;
            let location = response.header("location").map(str::to_owned);
            let redirect = matches!(response.status, 301 | 302 | 303 | 307 | 308);
            let (true, Some(location)) = (redirect, location) else {
                return Ok(response);
            };
            if hops >= self.max_redirects {
                return Ok(response);
            }
            hops += 1;
            let next = join(&self.url, &location)?;
            let same_host = Url::parse(&self.url)?.authority == Url::parse(&next)?.authority;
            if !same_host {
                self.headers.retain(|(k, _)| {
                    !["authorization", "cookie", "proxy-authorization"]
                        .contains(&k.to_ascii_lowercase().as_str())
                });
            }
            let to_get = response.status == 303 && self.method != Method::Head
                || matches!(response.status, 301 | 302) && self.method == Method::Post;
            if to_get {
                self.method = Method::Get;
                self.body = None;
                self.headers.retain(|(k, _)| {
                    !k.eq_ignore_ascii_case("content-type")
                        && !k.eq_ignore_ascii_case("content-length")
                });
            }
            self.url = next;
        }
    }

    fn send_once(&self) -> Result<Response, HttpError> {
        let url = Url::parse(&self.url)?;
        let entries: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone().into_bytes()))
            .collect();
        let fields = Fields::from_list(&entries)
            .map_err(|e| HttpError::InvalidRequest(format!("header rejected: {e:?}")))?;
        let request = OutgoingRequest::new(fields);
        let invalid = |what: &str| HttpError::InvalidRequest(format!("invalid {what}"));
        request
            .set_method(&self.method.to_wit())
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&url.scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(&url.authority))
            .map_err(|()| invalid("authority"))?;
        request
            .set_path_with_query(Some(&url.path_with_query))
            .map_err(|()| invalid("path"))?;
        let body = request
            .body()
            .map_err(|()| HttpError::Transport("request body unavailable".into()))?;

        let pending = outgoing_handler::handle(request, None).map_err(transport)?;

        if let Some(bytes) = &self.body {
            let stream = body
                .write()
                .map_err(|()| HttpError::Transport("request body stream unavailable".into()))?;
            for chunk in bytes.chunks(WRITE_CHUNK) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| HttpError::Transport(format!("writing body: {e:?}")))?;
            }
            drop(stream);
        }
        OutgoingBody::finish(body, None).map_err(transport)?;

        let response = loop {
            match pending.get() {
                Some(Ok(Ok(response))) => break response,
                Some(Ok(Err(code))) => return Err(transport(code)),
                Some(Err(())) => return Err(HttpError::Transport("response already taken".into())),
                None => pending.subscribe().block(),
            }
        };

        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = response
            .consume()
            .map_err(|()| HttpError::Transport("response body unavailable".into()))?;
        let stream = incoming
            .stream()
            .map_err(|()| HttpError::Transport("response body stream unavailable".into()))?;
        let mut data = Vec::new();
        loop {
            match stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => {
                    if data.len() + chunk.len() > self.max_response_bytes {
                        return Err(HttpError::ResponseTooLarge(self.max_response_bytes));
                    }
                    data.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(HttpError::Transport(e.to_debug_string()));
                }
            }
        }
        drop(stream);
        Ok(Response {
            status,
            headers,
            body: data,
        })
    }
}

/// A response with its whole body.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, HttpError> {
        std::str::from_utf8(&self.body).map_err(|e| HttpError::Body(e.to_string()))
    }
    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::Body(e.to_string()))
    }
}

/// Resolves a `Location` against the URL it answered.
fn join(base: &str, location: &str) -> Result<String, HttpError> {
    let location = location.trim();
    let lower = location.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(location.to_owned());
    }
    let (scheme, rest) = base
        .split_once("://")
        .ok_or_else(|| HttpError::InvalidRequest("bad base URL".into()))?;
    if let Some(rest_of_location) = location.strip_prefix("//") {
        return Ok(format!("{scheme}://{rest_of_location}"));
    }
    let rest = rest.split(['#', '?']).next().unwrap_or_default();
    let split = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if location.starts_with('/') {
        return Ok(format!("{scheme}://{authority}{location}"));
    }
    let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
    Ok(format!("{scheme}://{authority}{dir}{location}"))
}

/// The parts of an absolute URL that `wasi:http` needs.
struct Url {
    scheme: Scheme,
    authority: String,
    path_with_query: String,
}

impl Url {
    fn parse(url: &str) -> Result<Self, HttpError> {
        let bad = |why: &str| HttpError::InvalidRequest(format!("URL `{url}`: {why}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("not absolute"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(bad("scheme must be http or https")),
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.is_empty()
            || authority.contains('@')
            || authority.contains(char::is_whitespace)
        {
            return Err(bad("missing or invalid host"));
        }
        let path_with_query = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        if path_with_query.contains(char::is_whitespace) {
            return Err(bad("whitespace in path"));
        }
        Ok(Self {
            scheme,
            authority: authority.to_owned(),
            path_with_query,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts() {
        let u = Url::parse("https://api.example.com:8443/v1/x?q=1#frag").unwrap();
        assert!(matches!(u.scheme, Scheme::Https));
        assert_eq!(u.authority, "api.example.com:8443");
        assert_eq!(u.path_with_query, "/v1/x?q=1");
        let u = Url::parse("http://h?x=1").unwrap();
        assert_eq!(u.path_with_query, "/?x=1");
        let u = Url::parse("http://h").unwrap();
        assert_eq!(u.path_with_query, "/");
    }

    #[test]
    fn redirect_targets() {
        let base = "https://a.example/v1/items?page=2";
        assert_eq!(
            join(base, "https://b.example/x").unwrap(),
            "https://b.example/x"
        );
        assert_eq!(join(base, "//c.example/y").unwrap(), "https://c.example/y");
        assert_eq!(join(base, "/root").unwrap(), "https://a.example/root");
        assert_eq!(
            join(base, "next?page=3").unwrap(),
            "https://a.example/v1/next?page=3"
        );
    }

    #[test]
    fn url_rejects() {
        for bad in [
            "ftp://h/",
            "h/x",
            "http:///x",
            "http://user@h/",
            "http://h/a b",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn methods() {
        assert_eq!(Method::parse("get").unwrap(), Method::Get);
        assert_eq!(
            Method::parse("PROPFIND").unwrap(),
            Method::Other("PROPFIND".into())
        );
        assert!(Method::parse("GE T").is_err());
        assert!(Method::parse("").is_err());
    }
}
