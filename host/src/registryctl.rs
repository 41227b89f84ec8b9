//! `warden registry serve` and the registry CLI (`warden registry namespace|key|token|
//! yank|search|show|events`, `warden skill publish`): thin commands over the registry's
//! HTTP API (`warden_registry::server`).
//!
//! The registry URL and token come from flags, else `WARDEN_REGISTRY_URL` /
//! `WARDEN_REGISTRY_TOKEN`, else the `endpoint` and `admin.token` files `warden registry
//! serve` writes in its data directory (0600), so on the registry's own machine the
//! commands just work.
//!
//! Invariants: the registry checks every published component with the real runtime (its
//! declared tools must equal the signed manifest's); the admin token is written once to a
//! 0600 file and never printed; owner statements (key changes, yanks) are signed locally
//! with the owner's key file, which never leaves this machine.
//!
//! Threat: registry credentials and owner keys leaking through arguments or files others
//! can read (prefer the files or the environment over `--registry-token`).

use crate::apiclient::{ApiClient, Hints, json_or_error};
use crate::packaging::{public_key, read_key, read_package_file};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use warden::datadir::{create_private_dir, write_private_atomic};
use warden::runtime::{Runtime, RuntimeConfig, SkillSettings};
use warden_registry::server::{LoadLimits, PublishCheck, RegistryState};
use warden_registry::store::{Role, Store};
use warden_registry::{Package, sign};

/// Where the registry is and how to authenticate to it.
#[derive(Debug, Clone, Args)]
pub struct RegistryTarget {
    /// Registry base URL (default: the registry data directory's `endpoint` file).
    #[arg(long = "registry", env = warden::env::REGISTRY_URL, global = true)]
    url: Option<String>,
    /// Registry token (default: the registry data directory's `admin.token` file).
    #[arg(
        long = "registry-token",
        env = warden::env::REGISTRY_TOKEN,
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// The registry's data directory (to find `endpoint` and `admin.token`).
    #[arg(long = "registry-dir", env = warden::env::REGISTRY_DIR, global = true)]
    dir: Option<PathBuf>,
    /// Print the API's JSON instead of a summary.
    #[arg(long, global = true)]
    json: bool,
}

/// `warden registry ...`
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Serve a private registry: packages in a redb file and a content-addressed blob
    /// directory; on first start writes the admin token to DIR/admin.token (0600).
    Serve {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:7879")]
        listen: SocketAddr,
        /// Requests served at once; more are refused with 503 and Retry-After.
        #[arg(long, default_value_t = 64)]
        max_requests: usize,
        /// The longest a request may take, upload included (then 408).
        #[arg(long, default_value_t = 300)]
        request_timeout_secs: u64,
    },
    /// Namespaces and their owner keys.
    #[command(subcommand)]
    Namespace(NamespaceCommand),
    /// Add or revoke a namespace's keys (signed by a current owner key).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Issue a registry token (admin).
    Token {
        /// Who it is for.
        name: String,
        /// `reader`, `publisher` or `admin`.
        #[arg(long, default_value = "publisher")]
        role: String,
    },
    /// Revoke every registry token issued to NAME (admin); the next request with one fails.
    RevokeToken {
        /// Who the tokens were issued to.
        name: String,
    },
    /// Yank a version: it stays downloadable by digest but is never the latest.
    Yank {
        /// `NAMESPACE/NAME@VERSION`.
        package: String,
        /// Why (shown to everyone who looks at it).
        #[arg(long)]
        reason: String,
        /// An owner key of the namespace to sign the yank with (not needed with an admin
        /// token).
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Search packages (by name, description and tool names).
    Search {
        /// Text to look for (empty: everything).
        #[arg(default_value = "")]
        query: String,
    },
    /// Show a package's versions.
    Show {
        /// `NAMESPACE/NAME`.
        package: String,
    },
    /// Download a package (the latest version unless one is named), checked against its
    /// digest.
    Pull {
        /// `NAMESPACE/NAME[@VERSION]`.
        package: String,
        /// Write it here (default: NAME-VERSION.wsk in the current directory).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// The registry's event log (admin).
    Events {
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
}

/// `warden registry namespace ...`
#[derive(Debug, Subcommand)]
pub enum NamespaceCommand {
    /// Create a namespace owned by a key (admin).
    Create {
        /// The namespace.
        name: String,
        /// Its first owner key (`ed25519:...`, or a `.pub` file).
        #[arg(long)]
        owner: String,
    },
    /// Show a namespace and its keys.
    Show {
        /// The namespace.
        name: String,
    },
    /// List namespaces.
    List,
}

/// `warden registry key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Add a key to a namespace.
    Add {
        /// The namespace.
        namespace: String,
        /// The key to add (`ed25519:...`, or a `.pub` file).
        public_key: String,
        /// A current owner key file to sign the change with (not needed with an admin
        /// token).
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Revoke a key: its new publishes are refused and what it signed is flagged.
    Revoke {
        /// The namespace.
        namespace: String,
        /// The key to revoke (`ed25519:...`, or a `.pub` file).
        public_key: String,
        /// A current owner key file to sign the change with (not needed with an admin
        /// token).
        #[arg(long)]
        key: Option<PathBuf>,
    },
}

impl RegistryTarget {
    /// A target from explicit values (for commands that also talk to a gateway).
    pub fn new(url: Option<String>, token: Option<String>) -> Self {
        Self {
            url,
            token,
            dir: None,
            json: false,
        }
    }
}

fn registry_dir(t: &RegistryTarget) -> PathBuf {
    t.dir
        .clone()
        .unwrap_or_else(|| warden::datadir::default_data_dir().join("registry"))
}

/// A registry API client.
pub struct RegistryClient(ApiClient);

impl RegistryClient {
    /// From flags, the environment or the registry data directory's files.
    pub fn new(t: &RegistryTarget) -> Result<Self> {
        Ok(Self(ApiClient::resolve(
            t.url.as_deref(),
            t.token.as_deref(),
            &registry_dir(t),
            &Hints {
                what: "registry",
                url: "--registry URL (or WARDEN_REGISTRY_URL)",
                token: "--registry-token (or WARDEN_REGISTRY_TOKEN)",
                dir: "--registry-dir",
            },
        )?))
    }

    /// A JSON call; a non-success status is an error carrying the API's message.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.0.call(method, path, bytes, &[]).await
    }

    /// The digest and version of `NAMESPACE/NAME[@VERSION]` (the latest when no version is
    /// named; a yanked version only when named).
    pub async fn resolve(&self, package: &str) -> Result<(String, String)> {
        let (ns, name, version) = split_package(package)?;
        let meta = self
            .call("GET", &format!("/v1/packages/{ns}/{name}"), None)
            .await?;
        let version = match version {
            Some(v) => v,
            None => meta["latest"]
                .as_str()
                .with_context(|| format!("{ns}/{name} has no version that is not yanked"))?
                .to_owned(),
        };
        let entry = meta["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["version"] == version.as_str())
            .with_context(|| format!("{ns}/{name} has no version {version}"))?;
        let digest = entry["digest"]
            .as_str()
            .filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
            .context("no valid digest in the registry's answer")?
            .to_owned();
        // The version names files on this machine: it must be a plain semver.
        semver::Version::parse(&version)
            .ok()
            .filter(|_| version.len() <= 64)
            .with_context(|| format!("the registry answered an invalid version {version:?}"))?;
        if entry["signer_revoked"] == true {
            bail!(
                "{ns}/{name}@{version} was signed by a key its namespace has since revoked; refused"
            );
        }
        Ok((digest, version))
    }

    /// Downloads a package by digest and checks the digest.
    pub async fn download(&self, digest: &str) -> Result<Vec<u8>> {
        let (status, body) = self
            .0
            .request(
                "GET",
                &format!("/v1/blobs/{digest}"),
                Vec::new(),
                "application/json",
            )
            .await?;
        if !status.is_success() {
            json_or_error(status, &body, &[])?;
        }
        if sign::sha256_hex(&body) != digest {
            bail!("the registry sent bytes whose SHA-256 is not {digest}; refused");
        }
        Ok(body.to_vec())
    }
}

fn split_package(arg: &str) -> Result<(String, String, Option<String>)> {
    let (path, version) = match arg.split_once('@') {
        Some((p, v)) => (p, Some(v.to_owned())),
        None => (arg, None),
    };
    let (ns, name) = path
        .split_once('/')
        .with_context(|| format!("{arg:?}: expected NAMESPACE/NAME[@VERSION]"))?;
    for part in [ns, name] {
        if !warden_registry::manifest::valid_name(part) {
            bail!("{arg:?}: {part:?} is not a valid namespace or name");
        }
    }
    Ok((ns.to_owned(), name.to_owned(), version))
}

/// Checks each published component with the real runtime.
struct ComponentCheck {
    runtime: Runtime,
}

impl PublishCheck for ComponentCheck {
    fn check<'a>(
        &'a self,
        package: &'a Package,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            warden::packages::load_checked(
                &self.runtime,
                &package.manifest.name,
                package,
                SkillSettings::default(),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        })
    }
}

/// `warden registry serve`.
async fn serve(dir: &Path, listen: SocketAddr, load: LoadLimits) -> Result<()> {
    create_private_dir(dir)?;
    let store = {
        let dir = dir.to_owned();
        Arc::new(tokio::task::spawn_blocking(move || Store::open(&dir)).await??)
    };
    let admin_file = dir.join(warden::datadir::ADMIN_TOKEN_FILE);
    if store.token_count()? == 0 || !admin_file.exists() {
        // A lost admin.token is replaced, and the tokens it held stop working.
        store.revoke_tokens("bootstrap", "registry serve")?;
        let secret = store.issue_token("bootstrap", Role::Admin, "registry serve")?;
        write_private_atomic(&admin_file, secret.as_bytes())?;
    }
    let runtime = Runtime::new(RuntimeConfig {
        pool_instances: 8,
        ..RuntimeConfig::default()
    })?;
    let check: Arc<dyn PublishCheck> = Arc::new(ComponentCheck { runtime });
    let app = warden_registry::server::router(RegistryState::with_load(store, Some(check), load));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let url = format!("http://{}", listener.local_addr()?);
    write_private_atomic(&dir.join(warden::datadir::ENDPOINT_FILE), url.as_bytes())?;
    println!("warden registry is up");
    println!("  URL:      {url}");
    println!("  data dir: {}", dir.display());
    println!(
        "  admin:    {} (`warden registry namespace|token|...` use it)",
        admin_file.display()
    );
    {
        use std::io::Write;
        std::io::stdout().flush()?;
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.cancel();
    });
    warden::transport::listen::serve(listener, app, stop).await?;
    eprintln!("warden registry: stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn print(json: bool, value: &Value, human: impl FnOnce(&Value)) {
    if json {
        println!("{value}");
    } else {
        human(value);
    }
}

/// `warden skill publish`.
pub async fn publish(t: RegistryTarget, file: &Path, backport: bool) -> Result<()> {
    let bytes = read_package_file(file)?;
    let c = RegistryClient::new(&t)?;
    let path = if backport {
        "/v1/packages?backport=true"
    } else {
        "/v1/packages"
    };
    let (status, body) = c.0.request("POST", path, bytes, "application/zip").await?;
    let v = json_or_error(status, &body, &[])
        .with_context(|| format!("publishing {} was refused", file.display()))?;
    print(t.json, &v, |v| {
        println!(
            "published {}/{}@{} (sha256 {}, signed by {})",
            v["namespace"].as_str().unwrap_or(""),
            v["name"].as_str().unwrap_or(""),
            v["version"].as_str().unwrap_or(""),
            v["digest"].as_str().unwrap_or(""),
            v["signer"].as_str().unwrap_or("")
        );
    });
    Ok(())
}

/// `warden registry ...`
pub async fn registry(t: RegistryTarget, cmd: RegistryCommand) -> Result<()> {
    if let RegistryCommand::Serve {
        listen,
        max_requests,
        request_timeout_secs,
    } = cmd
    {
        let load = LoadLimits {
            max_requests,
            request_timeout: std::time::Duration::from_secs(request_timeout_secs),
        };
        return serve(&registry_dir(&t), listen, load).await;
    }
    let c = RegistryClient::new(&t)?;
    match cmd {
        RegistryCommand::Serve { .. } => Ok(()),
        RegistryCommand::Namespace(NamespaceCommand::Create { name, owner }) => {
            let key = public_key(&owner)?;
            let v = c
                .call(
                    "POST",
                    "/v1/namespaces",
                    Some(json!({"name": name, "owner_key": key.to_string()})),
                )
                .await?;
            print(t.json, &v, |_| {
                println!("created namespace `{name}`, owned by {key}");
            });
            Ok(())
        }
        RegistryCommand::Namespace(NamespaceCommand::Show { name }) => {
            let v = c
                .call("GET", &format!("/v1/namespaces/{name}"), None)
                .await?;
            print(t.json, &v, print_namespace);
            Ok(())
        }
        RegistryCommand::Namespace(NamespaceCommand::List) => {
            let v = c.call("GET", "/v1/namespaces", None).await?;
            print(t.json, &v, |v| {
                for ns in v["namespaces"].as_array().into_iter().flatten() {
                    print_namespace(ns);
                }
            });
            Ok(())
        }
        RegistryCommand::Key(cmd) => {
            let (add, namespace, key_arg, owner) = match cmd {
                KeyCommand::Add {
                    namespace,
                    public_key,
                    key,
                } => (true, namespace, public_key, key),
                KeyCommand::Revoke {
                    namespace,
                    public_key,
                    key,
                } => (false, namespace, public_key, key),
            };
            let key = public_key(&key_arg)?;
            let ns = c
                .call("GET", &format!("/v1/namespaces/{namespace}"), None)
                .await?;
            let revision = ns["revision"]
                .as_u64()
                .context("no revision in the answer")?;
            let registry = ns["registry"]
                .as_str()
                .context("no registry id in the answer")?
                .to_owned();
            let mut body = json!({
                "action": if add { "add" } else { "revoke" },
                "key": key.to_string(),
                "revision": revision,
            });
            if let Some(owner) = owner {
                let owner = read_key(&owner)?;
                let statement = sign::key_statement(&registry, add, &namespace, &key, revision);
                body["signer"] = json!(owner.public().to_string());
                body["signature"] = json!(owner.sign_statement(&statement));
            }
            let v = c
                .call(
                    "POST",
                    &format!("/v1/namespaces/{namespace}/keys"),
                    Some(body),
                )
                .await?;
            print(t.json, &v, |v| {
                println!(
                    "{} {key} {} namespace `{namespace}`",
                    if add { "added" } else { "revoked" },
                    if add { "to" } else { "for" }
                );
                print_namespace(v);
            });
            Ok(())
        }
        RegistryCommand::Token { name, role } => {
            let v = c
                .call(
                    "POST",
                    "/v1/tokens",
                    Some(json!({"name": name, "role": role})),
                )
                .await?;
            // The secret alone on stdout, so it can be captured.
            print(t.json, &v, |v| {
                println!("{}", v["token"].as_str().unwrap_or(""));
                eprintln!(
                    "registry token for `{name}` ({role}); shown once, only its hash is stored"
                );
            });
            Ok(())
        }
        RegistryCommand::RevokeToken { name } => {
            let v = c
                .call("POST", "/v1/tokens/revoke", Some(json!({ "name": name })))
                .await?;
            print(t.json, &v, |v| {
                println!("revoked {} token(s) of `{name}`", v["revoked"]);
            });
            Ok(())
        }
        RegistryCommand::Yank {
            package,
            reason,
            key,
        } => {
            let (ns, name, version) = split_package(&package)?;
            let version = version.context("yank needs NAMESPACE/NAME@VERSION")?;
            let mut body = json!({"reason": reason});
            if let Some(key) = key {
                let owner = read_key(&key)?;
                let answer = c.call("GET", &format!("/v1/namespaces/{ns}"), None).await?;
                let registry = answer["registry"]
                    .as_str()
                    .context("no registry id in the answer")?;
                let statement = sign::yank_statement(registry, &ns, &name, &version, &reason);
                body["key"] = json!(owner.public().to_string());
                body["signature"] = json!(owner.sign_statement(&statement));
            }
            let v = c
                .call(
                    "POST",
                    &format!("/v1/packages/{ns}/{name}/{version}/yank"),
                    Some(body),
                )
                .await?;
            print(t.json, &v, |_| println!("yanked {ns}/{name}@{version}"));
            Ok(())
        }
        RegistryCommand::Search { query } => {
            let q = serde_urlencoded::to_string([("q", query.as_str())])?;
            let v = c.call("GET", &format!("/v1/packages?{q}"), None).await?;
            print(t.json, &v, |v| {
                for p in v["packages"].as_array().into_iter().flatten() {
                    println!(
                        "{}/{}@{}  {}",
                        p["namespace"].as_str().unwrap_or(""),
                        p["name"].as_str().unwrap_or(""),
                        p["latest"].as_str().unwrap_or(""),
                        p["description"].as_str().unwrap_or("")
                    );
                }
            });
            Ok(())
        }
        RegistryCommand::Show { package } => {
            let (ns, name, _) = split_package(&package)?;
            let v = c
                .call("GET", &format!("/v1/packages/{ns}/{name}"), None)
                .await?;
            print(t.json, &v, |v| {
                println!(
                    "{ns}/{name} (latest {})",
                    v["latest"].as_str().unwrap_or("none")
                );
                for ver in v["versions"].as_array().into_iter().flatten() {
                    let mut flags = Vec::new();
                    if let Some(y) = ver["yanked"].as_object() {
                        flags.push(format!(
                            "YANKED: {}",
                            y.get("reason").and_then(Value::as_str).unwrap_or("")
                        ));
                    }
                    if ver["signer_revoked"] == true {
                        flags.push("SIGNER REVOKED".into());
                    }
                    if ver["backport"] == true {
                        flags.push("backport".into());
                    }
                    println!(
                        "  {:<12} sha256 {}  signed by {}{}",
                        ver["version"].as_str().unwrap_or(""),
                        ver["digest"].as_str().unwrap_or(""),
                        ver["signer"].as_str().unwrap_or(""),
                        if flags.is_empty() {
                            String::new()
                        } else {
                            format!("  [{}]", flags.join("; "))
                        }
                    );
                }
            });
            Ok(())
        }
        RegistryCommand::Pull { package, out } => {
            let (digest, version) = c.resolve(&package).await?;
            let bytes = c.download(&digest).await?;
            let (_, name, _) = split_package(&package)?;
            let out = out.unwrap_or_else(|| PathBuf::from(format!("{name}-{version}.wsk")));
            std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
            println!("{}", out.display());
            eprintln!("downloaded {package} {version} (sha256 {digest})");
            Ok(())
        }
        RegistryCommand::Events { after } => {
            let v = c
                .call("GET", &format!("/v1/events?after={after}"), None)
                .await?;
            print(t.json, &v, |v| {
                for e in v["events"].as_array().into_iter().flatten() {
                    println!(
                        "{:>5} {} {:<16} {:<28} by {}  {}",
                        e["seq"],
                        e["at"],
                        e["action"].as_str().unwrap_or(""),
                        e["subject"].as_str().unwrap_or(""),
                        e["actor"].as_str().unwrap_or(""),
                        e["detail"].as_str().unwrap_or("")
                    );
                }
            });
            Ok(())
        }
    }
}

fn print_namespace(v: &Value) {
    println!(
        "{} (revision {})",
        v["name"].as_str().unwrap_or(""),
        v["revision"]
    );
    for k in v["keys"].as_array().into_iter().flatten() {
        let revoked = if k["revoked_at"].is_null() {
            ""
        } else {
            "  REVOKED"
        };
        println!("  {}{revoked}", k["key"].as_str().unwrap_or(""));
    }
}
