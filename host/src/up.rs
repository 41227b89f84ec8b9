//! `warden up`: initialise or reuse a data directory, load the first-party skills (signed
//! packages compiled into the binary, see [`warden::first_party`]), and on
//! first start create the default tenant/workspace/`dev` environment with the `local` agent,
//! the starter policy (version 1), the local agent's service token (printed once) and the
//! bootstrap admin token (`admin.token`, for the CLI); then serve until SIGINT/SIGTERM.
//!
//! Invariants: the data directory is 0700 and every file holding keys or tokens is 0600;
//! the local agent's token is printed once and only its hash is stored; a later start reuses
//! the compile cache, so it does not recompile; nothing here reads a source tree or needs a
//! wasm toolchain.

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use warden::auth::{self, IssueRequest};
use warden::datadir::{
    self, ADMIN_TOKEN_FILE, ENDPOINT_FILE, create_private_dir, write_private_atomic,
};
use warden::gateway::{Catalog, Gateway, GatewayOptions};
use warden::identity::LOCAL_AGENT;
use warden::runtime::{Runtime, RuntimeConfig, SkillSettings};
use warden::storage::TokenKind;
use warden::storage::{EmbeddedPackage, SkillRecord, Store, Tables};
use warden::transport::http::{self, HttpState};
use warden::{first_party, packages};

/// Options of `warden up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Listen address.
    pub listen: SocketAddr,
    /// Origins and host names `/mcp` accepts beyond the defaults.
    pub access: http::AccessRules,
    /// Issue another local-agent token even though one exists.
    pub issue_token: bool,
    /// How long in-flight calls may finish after a shutdown signal.
    pub drain: Duration,
    /// How long a call needing approval waits for a decision.
    pub approval_wait: Duration,
    /// How long an approval task stays decidable (seconds).
    pub approval_ttl: u64,
    /// Default calls per second per agent (0: unlimited).
    pub rate_limit: u32,
    /// The URL clients reach the gateway at (default `http://<listen address>`); agent
    /// tokens are bound to `<public_url>/mcp`.
    pub public_url: Option<String>,
    /// Benchmark mode: do not record the audit trail.
    pub unsafe_no_audit: bool,
    /// Where the vault's root key comes from.
    pub vault: warden::vault::VaultConfig,
    /// Local components to load as `dev_*` skills (development only).
    pub dev_skills: Vec<PathBuf>,
}

/// Loads the first-party skills from the signed packages compiled into the binary (each
/// verified under the release key and checked against its manifest; compiled once into
/// the data directory's cache) and records them in the store.
async fn install_first_party(runtime: &Runtime, store: &Store, catalog: &Catalog) -> Result<()> {
    for embedded in first_party::PACKAGES {
        let package = embedded.verify()?;
        let skill =
            packages::load_checked(runtime, embedded.name, &package, SkillSettings::default())
                .await
                .with_context(|| {
                    format!("loading first-party skill `{}`", package.manifest.id())
                })?;
        catalog.install(first_party::NAMESPACE, skill.clone())?;
        // Keep the operator's choice of workspaces across restarts and upgrades.
        let key = warden::gateway::skill_key(first_party::NAMESPACE, embedded.name);
        let workspaces = store
            .skill(&key)?
            .map_or_else(|| vec!["*".to_owned()], |r| r.workspaces);
        store.put_skill(
            &key,
            &SkillRecord {
                namespace: first_party::NAMESPACE.into(),
                digest: skill.digest().to_owned(),
                component: PathBuf::from(format!("embedded:{}", package.manifest.id())),
                workspaces,
                package: None,
                embedded: Some(EmbeddedPackage {
                    version: package.manifest.version.clone(),
                    sha256: package.digest.clone(),
                    signer: first_party::release_key()?.to_string(),
                }),
            },
        )?;
    }
    Ok(())
}

/// Namespace of the local components `--dev-skill` loads.
const DEV_NAMESPACE: &str = "dev";

/// Loads local, unsigned components (`warden up --dev-skill PATH`) for trying a skill in
/// the real gateway before it is published: namespace `dev`, skill name from the file name.
async fn install_dev_skills(
    runtime: &Runtime,
    store: &Store,
    catalog: &Catalog,
    paths: &[PathBuf],
) -> Result<()> {
    for path in paths {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(|s| s.replace('_', "-"))
            .with_context(|| format!("--dev-skill {}: no file name", path.display()))?;
        let wasm =
            std::fs::read(path).with_context(|| format!("--dev-skill {}", path.display()))?;
        let skill = runtime
            .load(&name, &wasm, SkillSettings::default())
            .await
            .with_context(|| format!("loading --dev-skill {}", path.display()))?;
        catalog.install(DEV_NAMESPACE, skill.clone())?;
        let key = warden::gateway::skill_key(DEV_NAMESPACE, &name);
        let workspaces = store
            .skill(&key)?
            .map_or_else(|| vec!["*".to_owned()], |r| r.workspaces);
        store.put_skill(
            &key,
            &SkillRecord {
                namespace: DEV_NAMESPACE.into(),
                digest: skill.digest().to_owned(),
                component: path.clone(),
                workspaces,
                package: None,
                embedded: None,
            },
        )?;
        eprintln!(
            "warden: WARNING: --dev-skill {}: unsigned local component loaded as `{DEV_NAMESPACE}_{name}__*` (development only)",
            path.display()
        );
    }
    Ok(())
}

/// Runs the gateway until a shutdown signal.
pub async fn up(opts: UpOptions) -> Result<()> {
    create_private_dir(&opts.data_dir)?;
    let store = Arc::new(Store::open(&opts.data_dir.join(datadir::STORE_FILE))?);
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(opts.data_dir.join(datadir::COMPILED_DIR)),
        ..RuntimeConfig::default()
    })?;
    let catalog = Arc::new(Catalog::new());
    install_first_party(&runtime, &store, &catalog).await?;
    install_dev_skills(&runtime, &store, &catalog, &opts.dev_skills).await?;
    // Packages installed with `warden skill install`: each only if its file is intact and
    // its signer still trusted.
    for skipped in
        warden::install::load_installed(&runtime, &store, &catalog, &opts.data_dir).await?
    {
        eprintln!("warden: WARNING: installed skill {skipped}; it is not loaded");
    }
    for removed in warden::install::collect_garbage(&store, &opts.data_dir)? {
        tracing::info!(file = %removed.display(), "removed a package file no installed skill uses");
    }
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let base_url = opts
        .public_url
        .clone()
        .map(|u| u.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| format!("http://{addr}"));
    let url = format!("{base_url}/mcp");
    let gateway = Arc::new(Gateway::open(
        catalog.clone(),
        store.clone(),
        &opts.data_dir,
        GatewayOptions {
            rate_limit: opts.rate_limit,
            audience: url.clone(),
            audit: !opts.unsafe_no_audit,
            vault: opts.vault.clone(),
            runtime: Some(runtime.clone()),
            approval_wait: opts.approval_wait,
            approval_ttl: opts.approval_ttl,
        },
    )?);

    // First start: the local agent's service token (printed once) and the bootstrap admin
    // token (kept in a 0600 file for the CLI on this machine).
    if opts.unsafe_no_audit {
        eprintln!(
            "warden: WARNING: --unsafe-no-audit: nothing is audited (benchmark mode; never in production)"
        );
    }
    let first_start = store.token_count()? == 0;
    let token = if first_start || opts.issue_token {
        Some(auth::issue_service_token(&store, LOCAL_AGENT, "local agent (warden up)")?.token)
    } else {
        None
    };
    let admin_file = opts.data_dir.join(ADMIN_TOKEN_FILE);
    if first_start || !admin_file.exists() {
        let admin = auth::issue(
            &*store,
            IssueRequest {
                kind: TokenKind::Admin,
                principal: "bootstrap".into(),
                role: auth::ROLE_OPERATOR.into(),
                ttl: None,
                label: "bootstrap admin (warden up)".into(),
                audience: None,
                parent: None,
            },
        )?;
        write_private_atomic(&admin_file, admin.token.as_bytes())?;
    }
    write_private_atomic(&opts.data_dir.join(ENDPOINT_FILE), base_url.as_bytes())?;

    let shutdown = CancellationToken::new();
    let streams = CancellationToken::new();
    let secure = base_url.starts_with("https://");
    // Approval notices go to workspace webhooks off the call path.
    tokio::spawn(warden::webhooks::run(
        gateway.clone(),
        format!("{base_url}/desk"),
    ));
    let state = HttpState {
        gateway: gateway.clone(),
        base_url,
    };
    // The web desk shares the listener (and its Host and Origin checks) with the admin API.
    let admin = warden::admin::router(gateway.clone()).merge(warden::desk::router(
        gateway.clone(),
        secure,
        streams.clone(),
    ));
    let app = http::router(state, opts.access.clone(), streams.clone(), admin);
    // Upkeep: summaries of refused floods, idle session bindings, long-expired tokens.
    let upkeep = {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(warden::gateway::core::HOUSEKEEPING_EVERY);
            loop {
                every.tick().await;
                gateway.housekeeping().await;
            }
        })
    };

    // Register the signal handlers before announcing readiness: a SIGTERM that arrives right
    // after the announcement must drain, not kill.
    let signals = Signals::register()?;
    println!("warden is up ({} tools)", catalog.list().len());
    println!("  data dir: {}", opts.data_dir.display());
    match gateway.vault().status() {
        Ok(v) if v.sealed => println!(
            "  vault:    SEALED ({}); calls that need a secret fail until `warden vault unseal`",
            v.reason.unwrap_or_default()
        ),
        Ok(v) => println!(
            "  vault:    unsealed; root key from {}{}",
            v.source,
            if v.source == "file" {
                format!(" ({})", opts.vault.key_file.display())
            } else {
                String::new()
            }
        ),
        Err(e) => println!("  vault:    unavailable ({e})"),
    }
    println!("  MCP URL:  {url}");
    println!(
        "  desk:     {}/desk (sign in with an admin token)",
        url.trim_end_matches("/mcp")
    );
    println!(
        "  admin:    {} (policy version {}; `warden token|agent|policy|audit` use it)",
        admin_file.display(),
        gateway.policy().version
    );
    match &token {
        Some(token) => {
            println!("  token:    {token}");
            println!(
                "            (service token of agent {LOCAL_AGENT}; shown once, only its hash is stored)"
            );
            let snippet = serde_json::json!({
                "mcpServers": {
                    "warden": {
                        "type": "http",
                        "url": url,
                        "headers": { "Authorization": format!("Bearer {token}") }
                    }
                }
            });
            println!("  client config:");
            println!("{}", serde_json::to_string_pretty(&snippet)?);
        }
        None => println!(
            "  token:    issued at first start (only its hash is stored; --issue-token prints a new one)"
        ),
    }
    use std::io::Write;
    std::io::stdout().flush()?;

    let signal = shutdown.clone();
    let approvals_of = gateway.clone();
    tokio::spawn(async move {
        signals.wait().await;
        eprintln!("warden: shutting down (draining in-flight calls)");
        // Calls waiting for a human answer "pending" now rather than hold up the drain.
        approvals_of.approvals().close();
        signal.cancel();
    });
    http::serve(
        listener,
        app,
        shutdown,
        streams,
        gateway.clone(),
        opts.drain,
    )
    .await?;
    // Calls still running past the drain window cannot be acknowledged any more; what was
    // acknowledged is stored durably before the process exits.
    upkeep.abort();
    gateway.housekeeping().await;
    let audit = gateway.audit().clone();
    tokio::task::spawn_blocking(move || audit.close()).await?;
    drop(store);
    eprintln!("warden: stopped");
    Ok(())
}

/// SIGINT and SIGTERM, registered up front.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
                int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
