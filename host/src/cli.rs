//! The command-line interface (clap). Each subcommand parses its arguments, calls into the
//! library and prints a human summary (or JSON with `--json`).
//!
//! Invariant: user-facing errors say what to do next; nothing here holds logic that another
//! entry point (the gateway, tests) would need: that lives in the library modules.

use crate::adminctl;
use crate::approvalctl;
use crate::packaging;
use crate::registryctl;
use crate::scaffold::{self, SdkSource};
use crate::toolchain::{self, Install};
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use warden::runtime::{CallContext, OutboundPolicy, Runtime, RuntimeConfig, Skill, SkillSettings};

/// warden: the MCP control plane.
#[derive(Debug, Parser)]
#[command(name = "warden", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the gateway: MCP over Streamable HTTP with the installed skills.
    Up {
        /// Data directory (store, installed skills, compile cache).
        #[arg(long, env = warden::env::DATA_DIR)]
        data_dir: Option<PathBuf>,
        /// Address to listen on (loopback by default).
        #[arg(long, default_value = "127.0.0.1:7878", env = warden::env::LISTEN)]
        listen: std::net::SocketAddr,
        /// Browser origin allowed to call /mcp (repeatable; none by default).
        #[arg(long = "allow-origin")]
        allowed_origins: Vec<String>,
        /// Host name clients use to reach the gateway, besides localhost (repeatable).
        #[arg(long = "public-host")]
        public_hosts: Vec<String>,
        /// Issue and print another local-agent token (the first is shown only once).
        #[arg(long)]
        issue_token: bool,
        /// Seconds in-flight calls may take to finish after SIGINT/SIGTERM.
        #[arg(long, default_value_t = 10)]
        drain_secs: u64,
        /// Seconds a call needing approval waits for a decision before it answers
        /// "approval pending" (retrying the same call picks the decision up).
        #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(0..=3600))]
        approval_wait_secs: u64,
        /// Seconds an approval task stays decidable, and an approval usable.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=604_800))]
        approval_ttl_secs: u64,
        /// Default calls per second per agent (burst twice that; 0: unlimited).
        #[arg(long, default_value_t = 50, env = warden::env::RATE_LIMIT)]
        rate_limit: u32,
        /// The URL clients use to reach the gateway (default http://<listen>); short-lived
        /// agent tokens are bound to <public-url>/mcp.
        #[arg(long, env = warden::env::PUBLIC_URL)]
        public_url: Option<String>,
        /// Benchmark mode: acknowledge calls without recording them (never in production).
        #[arg(long, hide = true)]
        unsafe_no_audit: bool,
        /// The vault's root key file (default `<data-dir>/vault.key`, created 0600 on first
        /// start). Ignored when the vault was created from WARDEN_VAULT_KEY or a passphrase.
        #[arg(long, env = warden::env::VAULT_KEY_FILE)]
        vault_key_file: Option<PathBuf>,
        /// Create the vault with a passphrase instead of a key file: it starts sealed, and
        /// `warden vault unseal` asks for the passphrase (the first one sets it).
        #[arg(long)]
        vault_passphrase: bool,
        /// Load a local, unsigned skill component too (repeatable), as `dev_<name>__*`
        /// tools: for trying a skill in the gateway before it is published.
        #[arg(long = "dev-skill")]
        dev_skills: Vec<PathBuf>,
    },
    /// Tenants, workspaces and environments (through the admin API).
    Scope {
        #[command(flatten)]
        target: adminctl::Target,
        #[command(subcommand)]
        command: adminctl::ScopeCommand,
    },
    /// Agents (through the admin API).
    Agent {
        #[command(flatten)]
        target: adminctl::Target,
        #[command(subcommand)]
        command: adminctl::AgentCommand,
    },
    /// Approval tasks: list, show, approve, deny, modify (through the admin API).
    Approvals {
        #[command(flatten)]
        target: adminctl::Target,
        #[command(subcommand)]
        command: approvalctl::ApprovalsCommand,
    },
    /// Approval webhooks: notify a workspace's relay when a task opens (through the admin API).
    Webhook {
        #[command(flatten)]
        target: adminctl::Target,
        #[command(subcommand)]
        command: approvalctl::WebhookCommand,
    },
    /// The terminal desk: pending approval tasks, live; approve, deny, modify.
    Desk {
        #[command(flatten)]
        target: adminctl::Target,
    },
    /// Approvers: who decides approval tasks where, in which groups (through the admin API).
    Approver {
        #[command(flatten)]
        target: adminctl::Target,
        #[command(subcommand)]
        command: approvalctl::ApproverCommand,
    },
    /// Service and admin tokens (through the admin API).
    Token {
        #[command(flatten)]
        target: adminctl::Target,
        #[command(subcommand)]
        command: adminctl::TokenCommand,
    },
    /// Policy sets: apply, test, show, history (through the admin API).
    Policy {
        #[command(flatten)]
        target: adminctl::Target,
        #[command(subcommand)]
        command: adminctl::PolicyCommand,
    },
    /// The vault: status, seal, unseal, rotate-key, check (through the admin API).
    Vault {
        #[command(flatten)]
        target: adminctl::Target,
        #[command(subcommand)]
        command: adminctl::VaultCommand,
    },
    /// Secrets: set (from stdin or a hidden prompt), list, history, rm. Values never come back.
    Secret {
        #[command(flatten)]
        target: adminctl::Target,
        #[command(subcommand)]
        command: adminctl::SecretCommand,
    },
    /// Which signers the gateway trusts for which namespaces' skill packages (deny by
    /// default).
    Trust {
        #[command(flatten)]
        target: adminctl::Target,
        #[command(subcommand)]
        command: adminctl::TrustCommand,
    },
    /// Grants: which skill may reach which host with which secrets, per environment.
    Grant {
        #[command(flatten)]
        target: adminctl::Target,
        #[command(subcommand)]
        command: adminctl::GrantCommand,
    },
    /// The audit trail: tail, verify, usage.
    Audit {
        #[command(flatten)]
        target: adminctl::Target,
        #[command(subcommand)]
        command: adminctl::AuditCommand,
    },
    /// Bridge stdio to a gateway: for MCP clients that only launch stdio servers.
    Connect {
        /// The gateway's MCP URL.
        #[arg(long, env = warden::env::URL)]
        url: String,
        /// The agent token (prefer the environment variable: arguments are visible to
        /// other local users).
        #[arg(long, env = warden::env::TOKEN, hide_env_values = true)]
        token: String,
    },
    /// Write, build, package, sign and try skills.
    #[command(subcommand)]
    Skill(SkillCommand),
    /// Package signing keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// The private skill registry: serve it, manage namespaces, keys and tokens, search.
    Registry {
        #[command(flatten)]
        target: registryctl::RegistryTarget,
        #[command(subcommand)]
        command: registryctl::RegistryCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Make an ed25519 signing key: a 0600 key file (never overwritten) and FILE.pub;
    /// prints the public key (`ed25519:...`).
    Generate {
        /// The key file to create.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Print the public key (`ed25519:...`) of a key file.
    Public {
        /// The key file.
        key: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum SkillCommand {
    /// Scaffold a new skill crate that builds as is.
    New {
        /// Crate name (lower-case letters, digits, '-').
        name: String,
        /// Directory to create it in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Path of a warden-sdk checkout to depend on (default: the SDK this binary was
        /// built from, else the published crate).
        #[arg(long, env = warden::env::SDK_PATH)]
        sdk: Option<PathBuf>,
    },
    /// Build a skill crate into a wasm32-wasip2 component and check it against the contract.
    Build {
        /// The skill crate directory.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Cargo target directory for wasm builds (share it between skills to build std once).
        #[arg(long, env = warden::env::WASM_TARGET_DIR)]
        target_dir: Option<PathBuf>,
        /// Copy the component here.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Never install the offline toolchain; print the commands instead.
        #[arg(long)]
        no_install: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pack a skill into a package: its `skill.toml` and `README.md`, the component
    /// (built from the crate unless --component is given) and the digests that bind them.
    Pack {
        /// The skill's directory (holds skill.toml and README.md).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Use this built component instead of building the crate.
        #[arg(long)]
        component: Option<PathBuf>,
        /// Write the package here (default: DIR/NAME-VERSION.wsk).
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Sign it too, with this key file (`warden key generate`).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Cargo target directory for the wasm build.
        #[arg(long, env = warden::env::WASM_TARGET_DIR)]
        target_dir: Option<PathBuf>,
    },
    /// Install a signed package into the running gateway: review what it asks for, accept,
    /// and its tools are live without a restart.
    Install {
        #[command(flatten)]
        args: adminctl::InstallArgs,
        #[command(flatten)]
        target: adminctl::Target,
    },
    /// Remove an installed package's skill and its grants (install it again to get it
    /// back; its package files are deleted at the next start).
    Remove {
        /// The skill.
        name: String,
        #[command(flatten)]
        target: adminctl::Target,
    },
    /// Make an earlier installed version of a skill live again.
    Rollback {
        /// The skill.
        name: String,
        /// The earlier version.
        version: String,
        #[command(flatten)]
        target: adminctl::Target,
    },
    /// Publish a signed package to a registry.
    Publish {
        /// The package.
        file: PathBuf,
        /// Publish a version lower than the newest as an older version (it never becomes
        /// the latest).
        #[arg(long)]
        backport: bool,
        #[command(flatten)]
        target: registryctl::RegistryTarget,
    },
    /// Sign a package with an ed25519 key (replaces an earlier signature).
    Sign {
        /// The package.
        file: PathBuf,
        /// The signing key file.
        #[arg(long, required_unless_present = "sigstore_bundle")]
        key: Option<PathBuf>,
        /// Attach this Sigstore bundle instead: made over the package's `skill.toml`
        /// (`warden skill inspect FILE --manifest > skill.toml`, then e.g. `cosign
        /// sign-blob skill.toml --bundle skill.sigstore.json`).
        #[arg(long, conflicts_with = "key")]
        sigstore_bundle: Option<PathBuf>,
        /// Write the signed package here (default: in place).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Verify a package: structure, digests, signature, and that the component declares
    /// exactly the manifest's tools; with --trust, that the signer is trusted for its
    /// namespace. Exits non-zero on any problem.
    Verify {
        /// The package.
        file: PathBuf,
        /// Trust this signer for this namespace: `NAMESPACE=ed25519:KEY` or
        /// `NAMESPACE=sigstore:SAN|ISSUER` (repeatable).
        #[arg(long)]
        trust: Vec<String>,
        /// Verify a Sigstore bundle against this trusted root (`trusted_root.json`).
        #[arg(long)]
        sigstore_root: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a package (identity, signer, digests, tools, requested capabilities) or a
    /// component (its tools).
    Inspect {
        /// The package or component file.
        file: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        /// Print a package's `skill.toml` exactly as signed (to sign it with Sigstore).
        #[arg(long, conflicts_with = "json")]
        manifest: bool,
    },
    /// Call one tool of a component in the sandbox, as the gateway would.
    Call {
        /// The component file.
        file: PathBuf,
        /// The tool name.
        tool: String,
        /// Arguments as a JSON object.
        #[arg(default_value = "{}")]
        arguments: String,
        /// Allow outbound HTTP to this host (repeatable; `host`, `host:port` or `*.domain`).
        #[arg(long = "allow-host")]
        allow_hosts: Vec<String>,
        /// Also allow private and loopback destinations for the allowed hosts.
        #[arg(long)]
        allow_private: bool,
    },
    /// List the running gateway's installed skills and where they are installed.
    Installed {
        #[command(flatten)]
        target: adminctl::Target,
    },
    /// Show or set the workspaces a skill is installed in (on the running gateway).
    Workspaces {
        /// The skill name.
        name: String,
        /// Install it in this workspace (`tenant/workspace`, repeatable); replaces the list.
        #[arg(long = "workspace")]
        workspaces: Vec<String>,
        /// Install it in every workspace.
        #[arg(long, conflicts_with = "workspaces")]
        all: bool,
        #[command(flatten)]
        target: adminctl::Target,
    },
}

/// Parses the command line and runs it.
pub fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Up {
            data_dir,
            listen,
            allowed_origins,
            public_hosts,
            issue_token,
            drain_secs,
            approval_wait_secs,
            approval_ttl_secs,
            rate_limit,
            public_url,
            unsafe_no_audit,
            vault_key_file,
            vault_passphrase,
            dev_skills,
        } => rt.block_on(crate::up::up(crate::up::UpOptions {
            dev_skills,
            vault: warden::vault::VaultConfig {
                key_file: vault_key_file.unwrap_or_else(|| {
                    data_dir
                        .clone()
                        .unwrap_or_else(warden::datadir::default_data_dir)
                        .join(warden::datadir::VAULT_KEY_FILE)
                }),
                passphrase: vault_passphrase,
            },
            data_dir: data_dir.unwrap_or_else(warden::datadir::default_data_dir),
            listen,
            access: warden::transport::http::AccessRules {
                allowed_origins,
                extra_hosts: public_hosts,
            },
            issue_token,
            drain: std::time::Duration::from_secs(drain_secs),
            approval_wait: std::time::Duration::from_secs(approval_wait_secs),
            approval_ttl: approval_ttl_secs,
            rate_limit,
            public_url,
            unsafe_no_audit,
        })),
        Command::Scope { target, command } => rt.block_on(adminctl::scope(target, command)),
        Command::Agent { target, command } => rt.block_on(adminctl::agent(target, command)),
        Command::Approvals { target, command } => {
            rt.block_on(approvalctl::approvals(target, command))
        }
        Command::Desk { target } => rt.block_on(crate::desktui::run(target)),
        Command::Webhook { target, command } => rt.block_on(approvalctl::webhook(target, command)),
        Command::Approver { target, command } => {
            rt.block_on(approvalctl::approver(target, command))
        }
        Command::Token { target, command } => rt.block_on(adminctl::token(target, command)),
        Command::Policy { target, command } => rt.block_on(adminctl::policy(target, command)),
        Command::Audit { target, command } => rt.block_on(adminctl::audit(target, command)),
        Command::Vault { target, command } => rt.block_on(adminctl::vault(target, command)),
        Command::Secret { target, command } => rt.block_on(adminctl::secret(target, command)),
        Command::Grant { target, command } => rt.block_on(adminctl::grant(target, command)),
        Command::Trust { target, command } => rt.block_on(adminctl::trust(target, command)),
        Command::Connect { url, token } => {
            let url: http::Uri = url.parse().context("--url is not a valid URL")?;
            rt.block_on(warden::transport::stdio::run(
                warden::transport::stdio::BridgeConfig { url, token },
            ))
        }
        Command::Skill(cmd) => rt.block_on(skill(cmd)),
        Command::Key(KeyCommand::Generate { out }) => packaging::key_generate(&out),
        Command::Key(KeyCommand::Public { key }) => {
            println!("{}", packaging::read_key(&key)?.public());
            Ok(())
        }
        Command::Registry { target, command } => {
            rt.block_on(registryctl::registry(target, command))
        }
    }
}

async fn skill(cmd: SkillCommand) -> Result<()> {
    match cmd {
        SkillCommand::Installed { target } => {
            adminctl::skill_workspaces(target, None, Vec::new(), false).await
        }
        SkillCommand::Workspaces {
            name,
            workspaces,
            all,
            target,
        } => adminctl::skill_workspaces(target, Some(name), workspaces, all).await,
        SkillCommand::New { name, dir, sdk } => {
            let sdk = sdk.map(SdkSource::Path).unwrap_or_else(SdkSource::detect);
            let dir = scaffold::new_skill(&dir, &name, &sdk)?;
            println!("created skill crate {}", dir.display());
            println!("build it with: warden skill build {}", dir.display());
            Ok(())
        }
        SkillCommand::Build {
            path,
            target_dir,
            out,
            no_install,
            json,
        } => build(&path, target_dir, out, no_install, json).await,
        SkillCommand::Pack {
            dir,
            component,
            out,
            key,
            target_dir,
        } => {
            packaging::pack(packaging::PackOptions {
                dir,
                component,
                out,
                key,
                target_dir,
            })
            .await
        }
        SkillCommand::Install { args, target } => adminctl::skill_install(target, args).await,
        SkillCommand::Remove { name, target } => adminctl::skill_remove(target, name).await,
        SkillCommand::Rollback {
            name,
            version,
            target,
        } => adminctl::skill_rollback(target, name, version).await,
        SkillCommand::Publish {
            file,
            backport,
            target,
        } => registryctl::publish(target, &file, backport).await,
        SkillCommand::Sign {
            file,
            key,
            sigstore_bundle,
            out,
        } => match (key, sigstore_bundle) {
            (Some(key), _) => packaging::sign(&file, &key, out.as_deref()),
            (None, Some(bundle)) => packaging::attach_sigstore(&file, &bundle, out.as_deref()),
            (None, None) => bail!("give --key KEY or --sigstore-bundle FILE"),
        },
        SkillCommand::Verify {
            file,
            trust,
            sigstore_root,
            json,
        } => packaging::verify(&file, &trust, sigstore_root.as_deref(), json).await,
        SkillCommand::Inspect {
            file,
            json,
            manifest,
        } => {
            let wasm = packaging::read_package_file(&file)?;
            if packaging::is_package(&wasm) {
                if manifest {
                    return packaging::print_manifest(&file, &wasm);
                }
                return packaging::inspect(&file, &wasm, json);
            }
            if manifest {
                bail!("{} is a component, not a package", file.display());
            }
            let skill = load(&file, &wasm, SkillSettings::default()).await?;
            print_summary(&skill, &file, wasm.len(), json);
            Ok(())
        }
        SkillCommand::Call {
            file,
            tool,
            arguments,
            allow_hosts,
            allow_private,
        } => {
            let wasm =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let settings = SkillSettings {
                outbound: OutboundPolicy {
                    allowed_hosts: allow_hosts,
                    allow_private,
                },
                ..SkillSettings::default()
            };
            let skill = load(&file, &wasm, settings).await?;
            let arguments: serde_json::Value =
                serde_json::from_str(&arguments).context("arguments must be a JSON object")?;
            match skill.call(&tool, &arguments, &CallContext::default()).await {
                Ok(outcome) => {
                    println!("{}", serde_json::to_string_pretty(&outcome.value)?);
                    Ok(())
                }
                Err(e) => bail!("{e}"),
            }
        }
    }
}

async fn load(file: &Path, wasm: &[u8], settings: SkillSettings) -> Result<Skill> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "skill".into());
    runtime
        .load(&name, wasm, settings)
        .await
        .with_context(|| format!("{} is not a usable skill", file.display()))
}

async fn build(
    path: &Path,
    target_dir: Option<PathBuf>,
    out: Option<PathBuf>,
    no_install: bool,
    json: bool,
) -> Result<()> {
    if !path.join("Cargo.toml").exists() {
        bail!(
            "{} has no Cargo.toml; pass the skill crate's directory (create one with `warden skill new NAME`)",
            path.display()
        );
    }
    let install = if no_install {
        Install::Never
    } else {
        Install::IfPossible
    };
    let toolchain = tokio::task::spawn_blocking(move || toolchain::resolve(install)).await??;
    let target_dir = target_dir.unwrap_or_else(|| path.join("target"));
    if !json {
        eprintln!(
            "building {} with the {}",
            path.display(),
            toolchain.describe()
        );
    }
    let (crate_dir, tdir) = (path.to_owned(), target_dir.clone());
    let built =
        tokio::task::spawn_blocking(move || toolchain::build(&toolchain, &crate_dir, &tdir))
            .await??;
    let wasm_path = match out {
        Some(out) => {
            if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(&built.wasm, &out)
                .with_context(|| format!("copying the component to {}", out.display()))?;
            out
        }
        None => built.wasm.clone(),
    };
    let wasm = std::fs::read(&wasm_path)?;
    let skill = load(&wasm_path, &wasm, SkillSettings::default()).await?;
    print_summary(&skill, &wasm_path, wasm.len(), json);
    Ok(())
}

fn print_summary(skill: &Skill, path: &Path, size: usize, json: bool) {
    if json {
        let tools: Vec<serde_json::Value> = skill
            .tools()
            .iter()
            .map(|t| warden::packages::tool_json(&warden::packages::tool_def(t)))
            .collect();
        let summary = serde_json::json!({
            "component": path,
            "bytes": size,
            "digest": skill.digest(),
            "tools": tools,
        });
        println!("{summary}");
        return;
    }
    println!(
        "component {} ({:.1} KiB, blake3 {})",
        path.display(),
        size as f64 / 1024.0,
        &skill.digest()[..16]
    );
    println!("{} tool(s):", skill.tools().len());
    for t in skill.tools() {
        let first_line = t.description.lines().next().unwrap_or_default();
        println!("  {:<24} {first_line}", t.name);
    }
}
