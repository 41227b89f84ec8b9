//! The author's package commands: `warden key generate`, `warden skill pack`, `sign` (with
//! an ed25519 key, or by attaching a Sigstore bundle), `verify` (a Sigstore bundle against a
//! trusted root given on the command line), and `inspect` of a package file.
//!
//! Invariants: a signing key file is created 0600 and never overwritten, and a key file
//! that other users can read is refused; `pack` and `verify` load the component and refuse
//! a package whose component declares other tools than its manifest; `verify` fails (exit
//! status 1) on any problem, and says plainly when no trust policy was given, so a valid
//! signature is never mistaken for a trusted signer.
//!
//! Threat: an author's key leaking through file permissions, and a package that passes a
//! check its reader believed stricter than it was.

use crate::toolchain::{self, Install};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use warden::datadir::private_file_options;
use warden::packages;
use warden::runtime::{Runtime, RuntimeConfig, SkillSettings};
use warden_registry::manifest::{self, README_ENTRY};
use warden_registry::{
    Limits, Manifest, Package, PublicKey, SecretKey, SigstoreRoot, TrustPolicy, TrustedSigner, sign,
};

/// File extension of skill packages.
pub const EXTENSION: &str = "wsk";

/// `warden key generate`: a new ed25519 signing key in a 0600 file (never overwritten) and
/// its public key in `FILE.pub`.
pub fn key_generate(out: &Path) -> Result<()> {
    use std::io::Write;
    let key = SecretKey::generate()?;
    let mut file = private_file_options()
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| {
            format!(
                "creating {} (an existing key file is never overwritten)",
                out.display()
            )
        })?;
    file.write_all(key.to_file_text().as_bytes())?;
    file.sync_all()?;
    let public = key.public();
    let pub_path = PathBuf::from(format!("{}.pub", out.display()));
    std::fs::write(&pub_path, format!("{public}\n"))
        .with_context(|| format!("writing {}", pub_path.display()))?;
    println!("{public}");
    eprintln!(
        "signing key written to {} (0600; keep it secret), public key to {} (key id {})",
        out.display(),
        pub_path.display(),
        public.key_id()
    );
    Ok(())
}

/// Reads a signing key file, refusing one that other users can read.
pub fn read_key(path: &Path) -> Result<SecretKey> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("reading the signing key {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "the signing key {} can be read by other users (mode {:o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the signing key {}", path.display()))?,
    );
    Ok(SecretKey::from_file_text(&text)?)
}

/// A public key given inline or as a `.pub` file.
pub fn public_key(arg: &str) -> Result<PublicKey> {
    if arg.starts_with(sign::PUBLIC_PREFIX) {
        return Ok(arg.parse()?);
    }
    let text =
        std::fs::read_to_string(arg).with_context(|| format!("{arg:?}: not a key or a file"))?;
    Ok(text.trim().parse()?)
}

/// Options of `warden skill pack`.
#[derive(Debug)]
pub struct PackOptions {
    /// The skill's directory (holds `skill.toml` and `README.md`).
    pub dir: PathBuf,
    /// A built component; built from `dir` when absent.
    pub component: Option<PathBuf>,
    /// Where to write the package.
    pub out: Option<PathBuf>,
    /// Sign with this key file too.
    pub key: Option<PathBuf>,
    /// Cargo target directory for the wasm build.
    pub target_dir: Option<PathBuf>,
}

/// `warden skill pack`.
pub async fn pack(opts: PackOptions) -> Result<()> {
    let source_path = opts.dir.join(manifest::MANIFEST_ENTRY);
    let source_bytes = std::fs::read(&source_path).with_context(|| {
        format!(
            "reading {} (the skill's manifest: namespace, name, version, description, publisher, capabilities)",
            source_path.display()
        )
    })?;
    let source = Manifest::parse_source(&source_bytes)
        .with_context(|| format!("{}", source_path.display()))?;
    let readme_path = opts.dir.join(README_ENTRY);
    let readme = std::fs::read_to_string(&readme_path)
        .with_context(|| format!("reading {}", readme_path.display()))?;
    let key = opts.key.as_deref().map(read_key).transpose()?;
    let component_path = match opts.component {
        Some(p) => p,
        None => build(&opts.dir, opts.target_dir).await?,
    };
    let wasm = std::fs::read(&component_path)
        .with_context(|| format!("reading {}", component_path.display()))?;
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let skill = runtime
        .load(&source.name, &wasm, SkillSettings::default())
        .await
        .with_context(|| format!("{} is not a usable skill", component_path.display()))?;
    let declared: Vec<_> = skill.tools().iter().map(packages::tool_def).collect();
    let (manifest, mut bytes) = warden_registry::pack(&source, &declared, &wasm, &readme)?;
    if let Some(key) = &key {
        bytes = Package::read(&bytes, &Limits::default())?.sign(key)?;
    }
    let out = opts.out.unwrap_or_else(|| {
        opts.dir.join(format!(
            "{}-{}.{EXTENSION}",
            manifest.name, manifest.version
        ))
    });
    write_atomic(&out, &bytes)?;
    let pkg = Package::read(&bytes, &Limits::default())?;
    println!("{}", out.display());
    eprintln!(
        "packed {} ({} tool(s), {:.1} KiB, sha256 {}){}",
        manifest.id(),
        manifest.tools.len(),
        bytes.len() as f64 / 1024.0,
        pkg.digest,
        match &key {
            Some(k) => format!(", signed by {}", k.public()),
            None => ", unsigned (sign it with `warden skill sign FILE --key KEY`)".into(),
        }
    );
    Ok(())
}

async fn build(dir: &Path, target_dir: Option<PathBuf>) -> Result<PathBuf> {
    if !dir.join("Cargo.toml").exists() {
        bail!(
            "{} has no Cargo.toml to build; pass the built component with --component FILE",
            dir.display()
        );
    }
    let tc = tokio::task::spawn_blocking(|| toolchain::resolve(Install::IfPossible)).await??;
    let target_dir = target_dir.unwrap_or_else(|| dir.join("target"));
    eprintln!("building {} with the {}", dir.display(), tc.describe());
    let crate_dir = dir.to_owned();
    let built = tokio::task::spawn_blocking(move || toolchain::build(&tc, &crate_dir, &target_dir))
        .await??;
    Ok(built.wasm)
}

/// `warden skill sign`.
pub fn sign(file: &Path, key: &Path, out: Option<&Path>) -> Result<()> {
    let key = read_key(key)?;
    let bytes = read_package_file(file)?;
    let pkg = Package::read(&bytes, &Limits::default())
        .with_context(|| format!("{} is refused", file.display()))?;
    let signed = pkg.sign(&key)?;
    let out = out.unwrap_or(file);
    write_atomic(out, &signed)?;
    let digest = warden_registry::sign::sha256_hex(&signed);
    println!("{}", out.display());
    eprintln!(
        "signed {} with {} (key id {}); package sha256 {digest}",
        pkg.manifest.id(),
        key.public(),
        key.public().key_id()
    );
    Ok(())
}

/// `warden skill sign --sigstore-bundle`: attaches a Sigstore bundle made over the
/// package's `skill.toml` (checked when the package is verified against a trusted root).
pub fn attach_sigstore(file: &Path, bundle: &Path, out: Option<&Path>) -> Result<()> {
    let bytes = read_package_file(file)?;
    let pkg = Package::read(&bytes, &Limits::default())
        .with_context(|| format!("{} is refused", file.display()))?;
    let text = std::fs::read(bundle).with_context(|| format!("reading {}", bundle.display()))?;
    let json: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a Sigstore bundle (JSON)", bundle.display()))?;
    let signed = pkg.with_sigstore_bundle(json)?;
    // The result must still read (the signature entry has a size cap).
    Package::read(&signed, &Limits::default())
        .with_context(|| format!("{} cannot be attached", bundle.display()))?;
    let out = out.unwrap_or(file);
    write_atomic(out, &signed)?;
    println!("{}", out.display());
    eprintln!(
        "attached the Sigstore bundle to {}; package sha256 {} (verify it with `warden skill verify {} --sigstore-root trusted_root.json`)",
        pkg.manifest.id(),
        warden_registry::sign::sha256_hex(&signed),
        out.display()
    );
    Ok(())
}

/// `warden skill inspect --manifest`: the package's `skill.toml`, byte for byte.
pub fn print_manifest(file: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let pkg = Package::read(bytes, &Limits::default())
        .with_context(|| format!("{} is refused", file.display()))?;
    std::io::stdout().write_all(&pkg.manifest_bytes)?;
    Ok(())
}

/// Parses `--trust NAMESPACE=SIGNER` arguments (`ed25519:...` or `sigstore:SAN|ISSUER`).
pub fn trust_policy(args: &[String]) -> Result<TrustPolicy> {
    let mut policy = TrustPolicy::default();
    for a in args {
        let (ns, signer) = a.split_once('=').with_context(|| {
            format!(
                "--trust {a:?}: expected NAMESPACE=ed25519:KEY or NAMESPACE=sigstore:SAN|ISSUER"
            )
        })?;
        if !manifest::valid_name(ns) {
            bail!("--trust {a:?}: {ns:?} is not a namespace");
        }
        let signer = match signer.strip_prefix("sigstore:") {
            Some(id) => {
                let (san, issuer) = id
                    .rsplit_once('|')
                    .filter(|(s, i)| !s.is_empty() && !i.is_empty())
                    .with_context(|| format!("--trust {a:?}: expected sigstore:SAN|ISSUER"))?;
                TrustedSigner::Sigstore {
                    san: san.to_owned(),
                    issuer: issuer.to_owned(),
                }
            }
            None => TrustedSigner::Key(signer.parse()?),
        };
        policy.trust(ns, signer);
    }
    Ok(policy)
}

/// `warden skill verify`: structure, digests, signature (a Sigstore bundle against
/// `--sigstore-root`), the component's tools, and the signer against `--trust` when given.
pub async fn verify(
    file: &Path,
    trust: &[String],
    sigstore_root: Option<&Path>,
    json: bool,
) -> Result<()> {
    let policy = trust_policy(trust)?;
    let root = sigstore_root
        .map(|p| -> Result<SigstoreRoot> {
            let json = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            SigstoreRoot::parse(&json).with_context(|| format!("{}", p.display()))
        })
        .transpose()?;
    let bytes = read_package_file(file)?;
    let pkg = Package::read(&bytes, &Limits::default())
        .with_context(|| format!("{} is refused", file.display()))?;
    let signer = pkg
        .signer_with(root.as_ref())
        .with_context(|| format!("{} is refused", file.display()))?;
    if !trust.is_empty() {
        policy
            .check(&pkg.manifest.namespace, &signer)
            .with_context(|| format!("{} is refused", file.display()))?;
    }
    let runtime = Runtime::new(RuntimeConfig::default())?;
    packages::load_checked(&runtime, &pkg.manifest.name, &pkg, SkillSettings::default())
        .await
        .with_context(|| format!("{} is refused", file.display()))?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "package": pkg.manifest.id(),
                "sha256": pkg.digest,
                "signer": signer.to_string(),
                "trusted": !trust.is_empty(),
            })
        );
    } else {
        println!(
            "OK {}: signature valid, signed by {signer}; the component's tools match the manifest",
            pkg.manifest.id()
        );
        if trust.is_empty() {
            println!(
                "   signer NOT checked against a trust policy (pass --trust {}=ed25519:... or =sigstore:SAN|ISSUER to check it)",
                pkg.manifest.namespace
            );
        } else {
            println!(
                "   signer trusted for namespace `{}`",
                pkg.manifest.namespace
            );
        }
    }
    Ok(())
}

/// Whether `bytes` look like a zip (a package) rather than a component.
pub fn is_package(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")
}

/// `warden skill inspect` of a package: identity, signer, digests, tools, capabilities.
pub fn inspect(file: &Path, bytes: &[u8], json: bool) -> Result<()> {
    let pkg = Package::read(bytes, &Limits::default())
        .with_context(|| format!("{} is refused", file.display()))?;
    let m = &pkg.manifest;
    let signer = pkg
        .signer()
        .map(|s| s.to_string())
        .map_err(|e| e.to_string());
    if json {
        let tools: Vec<serde_json::Value> =
            m.tool_defs()?.iter().map(packages::tool_json).collect();
        println!(
            "{}",
            serde_json::json!({
                "namespace": m.namespace,
                "name": m.name,
                "version": m.version,
                "description": m.description,
                "publisher": m.publisher,
                "sha256": pkg.digest,
                "size": pkg.size,
                "signer": signer.as_ref().ok(),
                "signature_error": signer.as_ref().err(),
                "files": m.files,
                "capabilities": m.capabilities,
                "tools": tools,
            })
        );
        return Ok(());
    }
    println!("{} ({})", m.id(), file.display());
    println!("  {}", m.description);
    println!("  publisher: {}", m.publisher);
    let sigstore = pkg.signature.as_ref().is_some_and(|s| s.sigstore.is_some());
    match &signer {
        Ok(s) => println!("  signer:    {s} (signature valid; trust is checked on install)"),
        Err(_) if sigstore => println!(
            "  signer:    a Sigstore bundle, not verified here (`warden skill verify {} --sigstore-root trusted_root.json`)",
            file.display()
        ),
        Err(e) => println!("  signer:    NONE VALID ({e})"),
    }
    println!("  package:   sha256 {} ({} bytes)", pkg.digest, pkg.size);
    for (name, f) in &m.files {
        println!("  {name:<14} sha256 {} ({} bytes)", f.sha256, f.size);
    }
    println!("  {} tool(s):", m.tools.len());
    for t in &m.tools {
        let first = t.description.lines().next().unwrap_or_default();
        let a = &t.annotations;
        let hints: Vec<&str> = [
            (a.read_only == Some(true), "read-only"),
            (a.destructive == Some(true), "destructive"),
            (a.idempotent == Some(true), "idempotent"),
            (a.open_world == Some(true), "open-world"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, h)| *h)
        .collect();
        let hints = if hints.is_empty() {
            String::new()
        } else {
            format!(" [{}]", hints.join(", "))
        };
        println!("    {:<24} {first}{hints}", t.name);
    }
    let c = &m.capabilities;
    if c.is_empty() {
        println!("  capabilities: none requested");
    } else {
        println!("  capabilities requested (granted only with an operator's consent):");
        for h in &c.hosts {
            let methods = if h.methods.is_empty() {
                "any method".to_owned()
            } else {
                h.methods.join(",")
            };
            println!(
                "    outbound {}://{}{} ({methods})",
                h.scheme.as_deref().unwrap_or("https"),
                h.host,
                h.path_prefix.as_deref().unwrap_or("/")
            );
            for i in h.inject.iter().chain(&h.inject_query).chain(&h.basic_auth) {
                println!("      injects {i}");
            }
        }
        for r in &c.reveal {
            println!("    reveal secret {r} (the skill reads its value)");
        }
        let l = &c.limits;
        if !l.is_empty() {
            println!(
                "    limits: deadline {} ms, memory {} MiB, concurrency {}",
                l.deadline_ms.map_or("-".into(), |v| v.to_string()),
                l.memory_mib.map_or("-".into(), |v| v.to_string()),
                l.max_concurrency.map_or("-".into(), |v| v.to_string())
            );
        }
    }
    Ok(())
}

/// Reads a package file, refusing one larger than the package cap before reading it.
pub fn read_package_file(file: &Path) -> Result<Vec<u8>> {
    let cap = Limits::default().package;
    let size = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    if size > cap {
        bail!(
            "{} is {size} bytes; a package is at most {cap} bytes",
            file.display()
        );
    }
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
