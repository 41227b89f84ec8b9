//! Package benchmark: pack + sign, verification cost per MB, publish, and install to the
//! first call, for a typical skill (the first-party `text` skill, built by the real binary).
//!
//! - pack + sign: the library (`warden_registry::pack`, read back, sign) and the author's
//!   command (`warden skill pack --component --key`, which also loads the component to read
//!   its tools), both p50;
//! - verification per MB: `Package::read` + `verify` (every entry decompressed through its
//!   cap, SHA-256 of each, the ed25519 signature, the trust policy) of packages whose
//!   component is 1 and 16 MiB of incompressible bytes; the `text` package signed with
//!   ed25519 and with a Sigstore bundle; the component check (compile and compare the
//!   tools) of the `text` skill on its own;
//! - publish: `warden skill publish` against a running `warden registry serve` (which
//!   verifies and compiles the component), wall time per publish;
//! - install to first call: from `warden skill install FILE --accept` against a running
//!   `warden up` to the first successful `tools/call` of the new version's tool.
//!
//! Run: `cargo bench -p warden --bench packages`. Results go to `docs/benchmarks.md`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use warden::runtime::{Runtime, RuntimeConfig, SkillSettings};
use warden_registry::manifest::ToolDef;
use warden_registry::{Limits, Manifest, Package, SecretKey, TrustPolicy, TrustedSigner};

fn p50(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn source(version: &str) -> Manifest {
    Manifest::parse_source(
        format!(
            "namespace = \"acme\"\nname = \"words\"\nversion = \"{version}\"\ndescription = \"Text utilities\"\npublisher = \"Acme\"\n"
        )
        .as_bytes(),
    )
    .unwrap()
}

fn signed(tools: &[ToolDef], component: &[u8], version: &str, key: &SecretKey) -> Vec<u8> {
    let (_, unsigned) =
        warden_registry::pack(&source(version), tools, component, "# text\n").unwrap();
    Package::read(&unsigned, &Limits::default())
        .unwrap()
        .sign(key)
        .unwrap()
}

/// The component with a custom section naming `i` appended: the same tools, another
/// digest, so nothing is served from a compile cache.
fn variant(component: &[u8], i: u8) -> Vec<u8> {
    let mut v = component.to_vec();
    v.extend_from_slice(&[0x00, 7, 5, b'b', b'e', b'n', b'c', b'h', i]);
    v
}

fn warden(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .env("WARDEN_LOG", "error")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "warden {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Starts a server command and returns it with the value of the first stdout line that
/// starts with `prefix` (trimmed).
fn start(args: &[&str], prefix: &str) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .env("WARDEN_LOG", "error")
        .env(
            "WARDEN_WASM_TARGET_DIR",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm-skills"),
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let value = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(v) = line.trim().strip_prefix(prefix) {
            break v.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, value)
}

/// A stateless `tools/call` of `warden`'s MCP endpoint at `addr`: whether it succeeded.
fn call_ok(addr: &str, token: &str, tool: &str) -> bool {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{{"text":"a b c"}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
    );
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: {tool}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.starts_with("HTTP/1.1 200")
        && out.contains("\"words\"")
        && !out.contains("\"isError\":true")
}

fn main() {
    let text = common::build_skill("text");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let skill = rt
        .block_on(runtime.load("text", &text, SkillSettings::default()))
        .unwrap();
    let tools: Vec<ToolDef> = skill
        .tools()
        .iter()
        .map(warden::packages::tool_def)
        .collect();
    // One key for everything: the CLI's key file, read back here.
    let key_path = dir.join("acme.key");
    warden(&["key", "generate", "--out", key_path.to_str().unwrap()]);
    let key = SecretKey::from_file_text(&std::fs::read_to_string(&key_path).unwrap()).unwrap();
    let mut policy = TrustPolicy::default();
    policy.trust("acme", TrustedSigner::Key(key.public()));
    println!(
        "component: text skill, {:.1} KiB, {} tools",
        text.len() as f64 / 1024.0,
        tools.len()
    );

    // Pack + sign in the library.
    let mut lib = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        std::hint::black_box(signed(&tools, &text, "1.0.0", &key));
        lib.push(t.elapsed());
    }
    // The author's command.
    let skill_dir = dir.join("skill");
    std::fs::create_dir_all(&skill_dir).unwrap();
    std::fs::write(
        skill_dir.join("skill.toml"),
        "namespace = \"acme\"\nname = \"words\"\nversion = \"1.0.0\"\ndescription = \"Text utilities\"\npublisher = \"Acme\"\n",
    )
    .unwrap();
    std::fs::write(skill_dir.join("README.md"), "# text\n").unwrap();
    let component = dir.join("text.wasm");
    std::fs::write(&component, &text).unwrap();
    let mut cli = Vec::new();
    for i in 0..10 {
        let out = dir.join(format!("p{i}.wsk"));
        let t = Instant::now();
        warden(&[
            "skill",
            "pack",
            skill_dir.to_str().unwrap(),
            "--component",
            component.to_str().unwrap(),
            "--key",
            key_path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        cli.push(t.elapsed());
    }
    println!(
        "pack + sign: library p50 {:.2} ms; `warden skill pack --key` p50 {:.0} ms",
        ms(p50(&mut lib)),
        ms(p50(&mut cli))
    );

    // Verification per MB.
    for mib in [1usize, 16] {
        let mut noise = vec![0u8; mib << 20];
        getrandom::fill(&mut noise).unwrap();
        let pkg = signed(&tools, &noise, "1.0.0", &key);
        let mut runs = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let v = Package::read(&pkg, &Limits::default())
                .unwrap()
                .verify(&policy)
                .unwrap();
            std::hint::black_box(v);
            runs.push(t.elapsed());
        }
        let d = p50(&mut runs);
        println!(
            "read + verify, {mib} MiB component: p50 {:.2} ms ({:.2} ms per MiB)",
            ms(d),
            ms(d) / mib as f64
        );
    }
    // The same, signed with a Sigstore bundle (a made-up deployment, verified offline):
    // the signature check costs the certificate chain, the SCT, Rekor's promise and the
    // ECDSA signature instead of one ed25519 signature.
    {
        use warden_registry::sigstore_testing::{Tamper, TestSigstore};
        let sigstore = TestSigstore::new();
        let (san, issuer) = ("ci@acme.example", "https://issuer.acme.example");
        let mut spolicy = TrustPolicy::default();
        spolicy.trust(
            "acme",
            TrustedSigner::Sigstore {
                san: san.into(),
                issuer: issuer.into(),
            },
        );
        spolicy.sigstore_root = Some(std::sync::Arc::new(
            warden_registry::SigstoreRoot::parse(&sigstore.trusted_root()).unwrap(),
        ));
        let (_, unsigned) =
            warden_registry::pack(&source("1.0.0"), &tools, &text, "# text\n").unwrap();
        let unsigned = Package::read(&unsigned, &Limits::default()).unwrap();
        let bundle = sigstore.bundle(&unsigned.manifest_bytes, san, issuer, Tamper::None);
        let pkg = unsigned.with_sigstore_bundle(bundle).unwrap();
        let mut ed = Vec::new();
        let mut sig = Vec::new();
        let ed_pkg = signed(&tools, &text, "1.0.0", &key);
        for _ in 0..50 {
            let t = Instant::now();
            std::hint::black_box(
                Package::read(&ed_pkg, &Limits::default())
                    .unwrap()
                    .verify(&policy)
                    .unwrap(),
            );
            ed.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(
                Package::read(&pkg, &Limits::default())
                    .unwrap()
                    .verify(&spolicy)
                    .unwrap(),
            );
            sig.push(t.elapsed());
        }
        println!(
            "read + verify of the text package: ed25519 p50 {:.2} ms, Sigstore bundle p50 {:.2} ms",
            ms(p50(&mut ed)),
            ms(p50(&mut sig))
        );
    }
    let pkg = Package::read(&signed(&tools, &text, "1.0.0", &key), &Limits::default()).unwrap();
    let mut check = Vec::new();
    for _ in 0..5 {
        let fresh = Runtime::new(RuntimeConfig::default()).unwrap();
        let t = Instant::now();
        rt.block_on(warden::packages::load_checked(
            &fresh,
            "text",
            &pkg,
            SkillSettings::default(),
        ))
        .unwrap();
        check.push(t.elapsed());
    }
    println!(
        "component check (compile, list and compare the tools): p50 {:.0} ms",
        ms(p50(&mut check))
    );

    // Publish.
    let reg_dir = dir.join("registry");
    let (mut registry, url) = start(
        &[
            "registry",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--registry-dir",
            reg_dir.to_str().unwrap(),
        ],
        "URL:",
    );
    let admin = std::fs::read_to_string(reg_dir.join("admin.token")).unwrap();
    let reg = |args: &[&str], token: &str| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--registry", &url, "--registry-token", token.trim()]);
        warden(&all)
    };
    let pub_file = dir.join("acme.key.pub");
    reg(
        &[
            "registry",
            "namespace",
            "create",
            "acme",
            "--owner",
            pub_file.to_str().unwrap(),
        ],
        &admin,
    );
    let publisher = String::from_utf8(reg(&["registry", "token", "bench"], &admin).stdout).unwrap();
    let mut publish = Vec::new();
    for i in 0..10 {
        let file = dir.join(format!("v{i}.wsk"));
        let component = variant(&text, i);
        std::fs::write(&file, signed(&tools, &component, &format!("1.0.{i}"), &key)).unwrap();
        let t = Instant::now();
        reg(&["skill", "publish", file.to_str().unwrap()], &publisher);
        publish.push(t.elapsed());
    }
    println!(
        "publish (`warden skill publish`): p50 {:.0} ms",
        ms(p50(&mut publish))
    );
    let _ = registry.kill();

    // Install to first call.
    let data = dir.join("gateway");
    let (mut gateway, token) = start(
        &[
            "up",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--rate-limit",
            "0",
        ],
        "token:",
    );
    let addr = std::fs::read_to_string(data.join("endpoint"))
        .unwrap()
        .trim()
        .trim_start_matches("http://")
        .to_owned();
    let d = data.to_str().unwrap();
    warden(&[
        "trust",
        "add",
        "acme",
        "--key",
        pub_file.to_str().unwrap(),
        "--data-dir",
        d,
    ]);
    let policy_file = dir.join("p.cedar");
    std::fs::write(&policy_file, "permit (principal, action, resource);").unwrap();
    warden(&[
        "policy",
        "apply",
        policy_file.to_str().unwrap(),
        "--data-dir",
        d,
    ]);
    let mut first_call = Vec::new();
    for i in 0..10 {
        let file = dir.join(format!("v{i}.wsk"));
        let t = Instant::now();
        warden(&[
            "skill",
            "install",
            file.to_str().unwrap(),
            "--accept",
            "--data-dir",
            d,
        ]);
        let mut tries = 0;
        while !call_ok(&addr, &token, "acme_words__stats") {
            tries += 1;
            assert!(tries < 1000, "the installed tool never answered");
            std::thread::sleep(Duration::from_millis(1));
        }
        first_call.push(t.elapsed());
    }
    println!(
        "install to first call (`warden skill install FILE --accept`, then tools/call): p50 {:.0} ms",
        ms(p50(&mut first_call))
    );
    let _ = gateway.kill();
}
