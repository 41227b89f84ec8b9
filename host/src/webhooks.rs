//! Approval webhooks: when an approval task is opened, the workspace's webhook (if any) gets
//! a signed JSON notice, so a Slack or e-mail relay can tell approvers where to look.
//!
//! The body says who asks to run which tool, why, where the desk is and when the task
//! expires; it carries the arguments' digest, not the arguments (a relay is another system).
//! The signature is `X-Warden-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//! `<t>.<body>` with a secret the operator stores in the vault and names in the webhook
//! (`warden secret set acme/pay/webhook-key`, then `warden webhook set acme/pay URL
//! --secret webhook-key`), so a relay checks both the sender and the freshness.
//!
//! Invariants:
//! - Delivery never blocks a call: a worker follows the approvals' broadcast and sends each
//!   notice on a task of its own; a slow or dead relay costs only its own retries.
//! - A notice is retried with backoff ([`BACKOFF`]) on a network error, a timeout or a
//!   non-2xx answer, then given up; the outcome (with the attempts) is one audit record.
//! - The secret is read from the vault for each notice and never logged or recorded; when it
//!   cannot be read (sealed vault, missing secret) nothing is sent and the record says why.
//!
//! Threat: a relay trusting forged or replayed notices, and notification trouble slowing
//! the gateway down.

use crate::approvals::Event;
use crate::audit::Outcome;
use crate::gateway::Gateway;
use crate::storage::{ApprovalRecord, Tables, WebhookRecord};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use serde_json::json;
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

/// Waits before each retry of a notice.
pub const BACKOFF: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
];
/// How long one delivery attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-warden-signature";

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &[u8], t: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// Whether `url` is a webhook URL warden will call: `http` or `https`, with a host, no
/// credentials, at most 2048 bytes.
pub fn valid_url(url: &str) -> Result<http::Uri, String> {
    if url.len() > 2048 {
        return Err("the URL is longer than 2048 bytes".into());
    }
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("the URL must be http:// or https://".into()),
    }
    let authority = uri.authority().ok_or("the URL has no host")?;
    if authority.as_str().contains('@') {
        return Err("the URL must not carry credentials (the notice is signed instead)".into());
    }
    Ok(uri)
}

/// The notice for a task just opened.
pub fn notice(task: &ApprovalRecord, desk: &str) -> serde_json::Value {
    let who = task.agent.rsplit('/').next().unwrap_or(&task.agent);
    json!({
        "event": "approval.requested",
        "summary": format!("{who} wants to run {}", task.tool),
        "task": {
            "id": task.id,
            "tool": task.tool,
            "description": task.description,
            "agent": task.agent,
            "tenant": task.tenant,
            "workspace": task.workspace,
            "environment": task.environment,
            "reason": task.reason,
            "args_digest": task.args_digest,
            "quorums": task.quorums,
            "annotations": task.annotations,
            "created_at": task.created_at,
            "expires_at": task.expires_at,
        },
        "desk": desk,
    })
}

/// Follows the approvals' events and notifies each opened task's workspace webhook, until
/// the broadcast closes. `desk` is the desk's URL for the notice.
pub async fn run(gateway: Arc<Gateway>, desk: String) {
    let mut events = gateway.approvals().subscribe();
    loop {
        match events.recv().await {
            Ok(Event {
                created: true, id, ..
            }) => {
                let (g, desk) = (gateway.clone(), desk.clone());
                tokio::spawn(async move { deliver(&g, &id, &desk).await });
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "webhook notices were missed (too many at once)");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Sends the notice of task `id`, retrying, and records the outcome.
async fn deliver(gateway: &Gateway, id: &str, desk: &str) {
    let Ok(Some(task)) = gateway.store().approval(id) else {
        return;
    };
    let scope = format!("{}/{}", task.tenant, task.workspace);
    let hook: WebhookRecord = match gateway.store().webhook(&scope) {
        Ok(Some(h)) => h,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "webhooks could not be read");
            return;
        }
    };
    let mut record = gateway.audit().open("webhook approval.requested", None);
    {
        let r = record.record();
        r.principal = Some(format!("webhook:{scope}"));
        r.tool = Some(task.tool.clone());
        r.approval = Some(task.id.clone());
    }
    let outcome = attempt_all(gateway, &hook, &scope, &task, desk).await;
    let (result, class) = match &outcome {
        Ok(attempts) => {
            record.record().reasons = vec![format!("delivered on attempt {attempts}")];
            (Outcome::Ok, None)
        }
        Err((attempts, class)) => {
            record.record().reasons = vec![format!("given up after {attempts} attempt(s)")];
            tracing::warn!(task = %task.id, %scope, error = %class, "webhook notice given up");
            (Outcome::Error, Some(class.clone()))
        }
    };
    record.record().error_class = class;
    if record.finish(result).await.is_err() {
        tracing::error!(task = %task.id, "the webhook notice could not be recorded");
    }
}

/// Every attempt: `Ok(attempts)` once one succeeded, `Err((attempts, why))` after the last.
async fn attempt_all(
    gateway: &Gateway,
    hook: &WebhookRecord,
    scope: &str,
    task: &ApprovalRecord,
    desk: &str,
) -> Result<u64, (u64, String)> {
    let uri = valid_url(&hook.url).map_err(|_| (0, "bad_url".to_owned()))?;
    let secret = match gateway.vault().resolve(scope, &hook.secret) {
        Ok(opened) => opened.value,
        Err(e) => {
            tracing::warn!(%scope, error = %e, "the webhook secret cannot be read; nothing sent");
            return Err((0, "secret_unavailable".into()));
        }
    };
    let body = Bytes::from(notice(task, desk).to_string());
    let mut last = String::new();
    for attempt in 0..=BACKOFF.len() {
        if attempt > 0 {
            tokio::time::sleep(BACKOFF[attempt - 1]).await;
        }
        let t = crate::identity::now_secs();
        let sig = signature(&secret, t, &body);
        let delivery = format!("{}-{}", task.id, attempt + 1);
        match tokio::time::timeout(ATTEMPT_TIMEOUT, post(&uri, &body, &sig, &delivery)).await {
            Ok(Ok(status)) if status.is_success() => return Ok(attempt as u64 + 1),
            Ok(Ok(status)) => last = format!("http_{}", status.as_u16()),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "webhook attempt failed");
                last = "connect".into();
            }
            Err(_) => last = "timeout".into(),
        }
    }
    Err((BACKOFF.len() as u64 + 1, last))
}

async fn post(
    uri: &http::Uri,
    body: &Bytes,
    signature: &str,
    delivery: &str,
) -> anyhow::Result<http::StatusCode> {
    let mut send = crate::transport::stdio::connect(uri).await?;
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let req = http::Request::builder()
        .method("POST")
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "warden-webhooks")
        .header(SIGNATURE_HEADER, signature)
        .header("x-warden-event", "approval.requested")
        .header("x-warden-delivery", delivery)
        .body(Full::new(body.clone()))?;
    let resp = send.send_request(req).await?;
    Ok(resp.status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_documented_recipe() {
        // HMAC-SHA256("key", "1700000000.{}") computed independently (Python's hmac).
        let sig = signature(b"key", 1_700_000_000, b"{}");
        assert_eq!(
            sig,
            "t=1700000000,v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
        assert_ne!(sig, signature(b"other", 1_700_000_000, b"{}"));
        assert_ne!(sig, signature(b"key", 1_700_000_001, b"{}"));
    }

    #[test]
    fn only_plain_http_urls_are_called() {
        assert!(valid_url("https://relay.example/hooks/warden").is_ok());
        assert!(valid_url("http://127.0.0.1:9000/x").is_ok());
        for bad in [
            "ftp://relay.example/",
            "https://user:pw@relay.example/",
            "relay.example/hook",
            "file:///etc/passwd",
        ] {
            assert!(valid_url(bad).is_err(), "{bad}");
        }
    }
}
