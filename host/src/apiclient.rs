//! The HTTP client both operator CLIs use (the gateway's admin API in `adminctl`, the
//! registry's API in `registryctl`): a base URL and a bearer token, found in flags, the
//! environment or the server's data directory, and JSON errors shown as `STATUS: message`.
//!
//! Invariant: the token travels only in the `Authorization` header, never in a URL or an
//! error message.
//!
//! Threat: a credential leaking through process listings, logs or error output.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use std::path::Path;

/// Largest answer read from a server.
const MAX_ANSWER: usize = 64 << 20;

/// Where a server is and how to authenticate to it.
pub struct ApiClient {
    base: String,
    token: String,
    what: &'static str,
}

/// Which flags and variables name a server's URL and token, for error messages.
pub struct Hints {
    /// What the server is (`gateway`, `registry`).
    pub what: &'static str,
    /// The URL flag and variable.
    pub url: &'static str,
    /// The token flag and variable.
    pub token: &'static str,
    /// The data directory flag.
    pub dir: &'static str,
}

impl ApiClient {
    /// The URL and token from the arguments, else from the `endpoint` and `admin.token`
    /// files in `dir`.
    pub fn resolve(
        url: Option<&str>,
        token: Option<&str>,
        dir: &Path,
        hints: &Hints,
    ) -> Result<Self> {
        let read =
            |file: &str| std::fs::read_to_string(dir.join(file)).map(|s| s.trim().to_owned());
        let base = match url {
            Some(u) => u.to_owned(),
            None => read(warden::datadir::ENDPOINT_FILE).with_context(|| {
                format!(
                    "no {} URL: pass {}, or run on the {}'s machine with {} {}",
                    hints.what,
                    hints.url,
                    hints.what,
                    hints.dir,
                    dir.display()
                )
            })?,
        };
        let token = match token {
            Some(t) => t.to_owned(),
            None => read(warden::datadir::ADMIN_TOKEN_FILE).with_context(|| {
                format!(
                    "no {} token: pass {}, or run on the {}'s machine with {} {}",
                    hints.what,
                    hints.token,
                    hints.what,
                    hints.dir,
                    dir.display()
                )
            })?,
        };
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            what: hints.what,
        })
    }

    /// Sends one request (the token in `Authorization`) and returns the response, whose
    /// body is still to be read.
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        headers: &[(http::header::HeaderName, &str)],
    ) -> Result<http::Response<hyper::body::Incoming>> {
        let uri: http::Uri = format!("{}{path}", self.base)
            .parse()
            .with_context(|| format!("the {} URL is not valid", self.what))?;
        let mut send = warden::transport::stdio::connect(&uri)
            .await
            .with_context(|| format!("is the {} running at {}?", self.what, self.base))?;
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let mut req = http::Request::builder()
            .method(method)
            .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .header(http::header::HOST, authority)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            );
        for (name, value) in headers {
            req = req.header(name, *value);
        }
        Ok(send
            .send_request(req.body(Full::new(Bytes::from(body)))?)
            .await?)
    }

    /// One request; returns the status and the body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(http::StatusCode, Bytes)> {
        let resp = self
            .send(
                method,
                path,
                body,
                &[(http::header::CONTENT_TYPE, content_type)],
            )
            .await?;
        let status = resp.status();
        // An answer is at most a package plus headroom; a server cannot make the CLI
        // buffer more.
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the {}'s answer: {e}", self.what))?
            .to_bytes();
        Ok((status, body))
    }
}

impl ApiClient {
    /// A GET whose answer is read as it arrives (server-sent events): the body, once the
    /// status says success.
    pub async fn stream(&self, path: &str) -> Result<hyper::body::Incoming> {
        let resp = self
            .send(
                "GET",
                path,
                Vec::new(),
                &[(http::header::ACCEPT, "text/event-stream")],
            )
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            json_or_error(status, &body, &[])?;
            bail!("{status}");
        }
        Ok(resp.into_body())
    }

    /// A JSON call: the body (if any) as JSON; the answer as [`json_or_error`] reads it.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        also_ok: &[http::StatusCode],
    ) -> Result<Value> {
        let (status, answer) = self.request(method, path, body, "application/json").await?;
        json_or_error(status, &answer, also_ok)
    }
}

/// The body as JSON (or a JSON string of its text); a status that is not a success (nor
/// one of `also_ok`) is an error carrying the API's message.
pub fn json_or_error(
    status: http::StatusCode,
    body: &[u8],
    also_ok: &[http::StatusCode],
) -> Result<Value> {
    let value: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    if !status.is_success() && !also_ok.contains(&status) {
        let message = value["error"]
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned);
        bail!("{status}: {message}");
    }
    Ok(value)
}
