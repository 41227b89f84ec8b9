//! Skill packages with the real binary: `skill new` -> `pack` (which builds) -> `key
//! generate` -> `sign` -> `verify` / `inspect`, and the refusals: an unsigned package, a
//! wrong or untrusted key, a flipped byte, a component whose tools differ from its signed
//! manifest, tools listed in skill.toml that the component does not declare, a key file
//! other users can read.

use crate::support::{cli_fails as fails, cli_ok_text as ok, component, wasm, wasm_target_dir};
use serde_json::json;
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use warden_registry::manifest::{Annotations, ToolDef};
use warden_registry::{Limits, Manifest, Package, SecretKey};

fn warden(args: &[&str], cwd: &Path) -> Output {
    Command::new(crate::support::warden_bin())
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap()
}

/// Rewrites one entry of a zip (same options for all entries).
fn replace_entry(bytes: &[u8], name: &str, f: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for i in 0..zip.len() {
        let mut e = zip.by_index(i).unwrap();
        let entry = e.name().unwrap().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if entry == name {
            f(&mut data);
        }
        out.start_file(entry, zip::write::SimpleFileOptions::default())
            .unwrap();
        out.write_all(&data).unwrap();
    }
    out.finish().unwrap().into_inner()
}

#[test]
fn an_author_packs_signs_and_verifies_and_tampering_is_refused() {
    let _ = component("hello"); // the shared setup installs the toolchain if needed
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(warden(&["skill", "new", "pkgdemo", "--dir", "."], dir));
    let target = wasm_target_dir();
    let target = target.to_str().unwrap();

    // Unsigned pack: builds the crate, writes pkgdemo/pkgdemo-0.1.0.wsk.
    let out = ok(warden(
        &["skill", "pack", "pkgdemo", "--target-dir", target],
        dir,
    ));
    let pkg: PathBuf = dir.join("pkgdemo/pkgdemo-0.1.0.wsk");
    assert!(pkg.exists(), "{out}");
    assert!(
        out.contains("local/pkgdemo@0.1.0") && out.contains("unsigned"),
        "{out}"
    );
    let pkg_s = pkg.to_str().unwrap();
    fails(warden(&["skill", "verify", pkg_s], dir), "not signed");

    // Keys: 0600, never overwritten.
    let public = ok(warden(&["key", "generate", "--out", "author.key"], dir));
    let public = public.lines().next().unwrap().trim().to_owned();
    assert!(public.starts_with("ed25519:"), "{public}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("author.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let secret = std::fs::read_to_string(dir.join("author.key")).unwrap();
    fails(
        warden(&["key", "generate", "--out", "author.key"], dir),
        "never overwritten",
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("author.key")).unwrap(),
        secret
    );
    let other = ok(warden(&["key", "generate", "--out", "other.key"], dir));
    let other = other.lines().next().unwrap().trim().to_owned();

    ok(warden(
        &["skill", "sign", pkg_s, "--key", "author.key"],
        dir,
    ));
    let trust = format!("local={public}");
    let out = ok(warden(&["skill", "verify", pkg_s, "--trust", &trust], dir));
    assert!(
        out.contains("signer trusted for namespace `local`"),
        "{out}"
    );
    let out = ok(warden(&["skill", "verify", pkg_s], dir));
    assert!(out.contains("NOT checked against a trust policy"), "{out}");
    // Packing twice gives the same bytes (reproducible packages).
    let signed = std::fs::read(&pkg).unwrap();
    ok(warden(
        &[
            "skill",
            "pack",
            "pkgdemo",
            "--target-dir",
            target,
            "--key",
            "author.key",
            "--out",
            "again.wsk",
        ],
        dir,
    ));
    assert_eq!(std::fs::read(dir.join("again.wsk")).unwrap(), signed);

    let out = ok(warden(&["skill", "inspect", pkg_s], dir));
    for want in [
        "local/pkgdemo@0.1.0",
        "greet",
        "read-only",
        &public,
        "capabilities: none",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let out = ok(warden(&["skill", "inspect", "--json", pkg_s], dir));
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["tools"][0]["name"], "greet");
    assert_eq!(
        v["files"]["component.wasm"]["sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );

    // The happy path goes on, all real binaries: publish to a registry, install into two
    // gateways, and an official MCP client (TypeScript SDK) calls the new tool.
    publish_install_and_call(dir, pkg_s, &public, &signed);

    // Wrong key, a key trusted elsewhere.
    fails(
        warden(
            &[
                "skill",
                "verify",
                pkg_s,
                "--trust",
                &format!("local={other}"),
            ],
            dir,
        ),
        "unknown signer",
    );
    fails(
        warden(
            &[
                "skill",
                "verify",
                pkg_s,
                "--trust",
                &format!("acme={public}"),
            ],
            dir,
        ),
        "not trusted for namespace `local`",
    );

    // A flipped byte in each entry's contents.
    for (entry, why) in [
        ("component.wasm", "does not match its digest"),
        ("README.md", "does not match its digest"),
        ("skill.toml", "signature does not verify"),
        ("signature.json", ""),
    ] {
        let bad = replace_entry(&signed, entry, |d| {
            let at = if entry == "skill.toml" {
                // Inside the description's text, so it still parses.
                String::from_utf8_lossy(d).find("Greets").unwrap() + 1
            } else {
                d.len() / 3
            };
            d[at] ^= 0x01;
        });
        let file = dir.join(format!("bad-{entry}.wsk"));
        std::fs::write(&file, bad).unwrap();
        let out = warden(
            &["skill", "verify", file.to_str().unwrap(), "--trust", &trust],
            dir,
        );
        fails(out, why);
    }

    // A key file other users can read is refused.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("other.key"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        fails(
            warden(&["skill", "sign", pkg_s, "--key", "other.key"], dir),
            "can be read by other users",
        );
    }

    // skill.toml listing a tool the component does not declare: pack refuses.
    let manifest = dir.join("pkgdemo/skill.toml");
    let mut source = std::fs::read_to_string(&manifest).unwrap();
    source.push_str(
        "\n[[tools]]\nname = \"greet\"\ndescription = \"Harmless\"\ninput_schema = '{\"type\":\"object\"}'\n",
    );
    std::fs::write(&manifest, source).unwrap();
    fails(
        warden(&["skill", "pack", "pkgdemo", "--target-dir", target], dir),
        "differ from the component's",
    );
}

#[test]
fn a_signed_manifest_that_misdescribes_the_component_is_refused() {
    // `hello` declares `greet` (and more); this manifest claims one harmless tool.
    let source = Manifest::parse_source(
        br#"
namespace = "acme"
name = "hello"
version = "1.0.0"
description = "Says hello"
publisher = "Acme"
"#,
    )
    .unwrap();
    let claimed = vec![ToolDef {
        name: "greet".into(),
        description: "Says hello".into(),
        input_schema: json!({"type": "object"}),
        output_schema: None,
        annotations: Annotations::default(),
    }];
    let (_, unsigned) =
        warden_registry::pack(&source, &claimed, &wasm("hello"), "# hello\n").unwrap();
    let key = SecretKey::generate().unwrap();
    let signed = Package::read(&unsigned, &Limits::default())
        .unwrap()
        .sign(&key)
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("liar.wsk");
    std::fs::write(&file, signed).unwrap();
    let trust = format!("acme={}", key.public());
    let out = fails(
        warden(
            &["skill", "verify", file.to_str().unwrap(), "--trust", &trust],
            tmp.path(),
        ),
        "the component's tools differ from the manifest's",
    );
    assert!(out.contains("tool `greet`"), "{out}");
}

#[test]
fn the_gateway_trusts_no_signer_until_an_operator_adds_one() {
    use crate::console::warden as cli;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = crate::gateway::Up::start(d);
    let out = ok(cli(d, &["trust", "list"]));
    assert_eq!(
        out.trim(),
        "sigstore trusted root: none pinned (Sigstore-signed packages are refused)",
        "nothing is trusted on a new gateway: {out}"
    );
    let key = SecretKey::generate().unwrap().public().to_string();
    let out = ok(cli(d, &["trust", "add", "acme", "--key", &key]));
    assert!(out.contains(&key), "{out}");
    let out = ok(cli(
        d,
        &[
            "trust",
            "add",
            "acme",
            "--sigstore-san",
            "https://github.com/acme/skills/.github/workflows/release.yml@refs/heads/main",
            "--sigstore-issuer",
            "https://token.actions.githubusercontent.com",
        ],
    ));
    assert!(out.contains("sigstore https://github.com/acme"), "{out}");
    fails(
        cli(d, &["trust", "add", "Not_A_Namespace", "--key", &key]),
        "is not a namespace",
    );
    fails(
        cli(d, &["trust", "add", "acme", "--key", "ed25519:AAAA"]),
        "is not a public key",
    );
    // Only the binary's release key signs for the first-party namespace.
    for reserved in ["warden", "dev"] {
        fails(
            cli(d, &["trust", "add", reserved, "--key", &key]),
            "is reserved",
        );
    }
    ok(cli(d, &["trust", "rm", "acme", "--key", &key]));
    fails(cli(d, &["trust", "rm", "acme", "--key", &key]), "404");
    let v: serde_json::Value =
        serde_json::from_str(&ok(cli(d, &["trust", "list", "--json"]))).unwrap();
    let signers = v["trust"][0]["signers"].as_array().unwrap();
    assert_eq!(signers.len(), 1, "{v}");
    assert!(signers[0]["sigstore"].is_object(), "{v}");
    // Each change, and each refused one, is in the audit trail.
    let records =
        crate::support::audit_records(&ok(cli(d, &["audit", "tail", "-n", "50", "--json"])));
    let count = |request: &str, outcome: &str| {
        records
            .iter()
            .filter(|(r, o)| r == request && o == outcome)
            .count()
    };
    assert_eq!(
        count("admin POST /admin/v1/trust acme", "ok"),
        2,
        "{records:?}"
    );
    assert_eq!(
        count("admin DELETE /admin/v1/trust acme", "ok"),
        1,
        "{records:?}"
    );
    assert_eq!(
        count("admin DELETE /admin/v1/trust acme", "invalid"),
        1,
        "{records:?}"
    );
    assert_eq!(
        count("admin POST /admin/v1/trust Not_A_Namespace", "invalid"),
        1,
        "{records:?}"
    );
    drop(up);
}

/// `pkg` (signed by `public`, namespace `local`) published to a fresh registry, installed
/// from it into two gateways (the same SHA-256 in both), and called by the TypeScript SDK.
fn publish_install_and_call(dir: &Path, pkg: &str, public: &str, bytes: &[u8]) {
    use crate::console::warden as cli;
    use crate::support::cli_ok;
    let reg = crate::registry::Registry::start(&dir.join("registry"));
    cli_ok(reg.run(
        &[
            "registry",
            "namespace",
            "create",
            "local",
            "--owner",
            "author.key.pub",
        ],
        None,
        dir,
    ));
    let publisher = cli_ok(reg.run(&["registry", "token", "ci"], None, dir))
        .trim()
        .to_owned();
    let reader = cli_ok(reg.run(&["registry", "token", "gw", "--role", "reader"], None, dir))
        .trim()
        .to_owned();
    cli_ok(reg.run(&["skill", "publish", pkg], Some(&publisher), dir));
    let digest = warden_registry::sign::sha256_hex(bytes);
    let policy = dir.join("local.cedar");
    std::fs::write(
        &policy,
        "permit (principal == Warden::Agent::\"default/default/dev/local\", action, resource);",
    )
    .unwrap();
    for gw in ["gw1", "gw2"] {
        let d = dir.join(gw);
        let up = crate::gateway::Up::start(&d);
        let token = up.token.clone().unwrap();
        cli_ok(cli(&d, &["policy", "apply", policy.to_str().unwrap()]));
        cli_ok(cli(&d, &["trust", "add", "local", "--key", public]));
        cli_ok(cli(
            &d,
            &[
                "skill",
                "install",
                "local/pkgdemo@0.1.0",
                "--registry",
                reg.url.as_str(),
                "--registry-token",
                &reader,
                "--accept",
            ],
        ));
        let report = crate::gateway::ts_client_calling(
            &up,
            "v1",
            Some(&token),
            &[
                "--call",
                "local_pkgdemo__greet",
                "--args",
                r#"{"name":"Ada"}"#,
            ],
        );
        assert!(report.get("error").is_none(), "{report}");
        assert_eq!(report["call"]["isError"], false, "{report}");
        assert!(
            crate::gateway::text_of(&report["call"]).contains("Hello, Ada!"),
            "{report}"
        );
        let installed: serde_json::Value =
            serde_json::from_str(&cli_ok(cli(&d, &["skill", "installed", "--json"]))).unwrap();
        let sha = installed["skills"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "local/pkgdemo")
            .map(|s| s["package"]["sha256"].clone());
        assert_eq!(sha, Some(serde_json::json!(digest)), "{installed}");
        assert!(up.stop().success());
    }
}
