//! The author CLI as a user runs it: `warden skill new`, `build`, `inspect`, `call`.

use crate::support::{component, scratch, warden_bin, wasm_target_dir};
use std::process::Command;

#[test]
fn new_then_build_produces_a_component() {
    // Wait for the shared setup, which installs the wasm toolchain if the machine lacks it
    // (two concurrent apt-get runs would fight over the dpkg lock).
    let _ = component("hello");
    let parent = tempfile::tempdir().unwrap();
    let out = Command::new(warden_bin())
        .args(["skill", "new", "demo", "--dir"])
        .arg(parent.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = parent.path().join("demo");
    assert!(dir.join("Cargo.toml").exists());

    // A second `new` never overwrites.
    let again = Command::new(warden_bin())
        .args(["skill", "new", "demo", "--dir"])
        .arg(parent.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let built = Command::new(warden_bin())
        .current_dir(parent.path())
        .args(["skill", "build", "demo", "--target-dir"])
        .arg(wasm_target_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&built.stdout);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    assert!(stdout.contains("1 tool(s):"), "{stdout}");
    assert!(stdout.contains("greet"), "{stdout}");
    let wasm = wasm_target_dir().join("wasm32-wasip2/release/demo.wasm");
    let bytes = std::fs::read(&wasm).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\0asm\x0d\x00\x01\x00",
        "a component, not a core module"
    );

    let called = Command::new(warden_bin())
        .args(["skill", "call"])
        .arg(&wasm)
        .args(["greet", r#"{"name":"demo"}"#])
        .output()
        .unwrap();
    assert!(
        called.status.success(),
        "{}",
        String::from_utf8_lossy(&called.stderr)
    );
    let value: serde_json::Value = serde_json::from_slice(&called.stdout).unwrap();
    assert_eq!(value["message"], "Hello, demo!");
}

#[test]
fn build_explains_a_missing_crate() {
    let out = Command::new(warden_bin())
        .args(["skill", "build"])
        .arg(scratch().join("nowhere"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("has no Cargo.toml") && err.contains("warden skill new"),
        "{err}"
    );
}

#[test]
fn new_rejects_bad_names() {
    let parent = tempfile::tempdir().unwrap();
    for bad in ["Demo", "../escape", "a_b"] {
        let out = Command::new(warden_bin())
            .args(["skill", "new", bad, "--dir"])
            .arg(parent.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("invalid"),
            "{bad}"
        );
    }
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
}

#[test]
fn call_reports_tool_errors_and_traps_with_a_failing_exit() {
    let hostile = component("hostile");
    let out = Command::new(warden_bin())
        .args(["skill", "call"])
        .arg(&hostile)
        .arg("panic")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("skill panicked"));

    let inspect = Command::new(warden_bin())
        .args(["skill", "inspect", "--json"])
        .arg(component("text"))
        .output()
        .unwrap();
    assert!(inspect.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(summary["tools"].as_array().unwrap().len(), 6);
    assert_eq!(summary["tools"][0]["inputSchema"]["type"], "object");
}
