//! The desks. The web desk in a real browser: Debian's Chromium driven by playwright-core (both
//! installed by this setup when missing) signs in with an approver token, sees an agent's
//! request appear live, approves it with the keyboard while the agent's call waits, and sees
//! it move to history; a CSRF-less change, a wrong token and a signed-out session are
//! refused, and the agent's markup in its reason stays text. The run saves a screenshot of
//! the desk to `target/test-artifacts/desk.png` (not committed). The terminal desk
//! (`warden desk`) in a tmux pseudo-terminal: a request appears live, an escape sequence in
//! the agent's reason stays inert, and a key press approves it while the agent waits.

use crate::approvals::{agent_token, apply_policy, node_report};
use crate::console::{admin, admin_token, ok, records, warden};
use crate::gateway::{Up, text_of};
use crate::support::repo_root;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// Debian's Chromium, installed with apt-get when it is missing (the test machine is a
/// fresh Debian; installing needs root, and the test fails with the command otherwise).
pub(crate) fn chromium() -> &'static Path {
    static READY: OnceLock<()> = OnceLock::new();
    let path = Path::new("/usr/bin/chromium");
    READY.get_or_init(|| {
        if path.exists() {
            return;
        }
        let install = "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                       apt-get install -y -qq --no-install-recommends chromium";
        let status = Command::new("sh")
            .args(["-c", install])
            .status()
            .expect("run apt-get");
        assert!(
            status.success() && path.exists(),
            "the desk test needs Debian's Chromium: run `{install}` as root"
        );
    });
    path
}

#[test]
fn an_approver_decides_in_the_web_desk_while_the_agent_waits() {
    chromium();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = Up::start_with(d, &["--approval-wait-secs", "60"]);
    for scope in ["acme", "acme/pay", "acme/pay/prod"] {
        ok(warden(d, &["scope", "create", scope]));
    }
    let bot = agent_token(d, "acme/pay/prod/bot", &["--group", "payers"]);
    ok(warden(
        d,
        &["approver", "set", "dana", "--scope", "acme/pay"],
    ));
    let dana: Value = serde_json::from_str(
        ok(warden(
            d,
            &[
                "token", "issue", "dana", "--admin", "--role", "approver", "--json",
            ],
        ))
        .trim(),
    )
    .unwrap();
    let dana = dana["token"].as_str().unwrap().to_owned();
    apply_policy(
        d,
        r#"@id("hash-needs-approval") @approval("required")
permit (principal in Warden::Group::"payers", action, resource == Warden::Tool::"warden_text__hash");"#,
    );

    let artifacts = repo_root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("desk.png");
    let _ = std::fs::remove_file(&shot);
    let base = format!("http://{}", up.addr);
    let r = node_report(
        "desk-check.mjs",
        &[
            "--base",
            &base,
            "--admin-token",
            &dana,
            "--agent-token",
            &bot,
            "--screenshot",
            shot.to_str().unwrap(),
        ],
    );
    assert!(r["error"].is_null(), "{r:#}");
    assert!(
        r["csp"].as_str().unwrap().contains("default-src 'none'"),
        "{r:#}"
    );
    assert!(
        r["badLogin"]
            .as_str()
            .unwrap()
            .contains("not a valid admin token"),
        "{r:#}"
    );
    assert_eq!(r["pendingBefore"], 0, "{r:#}");
    // Live: the task appeared without a reload.
    assert_eq!(r["sameDocument"], true, "{r:#}");
    assert_eq!(r["sameDocumentAfter"], true, "{r:#}");
    // The agent's markup is shown as text and never ran.
    assert!(
        r["reasonText"]
            .as_str()
            .unwrap()
            .contains("<img src=x onerror="),
        "{r:#}"
    );
    assert_eq!(r["injected"], false, "{r:#}");
    assert!(
        r["argumentsShown"].as_str().unwrap().contains("desk"),
        "{r:#}"
    );
    assert!(
        r["rawShown"]
            .as_str()
            .unwrap()
            .contains("\"text\": \"desk\""),
        "{r:#}"
    );
    assert_eq!(r["csrfStatus"], 403, "{r:#}");
    // Approved with the keyboard: the agent got the result.
    assert_eq!(r["result"]["isError"], false, "{r:#}");
    assert!(
        text_of(&r["result"])
            .contains("49be417ad74080a0031b636b44cfc26fdd0065492d6cd3b033960c4414955cf7"),
        "{r:#}"
    );
    assert_eq!(r["historyState"], "executed", "{r:#}");
    assert_eq!(r["afterLogout"], 401, "{r:#}");
    assert!(
        r["consoleErrors"].as_array().unwrap().iter().all(|e| {
            // Failed loads the test caused on purpose (401/403) are fine; a CSP violation is not.
            !e.as_str().unwrap_or("").contains("Content Security Policy")
        }),
        "{r:#}"
    );
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "no screenshot"
    );

    // The trail has the sign-ins (the bad one too), the CSRF refusal and dana's vote.
    let id = r["taskId"].as_str().unwrap();
    let recs = records(&up.addr, &admin_token(d), "since_ms=0");
    let has = |f: &dyn Fn(&Value) -> bool| recs.iter().any(f);
    assert!(has(
        &|r| r["request"] == "desk login" && r["outcome"] == "unauthenticated"
    ));
    assert!(has(&|r| r["request"] == "desk login"
        && r["principal"] == "admin:dana"
        && r["outcome"] == "ok"));
    assert!(has(&|r| r["principal"] == "admin:dana"
        && r["error_class"] == "csrf"
        && r["outcome"] == "denied"));
    assert!(has(&|r| r["principal"] == "admin:dana"
        && r["approval"] == json!(id)
        && r["vote"] == "approve"
        && r["outcome"] == "ok"));
    // The same task, seen through the admin API, was executed once.
    let (status, task) = admin(
        &up.addr,
        &admin_token(d),
        "GET",
        &format!("/admin/v1/approvals/{id}"),
        None,
    );
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["state"], "executed");
    assert_eq!(task["votes"][0]["approver"], "dana");
}

/// tmux, installed with apt-get when missing (as for Chromium).
fn tmux() -> &'static str {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        if Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return;
        }
        let install = "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                       apt-get install -y -qq --no-install-recommends tmux";
        let status = Command::new("sh")
            .args(["-c", install])
            .status()
            .expect("run apt-get");
        assert!(
            status.success(),
            "the terminal desk test needs tmux: run `{install}` as root"
        );
    });
    "tmux"
}

/// A tmux server of this test's own, driving `warden desk` in a pseudo-terminal.
struct Tty {
    socket: String,
}

impl Tty {
    fn start(command: &str) -> Tty {
        let socket = format!("warden-e2e-{}", std::process::id());
        let status = Command::new(tmux())
            .args([
                "-L",
                &socket,
                "new-session",
                "-d",
                "-s",
                "desk",
                "-x",
                "160",
                "-y",
                "45",
            ])
            .arg(command)
            .status()
            .unwrap();
        assert!(status.success());
        Tty { socket }
    }

    fn screen(&self) -> String {
        let out = Command::new(tmux())
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "desk"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let status = Command::new(tmux())
            .args(["-L", &self.socket, "send-keys", "-t", "desk"])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits until the screen shows `what`.
    fn wait_for(&self, what: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if screen.contains(what) {
                return screen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the terminal desk never showed {what:?}:\n{screen}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        let _ = Command::new(tmux())
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

#[test]
fn the_terminal_desk_shows_a_request_live_and_approves_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = Up::start_with(d, &["--approval-wait-secs", "60"]);
    apply_policy(
        d,
        r#"@id("local-needs-approval") @approval("required")
permit (principal == Warden::Agent::"default/default/dev/local", action, resource == Warden::Tool::"warden_text__hash");"#,
    );
    let command = format!(
        "{} desk --data-dir {}",
        crate::support::warden_bin(),
        d.display()
    );
    let tty = Tty::start(&command);
    tty.wait_for("Nothing is waiting for you");
    tty.wait_for("● live");

    // The agent asks; its reason carries an escape sequence that must not reach the terminal.
    let (addr, token) = (up.addr.clone(), up.token.clone().unwrap());
    let waiting = std::thread::spawn(move || {
        let body = json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "warden_text__hash", "arguments": {"text": "tty"}, "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "warden/reason": "rotating keys \u{1b}[2J\u{1b}]0;pwned\u{7}",
            }},
        })
        .to_string();
        let (status, _, text) = crate::gateway::post(
            &addr,
            Some(&token),
            "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: warden_text__hash\r\n",
            &body,
        );
        assert_eq!(status, 200, "{text}");
        serde_json::from_str::<Value>(&text).unwrap()
    });
    let screen = tty.wait_for("warden_text__hash  [pending]");
    assert!(
        screen.contains("local wants to run warden_text__hash"),
        "{screen}"
    );
    assert!(screen.contains("The agent says: rotating keys"), "{screen}");
    assert!(screen.contains("text: tty"), "{screen}");
    tty.keys(&["a"]);
    let answer = waiting.join().unwrap();
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    assert!(
        text_of(&answer["result"])
            .contains("544996b31a8aa7a9e58ab3f43eacffd8510d1cc7cb1d3404bf9caaea638bda99"),
        "{answer}"
    );
    tty.keys(&["2"]);
    let screen = tty.wait_for("[executed]");
    assert!(screen.contains("History"), "{screen}");
    tty.keys(&["q"]);
}
