//! What the benchmarks share: building a first-party skill with the real binary, as
//! authors build skills (it installs the offline toolchain if it is missing).

use std::path::Path;

/// Builds `skills/<name>` into `target/wasm-skills/bench-<name>.wasm` and returns its bytes.
pub fn build_skill(name: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = root.join(format!("target/wasm-skills/bench-{name}.wasm"));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["skill", "build"])
        .arg(root.join("skills").join(name))
        .arg("--target-dir")
        .arg(root.join("target/wasm-skills"))
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "warden skill build failed");
    std::fs::read(out).unwrap()
}
