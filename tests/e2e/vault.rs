//! The vault and grants through the real binary: secrets set with the CLI (stdin), grants
//! that inject them into requests to a real HTTP server on loopback, the denials (not
//! granted, host, private and metadata addresses, a name resolving to loopback, a redirect,
//! another environment, a sealed vault), tampering, wrong keys, passphrases, and key
//! rotation killed at random points. A canary secret is then looked for, in every encoding,
//! in everything warden produced: 0 occurrences.

use crate::console::{admin, admin_token, call, ok, records, warden};
use crate::gateway::Up;
use crate::support::{component, warden_bin};
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The canary: special characters so that every encoding differs from the plain form.
const CANARY: &str = "sk_live_C4N4RY-q8Zp+w/T=e&u~9";
/// A secret nobody is granted.
const OTHER: &str = "other-secret-value-5521";

/// Every form of `value` the canary scan looks for.
fn forms(value: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
    let pct = utf8_percent_encode(value, NON_ALPHANUMERIC).to_string();
    // Percent escapes with lower-case hex digits (the value's own letters unchanged).
    let pct_lower: String = pct
        .split('%')
        .enumerate()
        .map(|(i, part)| {
            if i == 0 || part.len() < 2 {
                part.to_owned()
            } else {
                format!("%{}{}", part[..2].to_ascii_lowercase(), &part[2..])
            }
        })
        .collect();
    let mut out = vec![
        value.to_owned(),
        STANDARD.encode(value),
        STANDARD_NO_PAD.encode(value),
        URL_SAFE.encode(value),
        URL_SAFE_NO_PAD.encode(value),
        hex.to_ascii_uppercase(),
        hex,
        pct_lower,
        pct,
    ];
    // The basic-auth credential built from it.
    out.push(STANDARD.encode(format!("bot:{value}")));
    out.sort();
    out.dedup();
    out
}

/// Occurrences of any form of `value` in `haystack`.
fn occurrences(haystack: &[u8], value: &str) -> usize {
    forms(value)
        .iter()
        .map(|f| memchr::memmem::find_iter(haystack, f.as_bytes()).count())
        .sum()
}

/// The upstream's answer to a credential check.
fn verdict(authorized: bool) -> (StatusCode, &'static str) {
    if authorized {
        (StatusCode::OK, "authorized")
    } else {
        (StatusCode::UNAUTHORIZED, "no credential")
    }
}

/// A real HTTP server on loopback that checks injected credentials and echoes them back.
struct Upstream {
    port: u16,
    /// A second server no grant names (redirect target); counts the requests it got.
    forbidden_port: u16,
    forbidden_hits: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

fn upstream(secret: &'static str) -> Upstream {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let forbidden_hits = Arc::new(AtomicUsize::new(0));
    let (port, forbidden_port) = runtime.block_on(async {
        let hits = forbidden_hits.clone();
        let forbidden = Router::new().fallback(move || {
            hits.fetch_add(1, Ordering::SeqCst);
            async { "you should not be here" }
        });
        let fl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let forbidden_port = fl.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(fl, forbidden).await });

        let bearer = format!("Bearer {secret}");
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("bot:{secret}"))
        );
        let auth = |h: &HeaderMap| {
            h.get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let app =
            Router::new()
                .route(
                    "/api/check",
                    axum::routing::get({
                        let bearer = bearer.clone();
                        move |h: HeaderMap| async move { verdict(auth(&h) == bearer) }
                    }),
                )
                .route(
                    "/api/echo",
                    axum::routing::get(move |h: HeaderMap| async move {
                        // Echo the credential in every encoding, in a header and the body.
                        let a = auth(&h);
                        let token = a.trim_start_matches("Bearer ").to_owned();
                        let body = forms(&token).join(" | ");
                        ([("x-echo", a)], format!("you sent: {body}"))
                    }),
                )
                .route(
                    "/api/redirect",
                    axum::routing::get(move || async move {
                        (
                            StatusCode::FOUND,
                            [(
                                "location",
                                format!("http://127.0.0.1:{forbidden_port}/steal"),
                            )],
                            "",
                        )
                    }),
                )
                .route(
                    "/q/check",
                    axum::routing::get(
                        move |q: axum::extract::Query<
                            std::collections::HashMap<String, String>,
                        >| async move {
                            verdict(q.get("api_key").map(String::as_str) == Some(secret))
                        },
                    ),
                )
                .route(
                    "/basic/check",
                    axum::routing::get(
                        move |h: HeaderMap| async move { verdict(auth(&h) == basic) },
                    ),
                );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(l, app).await });
        (port, forbidden_port)
    });
    Upstream {
        port,
        forbidden_port,
        forbidden_hits,
        _runtime: runtime,
    }
}

/// Runs `warden ARGS --data-dir DIR` with `input` on stdin.
fn warden_stdin(dir: &Path, args: &[&str], input: &str) -> std::process::Output {
    let mut child = Command::new(warden_bin())
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("WARDEN_ADMIN_URL")
        .env_remove("WARDEN_ADMIN_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn fails(out: std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Scopes `acme/core/{prod,dev}`, agents `bot` in both, a permit-all policy. Returns the
/// prod and dev service tokens.
fn identities(dir: &Path, up: &Up) -> (String, String) {
    for scope in ["acme", "acme/core", "acme/core/prod", "acme/core/dev"] {
        ok(warden(dir, &["scope", "create", scope]));
    }
    let mut tokens = Vec::new();
    for agent in ["acme/core/prod/bot", "acme/core/dev/bot"] {
        ok(warden(dir, &["agent", "put", agent]));
        let v: Value =
            serde_json::from_str(ok(warden(dir, &["token", "issue", agent, "--json"])).trim())
                .unwrap();
        tokens.push(v["token"].as_str().unwrap().to_owned());
    }
    let (status, v) = admin(
        &up.addr,
        &admin_token(dir),
        "POST",
        "/admin/v1/policies",
        Some(json!({"text": "permit (principal, action, resource);"})),
    );
    assert_eq!(status, 201, "{v}");
    (tokens[0].clone(), tokens[1].clone())
}

/// A tool call's result (`isError`, text).
fn tool(addr: &str, token: &str, name: &str, args: Value, seen: &mut Vec<u8>) -> (bool, String) {
    let (status, _, body) = call(addr, Some(token), name, args);
    seen.extend_from_slice(body.as_bytes());
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let result = &v["result"];
    let text = result["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_owned();
    (result["isError"] == true, text)
}

fn get(url: &str) -> Value {
    json!({"method": "GET", "url": url})
}

fn grant(dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["grant", "add"];
    all.extend_from_slice(args);
    all.push("--json");
    let v: Value = serde_json::from_str(ok(warden(dir, &all)).trim()).unwrap();
    v["grant"]["id"].as_str().unwrap().to_owned()
}

/// A grant for `skill` in acme/core/prod to the loopback upstream at `host` (plain HTTP,
/// private addresses allowed) under `path`, with `extra` flags.
fn grant_local(d: &Path, skill: &str, host: &str, path: &str, extra: &[&str]) -> String {
    let mut args = vec![
        skill,
        "--env",
        "acme/core/prod",
        "--host",
        host,
        "--scheme",
        "http",
        "--allow-private",
        "--path",
        path,
    ];
    args.extend_from_slice(extra);
    grant(d, &args)
}

#[test]
fn secrets_are_injected_denied_where_not_granted_and_never_leak() {
    let up_server = upstream(CANARY);
    let port = up_server.port.to_string();
    let base = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hostile = component("hostile");
    let up = Up::start_env(
        d,
        &["--dev-skill", hostile.to_str().unwrap()],
        &[(
            "WARDEN_LOG",
            "debug,cranelift_codegen=info,regalloc2=info,wasmtime_internal_cranelift=info,wasmtime_cranelift=info",
        )],
    );
    let (prod, dev) = identities(d, &up);
    let adm = admin_token(d);
    let mut seen = Vec::new();

    // Secrets from stdin; the answer names the version, never the value.
    let out = ok(warden_stdin(
        d,
        &["secret", "set", "acme/core/prod/stripe_key"],
        &format!("{CANARY}\n"),
    ));
    assert!(out.contains("version 1"), "{out}");
    seen.extend_from_slice(out.as_bytes());
    ok(warden_stdin(
        d,
        &["secret", "set", "acme/core/prod/other_key"],
        OTHER,
    ));
    // Too short to be masked safely: refused.
    let err = fails(warden_stdin(
        d,
        &["secret", "set", "acme/core/prod/pin"],
        "1234",
    ));
    assert!(err.contains("8 to"), "{err}");

    let host = format!("127.0.0.1:{port}");
    let inject = |path: &str, extra: &[&str]| grant_local(d, "http", &host, path, extra);
    inject(
        "/api",
        &["--inject", "Authorization: Bearer {secret:stripe_key}"],
    );
    let query_grant = inject("/q", &["--inject-query", "api_key={secret:stripe_key}"]);
    inject("/basic", &["--basic-auth", "bot:{secret:stripe_key}"]);
    grant_local(
        d,
        "hostile",
        &host,
        "/api",
        &[
            "--reveal",
            "stripe_key",
            "--inject",
            "Authorization: Bearer {secret:stripe_key}",
        ],
    );
    // Granted hosts whose addresses are not public, without --allow-private.
    grant(
        d,
        &[
            "http",
            "--env",
            "acme/core/prod",
            "--host",
            &format!("localhost:{port}"),
            "--scheme",
            "http",
        ],
    );
    grant(
        d,
        &[
            "http",
            "--env",
            "acme/core/prod",
            "--host",
            "169.254.169.254",
            "--scheme",
            "http",
        ],
    );
    // A malformed grant is refused with the reason.
    let err = fails(warden(
        d,
        &[
            "grant",
            "add",
            "http",
            "--env",
            "acme/core/prod",
            "--host",
            "x.com",
            "--inject",
            "X-Key: literal",
        ],
    ));
    assert!(err.contains("uses no secret"), "{err}");

    // Injection: the upstream checks the credential in each form.
    let http = "warden_http__request";
    for path in ["/api/check", "/q/check", "/basic/check"] {
        let (is_error, text) = tool(
            &up.addr,
            &prod,
            http,
            get(&format!("{base}{path}")),
            &mut seen,
        );
        assert!(!is_error, "{path}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["status"], 200, "{path}: {text}");
        assert_eq!(v["body"], "authorized");
    }
    // The skill never held it: an echoing upstream hands it back masked.
    let (_, text) = tool(
        &up.addr,
        &prod,
        http,
        get(&format!("{base}/api/echo")),
        &mut seen,
    );
    assert!(text.contains("[masked:stripe_key]"), "{text}");
    assert_eq!(occurrences(text.as_bytes(), CANARY), 0, "{text}");

    // A skill that reveals (granted), fetches, logs, returns, fails and panics with
    // everything it saw.
    let leak = "dev_hostile__leak";
    let echo = format!("{base}/api/echo");
    let (is_error, text) = tool(
        &up.addr,
        &prod,
        leak,
        json!({"secret": "stripe_key", "url": echo}),
        &mut seen,
    );
    assert!(!is_error, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["revealed"], "[masked:stripe_key]", "{text}");
    assert!(
        v["fetched"].as_str().unwrap().contains("status 200"),
        "{text}"
    );
    let (is_error, text) = tool(
        &up.addr,
        &prod,
        leak,
        json!({"secret": "stripe_key", "url": echo, "fail": true}),
        &mut seen,
    );
    assert!(
        is_error && text.contains("leaking [masked:stripe_key]"),
        "{text}"
    );
    let (is_error, text) = tool(
        &up.addr,
        &prod,
        leak,
        json!({"secret": "stripe_key", "panic": true}),
        &mut seen,
    );
    assert!(is_error && text.contains("panicked"), "{text}");
    // Not granted: denied (the other secret exists, but no grant names it).
    let (_, text) = tool(
        &up.addr,
        &prod,
        leak,
        json!({"secret": "other_key"}),
        &mut seen,
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["revealed"], "not revealed: secret access denied",
        "{text}"
    );
    // Another skill's secret (granted to `http` for injection only) and another
    // environment's grant: denied too.
    ok(warden_stdin(
        d,
        &["secret", "set", "acme/core/prod/http_only"],
        OTHER,
    ));
    grant_local(
        d,
        "http",
        &host,
        "/other",
        &["--inject", "X-Key: {secret:http_only}"],
    );
    for (token, secret) in [(&prod, "http_only"), (&dev, "stripe_key")] {
        let (_, text) = tool(
            &up.addr,
            token,
            leak,
            json!({ "secret": secret }),
            &mut seen,
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["revealed"], "not revealed: secret access denied",
            "{secret}: {text}"
        );
    }

    // Denials, each a clear error.
    let denied = |token: &str, url: String, why: &str, seen: &mut Vec<u8>| {
        let (is_error, text) = tool(&up.addr, token, http, get(&url), seen);
        assert!(is_error, "{url}: {text}");
        assert!(
            text.contains("warden refused") && text.contains(why),
            "{url}: {text}"
        );
    };
    let forbidden = format!("http://127.0.0.1:{}/", up_server.forbidden_port);
    denied(
        &prod,
        forbidden,
        "no grant lets skill `warden/http` reach this host",
        &mut seen,
    );
    denied(
        &prod,
        format!("{base}/elsewhere"),
        "allows this scheme, method or path",
        &mut seen,
    );
    denied(
        &prod,
        format!("http://localhost:{port}/api/check"),
        "resolves to",
        &mut seen,
    );
    denied(
        &prod,
        "http://169.254.169.254/latest/meta-data/".into(),
        "not a public address",
        &mut seen,
    );
    denied(
        &prod,
        format!("{base}/api/redirect"),
        "no grant lets skill `warden/http` reach this host",
        &mut seen,
    );
    assert_eq!(
        up_server.forbidden_hits.load(Ordering::SeqCst),
        0,
        "a refused destination was reached"
    );
    denied(
        &dev,
        format!("{base}/api/check"),
        "in acme/core/dev",
        &mut seen,
    );

    // Sealed: calls that need a secret fail clearly; everything else works.
    let out = ok(warden(d, &["vault", "seal"]));
    assert!(out.contains("sealed"), "{out}");
    denied(
        &prod,
        format!("{base}/api/check"),
        "the vault is sealed",
        &mut seen,
    );
    let (is_error, _) = tool(
        &up.addr,
        &prod,
        "warden_text__stats",
        json!({"text": "a b"}),
        &mut seen,
    );
    assert!(!is_error);
    let out = ok(warden(d, &["vault", "unseal"]));
    assert!(out.contains("unsealed"), "{out}");
    // A removed grant no longer applies, from the next call on.
    ok(warden(d, &["grant", "rm", &query_grant]));
    denied(
        &prod,
        format!("{base}/q/check"),
        "allows this scheme, method or path",
        &mut seen,
    );
    let (is_error, _) = tool(
        &up.addr,
        &prod,
        http,
        get(&format!("{base}/api/check")),
        &mut seen,
    );
    assert!(!is_error);

    // The trail names what was used and refused: hosts, grants, secret names.
    let trail = records(&up.addr, &adm, "principal=acme/core/prod/bot");
    let uses: Vec<&Value> = trail
        .iter()
        .flat_map(|r| r["capabilities"].as_array().into_iter().flatten())
        .collect();
    assert!(uses.iter().any(|u| u["kind"] == "egress"
        && u["decision"] == "allowed"
        && u["secrets"] == json!(["stripe_key"])));
    assert!(uses.iter().any(|u| u["kind"] == "reveal"
        && u["decision"] == "allowed"
        && u["target"] == "stripe_key"));
    assert!(
        uses.iter().any(|u| u["kind"] == "reveal"
            && u["decision"] == "denied"
            && u["target"] == "other_key")
    );
    assert!(uses.iter().any(|u| {
        u["decision"] == "denied"
            && u["reason"]
                .as_str()
                .is_some_and(|r| r.contains("not a public address"))
    }));
    assert!(
        uses.iter().any(|u| u["decision"] == "denied"
            && u["reason"].as_str().is_some_and(|r| r.contains("sealed")))
    );

    // Everything an operator can read: listings, history, grants, status, metrics.
    let mut answers = Vec::new();
    for path in [
        "/admin/v1/secrets?all=true",
        "/admin/v1/secrets/history?path=acme/core/prod/stripe_key",
        "/admin/v1/grants?all=true",
        "/admin/v1/vault",
        "/admin/v1/vault/check",
        "/admin/v1/audit?limit=1000",
        "/metrics",
    ] {
        let (status, v) = admin(&up.addr, &adm, "GET", path, None);
        assert_eq!(status, 200, "{path}: {v}");
        answers.extend_from_slice(v.to_string().as_bytes());
    }
    let listing = ok(warden(d, &["secret", "list"]));
    assert!(listing.contains("acme/core/prod/stripe_key"), "{listing}");
    answers.extend_from_slice(listing.as_bytes());
    let history = ok(warden(
        d,
        &["secret", "history", "acme/core/prod/stripe_key"],
    ));
    answers.extend_from_slice(history.as_bytes());

    let logs = up.logs.lock().unwrap().clone();
    assert!(
        logs.contains("DEBUG"),
        "the gateway did not log at debug level"
    );
    let status = up.stop();
    assert!(status.success());

    // The canary, in every encoding: 0 everywhere.
    assert_eq!(
        occurrences(&seen, CANARY),
        0,
        "in tool results or CLI output"
    );
    assert_eq!(occurrences(logs.as_bytes(), CANARY), 0, "in the debug log");
    assert_eq!(
        occurrences(&answers, CANARY),
        0,
        "in the admin API's answers"
    );
    assert_eq!(
        occurrences(&seen, OTHER) + occurrences(logs.as_bytes(), OTHER),
        0
    );
    let mut files = 0;
    let mut stack = vec![d.to_path_buf()];
    while let Some(p) = stack.pop() {
        for entry in std::fs::read_dir(&p).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                files += 1;
                assert_eq!(occurrences(&bytes, CANARY), 0, "in {}", path.display());
                assert_eq!(occurrences(&bytes, OTHER), 0, "in {}", path.display());
            }
        }
    }
    assert!(files >= 5, "the data directory scan saw only {files} files");
    eprintln!(
        "canary occurrences in results, logs, audit, metrics, admin answers and {files} data-dir files: 0 ({} forms)",
        forms(CANARY).len()
    );
}

fn vault_status(d: &Path) -> Value {
    serde_json::from_str(ok(warden(d, &["vault", "status", "--json"])).trim()).unwrap()
}

fn set_secret(addr: &str, adm: &str, path: &str, value: &str) {
    let (status, v) = admin(
        addr,
        adm,
        "POST",
        "/admin/v1/secrets",
        Some(json!({"path": path, "value": value})),
    );
    assert_eq!(status, 201, "{v}");
}

#[test]
fn wrong_keys_tampering_and_passphrases_fail_clearly() {
    let up_server = upstream(CANARY);
    let base = format!("http://127.0.0.1:{}", up_server.port);
    let host = format!("127.0.0.1:{}", up_server.port);
    let http = "warden_http__request";
    let mut seen = Vec::new();
    let grant_api = |d: &Path, name: &str, path: &str| {
        let header = format!("Authorization: Bearer {{secret:{name}}}");
        grant_local(d, "http", &host, path, &["--inject", &header])
    };

    // The root key in WARDEN_VAULT_KEY: no key file; without the variable the vault stays
    // sealed and says why, and only calls that need a secret fail.
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = Up::start_env(d, &[], &[("WARDEN_VAULT_KEY", &key)]);
    let v = vault_status(d);
    assert_eq!(
        (v["source"].as_str(), v["sealed"].as_bool()),
        (Some("env"), Some(false)),
        "{v}"
    );
    assert!(!d.join("vault.key").exists());
    let (prod, _) = identities(d, &up);
    let adm = admin_token(d);
    set_secret(&up.addr, &adm, "acme/core/prod/stripe_key", CANARY);
    set_secret(&up.addr, &adm, "acme/core/prod/b", OTHER);
    grant_api(d, "stripe_key", "/api");
    let (is_error, text) = tool(
        &up.addr,
        &prod,
        http,
        get(&format!("{base}/api/check")),
        &mut seen,
    );
    assert!(!is_error && text.contains("authorized"), "{text}");
    assert!(up.stop().success());
    let up = Up::start_with(d, &["--issue-token"]);
    let v = vault_status(d);
    assert_eq!(v["sealed"], true, "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("WARDEN_VAULT_KEY"),
        "{v}"
    );
    let (is_error, text) = tool(
        &up.addr,
        &prod,
        http,
        get(&format!("{base}/api/check")),
        &mut seen,
    );
    assert!(is_error && text.contains("the vault is sealed"), "{text}");
    let (is_error, _) = tool(
        &up.addr,
        &prod,
        "warden_text__stats",
        json!({"text": "x"}),
        &mut seen,
    );
    assert!(!is_error);
    assert!(up.stop().success());

    // Tampering, on the stopped gateway's store: one flipped ciphertext byte, and a
    // ciphertext copied under another name. Neither decrypts; the gateway stays up.
    {
        use warden::storage::Tables as _;
        let store = warden::storage::Store::open(&d.join("warden.redb")).unwrap();
        let mut a = store.secret("acme/core/prod/stripe_key").unwrap().unwrap();
        let c = a.current.as_mut().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut bytes = b64.decode(&c.ciphertext).unwrap();
        bytes[30] ^= 0x01;
        c.ciphertext = b64.encode(bytes);
        store.put_secret("acme/core/prod/stripe_key", &a).unwrap();
        let b = store.secret("acme/core/prod/b").unwrap().unwrap();
        store.put_secret("acme/core/prod/moved", &b).unwrap();
    }
    let up = Up::start_env(d, &["--issue-token"], &[("WARDEN_VAULT_KEY", &key)]);
    let out = warden(d, &["vault", "check"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("1 of 3 secret(s) decrypt"), "{stdout}");
    assert!(
        stdout.contains("unreadable: acme/core/prod/stripe_key"),
        "{stdout}"
    );
    assert!(
        stdout.contains("unreadable: acme/core/prod/moved"),
        "{stdout}"
    );
    let (is_error, text) = tool(
        &up.addr,
        &prod,
        http,
        get(&format!("{base}/api/check")),
        &mut seen,
    );
    assert!(is_error && text.contains("does not decrypt"), "{text}");
    grant_api(d, "moved", "/api/echo");
    let (is_error, text) = tool(
        &up.addr,
        &prod,
        http,
        get(&format!("{base}/api/echo")),
        &mut seen,
    );
    assert!(
        is_error && text.contains("secret `moved` does not decrypt"),
        "{text}"
    );
    let (is_error, _) = tool(
        &up.addr,
        &prod,
        "warden_text__stats",
        json!({"text": "x"}),
        &mut seen,
    );
    assert!(!is_error, "the gateway must keep serving");
    assert!(up.stop().success());

    // A key file: another key does not open the vault; a key file others can read is
    // refused; the right key, private again, opens it.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = Up::start(d);
    assert_eq!(vault_status(d)["source"], "file");
    let key_file = d.join("vault.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (prod, _) = identities(d, &up);
    set_secret(
        &up.addr,
        &admin_token(d),
        "acme/core/prod/stripe_key",
        CANARY,
    );
    grant_api(d, "stripe_key", "/api");
    assert!(up.stop().success());
    let original = std::fs::read(&key_file).unwrap();
    std::fs::write(
        &key_file,
        base64::engine::general_purpose::STANDARD.encode([9u8; 32]),
    )
    .unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let up = Up::start_with(d, &["--issue-token"]);
    let v = vault_status(d);
    assert!(
        v["sealed"] == true && v["reason"].as_str().unwrap().contains("does not open"),
        "{v}"
    );
    let (is_error, text) = tool(
        &up.addr,
        &prod,
        http,
        get(&format!("{base}/api/check")),
        &mut seen,
    );
    assert!(is_error && text.contains("the vault is sealed"), "{text}");
    assert!(up.stop().success());
    std::fs::write(&key_file, &original).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let up = Up::start_with(d, &["--issue-token"]);
    let v = vault_status(d);
    assert!(
        v["sealed"] == true && v["reason"].as_str().unwrap().contains("readable by others"),
        "{v}"
    );
    assert!(up.stop().success());
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let up = Up::start_with(d, &["--issue-token"]);
    let (is_error, text) = tool(
        &up.addr,
        &prod,
        http,
        get(&format!("{base}/api/check")),
        &mut seen,
    );
    assert!(!is_error && text.contains("authorized"), "{text}");
    assert!(up.stop().success());

    // A passphrase: sealed from the start; the first unseal sets it; a restart is sealed
    // again until the right passphrase is given; no key file is ever written.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = Up::start_with(d, &["--vault-passphrase"]);
    let v = vault_status(d);
    assert!(
        v["sealed"] == true && v["initialized"] == false && v["source"] == "passphrase",
        "{v}"
    );
    let err = fails(warden_stdin(d, &["vault", "unseal"], "too short"));
    assert!(err.contains("at least 12"), "{err}");
    ok(warden_stdin(
        d,
        &["vault", "unseal"],
        "correct horse battery staple\n",
    ));
    let (prod, _) = identities(d, &up);
    set_secret(
        &up.addr,
        &admin_token(d),
        "acme/core/prod/stripe_key",
        CANARY,
    );
    grant_api(d, "stripe_key", "/api");
    let (is_error, _) = tool(
        &up.addr,
        &prod,
        http,
        get(&format!("{base}/api/check")),
        &mut seen,
    );
    assert!(!is_error);
    assert!(up.stop().success());
    let up = Up::start_with(d, &["--vault-passphrase", "--issue-token"]);
    assert_eq!(vault_status(d)["sealed"], true);
    let (is_error, text) = tool(
        &up.addr,
        &prod,
        http,
        get(&format!("{base}/api/check")),
        &mut seen,
    );
    assert!(is_error && text.contains("the vault is sealed"), "{text}");
    let err = fails(warden_stdin(
        d,
        &["vault", "unseal"],
        "correct horse battery stapler\n",
    ));
    assert!(err.contains("wrong passphrase"), "{err}");
    ok(warden_stdin(
        d,
        &["vault", "unseal"],
        "correct horse battery staple\n",
    ));
    let (is_error, text) = tool(
        &up.addr,
        &prod,
        http,
        get(&format!("{base}/api/check")),
        &mut seen,
    );
    assert!(!is_error && text.contains("authorized"), "{text}");
    assert!(up.stop().success());
    assert!(!d.join("vault.key").exists());
    assert_eq!(occurrences(&seen, CANARY), 0);
}

/// A tiny deterministic generator (the seed is printed, so a failing run can be replayed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn key_rotation_killed_at_random_points_leaves_every_secret_readable() {
    const SECRETS: usize = 64;
    const RUNS: usize = 50;
    let up_server = upstream(CANARY);
    let base = format!("http://127.0.0.1:{}", up_server.port);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = Up::start(d);
    let (prod, _) = identities(d, &up);
    let adm = admin_token(d);
    set_secret(&up.addr, &adm, "acme/core/prod/stripe_key", CANARY);
    for i in 1..SECRETS {
        set_secret(
            &up.addr,
            &adm,
            &format!("acme/core/prod/s{i}"),
            &format!("value-number-{i:04}"),
        );
    }
    grant_local(
        d,
        "http",
        &format!("127.0.0.1:{}", up_server.port),
        "/",
        &["--inject", "Authorization: Bearer {secret:stripe_key}"],
    );
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("rotation crash test seed: {seed}");
    let mut rng = Rng(seed);
    let mut up = Some(up);
    let (mut aborted, mut killed, mut killed_unanswered) = (0, 0, 0);
    for run in 0..RUNS {
        // Every secret must open after the previous crash.
        let current = up.take().unwrap();
        let (status, check) = admin(&current.addr, &adm, "GET", "/admin/v1/vault/check", None);
        assert_eq!(status, 200, "run {run}: {check}");
        assert_eq!(
            check["readable"], SECRETS,
            "run {run} (seed {seed}): {check}"
        );
        let mut current = current;
        if run % 2 == 0 {
            // Restart with a fault injected after 0-3 of the 4 re-wrap batches.
            current.child.kill().unwrap();
            current.child.wait().unwrap();
            let batches = rng.below(4).to_string();
            let mut next = Up::start_env(
                d,
                &["--issue-token"],
                &[("WARDEN_FAILPOINTS", &format!("vault-rotate:{batches}"))],
            );
            let (status, v) = admin(&next.addr, &adm, "POST", "/admin/v1/vault/rotate-key", None);
            assert_eq!(status, 0, "the rotation should have aborted: {v}");
            let deadline = Instant::now() + Duration::from_secs(30);
            while next.child.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "the failpoint did not fire");
                std::thread::sleep(Duration::from_millis(10));
            }
            aborted += 1;
        } else {
            // kill -9 at a random moment of a rotation.
            let addr = current.addr.clone();
            let token = adm.clone();
            let rotation = std::thread::spawn(move || {
                admin(&addr, &token, "POST", "/admin/v1/vault/rotate-key", None)
            });
            std::thread::sleep(Duration::from_millis(rng.below(60)));
            current.child.kill().unwrap();
            current.child.wait().unwrap();
            if rotation.join().map_or(true, |(status, _)| status == 0) {
                killed_unanswered += 1;
            }
            killed += 1;
        }
        up = Some(Up::start_with(d, &["--issue-token"]));
    }
    // After every crash: all readable, a clean rotation leaves one key version, and the
    // injected value is still the original (the upstream checks it).
    let up = up.take().unwrap();
    let (_, check) = admin(&up.addr, &adm, "GET", "/admin/v1/vault/check", None);
    assert_eq!(check["readable"], SECRETS, "{check}");
    let (status, v) = admin(&up.addr, &adm, "POST", "/admin/v1/vault/rotate-key", None);
    assert_eq!(status, 200, "{v}");
    let versions = v["status"]["key_versions"].as_array().unwrap().clone();
    assert_eq!(versions.len(), 1, "{v}");
    assert_eq!(versions[0], v["key_version"]);
    let (_, check) = admin(&up.addr, &adm, "GET", "/admin/v1/vault/check", None);
    assert_eq!(check["readable"], SECRETS, "{check}");
    let mut seen = Vec::new();
    let (is_error, text) = tool(
        &up.addr,
        &prod,
        "warden_http__request",
        get(&format!("{base}/api/check")),
        &mut seen,
    );
    assert!(!is_error && text.contains("authorized"), "{text}");
    assert!(up.stop().success());
    eprintln!(
        "rotation crash runs: {aborted} aborted by the failpoint, {killed} killed with SIGKILL \
         ({killed_unanswered} before the rotation answered); 0 secrets lost"
    );
}
