//! The bad-input suite against the real `warden up`: thousands of hostile requests from a
//! table of classes (malformed JSON-RPC, wrong types, oversized and deeply nested bodies,
//! bad headers and origins, unknown sessions, forged, expired, rotated and revoked tokens,
//! wrong token kinds, policy-evasion arguments, oversized names, admin API and token
//! endpoint abuse, ...), each class with the refusal it must get, mixed with good calls.
//! Then the audit trail must hold exactly one record per request (a flood's summary record
//! counting for the requests it stands for) and verify, and the gateway's memory and data
//! directory must stay within their bounds.

use crate::console::{admin, ok, warden};
use crate::gateway::{Up, raw};
use serde_json::{Value, json};
use std::path::Path;

const META: &str = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#;

/// Growth of the gateway's resident memory the suite may cause.
const MEMORY_BOUND: u64 = 64 << 20;
/// Size of the data directory after the suite (store, journal, keys, skills).
const DATA_DIR_BOUND: u64 = 32 << 20;

/// What a class of requests must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// One of these HTTP statuses.
    Status(&'static [u16]),
    /// An HTTP status and a JSON-RPC error code.
    Rpc(u16, i64),
    /// A JSON-RPC error (any code) or a 4xx status.
    RpcOr4xx,
    /// A tool result with `isError: true`.
    ToolError,
}

struct Class {
    name: &'static str,
    requests: Vec<String>,
    expect: Expect,
}

/// The JSON-RPC message of a response body (plain JSON or the first SSE data line).
fn message(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| {
        body.lines()
            .find_map(|l| {
                l.strip_prefix("data: ")
                    .and_then(|d| serde_json::from_str(d).ok())
            })
            .unwrap_or(Value::Null)
    })
}

/// Whether a response served the request: a 2xx whose JSON-RPC message (if any) is a
/// result that is not a tool failure.
fn accepted(status: u16, body: &str) -> bool {
    if !(200..300).contains(&status) {
        return false;
    }
    let m = message(body);
    if m.is_null() {
        return true;
    }
    m.get("error").is_none() && m["result"]["isError"] != true
}

fn meets(expect: Expect, status: u16, body: &str) -> bool {
    let m = message(body);
    match expect {
        Expect::Status(allowed) => allowed.contains(&status),
        Expect::Rpc(s, code) => status == s && m["error"]["code"] == code,
        Expect::RpcOr4xx => (400..500).contains(&status) || m.get("error").is_some(),
        Expect::ToolError => status == 200 && m["result"]["isError"] == true,
    }
}

fn http(addr: &str, method: &str, path: &str, headers: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A POST to /mcp with JSON headers.
fn mcp(addr: &str, token: Option<&str>, extra: &str, body: &str) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    http(
        addr,
        "POST",
        "/mcp",
        &format!(
            "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{auth}{extra}"
        ),
        body,
    )
}

/// A stateless (2026-07-28) tools/call of `name` with raw `arguments` JSON.
fn call(addr: &str, token: &str, name: &str, arguments: &str) -> String {
    // A name that cannot travel in a header (too long, controls, non-ASCII) is named `x`
    // there: the body's name is refused first.
    let header_name = if name.len() <= 64 && name.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        name
    } else {
        "x"
    };
    mcp(
        addr,
        Some(token),
        &format!(
            "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: {header_name}\r\n"
        ),
        &format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":{},"arguments":{arguments},{META}}}}}"#,
            json!(name)
        ),
    )
}

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                dir_size(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

const POLICY: &str = r#"
@id("ops-text")
permit (principal in Warden::Group::"ops", action, resource)
when { resource.namespace == "warden" && resource.skill == "text" };

@id("small-limits")
@reason("at most 100 matches")
forbid (principal, action, resource == Warden::Tool::"warden_text__regex_find")
when { context.numbers.hasTag("limit") && context.numbers.getTag("limit") > 100 };
"#;

#[test]
fn thousands_of_bad_requests_are_refused_and_each_leaves_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // No per-agent limit: the good calls and the authenticated bad ones are many.
    let up = Up::start_with(d, &["--rate-limit", "0"]);
    let addr = up.addr.clone();
    let port = addr.rsplit_once(':').unwrap().1.to_owned();
    let boot_admin = std::fs::read_to_string(d.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();

    // Identities and tokens of every kind the classes need.
    for scope in ["acme", "acme/core", "acme/core/prod"] {
        ok(warden(d, &["scope", "create", scope]));
    }
    ok(warden(
        d,
        &["agent", "put", "acme/core/prod/bot", "--group", "ops"],
    ));
    let policy = d.join("suite.cedar");
    std::fs::write(&policy, POLICY).unwrap();
    ok(warden(d, &["policy", "apply", policy.to_str().unwrap()]));
    let issue = |extra: &[&str]| -> (String, String) {
        let mut args = vec!["token", "issue", "acme/core/prod/bot", "--json"];
        args.extend_from_slice(extra);
        let v: Value = serde_json::from_str(ok(warden(d, &args)).trim()).unwrap();
        (
            v["token"].as_str().unwrap().to_owned(),
            v["record"]["id"].as_str().unwrap().to_owned(),
        )
    };
    let (good, _) = issue(&[]);
    let (expired, _) = issue(&["--ttl", "1s"]);
    let (rotated, rotated_id) = issue(&[]);
    ok(warden(d, &["token", "rotate", &rotated_id]));
    let (revoked, revoked_id) = issue(&[]);
    ok(warden(d, &["token", "revoke", &revoked_id]));
    let admin_token = |role: &str, name: &str| -> String {
        let (status, v) = admin(
            &addr,
            &boot_admin,
            "POST",
            "/admin/v1/tokens",
            Some(json!({"kind": "admin", "principal": name, "role": role})),
        );
        assert_eq!(status, 201, "{v}");
        v["token"].as_str().unwrap().to_owned()
    };
    let reader = admin_token("approver", "reader");
    let operator = admin_token("operator", "suite");
    // The expired token's second must be over.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let valid_call = |n: usize| {
        call(
            &addr,
            &good,
            "warden_text__stats",
            &format!(r#"{{"text":"good call {n}"}}"#),
        )
    };
    let base = mcp(
        &addr,
        Some(&good),
        "",
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"warden_text__stats","arguments":{"text":"x"}}}"#,
    );
    let body_of = |req: &str| req.split_once("\r\n\r\n").unwrap().1.to_owned();
    let valid_body = body_of(&base);
    let n = 64;
    let mut classes: Vec<Class> = Vec::new();
    let mut add = |name: &'static str, expect: Expect, requests: Vec<String>| {
        classes.push(Class {
            name,
            requests,
            expect,
        });
    };

    // --- JSON-RPC envelope and body.
    add(
        "malformed JSON",
        Expect::Rpc(400, -32700),
        (0..n)
            .map(|i| {
                let cut = i * valid_body.len() / n;
                mcp(&addr, Some(&good), "", &valid_body[..cut])
            })
            .collect(),
    );
    add(
        "not one JSON-RPC object",
        Expect::Rpc(400, -32600),
        (0..n)
            .map(|i| {
                let body = match i % 5 {
                    0 => format!("{i}"),
                    1 => format!("\"s{i}\""),
                    2 => format!("[{i}]"),
                    3 => format!(r#"[{{"jsonrpc":"2.0","id":{i},"method":"tools/list"}}]"#),
                    _ => "null".to_owned(),
                };
                mcp(&addr, Some(&good), "", &body)
            })
            .collect(),
    );
    add(
        "bad envelope",
        Expect::Rpc(400, -32600),
        (0..n)
            .map(|i| {
                let body = match i % 4 {
                    0 => format!(r#"{{"jsonrpc":"1.0","id":{i},"method":"tools/list"}}"#),
                    1 => format!(r#"{{"id":{i},"method":"tools/list"}}"#),
                    2 => format!(r#"{{"jsonrpc":"2.0","id":{i}}}"#),
                    _ => format!(r#"{{"jsonrpc":2,"id":{i},"method":"ping"}}"#),
                };
                mcp(&addr, Some(&good), "", &body)
            })
            .collect(),
    );
    add(
        "tools/call params of the wrong type",
        Expect::Rpc(200, -32602),
        (0..n)
            .map(|i| {
                let params = match i % 6 {
                    0 => format!("[{i}]"),
                    1 => format!("\"p{i}\""),
                    2 => format!(r#"{{"name":{i}}}"#),
                    3 => r#"{"nome":"warden_text__stats"}"#.to_owned(),
                    4 => format!(r#"{{"name":"warden_text__stats","arguments":[{i}]}}"#),
                    _ => format!(r#"{{"name":"warden_text__stats","arguments":"a{i}"}}"#),
                };
                mcp(
                    &addr,
                    Some(&good),
                    "",
                    &format!(
                        r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{params}}}"#
                    ),
                )
            })
            .collect(),
    );
    add(
        "oversized body",
        Expect::Status(&[413]),
        (0..8)
            .map(|i| {
                let pad = "x".repeat((1 << 20) + i * 4096);
                mcp(
                    &addr,
                    Some(&good),
                    "",
                    &format!(
                        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{pad}"}}}}"#
                    ),
                )
            })
            .collect(),
    );
    add(
        "deeply nested body",
        Expect::Status(&[400]),
        (0..n)
            .map(|i| {
                let depth = 200 + i * 100;
                let args = format!(r#"{{"text":{}1{}}}"#, "[".repeat(depth), "]".repeat(depth));
                mcp(
                    &addr,
                    Some(&good),
                    "",
                    &format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"warden_text__stats","arguments":{args}}}}}"#),
                )
            })
            .collect(),
    );
    add(
        "numbers too large to parse",
        Expect::RpcOr4xx,
        (0..n)
            .map(|i| {
                let body = match i % 3 {
                    0 => format!(r#"{{"jsonrpc":"2.0","id":1e{},"method":"tools/list"}}"#, 400 + i),
                    1 => format!(
                        r#"{{"jsonrpc":"2.0","id":{}{i},"method":"tools/list"}}"#,
                        "9".repeat(40)
                    ),
                    _ => format!(
                        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"warden_text__stats","arguments":{{"text":1e{}}}}}}}"#,
                        500 + i
                    ),
                };
                mcp(&addr, Some(&good), "", &body)
            })
            .collect(),
    );
    add(
        "unknown methods",
        Expect::RpcOr4xx,
        (0..n)
            .map(|i| {
                mcp(
                    &addr,
                    Some(&good),
                    &format!("MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: nope/m{i}\r\n"),
                    &format!(
                        r#"{{"jsonrpc":"2.0","id":{i},"method":"nope/m{i}","params":{{{META}}}}}"#
                    ),
                )
            })
            .collect(),
    );
    add(
        "Mcp-Method header that does not match the body",
        Expect::RpcOr4xx,
        (0..n)
            .map(|i| {
                mcp(
                    &addr,
                    Some(&good),
                    "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/list\r\nMcp-Name: warden_text__stats\r\n",
                    &format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"warden_text__stats","arguments":{{"text":"x"}},{META}}}}}"#),
                )
            })
            .collect(),
    );

    // --- Headers, origins, sessions, methods.
    add(
        "foreign Origin",
        Expect::Status(&[403, 429]),
        (0..n)
            .map(|i| {
                let origin = match i % 4 {
                    0 => format!("http://evil{i}.example"),
                    1 => format!("http://localhost:{}", 1000 + i),
                    2 => "null".to_owned(),
                    _ => format!("https://127.0.0.1:{port}"),
                };
                mcp(
                    &addr,
                    Some(&good),
                    &format!("Origin: {origin}\r\n"),
                    &valid_body,
                )
            })
            .collect(),
    );
    add(
        "foreign Host (DNS rebinding)",
        Expect::Status(&[403, 429]),
        (0..n)
            .map(|i| {
                format!(
                    "POST /mcp HTTP/1.1\r\nHost: rebind{i}.example:{port}\r\nAuthorization: Bearer {good}\r\n\
                     Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{valid_body}",
                    valid_body.len()
                )
            })
            .collect(),
    );
    add(
        "unknown session id",
        Expect::Status(&[404]),
        (0..n)
            .map(|i| {
                mcp(
                    &addr,
                    Some(&good),
                    &format!("Mcp-Session-Id: {i:08x}-0000-4000-8000-000000000000\r\nMCP-Protocol-Version: 2025-11-25\r\n"),
                    r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
                )
            })
            .collect(),
    );
    add(
        "HTTP methods /mcp does not serve",
        Expect::Status(&[405]),
        (0..n)
            .map(|i| {
                let method = ["PUT", "PATCH"][i % 2];
                http(
                    &addr,
                    method,
                    "/mcp",
                    &format!("Authorization: Bearer {good}\r\nContent-Type: application/json\r\n"),
                    &valid_body,
                )
            })
            .collect(),
    );
    add(
        "wrong Content-Type",
        Expect::Status(&[415]),
        (0..n)
            .map(|i| {
                let ct = ["text/plain", "application/xml", "multipart/form-data"][i % 3];
                http(
                    &addr,
                    "POST",
                    "/mcp",
                    &format!(
                        "Authorization: Bearer {good}\r\nContent-Type: {ct}\r\nAccept: application/json, text/event-stream\r\n"
                    ),
                    &valid_body,
                )
            })
            .collect(),
    );
    add(
        "unacceptable Accept",
        Expect::Status(&[406]),
        (0..n)
            .map(|i| {
                let accept = ["text/html", "image/png", "application/xml"][i % 3];
                http(
                    &addr,
                    "POST",
                    "/mcp",
                    &format!(
                        "Authorization: Bearer {good}\r\nContent-Type: application/json\r\nAccept: {accept}\r\n"
                    ),
                    &valid_body,
                )
            })
            .collect(),
    );
    add(
        "unknown routes",
        Expect::Status(&[404, 429]),
        (0..n)
            .map(|i| http(&addr, "GET", &format!("/nope/{i}"), "", ""))
            .collect(),
    );

    // --- Credentials. Refusals without valid credentials count against the address's
    // limit, so beyond its burst they are 429s folded into a summary record.
    const UNAUTH: Expect = Expect::Status(&[401, 429]);
    add(
        "missing token",
        UNAUTH,
        (0..n).map(|_| mcp(&addr, None, "", &valid_body)).collect(),
    );
    add(
        "malformed token",
        UNAUTH,
        (0..n)
            .map(|i| {
                let header = match i % 4 {
                    0 => format!("Authorization: Bearer x{i}\r\n"),
                    1 => format!("Authorization: Basic dXNlcjpwYXNz{i}\r\n"),
                    2 => format!("Authorization: Bearer wdn_st_{}\r\n", "A".repeat(i)),
                    _ => format!("Authorization: Bearer {}{i}\r\n", &good[..20]),
                };
                mcp(&addr, None, &header, &valid_body)
            })
            .collect(),
    );
    add(
        "forged token",
        UNAUTH,
        (0..n)
            .map(|i| {
                let forged = format!("wdn_st_{:0>43}", format!("forged{i}"));
                mcp(&addr, Some(&forged), "", &valid_body)
            })
            .collect(),
    );
    add(
        "expired token",
        UNAUTH,
        (0..n)
            .map(|_| mcp(&addr, Some(&expired), "", &valid_body))
            .collect(),
    );
    add(
        "rotated token",
        UNAUTH,
        (0..n)
            .map(|_| mcp(&addr, Some(&rotated), "", &valid_body))
            .collect(),
    );
    add(
        "revoked token",
        UNAUTH,
        (0..n)
            .map(|_| mcp(&addr, Some(&revoked), "", &valid_body))
            .collect(),
    );
    add(
        "admin token on /mcp",
        UNAUTH,
        (0..n)
            .map(|_| mcp(&addr, Some(&operator), "", &valid_body))
            .collect(),
    );
    add(
        "token in the query string",
        UNAUTH,
        (0..n)
            .map(|i| {
                let path = ["/mcp?access_token=", "/mcp?token="][i % 2];
                http(
                    &addr,
                    "POST",
                    &format!("{path}{good}"),
                    &format!(
                        "Authorization: Bearer {good}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
                    ),
                    &valid_body,
                )
            })
            .collect(),
    );
    add(
        "agent token on the admin API",
        UNAUTH,
        (0..n)
            .map(|i| {
                let path = ["/admin/v1/tokens", "/admin/v1/audit", "/metrics"][i % 3];
                http(
                    &addr,
                    "GET",
                    path,
                    &format!("Authorization: Bearer {good}\r\n"),
                    "",
                )
            })
            .collect(),
    );

    // --- Tools and policy.
    add(
        "policy evasion with numbers",
        Expect::Rpc(200, -32602),
        (0..n)
            .map(|i| {
                let limit = [
                    "1e3".to_owned(),
                    "1000.0".to_owned(),
                    "18446744073709551616".to_owned(),
                    "1e300".to_owned(),
                    "100.5".to_owned(),
                    format!("{}", 101 + i),
                    "9223372036854775808".to_owned(),
                ][i % 7]
                    .clone();
                call(
                    &addr,
                    &good,
                    "warden_text__regex_find",
                    &format!(r#"{{"text":"aaa","pattern":"a","limit":{limit}}}"#),
                )
            })
            .collect(),
    );
    add(
        "oversized tool names",
        Expect::Rpc(200, -32602),
        (0..n)
            .map(|i| {
                let len = 65 + i * i * 200;
                call(&addr, &good, &"t".repeat(len), "{}")
            })
            .collect(),
    );
    add(
        "tool names with bad characters or another case",
        Expect::Rpc(200, -32602),
        (0..n)
            .map(|i| {
                let name = match i % 6 {
                    0 => "Warden_text__stats".to_owned(),
                    1 => "WARDEN_TEXT__STATS".to_owned(),
                    2 => format!("warden_text__stats{}", " ".repeat(i % 3 + 1)),
                    3 => format!("warden/text/{i}"),
                    4 => "warden_text__stats\u{0}".to_owned(),
                    _ => format!("warden_text__st\u{e4}ts{i}"),
                };
                call(&addr, &good, &name, "{}")
            })
            .collect(),
    );
    add(
        "unknown and denied tools",
        Expect::Rpc(200, -32602),
        (0..n)
            .map(|i| {
                let name = match i % 3 {
                    0 => format!("warden_text__made_up_{i}"),
                    1 => "warden_http__request".to_owned(),
                    _ => format!("acme_x{i}__y"),
                };
                call(&addr, &good, &name, r#"{"url":"https://example.com"}"#)
            })
            .collect(),
    );
    add(
        "arguments that violate the schema",
        Expect::ToolError,
        (0..n)
            .map(|i| {
                let args = match i % 4 {
                    0 => format!(r#"{{"text":{i}}}"#),
                    1 => "{}".to_owned(),
                    2 => format!(r#"{{"text":["{i}"]}}"#),
                    _ => format!(r#"{{"text":{{"nested":{i}}}}}"#),
                };
                call(&addr, &good, "warden_text__stats", &args)
            })
            .collect(),
    );

    // --- The admin API and the token endpoint.
    add(
        "admin changes by a read-only role",
        Expect::Status(&[403]),
        (0..n)
            .map(|i| {
                http(
                    &addr,
                    "POST",
                    "/admin/v1/scopes",
                    &format!(
                        "Authorization: Bearer {reader}\r\nContent-Type: application/json\r\n"
                    ),
                    &format!(r#"{{"path":"t{i}"}}"#),
                )
            })
            .collect(),
    );
    add(
        "admin requests with bad bodies",
        Expect::Status(&[400, 404, 415, 422]),
        (0..n)
            .map(|i| {
                let (ct, body) = match i % 5 {
                    0 => ("application/json", "{not json".to_owned()),
                    1 => ("application/json", format!(r#"{{"path":"BAD NAME {i}"}}"#)),
                    2 => ("text/plain", format!("path=x{i}")),
                    3 => ("application/json", format!(r#"{{"path":"nope{i}/child"}}"#)),
                    _ => ("application/json", format!(r#"{{"paths":[{i}]}}"#)),
                };
                http(
                    &addr,
                    "POST",
                    "/admin/v1/scopes",
                    &format!("Authorization: Bearer {operator}\r\nContent-Type: {ct}\r\n"),
                    &body,
                )
            })
            .collect(),
    );
    add(
        "admin API without a token",
        UNAUTH,
        (0..n)
            .map(|i| {
                let path = [
                    "/admin/v1/tokens",
                    "/admin/v1/audit/verify",
                    "/metrics",
                    "/admin/v1/policies",
                ][i % 4];
                http(&addr, "GET", path, "", "")
            })
            .collect(),
    );
    add(
        "token endpoint abuse",
        Expect::Status(&[400, 401, 413, 429]),
        (0..n)
            .map(|i| {
                let form = match i % 6 {
                    0 => format!("grant_type=password&subject_token={good}"),
                    1 => format!("grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token=wdn_st_{i}"),
                    2 => format!("grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token={good}&resource=http://evil.example/mcp"),
                    3 => format!("grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token={good}&expires_in=soon{i}"),
                    4 => format!("grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token={revoked}"),
                    _ => format!("grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token={}", "x".repeat(20_000 + i)),
                };
                http(
                    &addr,
                    "POST",
                    "/token",
                    "Content-Type: application/x-www-form-urlencoded\r\n",
                    &form,
                )
            })
            .collect(),
    );

    // The trail before the suite: this verify request's own record comes right after.
    let pid = up.child.id();
    let rss_before = rss(pid);
    let (status, v) = admin(&addr, &boot_admin, "GET", "/admin/v1/audit/verify", None);
    assert_eq!(status, 200, "{v}");
    let start_seq = v["records"].as_u64().unwrap() + 1;

    // Send every class, a good call after every ten bad requests.
    let mut sent = 0u64;
    let mut accepted_count = 0u64;
    let mut wrong: Vec<String> = Vec::new();
    let mut good_calls = 0usize;
    let total: usize = classes.iter().map(|c| c.requests.len()).sum();
    for class in &classes {
        for request in &class.requests {
            let (status, _, body) = raw(&addr, request);
            sent += 1;
            if accepted(status, &body) {
                accepted_count += 1;
            }
            if !meets(class.expect, status, &body) {
                let head: String = body.chars().take(160).collect();
                wrong.push(format!("{}: {status} {head}", class.name));
            }
            if sent.is_multiple_of(10) {
                let (status, _, body) = raw(&addr, &valid_call(good_calls));
                sent += 1;
                good_calls += 1;
                assert!(
                    status == 200 && accepted(status, &body),
                    "a good call failed amid the bad ones: {status} {body}"
                );
            }
        }
    }
    println!(
        "{} classes, {total} requests, {accepted_count} accepted ({good_calls} good calls mixed in)",
        classes.len()
    );
    assert!(
        classes.len() >= 30 && total >= 2000,
        "{} classes, {total}",
        classes.len()
    );
    let mut by_class: std::collections::BTreeMap<&str, (usize, &str)> = Default::default();
    for w in &wrong {
        let class = w.split_once(": ").map_or(w.as_str(), |(c, _)| c);
        by_class.entry(class).or_insert((0, w)).0 += 1;
    }
    assert!(
        wrong.is_empty(),
        "{} requests did not get their class's refusal:\n{}",
        wrong.len(),
        by_class
            .values()
            .map(|(n, example)| format!("{n} x {example}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(accepted_count, 0, "bad requests were served");

    // Exactly one record per request: page through what was written since, once the
    // flood summaries are out (written every second), skipping the reads of this loop.
    let verify_id = {
        let (_, v) = admin(&addr, &boot_admin, "GET", "/admin/v1/tokens?all=true", None);
        v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["label"] == "bootstrap admin (warden up)")
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (counted, summaries) = loop {
        let mut counted = 0u64;
        let mut summaries = 0u64;
        let mut before = u64::MAX;
        'pages: loop {
            let (status, v) = admin(
                &addr,
                &boot_admin,
                "GET",
                &format!("/admin/v1/audit?limit=1000&before_seq={before}"),
                None,
            );
            assert_eq!(status, 200, "{v}");
            let records = v["records"].as_array().unwrap();
            if records.is_empty() {
                break;
            }
            for r in records {
                let seq = r["seq"].as_u64().unwrap();
                before = seq;
                if seq <= start_seq {
                    break 'pages;
                }
                if r["token_id"] == verify_id.as_str() {
                    continue;
                }
                let count = r["count"].as_u64().unwrap_or(1);
                if count > 1 {
                    summaries += 1;
                }
                counted += count;
            }
        }
        if counted >= sent || std::time::Instant::now() > deadline {
            break (counted, summaries);
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    assert_eq!(
        counted, sent,
        "records (summaries by their count) for {sent} requests"
    );
    // The unauthenticated classes went past the address's burst: their refusals were
    // summarised, not written one by one.
    assert!(summaries >= 1, "no flood summary record was written");
    let (_, v) = admin(&addr, &boot_admin, "GET", "/admin/v1/audit/verify", None);
    assert!(v["first_broken"].is_null(), "{v}");

    // Bounded: memory and disk.
    let rss_after = rss(pid);
    let grown = rss_after.saturating_sub(rss_before);
    assert!(
        grown < MEMORY_BOUND,
        "resident memory grew by {grown} bytes"
    );
    let size = dir_size(d);
    assert!(
        size < DATA_DIR_BOUND,
        "the data directory holds {size} bytes"
    );
    println!(
        "audit records for {counted} requests ({summaries} flood summaries); resident memory {} -> {} KiB; data dir {} KiB",
        rss_before / 1024,
        rss_after / 1024,
        size / 1024
    );
    assert!(up.stop().success());
}

#[test]
fn trickled_request_heads_are_cut_off_while_others_are_served() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path());
    // Fifty clients start a request and never finish its head; five more send nothing.
    let started = Instant::now();
    let mut slow: Vec<std::net::TcpStream> = (0..55)
        .map(|i| {
            let mut s = std::net::TcpStream::connect(&up.addr).unwrap();
            if i < 50 {
                s.write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                    .unwrap();
            }
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s
        })
        .collect();
    // Everyone else is still served meanwhile.
    let (status, _, _) = raw(
        &up.addr,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    // Each slow connection is closed by the gateway (EOF or a 408), within the deadline.
    for s in &mut slow {
        let mut rest = Vec::new();
        s.read_to_end(&mut rest)
            .expect("closed by the gateway, not by our read timeout");
        let text = String::from_utf8_lossy(&rest);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(25));
    let (status, _, _) = raw(
        &up.addr,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
}
