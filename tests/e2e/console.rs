//! The Console plane through the real binary: identities and tokens managed with the CLI
//! (over the admin API), every token failure mode, rate limits, policy applied, tested and
//! enforced (listing filtered, denied == unknown, approval required), and the audit trail
//! (records for every outcome, chain verification, tamper detection, a failing sink, and
//! `kill -9` under load).

use crate::gateway::{InProcess, Up, open_session, open_stream, post, raw, text_of, ts_client};
use crate::support::warden_bin;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

const META: &str = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#;

/// A stateless (2026-07-28) `tools/call`.
pub(crate) fn call(
    addr: &str,
    token: Option<&str>,
    tool: &str,
    args: Value,
) -> (u16, Vec<(String, String)>, String) {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":{},"arguments":{args},{META}}}}}"#,
        json!(tool)
    );
    post(
        addr,
        token,
        &format!(
            "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: {tool}\r\n"
        ),
        &body,
    )
}

/// The tool names a stateless `tools/list` returns.
pub(crate) fn list(addr: &str, token: &str) -> Vec<String> {
    let body = format!(r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{{{META}}}}}"#);
    let (status, _, body) = post(
        addr,
        Some(token),
        "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/list\r\n",
        &body,
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Runs `warden ARGS --data-dir DIR` (the CLI finds the gateway and admin token there).
pub(crate) fn warden(dir: &Path, args: &[&str]) -> Output {
    Command::new(warden_bin())
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("WARDEN_ADMIN_URL")
        .env_remove("WARDEN_ADMIN_TOKEN")
        .output()
        .unwrap()
}

pub(crate) fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Issues a service token with the CLI: (token, id).
fn issue(dir: &Path, agent: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["token", "issue", agent, "--json"];
    args.extend_from_slice(extra);
    let v: Value = serde_json::from_str(ok(warden(dir, &args)).trim()).unwrap();
    (
        v["token"].as_str().unwrap().to_owned(),
        v["record"]["id"].as_str().unwrap().to_owned(),
    )
}

/// A JSON admin API request.
pub(crate) fn admin(
    addr: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, _, text) = raw(
        addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The response head of an admin GET that streams (read until the blank line).
fn first_bytes(addr: &str, token: &str, path: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// `POST /token` with a form body: (status, body).
fn token_endpoint(addr: &str, form: &str) -> (u16, String) {
    let (status, _, body) = raw(
        addr,
        &format!(
            "POST /token HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    );
    (status, body)
}

pub(crate) fn admin_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned()
}

pub(crate) fn records(addr: &str, admin_token: &str, query: &str) -> Vec<Value> {
    let (status, v) = admin(
        addr,
        admin_token,
        "GET",
        &format!("/admin/v1/audit?limit=1000&{query}"),
        None,
    );
    assert_eq!(status, 200, "{v}");
    v["records"].as_array().unwrap().clone()
}

fn result_of(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v
}

const ACME_POLICY: &str = r#"
@id("ops-text")
permit (principal in Warden::Group::"ops", action, resource)
when { resource.namespace == "warden" && resource.skill == "text" };

@id("ops-http-github-only")
@audit("arguments")
permit (principal in Warden::Group::"ops", action, resource == Warden::Tool::"warden_http__request")
when { context.arguments.hasTag("url") && context.arguments.getTag("url") like "https://api.github.com/*" };

@id("hash-needs-approval")
@approval("required")
permit (principal in Warden::Group::"ops", action, resource == Warden::Tool::"warden_text__hash");

@id("no-regex-groups")
@reason("regex_find refuses patterns with groups")
forbid (principal, action, resource == Warden::Tool::"warden_text__regex_find")
when { context.arguments.hasTag("pattern") && context.arguments.getTag("pattern") like "*(*" };
"#;

fn setup_acme(dir: &Path) {
    for scope in ["acme", "acme/core", "acme/core/prod"] {
        ok(warden(dir, &["scope", "create", scope]));
    }
    // A refused change is a failure in the CLI, not a "created".
    let again = warden(dir, &["scope", "create", "acme"]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("409"), "{stderr}");
    ok(warden(
        dir,
        &["agent", "put", "acme/core/prod/bot", "--group", "ops"],
    ));
    ok(warden(dir, &["agent", "put", "acme/core/prod/intern"]));
    ok(warden(
        dir,
        &[
            "agent",
            "put",
            "acme/core/prod/slow",
            "--group",
            "ops",
            "--rate-limit",
            "1",
        ],
    ));
    let file = dir.join("acme.cedar");
    std::fs::write(&file, ACME_POLICY).unwrap();
    ok(warden(dir, &["policy", "apply", file.to_str().unwrap()]));
}

#[test]
fn every_token_failure_is_a_401_with_an_audit_record_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Debug logging: tokens must not appear in the most verbose logs either.
    let up = Up::start_env(d, &[], &[("WARDEN_LOG", "debug")]);
    let addr = up.addr.clone();
    setup_acme(d);
    let adm = admin_token(d);
    let stats =
        |token: Option<&str>| call(&addr, token, "warden_text__stats", json!({"text": "a b"}));

    let (good, _) = issue(d, "acme/core/prod/bot", &[]);
    assert!(good.starts_with("wdn_st_"));
    let (status, _, body) = stats(Some(&good));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        result_of(&body)["result"]["structuredContent"]["words"],
        2,
        "{body}"
    );
    let mut executed = 1;

    // Missing, malformed, in the query string.
    let (status, headers, _) = stats(None);
    assert_eq!(status, 401);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "www-authenticate" && v.contains("resource_metadata"))
    );
    assert_eq!(stats(Some("wdn_st_short")).0, 401);
    let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{{META}}}}}"#);
    let (status, _, _) = raw(
        &addr,
        &format!(
            "POST /mcp?access_token={good} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {good}\r\n\
             Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
             MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/list\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 401);

    // Expired, and rotated past its grace window. Both windows are 5 s: long enough
    // for a CLI round trip and a call on a loaded CI machine, and one wait (measured
    // from before each window opened) covers both.
    const WINDOW: Duration = Duration::from_secs(5);
    let short_from = Instant::now();
    let (short, _) = issue(d, "acme/core/prod/bot", &["--ttl", "5s"]);
    assert_eq!(stats(Some(&short)).0, 200);
    executed += 1;
    let (old, old_id) = issue(d, "acme/core/prod/bot", &[]);
    let grace_from = Instant::now();
    let rotated: Value = serde_json::from_str(
        ok(warden(
            d,
            &["token", "rotate", &old_id, "--grace", "5s", "--json"],
        ))
        .trim(),
    )
    .unwrap();
    let new = rotated["token"].as_str().unwrap().to_owned();
    assert_eq!(
        stats(Some(&old)).0,
        200,
        "the old token works during the grace window"
    );
    assert_eq!(stats(Some(&new)).0, 200);
    executed += 2;
    let deadline = short_from.max(grace_from) + WINDOW + Duration::from_millis(1100);
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    assert_eq!(stats(Some(&short)).0, 401, "expired");
    assert_eq!(stats(Some(&old)).0, 401, "rotated past grace");
    assert_eq!(stats(Some(&new)).0, 200);
    executed += 1;

    // Revoked (with the CLI), effective on the next request.
    let (doomed, doomed_id) = issue(d, "acme/core/prod/bot", &[]);
    assert_eq!(stats(Some(&doomed)).0, 200);
    executed += 1;
    ok(warden(d, &["token", "revoke", &doomed_id]));
    assert_eq!(stats(Some(&doomed)).0, 401, "revoked");

    // An admin token is not an agent token, and the reverse.
    assert_eq!(stats(Some(&adm)).0, 401);
    assert_eq!(admin(&addr, &good, "GET", "/admin/v1/agents", None).0, 401);

    // Exchange: a short-lived agent token bound to this gateway's URL.
    let form = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token={good}&expires_in=600"
    );
    let (status, text) = token_endpoint(&addr, &form);
    assert_eq!(status, 200, "{text}");
    let exchanged: Value = serde_json::from_str(&text).unwrap();
    let agent_token = exchanged["access_token"].as_str().unwrap().to_owned();
    assert!(agent_token.starts_with("wdn_at_"));
    assert_eq!(exchanged["expires_in"], 600);
    assert_eq!(stats(Some(&agent_token)).0, 200);
    executed += 1;
    // A revoked or expired token cannot be exchanged.
    let form = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token={doomed}"
    );
    let (status, _) = token_endpoint(&addr, &form);
    assert_eq!(status, 401);

    // Rate limit: `slow` may make 1 call/s with a burst of 2.
    let (slow, _) = issue(d, "acme/core/prod/slow", &[]);
    let codes: Vec<u16> = (0..3).map(|_| stats(Some(&slow)).0).collect();
    assert_eq!(&codes[..2], &[200, 200]);
    // The third is refused unless a slow machine let a token refill in between.
    executed += codes.iter().filter(|&&c| c == 200).count();
    let (status, headers, _) = stats(Some(&slow));
    assert_eq!(status, 429);
    let retry: u64 = headers
        .iter()
        .find(|(k, _)| k == "retry-after")
        .unwrap()
        .1
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");

    // Every failure has its record, with the reason the wire did not give.
    let failed = records(&addr, &adm, "outcome=unauthenticated");
    let classes: BTreeSet<&str> = failed
        .iter()
        .filter_map(|r| r["error_class"].as_str())
        .collect();
    for class in [
        "missing",
        "malformed",
        "in_query",
        "expired",
        "revoked",
        "wrong_kind",
    ] {
        assert!(classes.contains(class), "{class} not in {classes:?}");
    }
    assert!(!records(&addr, &adm, "outcome=rate_limited").is_empty());
    // ... and nothing ran for them: only the calls that were let through were executed.
    let calls = records(&addr, &adm, "tool=warden_text__stats");
    assert_eq!(calls.len(), executed, "{calls:#?}");
    assert!(
        calls
            .iter()
            .all(|r| r["outcome"] == "ok" && r["decision"] == "allow")
    );
    // Secrets never reach the trail.
    let everything = serde_json::to_string(&records(&addr, &adm, "")).unwrap();
    let logs = up.logs.lock().unwrap().clone();
    assert!(
        logs.contains("DEBUG") || logs.contains("debug"),
        "debug logging is on: {logs}"
    );
    for secret in [&good, &short, &old, &new, &doomed, &agent_token, &adm] {
        assert!(!everything.contains(secret.as_str()));
        assert!(!logs.contains(secret.as_str()), "a token reached the logs");
    }

    // After a restart the gateway listens on another port, so its audience changed: the
    // exchanged token was bound to the old one and is refused; the service token still works.
    assert!(up.stop().success());
    let up = Up::start(d);
    assert_eq!(
        call(
            &up.addr,
            Some(&agent_token),
            "warden_text__stats",
            json!({"text": "x"})
        )
        .0,
        401
    );
    assert_eq!(
        call(
            &up.addr,
            Some(&good),
            "warden_text__stats",
            json!({"text": "x"})
        )
        .0,
        200
    );
    let failed = records(&up.addr, &adm, "outcome=unauthenticated");
    assert!(
        failed.iter().any(|r| r["error_class"] == "audience"),
        "{failed:#?}"
    );
    assert!(up.stop().success());
}

#[test]
fn revoking_a_token_closes_its_open_streams() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = Up::start(d);
    let addr = up.addr.clone();
    let token = up.token.clone().unwrap();
    let session = open_session(&addr, &token);
    let mut tcp = open_stream(&addr, &token, &session);
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let seen = stream_head(&mut tcp);
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    // The session belongs to the local agent: another agent's valid token with its id is
    // answered as if the session did not exist.
    ok(warden(d, &["agent", "put", "default/default/dev/other"]));
    let (other, _) = issue(d, "default/default/dev/other", &[]);
    let list_body = r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#;
    let session_headers =
        format!("Mcp-Session-Id: {session}\r\nMCP-Protocol-Version: 2025-11-25\r\n");
    let (status, _, _) = post(&addr, Some(&other), &session_headers, list_body);
    assert_eq!(status, 404);
    let (status, _, _) = post(&addr, Some(&token), &session_headers, list_body);
    assert_eq!(status, 200);
    // Find the token's id and revoke it.
    let listed: Value = serde_json::from_str(
        ok(warden(
            d,
            &[
                "token",
                "list",
                "--principal",
                "default/default/dev/local",
                "--json",
            ],
        ))
        .trim(),
    )
    .unwrap();
    let id = listed["tokens"][0]["id"].as_str().unwrap().to_owned();
    let revoked_at = Instant::now();
    ok(warden(d, &["token", "revoke", &id]));
    // The stream ends (the chunked body's last chunk, or the connection closes).
    until_stream_ends(&mut tcp);
    assert!(revoked_at.elapsed() < Duration::from_secs(10));
    assert_eq!(
        call(
            &addr,
            Some(&token),
            "warden_text__stats",
            json!({"text": "x"})
        )
        .0,
        401
    );
    assert!(up.stop().success());
}

/// Reads a stream until its response head arrives; returns what was read.
fn stream_head(tcp: &mut std::net::TcpStream) -> String {
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("\r\n\r\n") {
        let n = tcp.read(&mut buf).unwrap();
        assert!(n > 0, "the stream closed before its head: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    seen
}

/// Reads until the stream ends (last chunk or close); panics if it is still open after the
/// socket's read timeout.
fn until_stream_ends(tcp: &mut std::net::TcpStream) {
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                if seen.ends_with("0\r\n\r\n") {
                    break;
                }
            }
            Err(e) => panic!("the stream stayed open: {e}"),
        }
    }
}

#[test]
fn sessions_fail_closed_and_streams_end_with_their_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = Up::start(d);
    let addr = up.addr.clone();
    let token = up.token.clone().unwrap();
    let adm = admin_token(d);
    ok(warden(d, &["agent", "put", "default/default/dev/other"]));
    let (other, _) = issue(d, "default/default/dev/other", &[]);
    let list_body = r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#;
    let headers = |s: &str| format!("Mcp-Session-Id: {s}\r\nMCP-Protocol-Version: 2025-11-25\r\n");

    // A session id warden never saw opened is refused (404) and recorded, even for a
    // valid token.
    let unknown = "00000000-0000-0000-0000-000000000000";
    let (status, resp_headers, _) = post(&addr, Some(&token), &headers(unknown), list_body);
    assert_eq!(status, 404);
    let id = resp_headers
        .iter()
        .find(|(k, _)| k == "warden-request-id")
        .map(|(_, v)| v.clone())
        .expect("a correlation id");
    let recs = records(&addr, &adm, "outcome=invalid");
    let rec = recs
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap_or_else(|| panic!("no record {id} in {recs:?}"));
    assert_eq!(rec["error_class"], "session");
    assert_eq!(rec["principal"], "default/default/dev/local");

    // Another agent's DELETE is refused and does not end the owner's session.
    let session = open_session(&addr, &token);
    let delete = |token: &str, session: &str| {
        raw(
            &addr,
            &format!(
                "DELETE /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n{}\
                 Connection: close\r\n\r\n",
                headers(session)
            ),
        )
        .0
    };
    assert_eq!(delete(&other, &session), 404);
    assert_eq!(
        post(&addr, Some(&token), &headers(&session), list_body).0,
        200
    );
    // The owner's DELETE ends it with 204, and the id is refused afterwards.
    assert_eq!(delete(&token, &session), 204);
    assert_eq!(
        post(&addr, Some(&token), &headers(&session), list_body).0,
        404
    );

    // A stream opened with a short-lived exchanged token ends when that token expires.
    let exchange = format!(
        "grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token={token}&expires_in=3"
    );
    let (status, body) = token_endpoint(&addr, &exchange);
    assert_eq!(status, 200, "{body}");
    let short = serde_json::from_str::<Value>(&body).unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let opened = Instant::now();
    let s1 = open_session(&addr, &short);
    let mut expiring = open_stream(&addr, &short, &s1);
    expiring
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert!(stream_head(&mut expiring).starts_with("HTTP/1.1 200"));

    // A stream of a service token rotated with a grace window ends when the window does.
    let (rotated, rotated_id) = issue(d, "default/default/dev/other", &[]);
    let s2 = open_session(&addr, &rotated);
    let mut graced = open_stream(&addr, &rotated, &s2);
    graced
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert!(stream_head(&mut graced).starts_with("HTTP/1.1 200"));
    let rotated_at = Instant::now();
    ok(warden(
        d,
        &["token", "rotate", &rotated_id, "--grace", "2s"],
    ));

    until_stream_ends(&mut expiring);
    let lived = opened.elapsed();
    assert!(
        lived >= Duration::from_secs(1),
        "ended too early: {lived:?}"
    );
    until_stream_ends(&mut graced);
    let graced_for = rotated_at.elapsed();
    assert!(
        graced_for >= Duration::from_secs(1),
        "ended too early: {graced_for:?}"
    );
    assert!(graced_for < Duration::from_secs(15), "{graced_for:?}");
    assert!(up.stop().success());
}

#[test]
fn policy_is_applied_tested_and_enforced_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Calls needing approval answer at once (the approvals suite covers waiting).
    let up = Up::start_with(d, &["--approval-wait-secs", "0"]);
    let addr = up.addr.clone();
    let adm = admin_token(d);
    // The starter policy is version 1 and lets the local agent use the first-party tools.
    let history = ok(warden(d, &["policy", "history", "--json"]));
    assert_eq!(
        serde_json::from_str::<Value>(&history).unwrap()["current"],
        1
    );
    setup_acme(d);
    let (bot, _) = issue(d, "acme/core/prod/bot", &[]);
    let (intern, _) = issue(d, "acme/core/prod/intern", &[]);

    // Listing is filtered: ops sees the text tools and the argument-gated http request
    // tool, but not get_json; the intern (no group) sees nothing.
    let names = list(&addr, &bot);
    for t in [
        "warden_text__stats",
        "warden_text__hash",
        "warden_text__regex_find",
        "warden_http__request",
    ] {
        assert!(names.contains(&t.to_owned()), "{t} not in {names:?}");
    }
    assert!(
        !names.contains(&"warden_http__get_json".to_owned()),
        "{names:?}"
    );
    assert!(list(&addr, &intern).is_empty());

    // A denied tool and an unknown tool are indistinguishable.
    let (_, _, denied) = call(
        &addr,
        Some(&bot),
        "warden_http__get_json",
        json!({"url": "https://x.example/"}),
    );
    let (_, _, unknown) = call(&addr, Some(&bot), "warden_http__nothing", json!({}));
    let (denied, unknown) = (result_of(&denied), result_of(&unknown));
    assert_eq!(denied["error"]["code"], -32602);
    assert_eq!(
        denied["error"]["message"]
            .as_str()
            .unwrap()
            .replace("get_json", "X"),
        unknown["error"]["message"]
            .as_str()
            .unwrap()
            .replace("nothing", "X")
    );
    // Argument rules: github is allowed (and fails only in the sandbox, whose egress is
    // not configured), anything else is denied before it runs.
    let (_, _, gh) = call(
        &addr,
        Some(&bot),
        "warden_http__request",
        json!({"url": "https://api.github.com/zen"}),
    );
    let gh = result_of(&gh);
    assert_eq!(gh["result"]["isError"], true, "{gh}");
    assert!(text_of(&gh["result"]).contains("denied"), "{gh}");
    let (_, _, other) = call(
        &addr,
        Some(&bot),
        "warden_http__request",
        json!({"url": "https://evil.example/"}),
    );
    assert_eq!(result_of(&other)["error"]["code"], -32602);
    // A forbid on an argument beats the permit.
    let (_, _, long) = call(
        &addr,
        Some(&bot),
        "warden_text__regex_find",
        json!({"text": "a", "pattern": "(a+)+$"}),
    );
    assert_eq!(result_of(&long)["error"]["code"], -32602);
    let (_, _, short) = call(
        &addr,
        Some(&bot),
        "warden_text__regex_find",
        json!({"text": "abc", "pattern": "b"}),
    );
    assert_eq!(result_of(&short)["result"]["isError"], false, "{short}");
    // Approval required: a task is opened, nothing runs, and the agent is told how to
    // pick up the decision.
    let (_, _, hash) = call(
        &addr,
        Some(&bot),
        "warden_text__hash",
        json!({"text": "abc"}),
    );
    let hash = result_of(&hash);
    assert_eq!(hash["result"]["isError"], true);
    assert!(
        text_of(&hash["result"]).contains("approval pending"),
        "{hash}"
    );

    // The trail has the decisions and the rules behind them; the deny's reason is there
    // (and was not sent to the agent).
    let recs = records(&addr, &adm, "principal=acme/core/prod/bot");
    let find = |tool: &str, outcome: &str| {
        recs.iter()
            .find(|r| r["tool"] == tool && r["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {outcome} record for {tool}: {recs:#?}"))
            .clone()
    };
    let r = find("warden_text__regex_find", "denied");
    assert_eq!(r["policies"], json!(["no-regex-groups"]));
    assert_eq!(
        r["reasons"],
        json!(["regex_find refuses patterns with groups"])
    );
    assert!(!long.contains("refuses patterns with groups"));
    assert_eq!(
        find("warden_text__hash", "approval_required")["policies"],
        // Both permits match; one asking for approval is enough.
        json!(["hash-needs-approval", "ops-text"])
    );
    // Arguments are kept only where the policy says so.
    let gh_rec = find("warden_http__request", "tool_error");
    assert_eq!(gh_rec["arguments"]["url"], "https://api.github.com/zen");
    assert!(find("warden_text__regex_find", "ok")["arguments"].is_null());
    assert_eq!(
        find("warden_text__regex_find", "ok")["args_digest"]
            .as_str()
            .unwrap()
            .len(),
        64
    );

    // `warden policy test` shows the decision and the rules that decided it.
    let out = ok(warden(
        d,
        &[
            "policy",
            "test",
            "--agent",
            "acme/core/prod/bot",
            "--tool",
            "warden_text__regex_find",
            "--args",
            &json!({"pattern": "(x)"}).to_string(),
        ],
    ));
    assert!(
        out.contains("decision: deny")
            && out.contains("no-regex-groups")
            && out.contains("refuses patterns with groups"),
        "{out}"
    );
    let out = ok(warden(
        d,
        &[
            "policy",
            "test",
            "--agent",
            "acme/core/prod/intern",
            "--tool",
            "warden_text__stats",
            "--json",
        ],
    ));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["listed"], false);
    assert_eq!(v["policy_version"], 2);

    // A set that does not validate is refused whole: the version does not move.
    let bad = d.join("bad.cedar");
    std::fs::write(
        &bad,
        r#"permit (principal, action, resource) when { context.arguments.getTag("x") == "y" };"#,
    )
    .unwrap();
    let out = warden(d, &["policy", "apply", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("validate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let history: Value =
        serde_json::from_str(&ok(warden(d, &["policy", "history", "--json"]))).unwrap();
    assert_eq!(history["current"], 2);
    assert_eq!(history["versions"].as_array().unwrap().len(), 2);

    // An empty set denies everything, for the real TypeScript client too.
    let empty = d.join("empty.cedar");
    std::fs::write(&empty, "").unwrap();
    ok(warden(d, &["policy", "apply", empty.to_str().unwrap()]));
    assert!(list(&addr, &bot).is_empty());

    // The TypeScript client under a policy that hides the http skill from the local agent.
    let local_text = d.join("local.cedar");
    std::fs::write(
        &local_text,
        r#"permit (principal == Warden::Agent::"default/default/dev/local", action, resource) when { resource.skill == "text" };"#,
    )
    .unwrap();
    ok(warden(
        d,
        &["policy", "apply", local_text.to_str().unwrap()],
    ));
    // show -> edit -> apply round-trips: the version line is a comment `apply` drops.
    let shown = ok(warden(d, &["policy", "show"]));
    assert!(shown.starts_with("// warden policy version "), "{shown}");
    let edited = d.join("edited.cedar");
    std::fs::write(&edited, &shown).unwrap();
    ok(warden(d, &["policy", "apply", edited.to_str().unwrap()]));
    let again = ok(warden(d, &["policy", "show"]));
    assert_eq!(
        again.lines().skip(1).collect::<Vec<_>>(),
        shown.lines().skip(1).collect::<Vec<_>>(),
        "the stored text does not grow a version line per round trip"
    );
    assert_ne!(again.lines().next(), shown.lines().next());
    let report = ts_client(&up, "v1", up.token.as_deref());
    assert!(report.get("error").is_none(), "{report}");
    let names: Vec<&str> = report["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"warden_text__stats") && !names.iter().any(|n| n.contains("http")),
        "{names:?}"
    );
    assert_eq!(report["stats"]["isError"], false);
    assert_eq!(report["http"]["code"], -32602, "{report}");
    assert_eq!(report["unknownTool"]["code"], -32602);
    assert!(up.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_every_outcome_and_detects_tampering() {
    use warden::runtime::SkillSettings;
    let catalog = Arc::new(warden::gateway::Catalog::new());
    catalog
        .install(
            "test",
            crate::support::load(
                "hostile",
                SkillSettings {
                    limits: warden::runtime::SkillLimits {
                        deadline: Duration::from_millis(300),
                        ..Default::default()
                    },
                    ..SkillSettings::default()
                },
            )
            .await,
        )
        .unwrap();
    catalog
        .install(
            "warden",
            crate::support::load("text", SkillSettings::default()).await,
        )
        .unwrap();
    let gw = InProcess::start(catalog, Duration::from_secs(2)).await;
    gw.gateway
        .apply_policy(
            r#"permit (principal, action, resource);
               @id("no-panics") @reason("panics are for tests only")
               forbid (principal, action, resource == Warden::Tool::"test_hostile__panic");"#,
            "test",
        )
        .unwrap();
    let (addr, token) = (gw.addr.clone(), gw.token.clone());
    let outcomes = tokio::task::spawn_blocking(move || {
        let c = |tool: &str, args: Value| call(&addr, Some(&token), tool, args).2;
        c("warden_text__stats", json!({"text": "hi"})); // allowed, ok
        c("test_hostile__panic", json!({})); // denied
        c("warden_text__stats", json!({"text": 5})); // failed: invalid arguments
        c("test_hostile__spin", json!({})); // trapped: deadline
        c("warden_text__nothing", json!({})); // unknown
    });
    outcomes.await.unwrap();
    let recs = gw.gateway.audit().query(&Default::default()).unwrap();
    let got: BTreeSet<(String, String)> = recs
        .iter()
        .filter(|r| r.request == "tools/call")
        .map(|r| (r.tool.clone().unwrap(), r.outcome.to_string()))
        .collect();
    for (tool, outcome) in [
        ("warden_text__stats", "ok"),
        ("test_hostile__panic", "denied"),
        ("warden_text__stats", "tool_error"),
        ("test_hostile__spin", "trap"),
        ("warden_text__nothing", "unknown_tool"),
    ] {
        assert!(
            got.contains(&(tool.into(), outcome.into())),
            "{tool} {outcome} missing from {got:?}"
        );
    }
    let trap = recs.iter().find(|r| r.outcome == "trap").unwrap();
    assert_eq!(trap.error_class.as_deref(), Some("deadline"));
    assert!(trap.latency_us > 0);
    assert_eq!(gw.gateway.audit().verify().unwrap().first_broken, None);
    let usage = gw.gateway.audit().usage("tool");
    assert_eq!(usage["warden_text__stats"].calls, 2);
    assert_eq!(usage["warden_text__stats"].errors, 1);
    gw.stop().await;
}

#[test]
fn audit_chain_verifies_and_a_flipped_byte_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = Up::start(d);
    let token = up.token.clone().unwrap();
    for i in 0..5 {
        assert_eq!(
            call(
                &up.addr,
                Some(&token),
                "warden_text__stats",
                json!({"text": format!("n{i}")})
            )
            .0,
            200
        );
    }
    let out = ok(warden(d, &["audit", "verify"]));
    assert!(out.contains("verifies"), "{out}");
    let tail = ok(warden(
        d,
        &["audit", "tail", "--tool", "warden_text__stats", "-n", "3"],
    ));
    assert_eq!(tail.lines().count(), 3, "{tail}");
    // Usage and metrics count the calls.
    let usage: Value = serde_json::from_str(&ok(warden(
        d,
        &["audit", "usage", "--by", "tool", "--json"],
    )))
    .unwrap();
    assert_eq!(usage["usage"]["warden_text__stats"]["calls"], 5);
    let (status, _, metrics) = raw(
        &up.addr,
        &format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            up.addr,
            admin_token(d)
        ),
    );
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"warden_calls_total{tenant="default",workspace="default",environment="dev",agent="local",tool="warden_text__stats"} 5"#),
        "{metrics}"
    );
    // The OpenAPI document is generated from the handlers, and it describes the real
    // routes: every documented GET without path parameters answers 200.
    let adm = admin_token(d);
    let (status, doc) = admin(&up.addr, &adm, "GET", "/admin/v1/openapi.json", None);
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert_eq!(
        doc["components"]["securitySchemes"]["admin_token"]["scheme"],
        "bearer"
    );
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/admin/v1/tokens",
        "/admin/v1/tokens/{id}/rotate",
        "/admin/v1/tokens/{id}/revoke",
        "/admin/v1/policies",
        "/admin/v1/policies/test",
        "/admin/v1/audit",
        "/admin/v1/audit/verify",
        "/admin/v1/agents",
        "/admin/v1/scopes",
        "/admin/v1/usage",
        "/admin/v1/vault",
        "/admin/v1/vault/rotate-key",
        "/admin/v1/secrets",
        "/admin/v1/secrets/history",
        "/admin/v1/grants",
        "/metrics",
    ] {
        assert!(paths.contains_key(p), "{p} is not documented");
    }
    for (p, ops) in paths {
        let needs_query = ops["get"]["parameters"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|q| q["in"] == "query" && q["required"] == true)
        });
        // An event stream never ends: its first bytes are checked instead.
        let streams = ops["get"]["responses"]["200"]["content"]
            .get("text/event-stream")
            .is_some();
        if ops.get("get").is_some() && !p.contains('{') && !needs_query {
            if streams {
                let head = first_bytes(&up.addr, &adm, p);
                assert!(head.starts_with("HTTP/1.1 200"), "GET {p}: {head}");
                assert!(head.contains("text/event-stream"), "GET {p}: {head}");
                continue;
            }
            let (status, body) = admin(&up.addr, &adm, "GET", p, None);
            assert_eq!(status, 200, "GET {p}: {body}");
        }
    }
    // An approver may read but not change anything.
    let approver: Value = serde_json::from_str(
        ok(warden(
            d,
            &[
                "token", "issue", "auditor", "--admin", "--role", "approver", "--json",
            ],
        ))
        .trim(),
    )
    .unwrap();
    let approver = approver["token"].as_str().unwrap();
    assert_eq!(
        admin(&up.addr, approver, "GET", "/admin/v1/audit", None).0,
        200
    );
    let (status, _) = admin(
        &up.addr,
        approver,
        "POST",
        "/admin/v1/policies",
        Some(json!({"text": ""})),
    );
    assert_eq!(status, 403);
    assert!(up.stop().success());

    // Flip one byte of record 3 in the stopped gateway's store.
    {
        let store = warden::storage::Store::open(&d.join("warden.redb")).unwrap();
        let mut bytes = Vec::new();
        store
            .scan_audit(3, |_, b| {
                bytes = b.to_vec();
                false
            })
            .unwrap();
        let pos = bytes.len() / 2;
        bytes[pos] ^= 0x20;
        store.overwrite_audit_record(3, &bytes).unwrap();
    }
    let out = warden(d, &["audit", "verify", "--offline"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken at record 3"), "{err}");
}

#[test]
fn a_failing_audit_sink_refuses_calls() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start_env(dir.path(), &[], &[("WARDEN_FAILPOINTS", "audit-commit")]);
    let token = up.token.clone().unwrap();
    let (status, _, body) = call(
        &up.addr,
        Some(&token),
        "warden_text__stats",
        json!({"text": "x"}),
    );
    // The call's result is withheld: an error, never the tool's output.
    assert!(!body.contains("structuredContent"), "{body}");
    assert!(status == 200 || status == 503, "{status}");
    assert!(body.contains("audit trail is unavailable"), "{body}");
    // Once the sink is known to fail, calls are refused before anything runs.
    let (_, _, body) = call(
        &up.addr,
        Some(&token),
        "warden_text__stats",
        json!({"text": "x"}),
    );
    assert!(body.contains("audit trail is unavailable"), "{body}");
    // Admin changes fail closed too: refused before they are applied.
    let adm = admin_token(dir.path());
    let (status, v) = admin(
        &up.addr,
        &adm,
        "POST",
        "/admin/v1/scopes",
        Some(json!({"path": "acme"})),
    );
    assert_eq!(status, 503, "{v}");
    assert!(up.stop().success());
    let store = warden::storage::Store::open(&dir.path().join("warden.redb")).unwrap();
    assert!(
        warden::storage::Tables::scope(&store, "acme")
            .unwrap()
            .is_none(),
        "a change was applied while its record could not be written"
    );
}

#[test]
fn an_admin_change_whose_record_fails_is_not_applied() {
    // The trail is healthy when each change arrives (so the check before the change
    // passes); the transaction holding the change and its record then fails.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = Up::start_env(d, &[], &[("WARDEN_FAILPOINTS", "audit-change")]);
    let adm = admin_token(d);
    let (_, before) = admin(&up.addr, &adm, "GET", "/admin/v1/tokens?all=true", None);
    let changes = [
        ("POST", "/admin/v1/scopes", Some(json!({"path": "acme"}))),
        (
            "POST",
            "/admin/v1/agents",
            Some(json!({"path": "default/default/dev/second"})),
        ),
        (
            "POST",
            "/admin/v1/tokens",
            Some(json!({"principal": "default/default/dev/local", "label": "lost"})),
        ),
        (
            "POST",
            "/admin/v1/policies",
            Some(json!({"text": "permit (principal, action, resource);"})),
        ),
        (
            "PUT",
            "/admin/v1/skills/text/workspaces",
            Some(json!({"workspaces": ["default/default"]})),
        ),
        ("DELETE", "/admin/v1/agents/default/default/dev/local", None),
    ];
    for (method, path, body) in changes {
        let (status, v) = admin(&up.addr, &adm, method, path, body);
        assert_eq!(status, 503, "{method} {path}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("audit trail is unavailable"),
            "{v}"
        );
    }
    // A change that refuses is answered as usual (nothing was to be written).
    let (status, v) = admin(
        &up.addr,
        &adm,
        "POST",
        "/admin/v1/scopes",
        Some(json!({"path": "default"})),
    );
    assert_eq!(status, 409, "{v}");
    // Nothing changed, as the running gateway sees it...
    let (_, after) = admin(&up.addr, &adm, "GET", "/admin/v1/tokens?all=true", None);
    assert_eq!(before, after);
    let (_, policy) = admin(&up.addr, &adm, "GET", "/admin/v1/policies", None);
    assert_eq!(policy["versions"].as_array().unwrap().len(), 1, "{policy}");
    let (_, skills) = admin(&up.addr, &adm, "GET", "/admin/v1/skills", None);
    let text = skills["skills"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "text")
        .unwrap()
        .clone();
    assert_eq!(text["workspaces"], json!(["*"]), "{text}");
    // ...and tool calls still work: the trail itself is fine.
    let token = up.token.clone().unwrap();
    let (status, _, body) = call(
        &up.addr,
        Some(&token),
        "warden_text__stats",
        json!({"text": "x"}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("structuredContent"), "{body}");
    // Each refused change left exactly one record, an error of class `audit`.
    let trail = records(&up.addr, &adm, "");
    let admin_changes: Vec<&Value> = trail
        .iter()
        .filter(|r| {
            let req = r["request"].as_str().unwrap_or_default();
            req.starts_with("admin ") && !req.starts_with("admin GET")
        })
        .collect();
    assert_eq!(admin_changes.len(), 7, "{admin_changes:#?}");
    let lost = admin_changes
        .iter()
        .filter(|r| r["outcome"] == "error" && r["error_class"] == "audit")
        .count();
    assert_eq!(lost, 6, "{admin_changes:#?}");
    assert!(up.stop().success());
    // ...and as the store on disk holds it.
    let store = warden::storage::Store::open(&d.join("warden.redb")).unwrap();
    assert!(
        warden::storage::Tables::scope(&store, "acme")
            .unwrap()
            .is_none()
    );
    assert!(
        warden::storage::Tables::agent(&store, "default/default/dev/second")
            .unwrap()
            .is_none()
    );
    assert!(
        warden::storage::Tables::agent(&store, "default/default/dev/local")
            .unwrap()
            .is_some()
    );
    assert_eq!(store.policy_versions().unwrap().len(), 1);
    drop(store);
    let out = ok(warden(d, &["audit", "verify", "--offline", "--json"]));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["first_broken"].is_null(), "{v}");
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_call() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut up = Up::start_with(d, &["--rate-limit", "0"]);
    let token = up.token.clone().unwrap();
    let addr = up.addr.clone();
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (addr, token, acked, stop) = (
                addr.clone(),
                token.clone(),
                acknowledged.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let args = json!({"text": format!("worker {w} call {i}")});
                    let result = std::panic::catch_unwind(|| {
                        call(&addr, Some(&token), "warden_text__stats", args.clone())
                    });
                    if let Ok((200, _, body)) = result
                        && body.contains("structuredContent")
                    {
                        acked.lock().unwrap().push(warden::audit::digest(&args));
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acknowledged.lock().unwrap().len() < 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // SIGKILL while the load runs.
    up.child.kill().unwrap();
    up.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acknowledged.lock().unwrap().clone();
    assert!(
        acked.len() >= 200,
        "only {} calls acknowledged",
        acked.len()
    );

    // Offline, before any restart: the records the store lacks (the writer copies them in
    // without a sync) are replayed from the journal, and the chain verifies.
    let out = ok(warden(d, &["audit", "verify", "--offline", "--json"]));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["first_broken"].is_null(), "{v}");
    assert!(
        v["records"].as_u64().unwrap() >= acked.len() as u64,
        "{v} for {} acknowledged calls",
        acked.len()
    );

    // Restart: the chain verifies, and every acknowledged call has its record.
    let up = Up::start(d);
    let adm = admin_token(d);
    let (status, v) = admin(&up.addr, &adm, "GET", "/admin/v1/audit/verify", None);
    assert_eq!(status, 200, "{v}");
    assert!(up.stop().success());
    let store = warden::storage::Store::open(&d.join("warden.redb")).unwrap();
    let mut recorded = std::collections::HashSet::new();
    store
        .scan_audit(0, |_, bytes| {
            let r = warden::audit::decode(bytes).unwrap();
            if r.outcome == "ok"
                && let Some(digest) = r.args_digest
            {
                recorded.insert(digest);
            }
            true
        })
        .unwrap();
    let missing = acked.iter().filter(|d| !recorded.contains(*d)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged calls have no record",
        acked.len()
    );
}

#[test]
fn skills_are_installed_per_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = Up::start(d);
    for scope in ["acme", "acme/core", "acme/core/prod"] {
        ok(warden(d, &["scope", "create", scope]));
    }
    ok(warden(d, &["agent", "put", "acme/core/prod/bot"]));
    let everyone = d.join("everyone.cedar");
    std::fs::write(&everyone, "permit (principal, action, resource);").unwrap();
    ok(warden(d, &["policy", "apply", everyone.to_str().unwrap()]));
    let (bot, _) = issue(d, "acme/core/prod/bot", &[]);
    let local = up.token.clone().unwrap();
    let has_text = |names: &[String]| names.iter().any(|n| n.starts_with("warden_text__"));
    assert!(has_text(&list(&up.addr, &local)) && has_text(&list(&up.addr, &bot)));

    // Install the text skill in acme/core only: for the local agent (default/default) it
    // no longer exists; the bot still has it.
    ok(warden(
        d,
        &["skill", "workspaces", "text", "--workspace", "acme/core"],
    ));
    assert!(!has_text(&list(&up.addr, &local)));
    assert!(has_text(&list(&up.addr, &bot)));
    let (_, _, body) = call(
        &up.addr,
        Some(&local),
        "warden_text__stats",
        json!({"text": "x"}),
    );
    assert_eq!(result_of(&body)["error"]["code"], -32602, "{body}");
    let (_, _, body) = call(
        &up.addr,
        Some(&bot),
        "warden_text__stats",
        json!({"text": "x"}),
    );
    assert_eq!(result_of(&body)["result"]["isError"], false, "{body}");
    // A workspace that does not exist is refused.
    assert!(
        !warden(
            d,
            &["skill", "workspaces", "text", "--workspace", "acme/nope"]
        )
        .status
        .success()
    );

    // The choice survives a restart.
    assert!(up.stop().success());
    let up = Up::start(d);
    let installed: Value =
        serde_json::from_str(ok(warden(d, &["skill", "installed", "--json"])).trim()).unwrap();
    let text = installed["skills"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "text")
        .unwrap();
    assert_eq!(text["workspaces"], json!(["acme/core"]));
    assert!(!has_text(&list(&up.addr, &local)));
    // The full `namespace/name` key works as well as the bare name.
    ok(warden(d, &["skill", "workspaces", "warden/text", "--all"]));
    assert!(has_text(&list(&up.addr, &local)));
    assert!(up.stop().success());
}
