//! Installing signed packages into running gateways with the real binaries: a registry,
//! two `warden up` gateways, `warden trust`, `warden skill install|remove|rollback`, and an
//! MCP client calling the installed tool. Refusals (untrusted namespace, unknown signer,
//! flipped byte, no consent, changed tools without approval) install nothing and are
//! audited; an installed package survives a restart; an upgrade that changes the tools
//! waits for approval while the old version keeps serving.

use crate::console::{call, list, warden as cli};
use crate::gateway::Up;
use crate::registry::{Registry, hello_tools, key_file, package_of};
use crate::support::{audit_records, cli_fails as fails, cli_ok as ok, load};
use serde_json::json;
use std::path::{Path, PathBuf};
use warden::runtime::SkillSettings;
use warden_registry::SecretKey;
use warden_registry::manifest::ToolDef;

/// `ns/hello@version` holding `component`'s bytes with `tools`, asking for one host.
fn package(
    component: &str,
    tools: &[ToolDef],
    ns: &str,
    version: &str,
    key: &SecretKey,
    dir: &Path,
) -> PathBuf {
    let asks = "\n[[capabilities.hosts]]\nhost = \"api.example.com\"\nmethods = [\"GET\"]\n";
    package_of(component, tools, ns, version, asks, Some(key), dir)
}

fn install(
    d: &Path,
    reg: &Registry,
    token: &str,
    source: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "skill",
        "install",
        source,
        "--registry",
        reg.url.as_str(),
        "--registry-token",
        token,
    ];
    args.extend_from_slice(extra);
    cli(d, &args)
}

/// Posts a package to the admin API directly (the server's own checks, without the
/// CLI's): (status, body).
fn post_package(up: &Up, d: &Path, query: &str, package: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(&up.addr).unwrap();
    let head = format!(
        "POST /admin/v1/packages{query} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/zip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        up.addr,
        crate::console::admin_token(d),
        package.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(package).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

fn greet(up: &Up, token: &str) -> (u16, String) {
    greet_in(up, token, "acme")
}

/// Calls `<ns>_hello__greet`.
fn greet_in(up: &Up, token: &str, ns: &str) -> (u16, String) {
    let tool = format!("{ns}_hello__greet");
    let (status, _, body) = call(&up.addr, Some(token), &tool, json!({"name": "Ada"}));
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_install_live_pin_upgrade_roll_back_and_survive_restarts() {
    let hello = hello_tools().await;
    let text: Vec<ToolDef> = load("text", SkillSettings::default())
        .await
        .tools()
        .iter()
        .map(warden::packages::tool_def)
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let reg = Registry::start(&dir.join("registry"));
    let (owner, owner_path) = key_file(dir, "owner.key");
    let (stranger, _) = key_file(dir, "stranger.key");
    let owner_pub = format!("{}.pub", owner_path.display());
    ok(reg.run(
        &[
            "registry",
            "namespace",
            "create",
            "acme",
            "--owner",
            &owner_pub,
        ],
        None,
        dir,
    ));
    let publisher = ok(reg.run(&["registry", "token", "ci"], None, dir))
        .trim()
        .to_owned();
    let reader = ok(reg.run(&["registry", "token", "gw", "--role", "reader"], None, dir))
        .trim()
        .to_owned();
    let v1 = package("hello", &hello, "acme", "1.0.0", &owner, dir);
    let v2 = package("text", &text, "acme", "1.1.0", &owner, dir);
    for f in [&v1, &v2] {
        ok(reg.run(
            &["skill", "publish", f.to_str().unwrap()],
            Some(&publisher),
            dir,
        ));
    }

    let d1 = dir.join("gw1");
    let up = Up::start(&d1);
    let token = up.token.clone().unwrap();
    let tools_before = list(&up.addr, &token);
    // Let the local agent call acme's tools too.
    let policy = dir.join("p.cedar");
    std::fs::write(
        &policy,
        "permit (principal == Warden::Agent::\"default/default/dev/local\", action, resource);",
    )
    .unwrap();
    ok(cli(&d1, &["policy", "apply", policy.to_str().unwrap()]));

    // Refused, nothing installed: untrusted namespace, unknown signer, a flipped byte, no
    // consent.
    fails(
        install(&d1, &reg, &reader, "acme/hello", &["--accept"]),
        "untrusted namespace `acme`",
    );
    ok(cli(&d1, &["trust", "add", "acme", "--key", &owner_pub]));
    let strange = package("hello", &hello, "acme", "2.0.0", &stranger, dir);
    fails(
        install(&d1, &reg, &reader, strange.to_str().unwrap(), &["--accept"]),
        "unknown signer",
    );
    let mut bytes = std::fs::read(&v1).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x04;
    let flipped = dir.join("flipped.wsk");
    std::fs::write(&flipped, bytes).unwrap();
    fails(
        install(&d1, &reg, &reader, flipped.to_str().unwrap(), &["--accept"]),
        "package refused",
    );
    fails(
        install(&d1, &reg, &reader, "acme/hello@1.0.0", &[]),
        "pass --accept",
    );
    assert_eq!(list(&up.addr, &token), tools_before);
    assert!(
        !d1.join("packages").exists()
            || std::fs::read_dir(d1.join("packages")).unwrap().count() == 0
    );

    // A connected client (a 2025-11-25 session with its GET stream) hears about the
    // install.
    let session = crate::gateway::open_session(&up.addr, &token);
    let (a, t) = (up.addr.clone(), token.clone());
    let heard = std::thread::spawn(move || {
        use std::io::Read;
        let mut tcp = crate::gateway::open_stream(&a, &t, &session);
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(120)))
            .unwrap();
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while !seen.contains("notifications/tools/list_changed") {
            match tcp.read(&mut buf) {
                Ok(n) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                _ => break,
            }
        }
        seen
    });

    // Installed from the registry, with its requested host granted in dev: live at once.
    let out = ok(install(
        &d1,
        &reg,
        &reader,
        "acme/hello@1.0.0",
        &["--accept", "--grant-scope", "default/default/dev"],
    ));
    assert!(out.contains("installed acme/hello@1.0.0"), "{out}");
    let (status, body) = greet(&up, &token);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hello, Ada!"), "{body}");
    let seen = heard.join().unwrap();
    assert!(seen.contains("notifications/tools/list_changed"), "{seen}");
    let grants = ok(cli(&d1, &["grant", "list", "--skill", "hello"]));
    assert!(grants.contains("api.example.com"), "{grants}");

    // An upgrade whose tools differ waits for approval; the old version keeps serving.
    // The server enforces it, and the reviewed digest, whatever the client does.
    let v2_bytes = std::fs::read(&v2).unwrap();
    let (status, body) = post_package(&up, &d1, "?accept=true", &v2_bytes);
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("keeps serving until the changes are approved"),
        "{body}"
    );
    let (status, body) = post_package(
        &up,
        &d1,
        &format!(
            "?accept=true&approve_changes=true&digest={}",
            "0".repeat(64)
        ),
        &v2_bytes,
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("not the one that was reviewed"), "{body}");
    fails(
        install(&d1, &reg, &reader, "acme/hello@1.1.0", &["--accept"]),
        "tools changed",
    );
    assert!(greet(&up, &token).1.contains("Hello, Ada!"));
    ok(install(
        &d1,
        &reg,
        &reader,
        "acme/hello@1.1.0",
        &["--accept", "--approve-changes"],
    ));
    let tools = list(&up.addr, &token);
    assert!(tools.contains(&"acme_hello__stats".to_owned()), "{tools:?}");
    assert!(
        !tools.contains(&"acme_hello__greet".to_owned()),
        "{tools:?}"
    );
    // The same skill name from another namespace installs beside it.
    ok(cli(&d1, &["trust", "add", "globex", "--key", &owner_pub]));
    let globex = package("hello", &hello, "globex", "1.0.0", &owner, dir);
    ok(install(
        &d1,
        &reg,
        &reader,
        globex.to_str().unwrap(),
        &["--accept"],
    ));
    let tools = list(&up.addr, &token);
    assert!(
        tools.contains(&"globex_hello__greet".to_owned()),
        "{tools:?}"
    );
    assert!(tools.contains(&"acme_hello__stats".to_owned()), "{tools:?}");
    fails(
        cli(&d1, &["skill", "remove", "hello"]),
        "installed from several namespaces",
    );
    ok(cli(&d1, &["skill", "remove", "globex/hello"]));
    assert!(!list(&up.addr, &token).contains(&"globex_hello__greet".to_owned()));

    // Roll back to 1.0.0 (kept in the data directory, no registry needed).
    ok(cli(&d1, &["skill", "rollback", "hello", "1.0.0"]));
    assert!(greet(&up, &token).1.contains("Hello, Ada!"));

    // Every install step and refusal is audited.
    let records = audit_records(&ok(cli(&d1, &["audit", "tail", "-n", "100", "--json"])));
    let installs = |outcome_ok: bool| {
        records
            .iter()
            .filter(|(r, o)| {
                r.starts_with("admin POST /admin/v1/packages") && (o == "ok") == outcome_ok
            })
            .count()
    };
    assert!(installs(false) >= 3, "refusals not audited: {records:?}");
    assert!(installs(true) >= 4, "installs not audited: {records:?}");

    // A second gateway installs the same digest.
    let d2 = dir.join("gw2");
    let up2 = Up::start(&d2);
    ok(cli(&d2, &["trust", "add", "acme", "--key", &owner_pub]));
    ok(install(
        &d2,
        &reg,
        &reader,
        "acme/hello@1.0.0",
        &["--accept"],
    ));
    let sha = |d: &Path| {
        let v: serde_json::Value =
            serde_json::from_str(&ok(cli(d, &["skill", "installed", "--json"]))).unwrap();
        v["skills"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "hello")
            .unwrap()["package"]["sha256"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(sha(&d1), sha(&d2));
    drop(up2);

    // A restart loads it again; removing it takes its tools away.
    up.stop();
    let up = Up::start(&d1);
    let (status, body) = greet(&up, &token);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hello, Ada!"), "{body}");
    // Distrusting the signer withdraws its tools at once.
    ok(cli(&d1, &["trust", "rm", "acme", "--key", &owner_pub]));
    assert!(
        !list(&up.addr, &token)
            .iter()
            .any(|t| t.starts_with("acme_"))
    );
    ok(cli(&d1, &["trust", "add", "acme", "--key", &owner_pub]));
    let grants = ok(cli(&d1, &["grant", "list"]));
    assert!(grants.contains("api.example.com"), "{grants}");
    ok(cli(&d1, &["skill", "remove", "hello"]));
    assert!(
        !list(&up.addr, &token)
            .iter()
            .any(|t| t.starts_with("acme_"))
    );
    let grants = ok(cli(&d1, &["grant", "list"]));
    assert!(
        !grants.contains("api.example.com"),
        "grants outlived the skill: {grants}"
    );
    fails(cli(&d1, &["skill", "remove", "http"]), "cannot be removed");
}

/// Runs an author command (no gateway involved).
fn author(args: &[&str]) -> std::process::Output {
    std::process::Command::new(crate::support::warden_bin())
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigstore_signed_package_installs_only_under_its_pinned_root_and_identity() {
    use warden_registry::sigstore_testing::{Tamper, TestSigstore};
    const SAN: &str = "https://github.com/sig/skills/.github/workflows/release.yml@refs/heads/main";
    const ISSUER: &str = "https://token.actions.githubusercontent.com";
    let hello = hello_tools().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sigstore = TestSigstore::new();
    let root = dir.join("trusted_root.json");
    std::fs::write(&root, sigstore.trusted_root()).unwrap();
    let root_s = root.to_str().unwrap();

    // The author signs the package's manifest, exactly as stored, with Sigstore (here, the
    // made-up deployment stands in for Fulcio and Rekor) and attaches the bundle.
    let unsigned = package_of("hello", &hello, "sig", "1.0.0", "", None, dir);
    let sign = |san: &str, tamper: Tamper, name: &str| -> PathBuf {
        let manifest = author(&["skill", "inspect", unsigned.to_str().unwrap(), "--manifest"]);
        assert!(manifest.status.success());
        let bundle = dir.join(format!("{name}.sigstore.json"));
        let json = sigstore.bundle(&manifest.stdout, san, ISSUER, tamper);
        std::fs::write(&bundle, serde_json::to_vec(&json).unwrap()).unwrap();
        let out = dir.join(format!("{name}.wsk"));
        ok(author(&[
            "skill",
            "sign",
            unsigned.to_str().unwrap(),
            "--sigstore-bundle",
            bundle.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]));
        out
    };
    let good = sign(SAN, Tamper::None, "good");
    let forged_set = sign(SAN, Tamper::Set, "forged-set");
    let mallory = sign("mallory@evil.example", Tamper::None, "mallory");
    let (good_s, forged_s, mallory_s) = (
        good.to_str().unwrap(),
        forged_set.to_str().unwrap(),
        mallory.to_str().unwrap(),
    );
    let trust = format!("sig=sigstore:{SAN}|{ISSUER}");

    // `warden skill verify`: against the pinned root and the identity policy.
    let out = ok(author(&[
        "skill",
        "verify",
        good_s,
        "--sigstore-root",
        root_s,
        "--trust",
        &trust,
    ]));
    assert!(out.contains(&format!("signed by sigstore {SAN}")), "{out}");
    let out = ok(author(&["skill", "inspect", good_s]));
    assert!(
        out.contains("a Sigstore bundle, not verified here"),
        "{out}"
    );
    fails(
        author(&["skill", "verify", good_s]),
        "no Sigstore trusted root is pinned",
    );
    fails(
        author(&[
            "skill",
            "verify",
            mallory_s,
            "--sigstore-root",
            root_s,
            "--trust",
            &trust,
        ]),
        "unknown signer sigstore mallory@evil.example",
    );
    fails(
        author(&["skill", "verify", forged_s, "--sigstore-root", root_s]),
        "signed entry timestamp does not verify",
    );
    let other_root = dir.join("other_root.json");
    std::fs::write(&other_root, TestSigstore::new().trusted_root()).unwrap();
    fails(
        author(&[
            "skill",
            "verify",
            good_s,
            "--sigstore-root",
            other_root.to_str().unwrap(),
        ]),
        "does not name",
    );

    // The gateway: identity trusted, but no root pinned yet -> refused; then pinned.
    let d = dir.join("gw");
    let up = Up::start(&d);
    let token = up.token.clone().unwrap();
    let policy = dir.join("p.cedar");
    std::fs::write(
        &policy,
        "permit (principal == Warden::Agent::\"default/default/dev/local\", action, resource);",
    )
    .unwrap();
    ok(cli(&d, &["policy", "apply", policy.to_str().unwrap()]));
    ok(cli(
        &d,
        &[
            "trust",
            "add",
            "sig",
            "--sigstore-san",
            SAN,
            "--sigstore-issuer",
            ISSUER,
        ],
    ));
    fails(
        cli(&d, &["skill", "install", good_s, "--accept"]),
        "no Sigstore trusted root is pinned",
    );
    fails(
        cli(&d, &["trust", "sigstore-root", policy.to_str().unwrap()]),
        "trusted root is refused",
    );
    let out = ok(cli(&d, &["trust", "sigstore-root", root_s]));
    assert!(out.contains("pinned the Sigstore trusted root"), "{out}");
    let out = ok(cli(&d, &["trust", "list"]));
    assert!(out.contains("sigstore trusted root: sha256"), "{out}");
    fails(
        cli(&d, &["skill", "install", forged_s, "--accept"]),
        "signed entry timestamp does not verify",
    );
    fails(
        cli(&d, &["skill", "install", mallory_s, "--accept"]),
        "unknown signer",
    );
    assert!(!list(&up.addr, &token).contains(&"sig_hello__greet".to_owned()));
    ok(cli(&d, &["skill", "install", good_s, "--accept"]));
    let (_, body) = greet_in(&up, &token, "sig");
    assert!(body.contains("Hello, Ada"), "{body}");
    let out = ok(cli(&d, &["skill", "installed"]));
    assert!(out.contains(&format!("sigstore {SAN}")), "{out}");

    // Unpinning the root withdraws the package's tools at once.
    let out = ok(cli(&d, &["trust", "sigstore-root", "--remove"]));
    assert!(out.contains("sig/hello"), "{out}");
    assert!(!list(&up.addr, &token).contains(&"sig_hello__greet".to_owned()));
    let audit = ok(cli(&d, &["audit", "tail", "--json", "-n", "200"]));
    let records = audit_records(&audit);
    let count = |request: &str, outcome: &str| {
        records
            .iter()
            .filter(|(r, o)| r == request && o == outcome)
            .count()
    };
    let pin = "admin PUT /admin/v1/trust/sigstore-root sigstore-root";
    assert_eq!(count(pin, "ok"), 1, "{records:?}");
    assert_eq!(
        records
            .iter()
            .filter(|(r, o)| r == pin && o != "ok")
            .count(),
        1,
        "the refused root is audited too: {records:?}"
    );
    assert_eq!(
        count(
            "admin DELETE /admin/v1/trust/sigstore-root sigstore-root",
            "ok"
        ),
        1,
        "{records:?}"
    );
}
