//! The private registry with the real binary: `warden registry serve`, namespaces, tokens,
//! `warden skill publish` and its refusals (re-publish, downgrade, wrong or revoked key,
//! unknown namespace, unsigned, misdescribed component, reader token, no token), search,
//! show, pull by digest, owner-signed key changes and yanks, the event log; and blobs that
//! are never torn by kill -9 during publishes.

use crate::support::{cli_fails as fails, cli_ok as ok, load, text, warden_bin, wasm};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use warden::runtime::SkillSettings;
use warden_registry::manifest::ToolDef;
use warden_registry::{Limits, Manifest, Package, SecretKey};

/// A running `warden registry serve`.
pub(crate) struct Registry {
    child: Child,
    pub(crate) url: String,
    dir: PathBuf,
}

impl Registry {
    pub(crate) fn start(dir: &Path) -> Registry {
        Registry::start_with(dir, &[])
    }

    pub(crate) fn start_with(dir: &Path, extra: &[&str]) -> Registry {
        let mut child = Command::new(warden_bin())
            .args([
                "registry",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--registry-dir",
            ])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!("warden registry serve exited before it was ready");
            };
            if let Some(u) = line.trim().strip_prefix("URL:") {
                break u.trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Registry {
            child,
            url,
            dir: dir.to_owned(),
        }
    }

    /// Runs `warden` with this registry as the target (admin token from its directory
    /// unless `token` is given).
    pub(crate) fn run(&self, args: &[&str], token: Option<&str>, cwd: &Path) -> Output {
        let mut cmd = Command::new(warden_bin());
        cmd.current_dir(cwd)
            .args(args)
            .env("WARDEN_REGISTRY_URL", &self.url)
            .env("WARDEN_REGISTRY_DIR", &self.dir)
            .env_remove("WARDEN_REGISTRY_TOKEN");
        if let Some(t) = token {
            cmd.env("WARDEN_REGISTRY_TOKEN", t);
        }
        cmd.output().unwrap()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tools the `hello` component declares.
pub(crate) async fn hello_tools() -> Vec<ToolDef> {
    let skill = load("hello", SkillSettings::default()).await;
    skill
        .tools()
        .iter()
        .map(warden::packages::tool_def)
        .collect()
}

/// A package of the `hello` component as `ns/hello@version`, signed by `key` if given.
fn package(
    tools: &[ToolDef],
    ns: &str,
    version: &str,
    key: Option<&SecretKey>,
    dir: &Path,
) -> PathBuf {
    package_of("hello", tools, ns, version, "", key, dir)
}

/// A package of `component` (a built guest) as `ns/hello@version` with `tools` and
/// `extra` manifest text, signed by `key` if given.
pub(crate) fn package_of(
    component: &str,
    tools: &[ToolDef],
    ns: &str,
    version: &str,
    extra: &str,
    key: Option<&SecretKey>,
    dir: &Path,
) -> PathBuf {
    package_of_bytes(&wasm(component), tools, ns, version, extra, key, dir)
}

/// [`package_of`] with the component's bytes.
pub(crate) fn package_of_bytes(
    component: &[u8],
    tools: &[ToolDef],
    ns: &str,
    version: &str,
    extra: &str,
    key: Option<&SecretKey>,
    dir: &Path,
) -> PathBuf {
    let source = Manifest::parse_source(
        format!(
            "namespace = \"{ns}\"\nname = \"hello\"\nversion = \"{version}\"\ndescription = \"Greets\"\npublisher = \"Acme\"\n{extra}"
        )
        .as_bytes(),
    )
    .unwrap();
    let (_, mut bytes) = warden_registry::pack(&source, tools, component, "# hello\n").unwrap();
    if let Some(key) = key {
        bytes = Package::read(&bytes, &Limits::default())
            .unwrap()
            .sign(key)
            .unwrap();
    }
    let file = dir.join(format!(
        "{ns}-{version}-{}.wsk",
        key.map_or("unsigned".into(), |k| k.public().key_id())
    ));
    std::fs::write(&file, bytes).unwrap();
    file
}

pub(crate) fn key_file(dir: &Path, name: &str) -> (SecretKey, PathBuf) {
    let path = dir.join(name);
    let out = Command::new(warden_bin())
        .args(["key", "generate", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let key = SecretKey::from_file_text(&std::fs::read_to_string(&path).unwrap()).unwrap();
    (key, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_search_pull_keys_and_yanks_through_the_registry() {
    let tools = hello_tools().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let reg = Registry::start(&dir.join("registry"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("registry/admin.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (owner, owner_path) = key_file(dir, "owner.key");
    let (other, other_path) = key_file(dir, "other.key");
    let owner_pub = format!("{}.pub", owner_path.display());
    let other_pub = format!("{}.pub", other_path.display());
    let o = owner_path.to_str().unwrap();

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
    fails(
        reg.run(
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
        ),
        "exists",
    );
    let publisher = ok(reg.run(
        &["registry", "token", "ci", "--role", "publisher"],
        None,
        dir,
    ));
    let publisher = publisher.trim().to_owned();
    let reader = ok(reg.run(&["registry", "token", "ops", "--role", "reader"], None, dir));
    let reader = reader.trim().to_owned();
    let publish = |file: &Path, extra: &[&str], token: &str| {
        let mut args = vec!["skill", "publish", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        reg.run(&args, Some(token), dir)
    };

    let v1 = package(&tools, "acme", "1.0.0", Some(&owner), dir);
    let out = ok(publish(&v1, &[], &publisher));
    assert!(out.contains("published acme/hello@1.0.0"), "{out}");

    // Refusals.
    fails(publish(&v1, &[], &publisher), "versions are immutable");
    fails(publish(&v1, &[], &reader), "needs the Publisher role");
    fails(publish(&v1, &[], "wrg_not_a_token"), "401");
    let old = package(&tools, "acme", "0.9.0", Some(&owner), dir);
    fails(
        publish(&old, &[], &publisher),
        "downgrade cannot become the latest",
    );
    ok(publish(&old, &["--backport"], &publisher));
    fails(
        publish(
            &package(&tools, "acme", "1.0.1", Some(&other), dir),
            &[],
            &publisher,
        ),
        "is not a key of namespace `acme`",
    );
    fails(
        publish(
            &package(&tools, "globex", "1.0.0", Some(&owner), dir),
            &[],
            &publisher,
        ),
        "namespace `globex` does not exist",
    );
    fails(
        publish(
            &package(&tools, "acme", "1.0.2", None, dir),
            &[],
            &publisher,
        ),
        "not signed",
    );
    // A Sigstore-signed package: this registry's namespaces are owned by ed25519 keys.
    let unsigned = Package::read(
        &std::fs::read(package(&tools, "acme", "1.0.4", None, dir)).unwrap(),
        &Limits::default(),
    )
    .unwrap();
    let sigstore = warden_registry::sigstore_testing::TestSigstore::new();
    let bundle = sigstore.bundle(
        &unsigned.manifest_bytes,
        "ci@acme.example",
        "https://issuer.example",
        warden_registry::sigstore_testing::Tamper::None,
    );
    let sigstore_file = dir.join("sigstore.wsk");
    std::fs::write(
        &sigstore_file,
        unsigned.with_sigstore_bundle(bundle).unwrap(),
    )
    .unwrap();
    fails(
        publish(&sigstore_file, &[], &publisher),
        "accepts packages signed by one of them",
    );
    let mut liar = tools.clone();
    liar[0].description = "Something else entirely".into();
    fails(
        publish(
            &package(&liar, "acme", "1.0.3", Some(&owner), dir),
            &[],
            &publisher,
        ),
        "the component's tools differ from the manifest's",
    );
    let mut junk = std::fs::read(&v1).unwrap();
    let at = junk.len() / 2;
    junk[at] ^= 0x20;
    let junk_file = dir.join("junk.wsk");
    std::fs::write(&junk_file, junk).unwrap();
    fails(publish(&junk_file, &[], &publisher), "package refused");

    // Search, show, pull by digest (the reader token is enough).
    let out = ok(reg.run(&["registry", "search", "greet"], Some(&reader), dir));
    assert!(out.contains("acme/hello@1.0.0"), "{out}");
    let out = ok(reg.run(
        &["registry", "search", "nothing-like-this"],
        Some(&reader),
        dir,
    ));
    assert!(out.trim().is_empty(), "{out}");
    let out = ok(reg.run(&["registry", "show", "acme/hello"], Some(&reader), dir));
    assert!(
        out.contains("latest 1.0.0") && out.contains("0.9.0") && out.contains("backport"),
        "{out}"
    );
    let pulled = dir.join("pulled.wsk");
    ok(reg.run(
        &[
            "registry",
            "pull",
            "acme/hello",
            "--out",
            pulled.to_str().unwrap(),
        ],
        Some(&reader),
        dir,
    ));
    assert_eq!(std::fs::read(&pulled).unwrap(), std::fs::read(&v1).unwrap());

    // An owner adds a key (signed statement); the new key publishes; the owner revokes
    // it; its next publish is refused and what it signed is flagged.
    ok(reg.run(
        &["registry", "key", "add", "acme", &other_pub, "--key", o],
        Some(&publisher),
        dir,
    ));
    let v11 = package(&tools, "acme", "1.1.0", Some(&other), dir);
    ok(publish(&v11, &[], &publisher));
    // A statement signed by a key that is not the namespace's is refused.
    let (_, stranger) = key_file(dir, "stranger.key");
    fails(
        reg.run(
            &[
                "registry",
                "key",
                "revoke",
                "acme",
                &owner_pub,
                "--key",
                stranger.to_str().unwrap(),
            ],
            Some(&publisher),
            dir,
        ),
        "is not a current key of namespace `acme`",
    );
    // Without a statement, a publisher token cannot change keys.
    fails(
        reg.run(
            &["registry", "key", "revoke", "acme", &other_pub],
            Some(&publisher),
            dir,
        ),
        "needs a statement signed by a current key",
    );
    ok(reg.run(
        &["registry", "key", "revoke", "acme", &other_pub, "--key", o],
        Some(&publisher),
        dir,
    ));
    fails(
        publish(
            &package(&tools, "acme", "1.2.0", Some(&other), dir),
            &[],
            &publisher,
        ),
        "was revoked for namespace `acme`",
    );
    let out = ok(reg.run(&["registry", "show", "acme/hello"], Some(&reader), dir));
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("1.1.0"))
        .unwrap();
    assert!(line.contains("SIGNER REVOKED"), "{out}");
    // Clients refuse to fetch (and so to install) what a revoked key signed.
    fails(
        reg.run(
            &["registry", "pull", "acme/hello@1.1.0"],
            Some(&reader),
            dir,
        ),
        "its namespace has since revoked",
    );

    // Yank with the owner's key: recorded, and the latest falls back.
    ok(reg.run(
        &[
            "registry",
            "yank",
            "acme/hello@1.1.0",
            "--reason",
            "signed by a revoked key",
            "--key",
            o,
        ],
        Some(&publisher),
        dir,
    ));
    let out = ok(reg.run(&["registry", "show", "acme/hello"], Some(&reader), dir));
    assert!(
        out.contains("latest 1.0.0") && out.contains("YANKED: signed by a revoked key"),
        "{out}"
    );

    // A revoked token stops working at once.
    ok(reg.run(&["registry", "revoke-token", "ops"], None, dir));
    fails(
        reg.run(&["registry", "search", "greet"], Some(&reader), dir),
        "401",
    );

    // The event log (admin only) accounts for every change and refusal.
    fails(
        reg.run(&["registry", "events"], Some(&publisher), dir),
        "needs the Admin role",
    );
    let out = ok(reg.run(&["registry", "events", "--json"], None, dir));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let actions: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for want in [
        "namespace.create",
        "token.issue",
        "publish",
        "publish.refused",
        "key.add",
        "key.revoke",
        "yank",
    ] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    let refused = actions.iter().filter(|a| **a == "publish.refused").count();
    assert!(refused >= 8, "{actions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_publishes_never_leaves_a_torn_blob() {
    let tools = hello_tools().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let reg_dir = dir.join("registry");
    let (owner, owner_path) = key_file(dir, "owner.key");
    let publisher = {
        let reg = Registry::start(&reg_dir);
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
        ok(reg.run(&["registry", "token", "ci"], None, dir))
            .trim()
            .to_owned()
    };
    // How long one publish takes here (the component check compiles it), so the kills
    // below land across its whole course, densest near the end (blob write, commit).
    let full = {
        let reg = Registry::start(&reg_dir);
        let file = package(&tools, "acme", "0.1.0", Some(&owner), dir);
        let started = std::time::Instant::now();
        let out = Command::new(warden_bin())
            .args(["skill", "publish"])
            .arg(&file)
            .env("WARDEN_REGISTRY_URL", &reg.url)
            .env("WARDEN_REGISTRY_TOKEN", &publisher)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        started.elapsed()
    };
    let mut published = 1;
    for i in 0..12u64 {
        let reg = Registry::start(&reg_dir);
        let file = package(&tools, "acme", &format!("1.0.{i}"), Some(&owner), dir);
        let mut publish = Command::new(warden_bin())
            .args(["skill", "publish"])
            .arg(&file)
            .env("WARDEN_REGISTRY_URL", &reg.url)
            .env("WARDEN_REGISTRY_TOKEN", &publisher)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill the registry at a different point of each publish.
        std::thread::sleep(full.mul_f64(0.6 + 0.08 * i as f64));
        drop(reg); // SIGKILL
        if publish.wait().unwrap().success() {
            published += 1;
        }
    }
    eprintln!(
        "{} of 12 publishes were acknowledged before the kill (one takes {full:?})",
        published - 1
    );
    // Every blob under its final name is complete; temporary files are cleared on start;
    // every recorded version can be downloaded.
    let reg = Registry::start(&reg_dir);
    let blobs = reg_dir.join("blobs/sha256");
    for entry in std::fs::read_dir(&blobs).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(".tmp-"), "temporary file left: {name}");
        let bytes = std::fs::read(entry.path()).unwrap();
        assert_eq!(
            warden_registry::sign::sha256_hex(&bytes),
            name,
            "torn blob {name}"
        );
    }
    let shown = reg.run(&["registry", "show", "acme/hello", "--json"], None, dir);
    let versions = if shown.status.success() {
        let v: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
        v["versions"].as_array().cloned().unwrap()
    } else {
        // Nothing was ever recorded: then nothing may have been acknowledged either.
        assert!(
            text(&shown).contains("no package acme/hello"),
            "{}",
            text(&shown)
        );
        Vec::new()
    };
    assert!(
        versions.len() >= published,
        "{published} acknowledged, {} recorded",
        versions.len()
    );
    for ver in &versions {
        let d = ver["digest"].as_str().unwrap();
        let bytes = std::fs::read(blobs.join(d)).unwrap();
        assert_eq!(warden_registry::sign::sha256_hex(&bytes), d);
    }
}

#[test]
fn a_slow_upload_ends_with_408_and_gives_its_slot_back() {
    use std::io::{Read, Write};
    // (That a full registry answers 503 at once is unit-tested in `server`: the moment a
    // loaded machine gets to each connection is not something to assert on here.)
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start_with(
        &tmp.path().join("registry"),
        &["--max-requests", "2", "--request-timeout-secs", "2"],
    );
    let token = std::fs::read_to_string(reg.dir.join("admin.token")).unwrap();
    let addr = reg.url.trim_start_matches("http://").to_owned();
    // Two uploads that announce a body and never send it.
    let stalled: Vec<std::net::TcpStream> = (0..2)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            write!(
                s,
                "POST /v1/packages HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Length: 1000\r\n\r\nPK",
                token.trim()
            )
            .unwrap();
            s
        })
        .collect();
    for mut s in stalled {
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        assert!(out.contains("took longer than 2 s"), "{out}");
    }
    // Their slots are free again.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "GET /v1/namespaces HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        token.trim()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}
