//! `warden connect`: a stdio <-> Streamable HTTP bridge for MCP clients that only launch
//! stdio servers.
//!
//! Each newline-delimited JSON-RPC message read from stdin is POSTed to the gateway with the
//! bearer token; the answer (a JSON body, or the `data:` events of an SSE stream) is written to
//! stdout one message per line. The session id and protocol version returned by `initialize`
//! are sent on every later request. Logs go to stderr only: stdout carries protocol messages.
//!
//! Invariants: the token is sent only to the configured gateway (never logged, never put in a
//! URL); https uses the webpki roots; a failed request becomes a JSON-RPC error for that
//! request id rather than a dead bridge.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Where and how to reach the gateway.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The gateway's MCP URL.
    pub url: http::Uri,
    /// The agent token.
    pub token: String,
}

#[derive(Default)]
struct Session {
    id: Option<String>,
    protocol_version: Option<String>,
}

/// Runs the bridge until stdin closes.
pub async fn run(config: BridgeConfig) -> Result<()> {
    let scheme = config.url.scheme_str().unwrap_or("http");
    if scheme != "http" && scheme != "https" {
        bail!("--url must be an http or https URL");
    }
    let config = Arc::new(config);
    let session = Arc::new(Mutex::new(Session::default()));
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = out_rx.recv().await {
            if stdout.write_all(line.as_bytes()).await.is_err()
                || stdout.write_all(b"\n").await.is_err()
                || stdout.flush().await.is_err()
            {
                break;
            }
        }
    });
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(line) = lines.next_line().await.context("reading stdin")? {
        if line.trim().is_empty() {
            continue;
        }
        let message: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => {
                let _ = out_tx.send(
                    r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#.into(),
                );
                continue;
            }
        };
        let is_initialize = message.get("method").and_then(Value::as_str) == Some("initialize");
        let (config, session, out) = (config.clone(), session.clone(), out_tx.clone());
        let job = async move {
            if let Err(e) = forward(&config, &session, &message, &out).await {
                tracing::warn!(error = %e, "bridge request failed");
                if let Some(id) = message.get("id") {
                    let err = serde_json::json!({
                        "jsonrpc": "2.0", "id": id,
                        "error": {"code": -32603, "message": format!("gateway unreachable: {e}")}
                    });
                    let _ = out.send(err.to_string());
                }
            }
        };
        if is_initialize {
            // Later requests need the session id this returns.
            job.await;
        } else {
            tasks.spawn(job);
        }
    }
    while tasks.join_next().await.is_some() {}
    drop(out_tx);
    let _ = writer.await;
    Ok(())
}

/// Opens an HTTP/1.1 connection to `uri` (plain or TLS) for one client at a time.
pub async fn connect(
    uri: &http::Uri,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let host = uri.host().context("--url has no host")?.to_owned();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .with_context(|| format!("connecting to {host}:{port}"))?;
    tcp.set_nodelay(true)?;
    if https {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.clone())?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(send)
    } else {
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        Ok(send)
    }
}

async fn forward(
    config: &BridgeConfig,
    session: &Mutex<Session>,
    message: &Value,
    out: &mpsc::UnboundedSender<String>,
) -> Result<()> {
    let mut sender = connect(&config.url).await?;
    let authority = config
        .url
        .authority()
        .context("--url has no host")?
        .as_str();
    let mut req = Request::post(config.url.clone())
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json, text/event-stream")
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", config.token),
        );
    {
        let s = session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(id) = &s.id {
            req = req.header("mcp-session-id", id);
        }
        if let Some(v) = &s.protocol_version {
            req = req.header("mcp-protocol-version", v);
        }
    }
    let req = req.body(Full::new(Bytes::from(message.to_string())))?;
    let response = sender.send_request(req).await?;
    let status = response.status();
    if let Some(id) = response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
    {
        session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .id = Some(id.to_owned());
    }
    let is_sse = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let mut body = response.into_body();
    if is_sse {
        let mut buffer = String::new();
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            let Some(chunk) = frame.data_ref() else {
                continue;
            };
            buffer.push_str(&String::from_utf8_lossy(chunk));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                let data = data.join("\n");
                if !data.trim().is_empty() {
                    note_initialize(session, &data);
                    let _ = out.send(data);
                }
            }
        }
        return Ok(());
    }
    let bytes = body.collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    if text.starts_with('{') {
        note_initialize(session, &text);
        let _ = out.send(text);
    } else if status.is_success() {
        // 202 Accepted for notifications: nothing to relay.
    } else if message.get("id").is_some() {
        bail!("HTTP {status}: {text}");
    }
    Ok(())
}

/// Remembers the protocol version an `initialize` result negotiated.
fn note_initialize(session: &Mutex<Session>, text: &str) {
    if let Ok(v) = serde_json::from_str::<Value>(text)
        && let Some(version) = v.pointer("/result/protocolVersion").and_then(Value::as_str)
    {
        session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .protocol_version = Some(version.to_owned());
    }
}
