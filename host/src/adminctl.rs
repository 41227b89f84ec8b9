//! The operator CLI (`warden scope|agent|token|policy|audit|vault|secret|grant ...`): thin commands over the
//! admin API of a running gateway (the running process holds the store's lock, so the CLI
//! never opens it), plus `warden audit verify --offline` for a stopped gateway's data
//! directory.
//!
//! The gateway URL and admin token come from flags, else `WARDEN_ADMIN_URL` /
//! `WARDEN_ADMIN_TOKEN`, else the `endpoint` and `admin.token` files `warden up` writes in
//! the data directory (0600), so on the gateway's own machine the commands just work.
//!
//! Invariants: the admin token is never printed or put in a URL; a secret's value is read
//! from stdin or a hidden prompt (never an argument), sent once and wiped; a new token's secret is
//! printed once, on stdout alone, so it can be captured; errors from the API are shown with
//! their status and message, and the command exits non-zero.
//!
//! Threat: admin credentials leaking through process listings or shell history (prefer the
//! file or the environment over `--admin-token`).

use crate::apiclient::{ApiClient, Hints, json_or_error};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;

/// Where the gateway is and how to authenticate to it.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Data directory of the gateway (to find `endpoint` and `admin.token`).
    #[arg(long, env = warden::env::DATA_DIR, global = true)]
    data_dir: Option<PathBuf>,
    /// Gateway base URL (default: the data directory's `endpoint` file).
    #[arg(long, env = warden::env::ADMIN_URL, global = true)]
    url: Option<String>,
    /// Admin token (default: the data directory's `admin.token` file).
    #[arg(
        long,
        env = warden::env::ADMIN_TOKEN,
        hide_env_values = true,
        global = true
    )]
    admin_token: Option<String>,
    /// Print the API's JSON instead of a summary.
    #[arg(long, global = true)]
    json: bool,
}

/// `warden scope ...`
#[derive(Debug, Subcommand)]
pub enum ScopeCommand {
    /// Create a tenant, `tenant/workspace` or `tenant/workspace/environment`.
    Create {
        /// The path.
        path: String,
    },
    /// List tenants, workspaces and environments.
    List,
}

/// `warden skill installed` / `warden skill workspaces NAME ...` (on the running gateway).
pub async fn skill_workspaces(
    t: Target,
    name: Option<String>,
    workspaces: Vec<String>,
    all: bool,
) -> Result<()> {
    let c = Client::new(&t)?;
    if let Some(name) = name.filter(|_| all || !workspaces.is_empty()) {
        let workspaces = if all {
            vec!["*".to_owned()]
        } else {
            workspaces
        };
        let v = c
            .call(
                "PUT",
                // A `namespace/name` key is one path segment.
                &format!(
                    "/admin/v1/skills/{}/workspaces",
                    percent_encoding::utf8_percent_encode(
                        &name,
                        percent_encoding::NON_ALPHANUMERIC
                    )
                ),
                Some(json!({ "workspaces": workspaces })),
            )
            .await?;
        print(t.json, &v, |v| {
            println!("skill {name} installed in {}", v["workspaces"]);
        });
        return Ok(());
    }
    let v = c.call("GET", "/admin/v1/skills", None).await?;
    print(t.json, &v, |v| {
        for s in v["skills"].as_array().into_iter().flatten() {
            // Installed packages and the first-party (embedded) ones carry a version and
            // a signer; `--dev-skill` components carry neither.
            let origin = [("package", "installed"), ("embedded", "built in")]
                .into_iter()
                .find_map(|(field, how)| {
                    let p = s.get(field).filter(|p| p.is_object())?;
                    Some(format!(
                        "{} {how}, signed by {}",
                        p["version"].as_str().unwrap_or("?"),
                        p["signer"].as_str().unwrap_or("?")
                    ))
                })
                .unwrap_or_else(|| "unsigned local component".to_owned());
            println!(
                "{:<24} {origin}; workspaces={} tools={}",
                s["id"].as_str().unwrap_or(""),
                s["workspaces"],
                s["tools"].as_array().map_or(0, Vec::len)
            );
        }
    });
    Ok(())
}

/// `warden agent ...`
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create or update an agent (`tenant/workspace/environment/name`).
    Put {
        /// The agent path.
        path: String,
        /// Group (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Calls per second (0: unlimited; default: the gateway's).
        #[arg(long)]
        rate_limit: Option<u32>,
        /// The admin who owns the agent: never counted as an approver of its requests.
        #[arg(long)]
        owner: Option<String>,
    },
    /// List agents.
    List,
    /// Delete an agent and revoke its tokens.
    Delete {
        /// The agent path.
        path: String,
    },
}

/// `warden token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a service token for an agent (or an admin token with --admin).
    Issue {
        /// Agent path (or admin name with --admin).
        principal: String,
        /// Lifetime, e.g. `30d`, `12h` (default 90 days for service tokens).
        #[arg(long)]
        ttl: Option<humantime::Duration>,
        /// Issue an admin token instead.
        #[arg(long)]
        admin: bool,
        /// Admin role: operator or approver.
        #[arg(long, default_value = "operator")]
        role: String,
        /// A note shown in listings.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List tokens (active ones unless --all).
    List {
        /// Only this principal's.
        #[arg(long)]
        principal: Option<String>,
        /// Include revoked and expired tokens.
        #[arg(long)]
        all: bool,
    },
    /// Replace a token; the old one keeps working for the grace window.
    Rotate {
        /// Token id (`tok_...`).
        id: String,
        /// How long the old token stays valid, e.g. `10m` (default: none).
        #[arg(long)]
        grace: Option<humantime::Duration>,
    },
    /// Revoke a token (and the agent tokens exchanged from it); its streams close.
    Revoke {
        /// Token id (`tok_...`).
        id: String,
    },
}

/// `warden policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate and apply a Cedar policy file as the next version.
    Apply {
        /// The policy file.
        file: PathBuf,
    },
    /// Simulate a call: show the decision and the policies behind it.
    Test {
        /// Agent path.
        #[arg(long)]
        agent: String,
        /// Exposed tool name.
        #[arg(long)]
        tool: String,
        /// Arguments as a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
        /// Test this policy file instead of the set in force.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Time of the call (RFC 3339; default now).
        #[arg(long)]
        now: Option<String>,
        /// Client IP of the call (default 127.0.0.1).
        #[arg(long)]
        client_ip: Option<String>,
    },
    /// Show the policy set in force.
    Show,
    /// List every applied version.
    History,
}

/// `warden audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Show recent records (newest first), filtered.
    Tail {
        /// Principal or a prefix (`tenant`, `tenant/workspace`, ...).
        #[arg(long)]
        principal: Option<String>,
        /// Exposed tool name.
        #[arg(long)]
        tool: Option<String>,
        /// Outcome (ok, denied, tool_error, trap, unauthenticated, ...).
        #[arg(long)]
        outcome: Option<String>,
        /// Only records newer than this, e.g. `1h`.
        #[arg(long)]
        since: Option<humantime::Duration>,
        /// How many.
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: usize,
    },
    /// Verify the hash chain; names the first broken record.
    Verify {
        /// Read the data directory directly (the gateway must be stopped).
        #[arg(long)]
        offline: bool,
    },
    /// Usage counters grouped by tenant, workspace, environment, agent or tool.
    Usage {
        /// Grouping.
        #[arg(long, default_value = "agent")]
        by: String,
    },
}

/// A package signer on the command line.
#[derive(Debug, Clone, Args)]
pub struct SignerArgs {
    /// The namespace.
    namespace: String,
    /// An ed25519 public key (`ed25519:...`) or a `.pub` file.
    #[arg(long, conflicts_with_all = ["san", "issuer"])]
    key: Option<String>,
    /// A Sigstore identity: the certificate's subject alternative name.
    #[arg(long = "sigstore-san", requires = "issuer")]
    san: Option<String>,
    /// A Sigstore identity: the OIDC issuer.
    #[arg(long = "sigstore-issuer", requires = "san")]
    issuer: Option<String>,
}

/// `warden trust ...`
#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Trust a signer for a namespace's skill packages.
    Add(SignerArgs),
    /// Stop trusting a signer for a namespace.
    Rm(SignerArgs),
    /// List the trusted signers of every namespace (and the pinned Sigstore root).
    List,
    /// Pin the Sigstore trusted root (`trusted_root.json`) that Sigstore-signed packages
    /// are verified against, offline; `--remove` unpins it (they are all refused then).
    SigstoreRoot {
        /// The trusted root file (e.g. the public-good instance's, or your own deployment's).
        #[arg(required_unless_present = "remove")]
        file: Option<PathBuf>,
        /// Unpin the root.
        #[arg(long, conflicts_with = "file")]
        remove: bool,
    },
}

pub(crate) struct Client(ApiClient);

impl Target {
    /// Whether to print the API's JSON.
    pub(crate) fn json(&self) -> bool {
        self.json
    }
}

fn data_dir(t: &Target) -> PathBuf {
    t.data_dir
        .clone()
        .unwrap_or_else(warden::datadir::default_data_dir)
}

impl Client {
    pub(crate) fn new(t: &Target) -> Result<Self> {
        Ok(Self(ApiClient::resolve(
            t.url.as_deref(),
            t.admin_token.as_deref(),
            &data_dir(t),
            &Hints {
                what: "gateway",
                url: "--url (or WARDEN_ADMIN_URL)",
                token: "--admin-token (or WARDEN_ADMIN_TOKEN)",
                dir: "--data-dir",
            },
        )?))
    }

    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        self.call_raw(method, path, bytes.into_bytes()).await
    }

    /// A server-sent event stream from the gateway.
    pub(crate) async fn stream(&self, path: &str) -> Result<hyper::body::Incoming> {
        self.0.stream(path).await
    }

    /// A call whose refusal is answered 409 with a report worth showing (`audit verify`'s
    /// first broken record): the report comes back instead of an error.
    async fn call_with_report(&self, method: &str, path: &str) -> Result<Value> {
        self.0
            .call(method, path, Vec::new(), &[http::StatusCode::CONFLICT])
            .await
    }

    /// A call with a body of bytes (the caller builds, and wipes, a body that holds a
    /// secret). Every status but a success is an error, a conflict (409) included.
    pub(crate) async fn call_raw(&self, method: &str, path: &str, bytes: Vec<u8>) -> Result<Value> {
        self.0.call(method, path, bytes, &[]).await
    }
}

/// `?k=v&...` of the pairs that have a value (form-encoded), or "".
pub(crate) fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    let present: Vec<(&str, &str)> = pairs
        .iter()
        .filter_map(|(k, v)| Some((*k, v.as_deref()?)))
        .collect();
    match serde_urlencoded::to_string(&present) {
        Ok(q) if !q.is_empty() => format!("?{q}"),
        _ => String::new(),
    }
}

pub(crate) fn print(json: bool, value: &Value, human: impl FnOnce(&Value)) {
    if json {
        println!("{value}");
    } else {
        human(value);
    }
}

/// `warden scope ...`
pub async fn scope(t: Target, cmd: ScopeCommand) -> Result<()> {
    let c = Client::new(&t)?;
    match cmd {
        ScopeCommand::Create { path } => {
            let v = c
                .call("POST", "/admin/v1/scopes", Some(json!({"path": path})))
                .await?;
            print(t.json, &v, |_| println!("created {path}"));
        }
        ScopeCommand::List => {
            let v = c.call("GET", "/admin/v1/scopes", None).await?;
            print(t.json, &v, |v| {
                for s in v["scopes"].as_array().into_iter().flatten() {
                    println!(
                        "{:<12} {}",
                        s["kind"].as_str().unwrap_or(""),
                        s["path"].as_str().unwrap_or("")
                    );
                }
            });
        }
    }
    Ok(())
}

/// `warden agent ...`
pub async fn agent(t: Target, cmd: AgentCommand) -> Result<()> {
    let c = Client::new(&t)?;
    match cmd {
        AgentCommand::Put {
            path,
            groups,
            rate_limit,
            owner,
        } => {
            let v = c
                .call(
                    "POST",
                    "/admin/v1/agents",
                    Some(
                        json!({"path": path, "groups": groups, "rate_limit": rate_limit,
                                "owner": owner}),
                    ),
                )
                .await?;
            print(t.json, &v, |_| println!("agent {path} saved"));
        }
        AgentCommand::List => {
            let v = c.call("GET", "/admin/v1/agents", None).await?;
            print(t.json, &v, |v| {
                for a in v["agents"].as_array().into_iter().flatten() {
                    println!(
                        "{:<40} groups={} rate_limit={} owner={}",
                        a["path"].as_str().unwrap_or(""),
                        a["groups"],
                        a["rate_limit"],
                        a["owner"]
                    );
                }
            });
        }
        AgentCommand::Delete { path } => {
            let v = c
                .call("DELETE", &format!("/admin/v1/agents/{path}"), None)
                .await?;
            print(t.json, &v, |v| {
                println!(
                    "deleted {path}; revoked {} token(s)",
                    v["revoked_tokens"].as_array().map_or(0, Vec::len)
                );
            });
        }
    }
    Ok(())
}

/// `warden token ...`
pub async fn token(t: Target, cmd: TokenCommand) -> Result<()> {
    let c = Client::new(&t)?;
    match cmd {
        TokenCommand::Issue {
            principal,
            ttl,
            admin,
            role,
            label,
        } => {
            let body = json!({
                "kind": if admin { "admin" } else { "service" },
                "principal": principal,
                "role": role,
                "ttl_secs": ttl.map(|d| std::time::Duration::from(d).as_secs()),
                "label": label,
            });
            let v = c.call("POST", "/admin/v1/tokens", Some(body)).await?;
            print(t.json, &v, |v| {
                // The secret alone on stdout (capturable); the rest on stderr.
                println!("{}", v["token"].as_str().unwrap_or(""));
                eprintln!(
                    "issued {} for {} (expires {}); shown once, only its hash is stored",
                    v["record"]["id"].as_str().unwrap_or(""),
                    principal,
                    v["record"]["expires_at"]
                );
            });
        }
        TokenCommand::List { principal, all } => {
            let q = query_string(&[
                ("principal", principal),
                ("all", all.then(|| "true".to_owned())),
            ]);
            let v = c.call("GET", &format!("/admin/v1/tokens{q}"), None).await?;
            print(t.json, &v, |v| {
                for r in v["tokens"].as_array().into_iter().flatten() {
                    println!(
                        "{:<18} {:<8} {:<9} {:<36} expires={} {}",
                        r["id"].as_str().unwrap_or(""),
                        r["kind"].as_str().unwrap_or(""),
                        r["state"].as_str().unwrap_or(""),
                        r["principal"].as_str().unwrap_or(""),
                        r["expires_at"],
                        r["label"].as_str().unwrap_or("")
                    );
                }
            });
        }
        TokenCommand::Rotate { id, grace } => {
            let grace = grace.map_or(0, |d| std::time::Duration::from(d).as_secs());
            let v = c
                .call(
                    "POST",
                    &format!("/admin/v1/tokens/{id}/rotate"),
                    Some(json!({"grace_secs": grace})),
                )
                .await?;
            print(t.json, &v, |v| {
                println!("{}", v["token"].as_str().unwrap_or(""));
                eprintln!(
                    "rotated {id} -> {}; the old token works for {grace} more second(s)",
                    v["record"]["id"].as_str().unwrap_or("")
                );
            });
        }
        TokenCommand::Revoke { id } => {
            let v = c
                .call("POST", &format!("/admin/v1/tokens/{id}/revoke"), None)
                .await?;
            print(t.json, &v, |v| println!("revoked {}", v["revoked"]));
        }
    }
    Ok(())
}

/// The first line `warden policy show` prints: a Cedar comment, so the output applies as
/// it is, and `apply` drops it so versions do not pile up in the stored text.
const VERSION_LINE: &str = "// warden policy version ";

/// The policy text without the version line `show` put first.
fn strip_version_line(text: &str) -> &str {
    match text.split_once('\n') {
        Some((first, rest))
            if first
                .strip_prefix(VERSION_LINE)
                .is_some_and(|v| v.trim().bytes().all(|b| b.is_ascii_digit())) =>
        {
            rest
        }
        _ => text,
    }
}

/// `warden policy ...`
pub async fn policy(t: Target, cmd: PolicyCommand) -> Result<()> {
    let c = Client::new(&t)?;
    match cmd {
        PolicyCommand::Apply { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let text = strip_version_line(&text);
            let v = c
                .call("POST", "/admin/v1/policies", Some(json!({"text": text})))
                .await?;
            print(t.json, &v, |v| {
                println!(
                    "applied {} as version {} ({} policies)",
                    file.display(),
                    v["version"],
                    v["policies"]
                );
            });
        }
        PolicyCommand::Test {
            agent,
            tool,
            args,
            file,
            now,
            client_ip,
        } => {
            let arguments: Value =
                serde_json::from_str(&args).context("--args must be a JSON object")?;
            let policy = match file {
                Some(f) => Some(
                    std::fs::read_to_string(&f)
                        .with_context(|| format!("reading {}", f.display()))?,
                ),
                None => None,
            };
            let v = c
                .call(
                    "POST",
                    "/admin/v1/policies/test",
                    Some(json!({"agent": agent, "tool": tool, "arguments": arguments,
                                "policy": policy, "now": now, "client_ip": client_ip})),
                )
                .await?;
            print(t.json, &v, |v| {
                println!("decision: {}", v["decision"].as_str().unwrap_or(""));
                println!("policies: {}", v["policies"]);
                if let Some(r) = v.get("reasons") {
                    println!("reasons:  {r}");
                }
                println!("listed:   {}", v["listed"]);
            });
        }
        PolicyCommand::Show => {
            let v = c.call("GET", "/admin/v1/policies/current", None).await?;
            print(t.json, &v, |v| {
                println!("{VERSION_LINE}{}", v["policy"]["version"]);
                // Printed as stored, so show -> apply -> show gives the same text.
                let text = v["policy"]["text"].as_str().unwrap_or("");
                print!("{text}");
                if !text.ends_with('\n') {
                    println!();
                }
            });
        }
        PolicyCommand::History => {
            let v = c.call("GET", "/admin/v1/policies", None).await?;
            print(t.json, &v, |v| {
                for p in v["versions"].as_array().into_iter().flatten() {
                    println!(
                        "v{:<4} {} by {:<12} {} policies  {}",
                        p["version"],
                        p["applied_at"],
                        p["applied_by"].as_str().unwrap_or(""),
                        p["policies"],
                        &p["digest"].as_str().unwrap_or("")
                            [..12.min(p["digest"].as_str().unwrap_or("").len())]
                    );
                }
            });
        }
    }
    Ok(())
}

/// `warden audit ...`
pub async fn audit(t: Target, cmd: AuditCommand) -> Result<()> {
    match cmd {
        AuditCommand::Verify { offline: true } => {
            let dir = data_dir(&t);
            let store = warden::storage::Store::open(&dir.join("warden.redb")).context(
                "opening the store (is the gateway still running? stop it, or drop --offline)",
            )?;
            let key = warden::audit::ChainKey::load_or_create(&dir.join("audit.key"))?;
            // Records journaled before a crash are part of the trail.
            warden::audit::recover(&store)?;
            let v = warden::audit::verify(&store, &key)?;
            report_verification(t.json, &serde_json::to_value(&v)?)
        }
        AuditCommand::Verify { offline: false } => {
            let c = Client::new(&t)?;
            let v = c.call_with_report("GET", "/admin/v1/audit/verify").await?;
            report_verification(t.json, &v)
        }
        AuditCommand::Tail {
            principal,
            tool,
            outcome,
            since,
            limit,
        } => {
            let c = Client::new(&t)?;
            let since_ms = since.map(|d| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                now.saturating_sub(d.into()).as_millis().to_string()
            });
            let q = query_string(&[
                ("principal", principal),
                ("tool", tool),
                ("outcome", outcome),
                ("since_ms", since_ms),
                ("limit", Some(limit.to_string())),
            ]);
            let v = c.call("GET", &format!("/admin/v1/audit{q}"), None).await?;
            print(t.json, &v, |v| {
                for r in v["records"].as_array().into_iter().flatten() {
                    let time = std::time::UNIX_EPOCH
                        + std::time::Duration::from_millis(r["ts_ms"].as_u64().unwrap_or(0));
                    println!(
                        "#{:<7} {} {:<18} {:<36} {:<28} {:<17} {}us {}",
                        r["seq"],
                        humantime::format_rfc3339_millis(time),
                        r["request"].as_str().unwrap_or(""),
                        r["principal"].as_str().unwrap_or("-"),
                        r["tool"].as_str().unwrap_or("-"),
                        r["outcome"].as_str().unwrap_or(""),
                        r["latency_us"],
                        r["policies"]
                    );
                }
            });
            Ok(())
        }
        AuditCommand::Usage { by } => {
            let c = Client::new(&t)?;
            let v = c
                .call("GET", &format!("/admin/v1/usage?group_by={by}"), None)
                .await?;
            print(t.json, &v, |v| {
                if let Some(map) = v["usage"].as_object() {
                    for (k, u) in map {
                        println!(
                            "{k:<48} calls={} errors={} latency_us={} fuel={}",
                            u["calls"], u["errors"], u["latency_us"], u["fuel"]
                        );
                    }
                }
            });
            Ok(())
        }
    }
}

fn report_verification(json: bool, v: &Value) -> Result<()> {
    if json {
        println!("{v}");
    }
    match v.get("first_broken").filter(|b| !b.is_null()) {
        None => {
            if !json {
                println!("audit chain verifies: {} record(s)", v["records"]);
            }
            Ok(())
        }
        Some(b) => bail!(
            "audit chain is broken at record {}: {}",
            b["seq"],
            b["reason"].as_str().unwrap_or("")
        ),
    }
}

/// `warden vault ...`
#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Sealed or not, where the root key comes from, master key versions.
    Status,
    /// Drop the keys from memory: calls that need a secret fail until `unseal`.
    Seal,
    /// Load the keys again (a passphrase vault asks for its passphrase: a hidden prompt,
    /// or stdin when it is not a terminal; the first unseal of a new one sets it).
    Unseal,
    /// Make a new master key version, re-wrap every data key with it, drop unused versions.
    RotateKey,
    /// Decrypt every secret (values never leave the gateway) and report the unreadable ones.
    Check,
}

/// `warden secret ...`
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set a secret (`tenant[/workspace[/environment]]/name`) to a value read from stdin
    /// (when it is not a terminal) or a hidden prompt. Never given as an argument.
    Set {
        /// `tenant[/workspace[/environment]]/name`.
        path: String,
    },
    /// List secrets: names, scopes, versions, times, authors (never values).
    List {
        /// Only this scope and below.
        #[arg(long)]
        scope: Option<String>,
        /// Removed secrets too.
        #[arg(long)]
        all: bool,
    },
    /// Every version of a secret: set or removed, when, by whom.
    History {
        /// `tenant[/workspace[/environment]]/name`.
        path: String,
    },
    /// Remove a secret (its history stays).
    Rm {
        /// `tenant[/workspace[/environment]]/name`.
        path: String,
    },
}

/// `warden grant ...`
// Parsed once per process: the size of the `add` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// Grant a skill a destination (and credentials injected into requests to it), or
    /// secrets it may read itself, in an environment or a whole workspace.
    Add {
        /// The skill's name (e.g. `http`).
        skill: String,
        /// The environment (`tenant/workspace/environment`).
        #[arg(
            long,
            conflicts_with = "workspace",
            required_unless_present = "workspace"
        )]
        env: Option<String>,
        /// Every environment of a workspace (`tenant/workspace`).
        #[arg(long)]
        workspace: Option<String>,
        /// Destination: `host`, `host:port`, `*.domain` or an IP literal.
        #[arg(long)]
        host: Option<String>,
        /// `https` (default) or `http`.
        #[arg(long)]
        scheme: Option<String>,
        /// Path prefix (default `/`).
        #[arg(long = "path")]
        path_prefix: Option<String>,
        /// Allowed method (repeatable; default any).
        #[arg(long = "method")]
        methods: Vec<String>,
        /// Allow loopback, private and link-local addresses for this destination.
        #[arg(long)]
        allow_private: bool,
        /// Header to add: `'Authorization: Bearer {secret:NAME}'` (repeatable).
        #[arg(long)]
        inject: Vec<String>,
        /// Query parameter to add: `'api_key={secret:NAME}'` (repeatable).
        #[arg(long)]
        inject_query: Vec<String>,
        /// HTTP basic auth: `'user:{secret:NAME}'`.
        #[arg(long)]
        basic_auth: Option<String>,
        /// A secret the skill may read itself with `secrets.reveal` (repeatable; audited).
        #[arg(long)]
        reveal: Vec<String>,
    },
    /// List the grants in force (with --all, removed ones too).
    List {
        /// Only this skill's.
        #[arg(long)]
        skill: Option<String>,
        /// Only this scope's.
        #[arg(long)]
        scope: Option<String>,
        /// Removed grants too.
        #[arg(long)]
        all: bool,
    },
    /// Remove a grant (from the next call on).
    Rm {
        /// The grant id (`grt_...`).
        id: String,
    },
}

/// Reads a secret: all of stdin when it is not a terminal (one trailing newline dropped),
/// else a hidden prompt, asked twice when `confirm`.
fn read_secret(prompt: &str, confirm: bool) -> Result<zeroize::Zeroizing<String>> {
    use std::io::{IsTerminal, Read};
    if !std::io::stdin().is_terminal() {
        let mut value = zeroize::Zeroizing::new(String::new());
        std::io::stdin()
            .read_to_string(&mut value)
            .context("reading the value from stdin")?;
        let trimmed = value
            .strip_suffix("\r\n")
            .or_else(|| value.strip_suffix('\n'))
            .unwrap_or(&value)
            .to_owned();
        return Ok(zeroize::Zeroizing::new(trimmed));
    }
    let first =
        zeroize::Zeroizing::new(rpassword::prompt_password(prompt).context("reading the value")?);
    if confirm {
        let again = zeroize::Zeroizing::new(
            rpassword::prompt_password("again: ").context("reading the value")?,
        );
        if *again != *first {
            bail!("the two entries differ; nothing was changed");
        }
    }
    Ok(first)
}

/// A JSON body holding a secret, in a buffer that is wiped when dropped.
fn secret_json(fields: &[(&str, &str)]) -> zeroize::Zeroizing<Vec<u8>> {
    let mut out = zeroize::Zeroizing::new(Vec::new());
    out.push(b'{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // serde_json's string escaping, written straight into the wiped buffer.
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
        let _ = serde_json::to_writer(&mut *out, v);
    }
    out.push(b'}');
    out
}

fn print_vault(v: &Value) {
    let state = if v["sealed"].as_bool() == Some(true) {
        format!("sealed ({})", v["reason"].as_str().unwrap_or(""))
    } else {
        "unsealed".to_owned()
    };
    println!(
        "vault {state}; root key from {}; master key v{} (versions {})",
        v["source"].as_str().unwrap_or("?"),
        v["active_key"],
        v["key_versions"]
    );
}

/// `warden vault ...`
pub async fn vault(t: Target, cmd: VaultCommand) -> Result<()> {
    let c = Client::new(&t)?;
    match cmd {
        VaultCommand::Status => {
            let v = c.call("GET", "/admin/v1/vault", None).await?;
            print(t.json, &v, print_vault);
        }
        VaultCommand::Seal => {
            let v = c.call("POST", "/admin/v1/vault/seal", None).await?;
            print(t.json, &v, print_vault);
        }
        VaultCommand::Unseal => {
            let status = c.call("GET", "/admin/v1/vault", None).await?;
            let body = if status["source"] == "passphrase" {
                let new = status["initialized"] == false;
                let prompt = if new {
                    "new vault passphrase (at least 12 characters): "
                } else {
                    "vault passphrase: "
                };
                let passphrase = read_secret(prompt, new)?;
                secret_json(&[("passphrase", &passphrase)])
            } else {
                zeroize::Zeroizing::new(Vec::new())
            };
            let v = c
                .call_raw("POST", "/admin/v1/vault/unseal", body.to_vec())
                .await?;
            print(t.json, &v, print_vault);
        }
        VaultCommand::RotateKey => {
            let v = c.call("POST", "/admin/v1/vault/rotate-key", None).await?;
            print(t.json, &v, |v| {
                println!(
                    "master key v{} now wraps every data key; retired versions {}",
                    v["key_version"], v["retired"]
                );
            });
        }
        VaultCommand::Check => {
            let v = c.call("GET", "/admin/v1/vault/check", None).await?;
            print(t.json, &v, |v| {
                println!("{} of {} secret(s) decrypt", v["readable"], v["secrets"]);
                for p in v["unreadable"].as_array().into_iter().flatten() {
                    println!("  unreadable: {}", p.as_str().unwrap_or(""));
                }
            });
            if v["unreadable"].as_array().is_some_and(|u| !u.is_empty()) {
                bail!("some secrets do not decrypt");
            }
        }
    }
    Ok(())
}

/// `warden secret ...`
pub async fn secret(t: Target, cmd: SecretCommand) -> Result<()> {
    let c = Client::new(&t)?;
    match cmd {
        SecretCommand::Set { path } => {
            let value = read_secret(&format!("value of {path}: "), true)?;
            let body = secret_json(&[("path", &path), ("value", &value)]);
            let v = c
                .call_raw("POST", "/admin/v1/secrets", body.to_vec())
                .await?;
            print(t.json, &v, |v| {
                println!(
                    "set {} (version {})",
                    v["path"].as_str().unwrap_or(""),
                    v["version"]
                );
            });
        }
        SecretCommand::List { scope, all } => {
            let q = query_string(&[("scope", scope), ("all", all.then(|| "true".to_owned()))]);
            let v = c
                .call("GET", &format!("/admin/v1/secrets{q}"), None)
                .await?;
            print(t.json, &v, |v| {
                for s in v["secrets"].as_array().into_iter().flatten() {
                    println!(
                        "{:<48} v{:<4} {:<8} updated {} by {}",
                        s["path"].as_str().unwrap_or(""),
                        s["version"],
                        if s["set"] == true { "set" } else { "removed" },
                        when(&s["updated_at"]),
                        s["updated_by"].as_str().unwrap_or("")
                    );
                }
            });
        }
        SecretCommand::History { path } => {
            let q = query_string(&[("path", Some(path))]);
            let v = c
                .call("GET", &format!("/admin/v1/secrets/history{q}"), None)
                .await?;
            print(t.json, &v, |v| {
                for h in v["history"].as_array().into_iter().flatten() {
                    println!(
                        "v{:<4} {:<4} at {} by {}",
                        h["version"],
                        h["action"].as_str().unwrap_or(""),
                        when(&h["at"]),
                        h["by"].as_str().unwrap_or("")
                    );
                }
            });
        }
        SecretCommand::Rm { path } => {
            let v = c
                .call("DELETE", &format!("/admin/v1/secrets/{path}"), None)
                .await?;
            print(t.json, &v, |v| {
                println!(
                    "removed {} (version {})",
                    v["removed"].as_str().unwrap_or(""),
                    v["version"]
                );
            });
        }
    }
    Ok(())
}

/// `warden grant ...`
pub async fn grant(t: Target, cmd: GrantCommand) -> Result<()> {
    let c = Client::new(&t)?;
    match cmd {
        GrantCommand::Add {
            skill,
            env,
            workspace,
            host,
            scheme,
            path_prefix,
            methods,
            allow_private,
            inject,
            inject_query,
            basic_auth,
            reveal,
        } => {
            let scope = env.or(workspace).unwrap_or_default();
            let spec = json!({
                "skill": skill, "scope": scope, "host": host, "scheme": scheme,
                "path_prefix": path_prefix, "methods": methods, "allow_private": allow_private,
                "inject": inject, "inject_query": inject_query, "basic_auth": basic_auth,
                "reveal": reveal,
            });
            let v = c.call("POST", "/admin/v1/grants", Some(spec)).await?;
            print(t.json, &v, |v| {
                println!("added {}", describe_grant(&v["grant"]));
            });
        }
        GrantCommand::List { skill, scope, all } => {
            let q = query_string(&[
                ("skill", skill),
                ("scope", scope),
                ("all", all.then(|| "true".to_owned())),
            ]);
            let v = c.call("GET", &format!("/admin/v1/grants{q}"), None).await?;
            print(t.json, &v, |v| {
                println!("grants revision {}", v["revision"]);
                for g in v["grants"].as_array().into_iter().flatten() {
                    println!("{}", describe_grant(g));
                }
            });
        }
        GrantCommand::Rm { id } => {
            let v = c
                .call("DELETE", &format!("/admin/v1/grants/{id}"), None)
                .await?;
            print(t.json, &v, |v| {
                println!("removed {}", describe_grant(&v["removed"]))
            });
        }
    }
    Ok(())
}

/// A stored Unix time as RFC 3339.
fn when(secs: &Value) -> String {
    secs.as_u64().map_or_else(
        || "-".to_owned(),
        |s| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
            )
            .to_string()
        },
    )
}

/// One line for a grant.
fn describe_grant(g: &Value) -> String {
    let mut line = format!(
        "{} skill={} scope={}",
        g["id"].as_str().unwrap_or(""),
        g["skill"].as_str().unwrap_or(""),
        g["scope"].as_str().unwrap_or("")
    );
    if let Some(e) = g["egress"].as_object() {
        let port = e
            .get("port")
            .and_then(Value::as_u64)
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        let methods = e["methods"]
            .as_array()
            .filter(|m| !m.is_empty())
            .map_or_else(
                || "any".to_owned(),
                |m| {
                    m.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                },
            );
        line.push_str(&format!(
            " {}://{}{port}{} methods={}{}",
            e["scheme"].as_str().unwrap_or(""),
            e["host"].as_str().unwrap_or(""),
            e["path_prefix"].as_str().unwrap_or(""),
            methods,
            if e["allow_private"] == true {
                " private-ok"
            } else {
                ""
            }
        ));
    }
    for i in g["inject"].as_array().into_iter().flatten() {
        line.push_str(&format!(
            " inject-{}={}{}",
            i["kind"].as_str().unwrap_or(""),
            i["name"].as_str().unwrap_or(""),
            if i["kind"] == "basic" { "" } else { ":" }
        ));
        line.push_str(i["template"].as_str().unwrap_or(""));
    }
    if let Some(r) = g["reveal"].as_array().filter(|r| !r.is_empty()) {
        line.push_str(&format!(" reveal={}", Value::Array(r.clone())));
    }
    if g["removed"].is_object() {
        line.push_str(" (removed)");
    }
    line
}

fn trust_spec(a: SignerArgs) -> Result<Value> {
    let key = a
        .key
        .map(|k| crate::packaging::public_key(&k).map(|k| k.to_string()))
        .transpose()?;
    if key.is_none() && a.san.is_none() {
        bail!(
            "name the signer: --key ed25519:... (or a .pub file), or --sigstore-san S --sigstore-issuer I"
        );
    }
    Ok(json!({"namespace": a.namespace, "key": key, "san": a.san, "issuer": a.issuer}))
}

/// `warden trust ...`
pub async fn trust(t: Target, cmd: TrustCommand) -> Result<()> {
    let c = Client::new(&t)?;
    match cmd {
        TrustCommand::Add(a) => {
            let namespace = a.namespace.clone();
            let v = c
                .call("POST", "/admin/v1/trust", Some(trust_spec(a)?))
                .await?;
            print(t.json, &v, |v| {
                println!("namespace `{namespace}` trusts:");
                print_signers(v);
            });
        }
        TrustCommand::Rm(a) => {
            let namespace = a.namespace.clone();
            let spec = trust_spec(a)?;
            let pairs: Vec<(&str, Option<String>)> = ["namespace", "key", "san", "issuer"]
                .iter()
                .map(|k| (*k, spec[*k].as_str().map(str::to_owned)))
                .collect();
            let v = c
                .call(
                    "DELETE",
                    &format!("/admin/v1/trust{}", query_string(&pairs)),
                    None,
                )
                .await?;
            print(t.json, &v, |v| {
                println!("namespace `{namespace}` now trusts:");
                print_signers(v);
            });
        }
        TrustCommand::List => {
            let v = c.call("GET", "/admin/v1/trust", None).await?;
            print(t.json, &v, |v| {
                for ns in v["trust"].as_array().into_iter().flatten() {
                    println!("{}", ns["namespace"].as_str().unwrap_or(""));
                    print_signers(ns);
                }
                match v["sigstore_root"]["sha256"].as_str() {
                    Some(sha) => println!("sigstore trusted root: sha256 {sha}"),
                    None => println!(
                        "sigstore trusted root: none pinned (Sigstore-signed packages are refused)"
                    ),
                }
            });
        }
        TrustCommand::SigstoreRoot { file, remove } => {
            let v = match file.filter(|_| !remove) {
                Some(file) => {
                    let json = std::fs::read(&file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    c.call_raw("PUT", "/admin/v1/trust/sigstore-root", json)
                        .await?
                }
                None => {
                    c.call_raw("DELETE", "/admin/v1/trust/sigstore-root", Vec::new())
                        .await?
                }
            };
            print(t.json, &v, |v| {
                match v["sha256"].as_str() {
                    Some(sha) => println!("pinned the Sigstore trusted root (sha256 {sha})"),
                    None => println!(
                        "no Sigstore trusted root is pinned; Sigstore-signed packages are refused"
                    ),
                }
                for w in v["withdrawn"].as_array().into_iter().flatten() {
                    println!(
                        "withdrawn (no longer verifies): {}",
                        w.as_str().unwrap_or("")
                    );
                }
            });
        }
    }
    Ok(())
}

fn print_signers(v: &Value) {
    let signers = v["signers"].as_array().cloned().unwrap_or_default();
    if signers.is_empty() {
        println!("  nobody (packages of this namespace are refused)");
    }
    for s in signers {
        if let Some(k) = s["key"].as_str() {
            println!("  {k}");
        } else if let Some(id) = s["sigstore"].as_object() {
            println!(
                "  sigstore {} (issuer {})",
                id.get("san").and_then(Value::as_str).unwrap_or(""),
                id.get("issuer").and_then(Value::as_str).unwrap_or("")
            );
        }
    }
}

/// Options of `warden skill install`.
#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// A package file, or `NAMESPACE/NAME[@VERSION]` from the registry.
    source: String,
    /// Registry base URL (for `NAMESPACE/NAME`).
    #[arg(long = "registry", env = warden::env::REGISTRY_URL)]
    registry: Option<String>,
    /// Registry token.
    #[arg(long = "registry-token", env = warden::env::REGISTRY_TOKEN, hide_env_values = true)]
    registry_token: Option<String>,
    /// Accept what the package asks for without a prompt.
    #[arg(long)]
    accept: bool,
    /// Grant the requested capabilities in this scope (`tenant/workspace[/environment]`).
    #[arg(long = "grant-scope")]
    grant_scope: Option<String>,
    /// Install even though the tools differ from the installed version's (after reading
    /// the listed changes).
    #[arg(long)]
    approve_changes: bool,
}

/// `warden skill install`: review, consent, install.
pub async fn skill_install(t: Target, a: InstallArgs) -> Result<()> {
    let c = Client::new(&t)?;
    let bytes = if std::path::Path::new(&a.source).is_file() {
        crate::packaging::read_package_file(std::path::Path::new(&a.source))?
    } else {
        let reg = crate::registryctl::RegistryClient::new(
            &crate::registryctl::RegistryTarget::new(a.registry.clone(), a.registry_token.clone()),
        )?;
        let (digest, version) = reg.resolve(&a.source).await?;
        eprintln!("downloading {} {version} (sha256 {digest})", a.source);
        reg.download(&digest).await?
    };
    let (status, body) =
        c.0.request(
            "POST",
            "/admin/v1/packages",
            bytes.clone(),
            "application/zip",
        )
        .await?;
    let v = json_or_error(status, &body, &[]).context("the package is refused")?;
    let review = &v["review"];
    print_review(review);
    if !review["tool_changes"].as_array().is_none_or(Vec::is_empty) && !a.approve_changes {
        bail!(
            "the tools changed since the installed version; the installed version keeps serving. Review the changes above and install again with --approve-changes"
        );
    }
    if !a.accept {
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            bail!(
                "not installed: pass --accept to accept what the package asks for without a prompt"
            );
        }
        eprint!(
            "Install {} and accept what it asks for? [y/N] ",
            review["id"].as_str().unwrap_or("")
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("not installed");
        }
    }
    let digest = review["sha256"].as_str().unwrap_or_default().to_owned();
    let query = query_string(&[
        ("accept", Some("true".into())),
        ("digest", Some(digest)),
        ("grant_scope", a.grant_scope.clone()),
        ("approve_changes", a.approve_changes.then(|| "true".into())),
    ]);
    let (status, body) =
        c.0.request(
            "POST",
            &format!("/admin/v1/packages{query}"),
            bytes,
            "application/zip",
        )
        .await?;
    let v = json_or_error(status, &body, &[]).context("the install is refused")?;
    print(t.json, &v, |v| {
        println!(
            "installed {}; live tools: {}",
            v["review"]["id"].as_str().unwrap_or(""),
            v["tools"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Some(scope) = &a.grant_scope {
            println!(
                "granted what it asked for in {scope} (warden grant list --skill {})",
                v["review"]["name"].as_str().unwrap_or("")
            );
        }
    });
    Ok(())
}

fn print_review(r: &Value) {
    eprintln!(
        "{} - {}",
        r["id"].as_str().unwrap_or(""),
        r["description"].as_str().unwrap_or("")
    );
    eprintln!("  publisher: {}", r["publisher"].as_str().unwrap_or(""));
    eprintln!(
        "  signer:    {} (trusted for `{}`)",
        r["signer"].as_str().unwrap_or(""),
        r["namespace"].as_str().unwrap_or("")
    );
    eprintln!("  sha256:    {}", r["sha256"].as_str().unwrap_or(""));
    if let Some(v) = r["replaces"].as_str() {
        eprintln!("  replaces:  {v}");
    }
    eprintln!("  tools:");
    for t in r["tools"].as_array().into_iter().flatten() {
        let first = t["description"]
            .as_str()
            .unwrap_or("")
            .lines()
            .next()
            .unwrap_or("");
        eprintln!("    {:<24} {first}", t["name"].as_str().unwrap_or(""));
    }
    // Everything a consent grants, field by field: a credential sent somewhere is what an
    // operator most needs to see.
    let caps = &r["capabilities"];
    let hosts = caps["hosts"].as_array().cloned().unwrap_or_default();
    let reveal = caps["reveal"].as_array().cloned().unwrap_or_default();
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect()
    };
    if hosts.is_empty() && reveal.is_empty() {
        eprintln!("  asks for:  nothing (no network, no secrets)");
    } else {
        eprintln!("  asks for:");
        for h in hosts {
            let methods = strs(&h["methods"]);
            eprintln!(
                "    outbound {}://{}{} ({})",
                h["scheme"].as_str().unwrap_or("https"),
                h["host"].as_str().unwrap_or(""),
                h["path_prefix"].as_str().unwrap_or("/"),
                if methods.is_empty() {
                    "any method".to_owned()
                } else {
                    methods.join(",")
                }
            );
            for i in strs(&h["inject"]) {
                eprintln!("      sends header      {i}");
            }
            for i in strs(&h["inject_query"]) {
                eprintln!("      sends query       {i}");
            }
            if let Some(b) = h["basic_auth"].as_str() {
                eprintln!("      sends basic auth  {b}");
            }
        }
        for s in reveal {
            eprintln!("    to read secret {} itself", s.as_str().unwrap_or(""));
        }
    }
    let limits = &caps["limits"];
    if limits.as_object().is_some_and(|l| !l.is_empty()) {
        eprintln!("  limits:    {limits}");
    }
    for change in r["tool_changes"].as_array().into_iter().flatten() {
        eprintln!("  CHANGED:   {}", change.as_str().unwrap_or(""));
    }
}

/// `warden skill remove`.
pub async fn skill_remove(t: Target, name: String) -> Result<()> {
    let c = Client::new(&t)?;
    let q = query_string(&[("skill", Some(name.clone()))]);
    let v = c
        .call_raw(
            "DELETE",
            &format!("/admin/v1/packages/remove{q}"),
            Vec::new(),
        )
        .await?;
    print(t.json, &v, |v| {
        println!("removed {name} {}", v["version"].as_str().unwrap_or(""));
    });
    Ok(())
}

/// `warden skill rollback`.
pub async fn skill_rollback(t: Target, name: String, version: String) -> Result<()> {
    let c = Client::new(&t)?;
    let q = query_string(&[
        ("skill", Some(name.clone())),
        ("version", Some(version.clone())),
    ]);
    let v = c
        .call_raw(
            "POST",
            &format!("/admin/v1/packages/rollback{q}"),
            Vec::new(),
        )
        .await?;
    print(t.json, &v, |_| println!("{name}@{version} is live again"));
    Ok(())
}
