//! `warden up` as a user runs it, driven by the official TypeScript MCP SDKs and by raw HTTP.

use crate::support::{repo_root, warden_bin};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use warden::gateway::{Catalog, Gateway};

/// A running `warden up` on a loopback port with its own data dir.
pub(crate) struct Up {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) token: Option<String>,
    pub(crate) addr: String,
    /// Everything the process wrote to stderr (its logs), also echoed to the test's stderr.
    pub(crate) logs: Arc<std::sync::Mutex<String>>,
}

impl Up {
    pub(crate) fn start(data_dir: &std::path::Path) -> Up {
        Up::start_with(data_dir, &[])
    }

    pub(crate) fn start_with(data_dir: &std::path::Path, extra: &[&str]) -> Up {
        Up::start_env(data_dir, extra, &[])
    }

    pub(crate) fn start_env(
        data_dir: &std::path::Path,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Up {
        let mut cmd = Command::new(warden_bin());
        cmd.envs(envs.iter().copied());
        Up::start_command(cmd, data_dir, extra)
    }

    /// Runs `up` with `cmd` (a `warden` binary with its environment).
    pub(crate) fn start_command(
        mut cmd: Command,
        data_dir: &std::path::Path,
        extra: &[&str],
    ) -> Up {
        let mut child = cmd
            .args([
                "up",
                "--listen",
                "127.0.0.1:0",
                "--drain-secs",
                "5",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(std::sync::Mutex::new(String::new()));
        let (sink, stderr) = (logs.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let (mut url, mut token) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(300);
        while url.is_none() || (token.is_none() && Instant::now() < deadline) {
            let Some(Ok(line)) = lines.next() else {
                panic!("warden up exited before it was ready");
            };
            let line = line.trim().to_owned();
            if let Some(u) = line.strip_prefix("MCP URL:") {
                url = Some(u.trim().to_owned());
            } else if let Some(t) = line.strip_prefix("token:") {
                let t = t.trim();
                if t.starts_with("wdn_st_") {
                    token = Some(t.to_owned());
                }
                if url.is_some() {
                    break;
                }
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let url = url.unwrap();
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches("/mcp")
            .to_owned();
        Up {
            child,
            url,
            token,
            addr,
            logs,
        }
    }

    pub(crate) fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "warden did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn npm_ready() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo_root().join("tests/clients");
        let installed = [
            "@modelcontextprotocol/client",
            "@modelcontextprotocol/sdk",
            "playwright-core",
        ]
        .iter()
        .all(|p| dir.join("node_modules").join(p).exists());
        if !installed {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir)
                .status()
                .expect("npm is needed for the MCP client tests");
            assert!(status.success(), "npm ci failed");
        }
        dir
    })
}

pub(crate) fn ts_client(up: &Up, client: &str, token: Option<&str>) -> Value {
    ts_client_calling(up, client, token, &[])
}

/// [`ts_client`], with extra arguments for the script (e.g. `--call TOOL --args JSON`).
pub(crate) fn ts_client_calling(
    up: &Up,
    client: &str,
    token: Option<&str>,
    extra: &[&str],
) -> Value {
    let dir = npm_ready();
    let mut cmd = Command::new("node");
    cmd.current_dir(dir).arg("mcp-check.mjs").args([
        "--url",
        &up.url,
        "--client",
        client,
        "--bridge",
        warden_bin(),
    ]);
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    cmd.args(extra);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

pub(crate) fn text_of(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Checks a client report; `expect_version` is the negotiated protocol version where the
/// client exposes it (the v1 SDK's stdio transport does not).
fn check_report(report: &Value, expect_version: Option<&str>) {
    assert!(report.get("error").is_none(), "{report}");
    assert!(report.get("connectError").is_none(), "{report}");
    if let Some(version) = expect_version {
        assert_eq!(report["protocolVersion"], version, "{report}");
    }
    let names: Vec<&str> = report["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for expected in [
        "warden_http__get_json",
        "warden_http__request",
        "warden_text__stats",
        "warden_text__hash",
        "warden_text__regex_find",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    for name in &names {
        assert!(
            name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{name}"
        );
    }
    // Structured content plus a text block for a tool with an output schema.
    let stats = &report["stats"];
    assert_eq!(stats["isError"], false, "{stats}");
    assert_eq!(
        stats["structuredContent"],
        json!({"chars": 18, "bytes": 18, "words": 3, "lines": 1})
    );
    let text: Value = serde_json::from_str(&text_of(stats)).unwrap();
    assert_eq!(text, stats["structuredContent"]);
    assert_eq!(
        report["hash"]["structuredContent"]["hex"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    // A failing tool (outbound HTTP denied by default) is an isError result, not a protocol error.
    assert_eq!(report["http"]["isError"], true, "{}", report["http"]);
    assert!(
        text_of(&report["http"]).contains("denied"),
        "{}",
        report["http"]
    );
    // Schema violations reach the model as a correctable tool error.
    assert_eq!(report["badArgs"]["isError"], true);
    assert!(text_of(&report["badArgs"]).contains("invalid arguments"));
    // An unknown tool is a JSON-RPC error.
    assert_eq!(
        report["unknownTool"]["code"], -32602,
        "{}",
        report["unknownTool"]
    );
}

#[test]
fn typescript_clients_call_tools_in_both_protocol_eras() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path());
    let token = up.token.clone().expect("first start prints a token");

    let v1 = ts_client(&up, "v1", Some(&token));
    check_report(&v1, Some("2025-11-25"));
    assert!(
        v1["sessionId"].is_string(),
        "the 2025-11-25 era uses sessions: {v1}"
    );

    let legacy = ts_client(&up, "v2-legacy", Some(&token));
    check_report(&legacy, Some("2025-11-25"));

    let modern = ts_client(&up, "v2-modern", Some(&token));
    check_report(&modern, Some("2026-07-28"));

    // The stdio bridge, launched by the SDK's stdio client.
    let stdio = ts_client(&up, "v1-stdio", Some(&token));
    check_report(&stdio, None);

    // Without a token, or with a wrong one, the client cannot connect.
    for bad in [
        None,
        Some("wdn_at_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    ] {
        let report = ts_client(&up, "v1", bad);
        assert_eq!(report["connectErrorCode"], 401, "{report}");
        assert!(report.get("tools").is_none(), "{report}");
    }
    assert!(up.stop().success());
}

/// A one-shot HTTP/1.1 request over loopback; returns status, headers (lower-case) and body.
pub(crate) fn raw(addr: &str, request: &str) -> (u16, Vec<(String, String)>, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

pub(crate) fn post(
    addr: &str,
    token: Option<&str>,
    extra: &str,
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    raw(
        addr,
        &format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\n{auth}{extra}Content-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// A 2025-11-25 session: `initialize`, then `notifications/initialized`. Returns its id.
pub(crate) fn open_session(addr: &str, token: &str) -> String {
    let (status, headers, _) = post(addr, Some(token), "", INIT);
    assert_eq!(status, 200);
    let session = headers
        .iter()
        .find(|(k, _)| k == "mcp-session-id")
        .unwrap()
        .1
        .clone();
    let (status, _, _) = post(
        addr,
        Some(token),
        &format!("Mcp-Session-Id: {session}\r\nMCP-Protocol-Version: 2025-11-25\r\n"),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert_eq!(status, 202);
    session
}

/// Opens the session's standalone GET (SSE) stream; the caller reads the response.
pub(crate) fn open_stream(addr: &str, token: &str, session: &str) -> std::net::TcpStream {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        tcp,
        "GET /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\
         Mcp-Session-Id: {session}\r\nMCP-Protocol-Version: 2025-11-25\r\n\r\n"
    )
    .unwrap();
    tcp
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;

#[test]
fn protocol_errors_and_refusals_then_a_normal_call_works() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path());
    let token = up.token.clone().unwrap();
    let addr = up.addr.clone();

    // No token: 401 with the RFC 9728 pointer.
    let (status, headers, _) = post(&addr, None, "", INIT);
    assert_eq!(status, 401);
    let challenge = headers
        .iter()
        .find(|(k, _)| k == "www-authenticate")
        .unwrap()
        .1
        .clone();
    assert!(
        challenge.starts_with("Bearer resource_metadata=\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("/.well-known/oauth-protected-resource"),
        "{challenge}"
    );
    let (status, _, body) = raw(
        &addr,
        &format!(
            "GET /.well-known/oauth-protected-resource/mcp HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 200);
    let meta: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(meta["resource"], up.url);

    // A token in the query string is refused even when the header is valid.
    let (status, _, _) = raw(
        &addr,
        &format!(
            "POST /mcp?access_token={token} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{INIT}",
            INIT.len()
        ),
    );
    assert_eq!(status, 401);

    // A browser origin that is not allowed: 403; the gateway's own origin is accepted
    // (same scheme, host and port as the Host), and so is its localhost spelling.
    let (status, _, _) = post(&addr, Some(&token), "Origin: http://evil.example\r\n", INIT);
    assert_eq!(status, 403);
    let port = addr.rsplit_once(':').unwrap().1;
    let (status, _, _) = post(
        &addr,
        Some(&token),
        &format!(
            "Origin: http://localhost:{}\r\n",
            port.parse::<u16>().unwrap() + 1
        ),
        INIT,
    );
    assert_eq!(status, 403, "another port is another origin");
    let (status, _, body) = post(
        &addr,
        Some(&token),
        &format!("Origin: http://{addr}\r\n"),
        INIT,
    );
    assert_eq!(status, 200, "same origin: {body}");
    let (status, _, body) = raw(
        &addr,
        &format!(
            "POST /mcp HTTP/1.1\r\nHost: localhost:{port}\r\nOrigin: http://localhost:{port}\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{INIT}",
            INIT.len()
        ),
    );
    assert_eq!(status, 200, "same origin under localhost: {body}");
    // A foreign Host is refused on every route, /readyz included (DNS rebinding).
    for path in ["/mcp", "/readyz", "/healthz", "/token"] {
        let (status, _, _) = raw(
            &addr,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: rebind.example:{port}\r\nConnection: close\r\n\r\n"
            ),
        );
        assert_eq!(status, 403, "{path}");
    }

    // An oversized body: 413.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(2 << 20)
    );
    let (status, _, _) = post(&addr, Some(&token), "", &big);
    assert_eq!(status, 413);

    // JSON-RPC errors: parse error, invalid request, unknown method, invalid params.
    let rpc_error = |body: &str| -> (u16, Value) {
        let (status, _, text) = post(&addr, Some(&token), "", body);
        let json = text
            .lines()
            .find_map(|l| serde_json::from_str::<Value>(l.trim_start_matches("data: ")).ok())
            .unwrap_or(Value::Null);
        (status, json)
    };
    let (status, body) = rpc_error("{not json");
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(-32700)),
        "{body}"
    );
    let (status, body) = rpc_error(r#"{"hello":"world"}"#);
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(-32600)),
        "{body}"
    );
    let (status, body) = rpc_error(r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#);
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(-32600)),
        "{body}"
    );
    let modern = |method: &str, params: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":9,"method":"{method}","params":{params}}}"#)
    };
    let meta = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#;
    let (_, body) = rpc_error(&modern("tools/call", r#"{"nome":"x"}"#));
    assert_eq!(body["error"]["code"], -32602, "{body}");
    assert_eq!(body["id"], 9);
    let (_, body) = rpc_error(&modern(
        "tools/call",
        r#"{"name":"warden_text__stats","arguments":"zzz"}"#,
    ));
    assert_eq!(body["error"]["code"], -32602, "{body}");
    let (status, _, text) = post(
        &addr,
        Some(&token),
        "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: nope/nope\r\n",
        &modern("nope/nope", &format!("{{{meta}}}")),
    );
    assert!(text.contains("-32601"), "{status} {text}");

    // A plain stateless tools/call is answered without rmcp's per-request service; a
    // weighted Accept sends the same call through rmcp. Both answer alike, byte for byte
    // once the correlation id is blanked, and both carry the correlation header.
    let both_paths = |id: &str, tool: &str, args: &str| {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{args},{meta}}}}}"#
        );
        let headers = format!(
            "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: {tool}\r\n"
        );
        let answer = |extra: &str| {
            let (status, head, text) =
                post(&addr, Some(&token), &format!("{headers}{extra}"), &body);
            let id = head
                .iter()
                .find(|(k, _)| k == "warden-request-id")
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no correlation header: {status} {text}"));
            (status, text.replace(&id, "ID"))
        };
        let direct = answer("");
        let via_rmcp = answer("Accept: application/json;q=1, text/event-stream;q=0.9\r\n");
        assert_eq!(direct, via_rmcp, "{tool} {args}");
        direct
    };
    let (status, ok) = both_paths("41", "warden_text__stats", r#"{"text":"a b c"}"#);
    assert_eq!(status, 200);
    let ok: Value = serde_json::from_str(&ok).unwrap();
    assert_eq!(ok["id"], 41);
    assert_eq!(ok["result"]["isError"], false, "{ok}");
    let (_, tool_error) = both_paths(r#""str-id""#, "warden_text__stats", r#"{"text":5}"#);
    let tool_error: Value = serde_json::from_str(&tool_error).unwrap();
    assert_eq!(tool_error["id"], "str-id");
    assert_eq!(tool_error["result"]["isError"], true, "{tool_error}");
    let (_, unknown) = both_paths("43", "warden_text__nope", "{}");
    let unknown: Value = serde_json::from_str(&unknown).unwrap();
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
    assert_eq!(unknown["error"]["data"]["id"], "ID", "{unknown}");

    // An unknown session id.
    let (status, _, _) = post(
        &addr,
        Some(&token),
        "Mcp-Session-Id: 00000000-0000-0000-0000-000000000000\r\n",
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    );
    assert_eq!(status, 404);

    // Health and readiness.
    let (status, _, body) = raw(
        &addr,
        &format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    // No token needed, so nothing more than readiness: skill names and errors are on the
    // admin API.
    assert_eq!(ready, serde_json::json!({"ready": true}), "{ready}");
    let admin_token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let (status, _, body) = raw(
        &addr,
        &format!(
            "GET /admin/v1/skills HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            admin_token.trim()
        ),
    );
    assert_eq!(status, 200, "{body}");
    let skills: Value = serde_json::from_str(&body).unwrap();
    let healthy: Vec<&str> = skills["skills"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["health"]["healthy"] == true)
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        healthy.contains(&"text") && healthy.contains(&"http"),
        "{skills}"
    );
    let (status, _, _) = raw(
        &addr,
        &format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 200);

    // After all of that, a real client still works.
    let report = ts_client(&up, "v1", Some(&token));
    check_report(&report, Some("2025-11-25"));
    assert!(up.stop().success());
}

#[test]
fn a_copied_binary_starts_alone_and_a_second_start_reuses_the_data_dir() {
    // The binary stands alone: copied to an empty directory and run with an empty
    // environment (no PATH, so no cargo, rustc or wasm toolchain; no source tree; another
    // working directory), it starts with the first-party skills from its signed packages.
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let copied = elsewhere.path().join("warden");
    std::fs::copy(warden_bin(), &copied).unwrap();
    let mut bare = Command::new(&copied);
    bare.env_clear()
        .env("PATH", elsewhere.path().join("no-such-dir"))
        .env("HOME", elsewhere.path())
        .current_dir(elsewhere.path());
    let first = Up::start_command(bare, dir.path(), &[]);
    let token = first.token.clone().unwrap();
    check_report(&ts_client(&first, "v1", Some(&token)), Some("2025-11-25"));
    assert!(
        !first.logs.lock().unwrap().contains("building"),
        "nothing is built at start"
    );
    assert!(first.stop().success());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&dir.path().join("warden.redb")), 0o600);
        assert_eq!(mode(&dir.path().join("compiled/cache.key")), 0o600);
    }
    // The token is stored only as a hash.
    let db = std::fs::read(dir.path().join("warden.redb")).unwrap();
    assert!(
        !db.windows(token.len()).any(|w| w == token.as_bytes()),
        "token found in the store file"
    );

    let second = Up::start(dir.path());
    assert!(
        second.token.is_none(),
        "the token is shown once, at first start"
    );
    let report = ts_client(&second, "v1", Some(&token));
    check_report(&report, Some("2025-11-25"));
    assert!(second.stop().success());

    // A lost token can be replaced: --issue-token prints a new one, and both work.
    let third = Up::start_with(dir.path(), &["--issue-token"]);
    let new_token = third.token.clone().expect("a new token");
    assert_ne!(new_token, token);
    check_report(
        &ts_client(&third, "v1", Some(&new_token)),
        Some("2025-11-25"),
    );
    assert!(third.stop().success());
}

/// The HTTP transport and gateway run in-process (library API) over a given catalog, for
/// tests that change the catalog or watch shutdown from the inside.
pub(crate) struct InProcess {
    pub(crate) addr: String,
    pub(crate) token: String,
    pub(crate) gateway: Arc<Gateway>,
    shutdown: tokio_util::sync::CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    pub(crate) async fn start(catalog: Arc<Catalog>, drain: Duration) -> InProcess {
        use warden::transport::http::{HttpState, router, serve};
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(warden::storage::Store::open(&dir.path().join("warden.redb")).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let gateway = Arc::new(
            Gateway::open(
                catalog,
                store.clone(),
                dir.path(),
                warden::gateway::GatewayOptions {
                    rate_limit: 0,
                    audience: format!("http://{addr}/mcp"),
                    audit: true,
                    vault: warden::vault::VaultConfig {
                        key_file: dir.path().join("vault.key"),
                        passphrase: false,
                    },
                    runtime: None,
                    approval_wait: warden::approvals::DEFAULT_WAIT,
                    approval_ttl: warden::approvals::DEFAULT_TTL,
                },
            )
            .unwrap(),
        );
        // These tests are about transport and lifecycle: every tool is allowed.
        gateway
            .apply_policy("permit (principal, action, resource);", "test")
            .unwrap();
        let token =
            warden::auth::issue_service_token(&store, warden::identity::LOCAL_AGENT, "test")
                .unwrap()
                .token;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let streams = tokio_util::sync::CancellationToken::new();
        let state = HttpState {
            gateway: gateway.clone(),
            base_url: format!("http://{addr}"),
        };
        let admin = warden::admin::router(gateway.clone());
        let app = router(state, Default::default(), streams.clone(), admin);
        let server = tokio::spawn(serve(
            listener,
            app,
            shutdown.clone(),
            streams,
            gateway.clone(),
            drain,
        ));
        InProcess {
            addr,
            token,
            gateway,
            shutdown,
            server,
            _dir: dir,
        }
    }

    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_clients_hear_about_tool_list_changes() {
    use warden::runtime::SkillSettings;

    let catalog = Arc::new(Catalog::new());
    catalog
        .install(
            "warden",
            crate::support::load("text", SkillSettings::default()).await,
        )
        .unwrap();
    let gw = InProcess::start(catalog.clone(), Duration::from_secs(2)).await;
    let (addr, token) = (gw.addr.clone(), gw.token.clone());

    // A 2025-11-25 session: initialize, initialized, then the standalone GET stream.
    let (a, t) = (addr.clone(), token.clone());
    let session = tokio::task::spawn_blocking(move || open_session(&a, &t))
        .await
        .unwrap();
    let (a, t, s) = (addr.clone(), token.clone(), session.clone());
    let stream = tokio::task::spawn_blocking(move || {
        let mut tcp = open_stream(&a, &t, &s);
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while !seen.contains("notifications/tools/list_changed") {
            let n = tcp.read(&mut buf).unwrap();
            assert!(n > 0, "stream closed before the notification: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        seen
    });
    crate::support::wait_until("the session to subscribe", || catalog.subscribers() >= 1).await;

    // Install another skill while the client is connected.
    catalog
        .install(
            "demo",
            crate::support::load("hello", SkillSettings::default()).await,
        )
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(60), stream)
        .await
        .unwrap()
        .unwrap();
    assert!(seen.contains("notifications/tools/list_changed"), "{seen}");

    // The new tool is listed; reinstalling the same skill replaces its tools.
    assert!(catalog.get("demo_hello__greet").is_some());
    let before = catalog.list().len();
    catalog
        .install(
            "demo",
            crate::support::load("hello", SkillSettings::default()).await,
        )
        .unwrap();
    assert_eq!(catalog.list().len(), before);

    // Names that would not fit LLM tool-name rules are refused whole, with the reason.
    let long_name = "a-skill-with-a-very-long-name-x";
    let skill = crate::support::runtime()
        .load(
            long_name,
            &crate::support::wasm("hostile"),
            SkillSettings::default(),
        )
        .await
        .unwrap();
    let err = catalog
        .install("a-namespace-that-is-long-as-well", skill)
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 64"), "{err}");
    assert_eq!(
        catalog.list().len(),
        before,
        "nothing of the refused skill was installed"
    );
    let bad = crate::support::runtime()
        .load(
            "Bad_Name",
            &crate::support::wasm("hello"),
            SkillSettings::default(),
        )
        .await
        .unwrap();
    assert!(
        catalog
            .install("demo", bad)
            .unwrap_err()
            .to_string()
            .contains("invalid")
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_calls() {
    use warden::runtime::SkillSettings;

    let catalog = Arc::new(Catalog::new());
    let hostile = crate::support::load("hostile", SkillSettings::default()).await;
    catalog.install("test", hostile.clone()).unwrap();
    let gw = InProcess::start(catalog, Duration::from_secs(10)).await;
    let (addr, token) = (gw.addr.clone(), gw.token.clone());

    let (a, t) = (addr.clone(), token.clone());
    let in_flight = tokio::task::spawn_blocking(move || {
        let body = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"test_hostile__sleep","arguments":{"ms":600},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
        post(
            &a,
            Some(&t),
            "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: test_hostile__sleep\r\n",
            body,
        )
    });
    crate::support::wait_until("the call to start", || hostile.load().0 == 1).await;
    gw.shutdown.cancel();
    // The in-flight call still completes with its result.
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#"\"ok\":true"#) || body.contains(r#""ok":true"#),
        "{body}"
    );
    gw.server.await.unwrap().unwrap();
    // And the listener is gone.
    assert!(std::net::TcpStream::connect(&addr).is_err());
}
