//! Human approvals through the real binary: a call that policy marks `@approval(...)` waits
//! for a decision cast with `warden approvals ...` by approver admins, and the agent (the
//! official TypeScript SDK, or raw stateless HTTP) gets the result, the denial's note, the
//! modified call, or a clear "pending"/"expired" answer. Quorums count distinct approvers of
//! the right group and never the agent's owner; agents and approvers of other workspaces
//! are refused and recorded; an approval is bound to its agent, its arguments and the
//! skill's build (a new build installed voids it); a call waiting at shutdown answers
//! "pending" at once, and its task survives the restart and is decided after it. Workspace
//! webhooks are signed and retried off the call path, and a client that takes MCP tasks
//! polls for the decision instead of holding its request open, across a restart too.

use crate::console::{admin, admin_token, ok, records, warden};
use crate::gateway::{Up, post, text_of};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const POLICY: &str = r#"
@id("hash-needs-approval")
@approval("required")
permit (principal in Warden::Group::"payers", action, resource == Warden::Tool::"warden_text__hash");

@id("stats-needs-two-of-finance")
@approval("2-of:group:finance")
permit (principal in Warden::Group::"payers", action, resource == Warden::Tool::"warden_text__stats");

@id("never-hash-secrets")
@reason("secrets are never hashed through the gateway")
forbid (principal, action, resource == Warden::Tool::"warden_text__hash")
when { context.arguments.hasTag("text") && context.arguments.getTag("text") like "*secret*" };
"#;

const SHA256_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
const SHA256_ABCD: &str = "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589";

/// A stateless (2026-07-28) `tools/call` stating `reason`: the parsed JSON-RPC answer.
fn call(addr: &str, token: &str, tool: &str, args: &Value, reason: &str) -> Value {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": tool, "arguments": args, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "warden/reason": reason,
        }},
    })
    .to_string();
    let (status, _, text) = post(
        addr,
        Some(token),
        &format!(
            "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: {tool}\r\n"
        ),
        &body,
    );
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// [`call`] on another thread (it waits for the decision).
fn call_later(
    addr: &str,
    token: &str,
    tool: &'static str,
    args: Value,
) -> std::thread::JoinHandle<Value> {
    let (addr, token) = (addr.to_owned(), token.to_owned());
    std::thread::spawn(move || call(&addr, &token, tool, &args, "the e2e suite asks"))
}

/// The pending task of `tool` with `args` (polled: it appears once the call arrives).
fn pending_task(d: &Path, tool: &str, args: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = ok(warden(
            d,
            &["approvals", "list", "--state", "pending", "--json"],
        ));
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        if let Some(t) = v["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tool"] == tool && t["arguments"] == *args)
        {
            return t.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no pending task for {tool} {args}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The id of [`pending_task`].
fn pending_id(d: &Path, tool: &str, args: &Value) -> String {
    pending_task(d, tool, args)["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Applies `text` as the gateway's policy set with the CLI.
pub(crate) fn apply_policy(d: &Path, text: &str) {
    let file = d.join("policy.cedar");
    std::fs::write(&file, text).unwrap();
    ok(warden(d, &["policy", "apply", file.to_str().unwrap()]));
}

/// Runs a test client script (in tests/clients) with `args` and returns its JSON report
/// (the last line it prints).
pub(crate) fn node_report(script: &str, args: &[&str]) -> Value {
    let out = Command::new("node")
        .current_dir(crate::gateway::npm_ready())
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Puts the agent `path` (with `extra` options) and issues it a token.
pub(crate) fn agent_token(d: &Path, path: &str, extra: &[&str]) -> String {
    let mut args = vec!["agent", "put", path];
    args.extend_from_slice(extra);
    ok(warden(d, &args));
    let v: Value =
        serde_json::from_str(ok(warden(d, &["token", "issue", path, "--json"])).trim()).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// Runs the CLI as the approver holding `token`.
fn as_approver(d: &Path, token: &str, args: &[&str]) -> std::process::Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(&["--admin-token", token]);
    warden(d, &all)
}

fn fails(out: std::process::Output, why: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "expected a failure ({why})");
    assert!(err.contains(why), "expected `{why}` in: {err}");
    err
}

fn is_error(answer: &Value) -> bool {
    answer["result"]["isError"] == json!(true)
}

fn answer_text(answer: &Value) -> String {
    text_of(&answer["result"])
}

/// Issues an approver admin token for `name`.
fn approver_token(d: &Path, name: &str) -> String {
    let v: Value = serde_json::from_str(
        ok(warden(
            d,
            &[
                "token", "issue", name, "--admin", "--role", "approver", "--json",
            ],
        ))
        .trim(),
    )
    .unwrap();
    v["token"].as_str().unwrap().to_owned()
}

struct Setup {
    bot: String,
    /// Another agent of the same group.
    bot2: String,
    alice: String,
    fin1: String,
    fin2: String,
    olga: String,
    eve: String,
    oscar: String,
}

fn set_up(d: &Path) -> Setup {
    for scope in ["acme", "acme/pay", "acme/pay/prod", "acme/other"] {
        ok(warden(d, &["scope", "create", scope]));
    }
    let bot = agent_token(
        d,
        "acme/pay/prod/bot",
        &["--group", "payers", "--owner", "olga"],
    );
    let bot2 = agent_token(d, "acme/pay/prod/bot2", &["--group", "payers"]);
    for (name, scope, groups) in [
        ("alice", "acme/pay", vec![]),
        ("fin1", "acme", vec!["finance"]),
        ("fin2", "acme/pay", vec!["finance"]),
        ("olga", "acme", vec!["finance"]),
        ("eve", "acme/other", vec!["finance"]),
        ("oscar", "acme/pay", vec!["it"]),
    ] {
        let mut args = vec!["approver", "set", name, "--scope", scope];
        for g in &groups {
            args.extend_from_slice(&["--group", g]);
        }
        ok(warden(d, &args));
    }
    apply_policy(d, POLICY);
    Setup {
        bot,
        bot2,
        alice: approver_token(d, "alice"),
        fin1: approver_token(d, "fin1"),
        fin2: approver_token(d, "fin2"),
        olga: approver_token(d, "olga"),
        eve: approver_token(d, "eve"),
        oscar: approver_token(d, "oscar"),
    }
}

#[test]
fn approvals_are_decided_by_humans_bound_to_the_call_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = Up::start_with(d, &["--approval-wait-secs", "8"]);
    let s = set_up(d);
    let addr = up.addr.clone();
    let operator = admin_token(d);

    // 1. Approved while the official TypeScript client waits: it hears progress, then gets
    //    the result. The approver saw the reason, the arguments and the risk hints.
    let node = {
        let (url, bot) = (up.url.clone(), s.bot.clone());
        std::thread::spawn(move || {
            node_report(
                "approval-call.mjs",
                &[
                    "--url",
                    &url,
                    "--token",
                    &bot,
                    "--call",
                    "warden_text__hash",
                    "--args",
                    r#"{"text":"abc"}"#,
                    "--reason",
                    "checking the invoice digest",
                ],
            )
        })
    };
    let task = pending_task(d, "warden_text__hash", &json!({"text": "abc"}));
    let id = task["id"].as_str().unwrap().to_owned();
    assert_eq!(task["reason"], "checking the invoice digest");
    assert_eq!(task["agent"], "acme/pay/prod/bot");
    assert_eq!(task["quorums"], json!(["required"]));
    assert_eq!(task["policies"], json!(["hash-needs-approval"]));
    assert!(task["description"].as_str().unwrap().contains("SHA-256"));
    assert_eq!(task["annotations"]["readOnlyHint"], true);
    assert_eq!(task["missing"], json!(["1 more approver"]));
    let shown = ok(as_approver(d, &s.alice, &["approvals", "show", &id]));
    assert!(shown.contains("checking the invoice digest"), "{shown}");
    assert!(shown.contains("\"abc\""), "{shown}");
    // Let the client hear at least one progress notification before deciding.
    std::thread::sleep(Duration::from_millis(5_500));
    let out = ok(as_approver(d, &s.alice, &["approvals", "approve", &id]));
    assert!(out.contains("approved"), "{out}");
    let report = node.join().unwrap();
    assert!(report["error"].is_null(), "{report}");
    assert_eq!(report["result"]["isError"], false, "{report}");
    assert!(text_of(&report["result"]).contains(SHA256_ABC), "{report}");
    assert!(
        !report["progress"].as_array().unwrap().is_empty(),
        "no progress while waiting: {report}"
    );
    // Single use: the task is executed and cannot be voted on again.
    let t: Value = serde_json::from_str(
        ok(as_approver(
            d,
            &s.alice,
            &["approvals", "show", &id, "--json"],
        ))
        .trim(),
    )
    .unwrap();
    assert_eq!(t["state"], "executed");
    fails(
        as_approver(d, &s.fin2, &["approvals", "approve", &id]),
        "not pending",
    );

    // 2. Denied: the agent gets `isError` with the note, and nothing ran.
    let waiting = call_later(&addr, &s.bot, "warden_text__hash", json!({"text": "abcd"}));
    let task = pending_task(d, "warden_text__hash", &json!({"text": "abcd"}));
    let id = task["id"].as_str().unwrap().to_owned();
    fails(
        as_approver(d, &s.alice, &["approvals", "deny", &id, "--note", " "]),
        "needs a note",
    );
    ok(as_approver(
        d,
        &s.alice,
        &["approvals", "deny", &id, "--note", "not during the freeze"],
    ));
    let answer = waiting.join().unwrap();
    assert!(is_error(&answer), "{answer}");
    let text = answer_text(&answer);
    assert!(
        text.contains("denied by an approver: not during the freeze"),
        "{text}"
    );
    assert!(!text.contains(SHA256_ABCD), "{text}");

    // 3. Modified: the arguments are checked (schema, then policy), and the call runs with
    //    the approver's arguments; the agent is told.
    let waiting = call_later(&addr, &s.bot, "warden_text__hash", json!({"text": "abcd "}));
    let task = pending_task(d, "warden_text__hash", &json!({"text": "abcd "}));
    let id = task["id"].as_str().unwrap().to_owned();
    fails(
        as_approver(
            d,
            &s.alice,
            &["approvals", "modify", &id, "--args", r#"{"text":7}"#],
        ),
        "do not fit",
    );
    fails(
        as_approver(
            d,
            &s.alice,
            &[
                "approvals",
                "modify",
                &id,
                "--args",
                r#"{"text":"my secret"}"#,
            ],
        ),
        "policy does not allow",
    );
    fails(
        as_approver(d, &s.alice, &["approvals", "modify", &id, "--args", "[1]"]),
        "JSON object",
    );
    ok(as_approver(
        d,
        &s.alice,
        &[
            "approvals",
            "modify",
            &id,
            "--args",
            r#"{"text":"abcd"}"#,
            "--note",
            "trailing space",
        ],
    ));
    let answer = waiting.join().unwrap();
    assert!(!is_error(&answer), "{answer}");
    let text = answer_text(&answer);
    assert!(text.contains("modified the arguments"), "{text}");
    assert!(text.contains("trailing space"), "{text}");
    assert!(text.contains(SHA256_ABCD), "{text}");

    // 4. A 2-of-finance quorum: only distinct finance approvers of the workspace count;
    //    the agent's owner, another group and another workspace are refused.
    let args = json!({"text": "one two"});
    let waiting = call_later(&addr, &s.bot, "warden_text__stats", args.clone());
    let task = pending_task(d, "warden_text__stats", &args);
    let id = task["id"].as_str().unwrap().to_owned();
    let quorum_id = id.clone();
    fails(
        as_approver(d, &s.olga, &["approvals", "approve", &id]),
        "cannot decide its requests",
    );
    fails(
        as_approver(d, &s.oscar, &["approvals", "approve", &id]),
        "none of its groups",
    );
    fails(
        as_approver(d, &s.eve, &["approvals", "approve", &id]),
        "no approval task",
    );
    let out = ok(as_approver(d, &s.fin1, &["approvals", "approve", &id]));
    assert!(out.contains("1 more approver of group finance"), "{out}");
    fails(
        as_approver(d, &s.fin1, &["approvals", "approve", &id]),
        "already voted",
    );
    ok(as_approver(d, &s.fin2, &["approvals", "approve", &id]));
    let answer = waiting.join().unwrap();
    assert!(!is_error(&answer), "{answer}");
    assert_eq!(
        answer["result"]["structuredContent"]["words"], 2,
        "{answer}"
    );

    // 5. Agents never decide: an agent token on the decision endpoint is 403 and recorded.
    let (status, v) = admin(
        &addr,
        &s.bot,
        "POST",
        &format!("/admin/v1/approvals/{id}/approve"),
        Some(json!({})),
    );
    assert_eq!(status, 403, "{v}");
    // A deeply nested or oversized modification is refused before it is parsed.
    let deep = format!("{{\"arguments\":{}1{}}}", "[".repeat(100), "]".repeat(100));
    let (status, _, _) = crate::gateway::raw(
        &addr,
        &format!(
            "POST /admin/v1/approvals/{id}/modify HTTP/1.1\r\nHost: {addr}\r\n\
             Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{deep}",
            s.alice,
            deep.len()
        ),
    );
    assert_eq!(status, 400);
    let huge = format!(
        "{{\"arguments\":{{\"text\":\"{}\"}}}}",
        "x".repeat(300 * 1024)
    );
    let (status, _) = admin(
        &addr,
        &s.alice,
        "POST",
        &format!("/admin/v1/approvals/{id}/modify"),
        Some(serde_json::from_str(&huge).unwrap()),
    );
    assert_eq!(status, 413);

    // 6. Nobody decides within the wait: the agent hears "pending" and how to resume.
    let args = json!({"text": "later"});
    let answer = call(&addr, &s.bot, "warden_text__hash", &args, "nightly digest");
    assert!(is_error(&answer), "{answer}");
    let text = answer_text(&answer);
    assert!(text.contains("approval pending"), "{text}");
    assert!(text.contains("same arguments"), "{text}");
    let task = pending_task(d, "warden_text__hash", &args);
    let id = task["id"].as_str().unwrap().to_owned();
    assert!(text.contains(&id), "{text}");

    ok(as_approver(d, &s.alice, &["approvals", "approve", &id]));
    // The approval is bound to the agent and the arguments: another agent's identical call
    // and the agent's call with other arguments each wait for a decision of their own.
    let other = call_later(&addr, &s.bot2, "warden_text__hash", args.clone());
    let changed_args = json!({"text": "later!"});
    let changed = call_later(&addr, &s.bot, "warden_text__hash", changed_args.clone());
    let theirs = pending_task(d, "warden_text__hash", &args);
    assert_eq!(theirs["agent"], "acme/pay/prod/bot2");
    assert_ne!(theirs["id"], json!(id));
    let mine = pending_task(d, "warden_text__hash", &changed_args);
    for (task, waiting) in [(theirs, other), (mine, changed)] {
        let tid = task["id"].as_str().unwrap();
        ok(as_approver(
            d,
            &s.alice,
            &["approvals", "deny", tid, "--note", "not this one"],
        ));
        let answer = waiting.join().unwrap();
        assert!(is_error(&answer), "{answer}");
        assert!(answer_text(&answer).contains("not this one"), "{answer}");
    }

    // A call still waiting when the gateway shuts down is answered "pending" at once (the
    // shutdown does not wait for a human, nor cut the call off).
    let held_args = json!({"text": "held"});
    let held = call_later(&addr, &s.bot, "warden_text__hash", held_args.clone());
    let held_id = pending_id(d, "warden_text__hash", &held_args);
    assert!(up.stop().success());
    let answer = held.join().unwrap();
    assert!(is_error(&answer), "{answer}");
    let text = answer_text(&answer);
    assert!(text.contains("approval pending"), "{text}");
    assert!(text.contains("restarting"), "{text}");
    assert!(text.contains(&held_id), "{text}");

    // ... the gateway restarts: the pending task is still pending and decidable, the
    // approved one still unused, and the agent's retries pick both up at once.
    let up = Up::start_with(
        d,
        &["--approval-wait-secs", "8", "--approval-ttl-secs", "2"],
    );
    let addr = up.addr.clone();
    let state_of = |task: &str| -> Value {
        let out = ok(as_approver(
            d,
            &s.alice,
            &["approvals", "show", task, "--json"],
        ));
        serde_json::from_str::<Value>(out.trim()).unwrap()["state"].clone()
    };
    assert_eq!(state_of(&held_id), "pending");
    assert_eq!(state_of(&id), "approved");
    ok(as_approver(
        d,
        &s.alice,
        &["approvals", "approve", &held_id],
    ));
    let started = Instant::now();
    for (a, reason) in [(&args, "retry"), (&held_args, "retry held")] {
        let answer = call(&addr, &s.bot, "warden_text__hash", a, reason);
        assert!(!is_error(&answer), "{answer}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the retries waited"
    );
    assert_eq!(state_of(&held_id), "executed");
    // A replay of the executed approval opens a new task instead of running.
    // 7. Expiry (this gateway's tasks live 2 s): the waiting agent gets a clear error.
    let answer = call(&addr, &s.bot, "warden_text__hash", &args, "replay");
    assert!(is_error(&answer), "{answer}");
    let text = answer_text(&answer);
    assert!(text.contains("expired"), "{text}");

    // Every step is in the trail: requested, each vote and by whom, executed, refusals.
    let recs = records(&addr, &operator, "since_ms=0");
    let has = |f: &dyn Fn(&Value) -> bool| recs.iter().any(f);
    assert!(has(&|r| r["request"] == "approval/requested"
        && r["approval"] == json!(id)
        && r["principal"] == "acme/pay/prod/bot"));
    assert!(has(&|r| r["principal"] == "admin:alice"
        && r["approval"] == json!(id)
        && r["vote"] == "approve"
        && r["outcome"] == "ok"));
    assert!(has(&|r| r["request"] == "tools/call"
        && r["approval"] == json!(id)
        && r["vote"] == "executed"
        && r["outcome"] == "ok"));
    assert!(has(&|r| r["principal"] == "admin:olga"
        && r["vote"] == "approve"
        && r["outcome"] == "denied"));
    // The approver of another workspace was refused, and the attempt is on record.
    assert!(has(&|r| r["principal"] == "admin:eve"
        && r["approval"] == json!(quorum_id)
        && r["vote"] == "approve"
        && r["outcome"] != "ok"));
    assert!(has(&|r| r["principal"] == "acme/pay/prod/bot"
        && r["error_class"] == "agent_token"
        && r["outcome"] == "denied"));
    assert!(has(&|r| r["outcome"] == "approval_denied"));
    assert!(has(&|r| r["outcome"] == "approval_expired"));
}

/// A request the receiver got: headers (names lower-cased) and body.
type Received = (std::collections::HashMap<String, String>, String);

/// A one-thread HTTP receiver: answers each request with the next of `statuses` (then
/// 200) and hands over what it got.
fn receiver(statuses: Vec<u16>) -> (String, std::sync::mpsc::Receiver<Received>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/warden", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = std::collections::HashMap::new();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).unwrap();
            let status = statuses.next().unwrap_or(200);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = tx.send((headers, String::from_utf8_lossy(&body).into_owned()));
        }
    });
    (url, rx)
}

#[test]
fn webhooks_are_signed_retried_and_never_hold_up_the_call() {
    use hmac::Mac;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = Up::start_with(d, &["--approval-wait-secs", "0"]);
    apply_policy(
        d,
        r#"@id("local-needs-approval") @approval("required")
permit (principal == Warden::Agent::"default/default/dev/local", action, resource == Warden::Tool::"warden_text__hash");"#,
    );
    // The relay fails once, then takes the notice.
    let (url, got) = receiver(vec![500]);
    let key = "whsec-test-3f9a1c";
    let mut set = Command::new(crate::support::warden_bin())
        .args(["secret", "set", "default/default/hook-key", "--data-dir"])
        .arg(d)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        set.stdin.take().unwrap().write_all(key.as_bytes()).unwrap();
    }
    assert!(set.wait_with_output().unwrap().status.success());
    fails(
        warden(
            d,
            &[
                "webhook",
                "set",
                "default/default",
                "ftp://x/",
                "--secret",
                "hook-key",
            ],
        ),
        "http",
    );
    ok(warden(
        d,
        &[
            "webhook",
            "set",
            "default/default",
            &url,
            "--secret",
            "hook-key",
        ],
    ));
    let listed = ok(warden(d, &["webhook", "list"]));
    assert!(listed.contains(&url) && !listed.contains(key), "{listed}");

    let started = Instant::now();
    let token = up.token.clone().unwrap();
    let answer = call(
        &up.addr,
        &token,
        "warden_text__hash",
        &json!({"text": "hooked"}),
        "webhook test",
    );
    assert!(
        answer_text(&answer).contains("approval pending"),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the call waited for the relay"
    );
    let id = pending_task(d, "warden_text__hash", &json!({"text": "hooked"}))["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut notices = Vec::new();
    for _ in 0..2 {
        notices.push(got.recv_timeout(Duration::from_secs(30)).expect("a notice"));
    }
    for (headers, body) in &notices {
        assert_eq!(headers["x-warden-event"], "approval.requested");
        let sig = &headers["x-warden-signature"];
        let (t, v1) = sig
            .strip_prefix("t=")
            .and_then(|s| s.split_once(",v1="))
            .unwrap_or_else(|| panic!("{sig}"));
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(v1, expected, "the signature checks out");
        let now = warden::identity::now_secs();
        assert!(now.abs_diff(t.parse().unwrap()) < 120);
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["task"]["id"], json!(id));
        assert_eq!(v["summary"], "local wants to run warden_text__hash");
        assert!(v["task"].get("arguments").is_none(), "{v}");
        assert!(!body.contains("hooked"), "the arguments stay home: {body}");
        assert!(v["desk"].as_str().unwrap().ends_with("/desk"));
    }
    assert_ne!(
        notices[0].0["x-warden-delivery"],
        notices[1].0["x-warden-delivery"]
    );
    // The delivery is one record, after its retry.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let recs = records(&up.addr, &admin_token(d), "since_ms=0");
        if let Some(r) = recs
            .iter()
            .find(|r| r["request"] == "webhook approval.requested")
        {
            assert_eq!(r["outcome"], "ok", "{r}");
            assert_eq!(r["approval"], json!(id));
            assert_eq!(r["reasons"], json!(["delivered on attempt 2"]));
            assert!(!r.to_string().contains(key));
            break;
        }
        assert!(Instant::now() < deadline, "no webhook record");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_client_that_takes_tasks_polls_for_the_decision_instead_of_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = Up::start_with(d, &["--approval-wait-secs", "1"]);
    apply_policy(
        d,
        r#"@id("local-needs-approval") @approval("required")
permit (principal == Warden::Agent::"default/default/dev/local", action, resource == Warden::Tool::"warden_text__hash");
@id("other-texts") permit (principal == Warden::Agent::"default/default/dev/other", action, resource);"#,
    );
    ok(warden(d, &["agent", "put", "default/default/dev/other"]));
    let other: Value = serde_json::from_str(
        ok(warden(
            d,
            &["token", "issue", "default/default/dev/other", "--json"],
        ))
        .trim(),
    )
    .unwrap();
    let other = other["token"].as_str().unwrap().to_owned();

    let node = {
        let (url, token) = (up.url.clone(), up.token.clone().unwrap());
        std::thread::spawn(move || {
            node_report(
                "task-call.mjs",
                &[
                    "--url",
                    &url,
                    "--token",
                    &token,
                    "--call",
                    "warden_text__hash",
                    "--args",
                    r#"{"text":"task"}"#,
                ],
            )
        })
    };
    let task = pending_task(d, "warden_text__hash", &json!({"text": "task"}));
    // Longer than the gateway's wait: the task form does not give up after it.
    std::thread::sleep(Duration::from_secs(3));
    let id = task["id"].as_str().unwrap().to_owned();
    ok(warden(d, &["approvals", "approve", &id]));
    let r = node.join().unwrap();
    assert!(r["error"].is_null(), "{r:#}");
    assert_eq!(r["serverTasks"], true, "{r:#}");
    assert_eq!(r["first"]["resultType"], "task", "{r:#}");
    assert_eq!(r["first"]["status"], "working", "{r:#}");
    assert!(r["firstAfterMs"].as_u64().unwrap() < 3_000, "{r:#}");
    assert!(r["polls"].as_u64().unwrap() >= 2, "{r:#}");
    assert_eq!(r["final"]["status"], "completed", "{r:#}");
    assert_eq!(r["final"]["result"]["isError"], false, "{r:#}");
    let text = r["final"]["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains(&sha_hex("task")), "{r:#}");

    // Another agent cannot read the task: as unknown as an id that never existed.
    let task_id = r["first"]["taskId"].as_str().unwrap();
    let body = json!({
        "jsonrpc": "2.0", "id": 3, "method": "tasks/get",
        "params": {"taskId": task_id, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {
                "extensions": {"io.modelcontextprotocol/tasks": {}}
            },
        }},
    })
    .to_string();
    let (status, _, text) = post(
        &up.addr,
        Some(&other),
        &format!(
            "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tasks/get\r\nMcp-Name: {task_id}\r\n"
        ),
        &body,
    );
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {e}: {text}"));
    assert_eq!(v["error"]["code"], -32602, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown task"),
        "{v}"
    );

    // Tasks survive a restart: a task left waiting is picked up by the client's next poll
    // (from a new connection) and completes once approved; one that had ended says so.
    let token = up.token.clone().unwrap();
    let task_call = |args: &[&str]| {
        let mut all = vec!["--url", up.url.as_str(), "--token", token.as_str()];
        all.extend_from_slice(args);
        node_report("task-call.mjs", &all)
    };
    let created = task_call(&[
        "--call",
        "warden_text__hash",
        "--args",
        r#"{"text":"across"}"#,
        "--create-only",
    ]);
    assert_eq!(created["first"]["status"], "working", "{created:#}");
    let across = created["first"]["taskId"].as_str().unwrap().to_owned();
    let approval = pending_task(d, "warden_text__hash", &json!({"text": "across"}));
    let done = task_id.to_owned();
    assert!(up.stop().success());
    let up = Up::start_with(d, &["--approval-wait-secs", "1"]);
    let (url, t) = (up.url.clone(), token.clone());
    let resumed = std::thread::spawn(move || {
        node_report(
            "task-call.mjs",
            &["--url", &url, "--token", &t, "--resume", &across],
        )
    });
    std::thread::sleep(Duration::from_secs(2));
    ok(warden(
        d,
        &["approvals", "approve", approval["id"].as_str().unwrap()],
    ));
    let r = resumed.join().unwrap();
    assert!(r["error"].is_null(), "{r:#}");
    assert_eq!(r["first"]["status"], "working", "{r:#}");
    assert_eq!(r["final"]["status"], "completed", "{r:#}");
    let text = r["final"]["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains(&sha_hex("across")), "{r:#}");
    let (url, t) = (up.url.clone(), token.clone());
    let ended = node_report(
        "task-call.mjs",
        &["--url", &url, "--token", &t, "--resume", &done],
    );
    assert_eq!(ended["final"]["status"], "failed", "{ended:#}");
    assert!(
        ended["final"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("before the gateway restarted"),
        "{ended:#}"
    );
}

/// Lower-case hex SHA-256 of `s`.
fn sha_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_of_the_skill_voids_a_standing_approval() {
    let hello = crate::registry::hello_tools().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = Up::start_with(d, &["--approval-wait-secs", "0"]);
    let token = up.token.clone().unwrap();
    let (key, key_path) = crate::registry::key_file(d, "owner.key");
    let public = format!("{}.pub", key_path.display());
    ok(warden(d, &["trust", "add", "acme", "--key", &public]));
    let component = crate::support::wasm("hello");
    let install = |version: &str, component: &[u8]| {
        let file = crate::registry::package_of_bytes(
            component,
            &hello,
            "acme",
            version,
            "",
            Some(&key),
            d,
        );
        ok(warden(
            d,
            &["skill", "install", file.to_str().unwrap(), "--accept"],
        ));
    };
    install("1.0.0", &component);
    apply_policy(
        d,
        r#"@id("greet-needs-approval") @approval("required")
permit (principal, action, resource == Warden::Tool::"acme_hello__greet");
@id("the-rest") permit (principal, action, resource) when { resource != Warden::Tool::"acme_hello__greet" };"#,
    );
    let args = json!({"name": "Ada"});
    let answer = call(&up.addr, &token, "acme_hello__greet", &args, "greeting");
    assert!(
        answer_text(&answer).contains("approval pending"),
        "{answer}"
    );
    let approved = pending_id(d, "acme_hello__greet", &args);
    ok(warden(d, &["approvals", "approve", &approved]));

    // A new build of the skill (the same tools, other bytes: a custom section appended)
    // is installed before the agent uses the approval: the approval is void.
    let mut rebuilt = component.clone();
    rebuilt.extend_from_slice(&[0x00, 0x0a, 0x01, b'x']);
    rebuilt.extend_from_slice(b"rebuilt!");
    install("1.0.1", &rebuilt);
    let answer = call(&up.addr, &token, "acme_hello__greet", &args, "greeting");
    assert!(is_error(&answer), "{answer}");
    let text = answer_text(&answer);
    assert!(
        text.contains("changed after this call was approved"),
        "{text}"
    );
    assert!(text.contains(&approved), "{text}");
    assert!(!text.contains("Hello"), "{text}");

    // A new approval runs the new build.
    let answer = call(&up.addr, &token, "acme_hello__greet", &args, "greeting");
    assert!(
        answer_text(&answer).contains("approval pending"),
        "{answer}"
    );
    let fresh = pending_id(d, "acme_hello__greet", &args);
    assert_ne!(fresh, approved);
    ok(warden(d, &["approvals", "approve", &fresh]));
    let answer = call(&up.addr, &token, "acme_hello__greet", &args, "greeting");
    assert!(!is_error(&answer), "{answer}");
    assert!(answer_text(&answer).contains("Ada"), "{answer}");

    let operator = admin_token(d);
    let recs = records(&up.addr, &operator, "since_ms=0");
    assert!(
        recs.iter().any(|r| r["approval"] == json!(approved)
            && r["vote"] == "invalidated"
            && r["error_class"] == "skill_changed"
            && r["outcome"] == "approval_expired"),
        "no record of the voided approval"
    );
}
