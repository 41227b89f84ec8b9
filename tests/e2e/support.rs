//! Shared setup: building the guest components once, a shared runtime, helpers.

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use warden::runtime::{
    CallContext, CallError, CallOutcome, Runtime, RuntimeConfig, Skill, SkillSettings,
};

/// The `warden` binary under test.
pub fn warden_bin() -> &'static str {
    env!("CARGO_BIN_EXE_warden")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shared cargo target dir for wasm builds (std is built once per dir).
pub fn wasm_target_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("wasm-skills")
}

/// Guest crates built by the setup: name -> crate dir relative to the repo root.
const GUESTS: &[(&str, &str)] = &[
    ("hello", "examples/hello"),
    ("http", "skills/http"),
    ("text", "skills/text"),
    ("hostile", "tests/skills/hostile"),
    ("bad-schema", "tests/skills/bad-schema"),
];

struct Built {
    dir: tempfile::TempDir,
    components: HashMap<&'static str, PathBuf>,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut components = HashMap::new();
        for (name, rel) in GUESTS {
            let out = dir.path().join(format!("{name}.wasm"));
            let output = Command::new(warden_bin())
                .args(["skill", "build"])
                .arg(repo_root().join(rel))
                .arg("--target-dir")
                .arg(wasm_target_dir())
                .arg("--out")
                .arg(&out)
                .arg("--json")
                .output()
                .expect("run warden skill build");
            let stderr = String::from_utf8_lossy(&output.stderr);
            if *name == "bad-schema" {
                // The build succeeds; the contract check must refuse it.
                assert!(!output.status.success(), "bad-schema must be refused");
                assert!(
                    stderr.contains("input schema is not valid JSON"),
                    "{stderr}"
                );
                assert!(out.exists(), "the component itself is still written");
            } else {
                assert!(output.status.success(), "building {rel} failed:\n{stderr}");
                let summary: Value = serde_json::from_slice(&output.stdout).expect("JSON summary");
                assert!(summary["bytes"].as_u64().unwrap() > 1000);
                assert!(!summary["tools"].as_array().unwrap().is_empty());
            }
            components.insert(*name, out);
        }
        Built { dir, components }
    })
}

/// Path of a built component.
pub fn component(name: &str) -> PathBuf {
    built().components[name].clone()
}

/// Bytes of a built component.
pub fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(component(name)).expect("read component")
}

/// A scratch dir that lives as long as the test process.
pub fn scratch() -> &'static Path {
    built().dir.path()
}

/// The compile cache shared by tests.
pub fn cache_dir() -> PathBuf {
    wasm_target_dir().join("compile-cache")
}

/// A runtime shared by tests (fuel off).
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(cache_dir()),
            ..RuntimeConfig::default()
        })
        .expect("runtime")
    })
}

/// Loads a built component with settings.
pub async fn load(name: &str, settings: SkillSettings) -> Skill {
    runtime()
        .load(name, &wasm(name), settings)
        .await
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// Calls a tool with default context.
pub async fn call(skill: &Skill, tool: &str, args: Value) -> Result<CallOutcome, CallError> {
    skill.call(tool, &args, &CallContext::default()).await
}

/// Calls a tool that must succeed and returns its value.
pub async fn ok(skill: &Skill, tool: &str, args: Value) -> Value {
    match call(skill, tool, args).await {
        Ok(outcome) => outcome.value,
        Err(e) => panic!("{}::{tool} failed: {e}", skill.name()),
    }
}

/// Polls `cond` until it holds (tests never sleep for a fixed time to wait for state).
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// Calls a tool that must fail with a tool error of `kind`; returns the message.
pub async fn tool_error(
    skill: &Skill,
    tool: &str,
    args: Value,
    kind: warden::runtime::ToolErrorKind,
) -> String {
    match call(skill, tool, args).await {
        Err(CallError::Tool { kind: k, message }) if k == kind => message,
        other => panic!(
            "{}::{tool}: expected a {kind:?} tool error, got {other:?}",
            skill.name()
        ),
    }
}

/// A finished command's stdout and stderr together.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts the command succeeded; returns its stdout.
pub fn cli_ok(o: std::process::Output) -> String {
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts the command succeeded; returns its stdout and stderr.
pub fn cli_ok_text(o: std::process::Output) -> String {
    assert!(o.status.success(), "{}", text(&o));
    text(&o)
}

/// Asserts the command failed and said `why`; returns what it said.
pub fn cli_fails(o: std::process::Output, why: &str) -> String {
    let t = text(&o);
    assert!(!o.status.success(), "expected a failure ({why}): {t}");
    assert!(t.contains(why), "expected {why:?} in: {t}");
    t
}

/// (request, outcome) of each record in `warden audit tail --json` output.
pub fn audit_records(tail_json: &str) -> Vec<(String, String)> {
    let tail: Value = serde_json::from_str(tail_json).expect("audit tail --json");
    tail.as_array()
        .or_else(|| tail["records"].as_array())
        .expect("a list of records")
        .iter()
        .map(|r| {
            (
                r["request"].as_str().unwrap_or("").to_owned(),
                r["outcome"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}
