//! `warden approvals ...`, `warden approver ...` and `warden webhook ...`: the command-line
//! desk. Lists approval
//! tasks, shows one in plain words, and casts votes (approve, deny with a note, modify the
//! arguments) through the running gateway's admin API; operators manage approvers and
//! approval webhooks here.
//!
//! Invariants: a vote the gateway refuses (409 included: already decided, already voted)
//! is an error with the gateway's reason and a non-zero exit; `--args` must be a JSON
//! object before anything is sent.
//!
//! Threat: an approver believing a vote counted when it did not.

use crate::adminctl::{Client, Target, print, query_string};
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};

/// `warden approvals ...`
#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// List approval tasks you may decide, newest first.
    List {
        /// Only tasks in this state (pending, approved, denied, expired, executed,
        /// invalidated).
        #[arg(long)]
        state: Option<String>,
        /// At most this many (default 100).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show one task: what the agent wants to do, why, with which arguments.
    Show {
        /// Task id (`apr_...`).
        id: String,
    },
    /// Approve a task (it runs once its quorum is met and the agent calls again).
    Approve {
        /// Task id.
        id: String,
        /// A remark kept with your vote.
        #[arg(long)]
        note: Option<String>,
    },
    /// Deny a task; the agent is told the note.
    Deny {
        /// Task id.
        id: String,
        /// Why (the agent sees it).
        #[arg(long)]
        note: String,
    },
    /// Replace the arguments (checked against the tool's schema and policy) and approve
    /// them; the agent is told the arguments were modified.
    Modify {
        /// Task id.
        id: String,
        /// The arguments to run with, as a JSON object.
        #[arg(long = "args")]
        arguments: String,
        /// A remark for the agent.
        #[arg(long)]
        note: Option<String>,
    },
}

/// `warden approver ...`
#[derive(Debug, Subcommand)]
pub enum ApproverCommand {
    /// Let an admin decide approval tasks of some tenants or workspaces, as a member of
    /// some groups (replaces what was set before).
    Set {
        /// Admin name (its tokens are issued with `warden token issue NAME --admin --role approver`).
        name: String,
        /// `*`, a tenant or `tenant/workspace` (repeatable).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Group (repeatable): `@approval("2-of:group:NAME")` counts its members.
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// List approvers.
    List,
    /// Remove an approver (its admin tokens stay, but decide nothing).
    Remove {
        /// Admin name.
        name: String,
    },
}

/// `warden webhook ...`
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Notify a URL (signed with HMAC-SHA256) when an approval task of the workspace opens.
    Set {
        /// `tenant/workspace`.
        workspace: String,
        /// Where notices are posted (`http://` or `https://`).
        #[arg(value_name = "URL")]
        endpoint: String,
        /// The name of the vault secret that signs them (`warden secret set T/W/NAME` first).
        #[arg(long)]
        secret: String,
    },
    /// List webhooks.
    List,
    /// Stop notifying a workspace.
    Rm {
        /// `tenant/workspace`.
        workspace: String,
    },
}

/// `warden webhook ...`
pub async fn webhook(t: Target, cmd: WebhookCommand) -> Result<()> {
    let c = Client::new(&t)?;
    let json = t.json();
    let path = |ws: &str| -> Result<String> {
        match ws.split_once('/') {
            Some((tenant, workspace))
                if warden::identity::valid_segment(tenant)
                    && warden::identity::valid_segment(workspace) =>
            {
                Ok(format!("/admin/v1/webhooks/{tenant}/{workspace}"))
            }
            _ => bail!("`{ws}` is not a tenant/workspace"),
        }
    };
    match cmd {
        WebhookCommand::Set {
            workspace,
            endpoint: url,
            secret,
        } => {
            let body = json!({ "url": url, "secret": secret })
                .to_string()
                .into_bytes();
            let v = c.call_raw("PUT", &path(&workspace)?, body).await?;
            print(json, &v, |_| {
                println!("approval tasks of {workspace} are announced to {url}");
            });
        }
        WebhookCommand::List => {
            let v = c.call("GET", "/admin/v1/webhooks", None).await?;
            print(json, &v, |v| {
                for h in v["webhooks"].as_array().into_iter().flatten() {
                    println!(
                        "{:<40} {} (secret {})",
                        h["workspace"].as_str().unwrap_or(""),
                        h["url"].as_str().unwrap_or(""),
                        h["secret"].as_str().unwrap_or("")
                    );
                }
            });
        }
        WebhookCommand::Rm { workspace } => {
            let v = c.call_raw("DELETE", &path(&workspace)?, Vec::new()).await?;
            print(json, &v, |_| println!("webhook of {workspace} removed"));
        }
    }
    Ok(())
}

fn when(secs: &Value) -> String {
    secs.as_u64().map_or_else(
        || "-".into(),
        |s| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
            )
            .to_string()
        },
    )
}

/// Risk hints of a tool's annotations, in words.
fn risks(annotations: &Value) -> Vec<&'static str> {
    let mut out = Vec::new();
    if annotations["destructiveHint"] == json!(true) {
        out.push("destructive");
    }
    if annotations["openWorldHint"] == json!(true) {
        out.push("reaches the outside world");
    }
    if annotations["readOnlyHint"] == json!(true) {
        out.push("read-only");
    }
    out
}

fn describe(t: &Value) {
    let s = |k: &str| t[k].as_str().unwrap_or("-").to_owned();
    println!("{}  {}", s("id"), s("state").to_uppercase());
    println!("  agent:     {}", s("agent"));
    println!("  wants to:  {} ({})", s("tool"), s("description"));
    if let Some(reason) = t["reason"].as_str() {
        println!("  because:   {reason}");
    }
    let risks = risks(&t["annotations"]);
    if !risks.is_empty() {
        println!(
            "  risk:      {} (as the skill declares it)",
            risks.join(", ")
        );
    }
    println!(
        "  arguments: {}",
        serde_json::to_string_pretty(&t["arguments"])
            .unwrap_or_default()
            .replace('\n', "\n             ")
    );
    if !t["modified_arguments"].is_null() {
        println!(
            "  modified:  {}",
            serde_json::to_string_pretty(&t["modified_arguments"])
                .unwrap_or_default()
                .replace('\n', "\n             ")
        );
    }
    let quorums: Vec<&str> = t["quorums"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!("  needs:     {}", quorums.join(" and "));
    for v in t["votes"].as_array().into_iter().flatten() {
        println!(
            "  vote:      {} by {} at {}{}",
            v["vote"].as_str().unwrap_or("-"),
            v["approver"].as_str().unwrap_or("-"),
            when(&v["at"]),
            v["note"]
                .as_str()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
    }
    let missing: Vec<&str> = t["missing"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !missing.is_empty() {
        println!("  missing:   {}", missing.join(" and "));
    }
    if let Some(note) = t["note"].as_str() {
        println!("  note:      {note}");
    }
    println!(
        "  skill:     {} ({})",
        s("skill"),
        &s("skill_digest").chars().take(19).collect::<String>()
    );
    println!("  created:   {}", when(&t["created_at"]));
    println!("  expires:   {}", when(&t["expires_at"]));
}

/// Checks a task id's shape before it goes into a URL.
fn task_path(id: &str, action: &str) -> Result<String> {
    if !warden::approvals::valid_id(id) {
        bail!("`{id}` is not an approval task id (apr_ and 24 hex digits)");
    }
    Ok(if action.is_empty() {
        format!("/admin/v1/approvals/{id}")
    } else {
        format!("/admin/v1/approvals/{id}/{action}")
    })
}

/// `warden approvals ...`
pub async fn approvals(t: Target, cmd: ApprovalsCommand) -> Result<()> {
    let c = Client::new(&t)?;
    let json = t.json();
    match cmd {
        ApprovalsCommand::List { state, limit } => {
            let q = query_string(&[("state", state), ("limit", limit.map(|l| l.to_string()))]);
            let v = c
                .call("GET", &format!("/admin/v1/approvals{q}"), None)
                .await?;
            print(json, &v, |v| {
                let tasks = v["approvals"].as_array().cloned().unwrap_or_default();
                if tasks.is_empty() {
                    println!("no approval tasks");
                }
                for t in tasks {
                    println!(
                        "{}  {:<11} {:<40} {:<36} {}",
                        t["id"].as_str().unwrap_or("-"),
                        t["state"].as_str().unwrap_or("-"),
                        t["tool"].as_str().unwrap_or("-"),
                        t["agent"].as_str().unwrap_or("-"),
                        when(&t["created_at"])
                    );
                }
            });
        }
        ApprovalsCommand::Show { id } => {
            let v = c.call("GET", &task_path(&id, "")?, None).await?;
            print(json, &v, describe);
        }
        ApprovalsCommand::Approve { id, note } => {
            let body = json!({ "note": note }).to_string().into_bytes();
            let v = c
                .call_raw("POST", &task_path(&id, "approve")?, body)
                .await?;
            print(json, &v, |v| {
                println!(
                    "approved {id}: the task is {}",
                    v["state"].as_str().unwrap_or("-")
                );
                describe(v);
            });
        }
        ApprovalsCommand::Deny { id, note } => {
            let body = json!({ "note": note }).to_string().into_bytes();
            let v = c.call_raw("POST", &task_path(&id, "deny")?, body).await?;
            print(json, &v, |_| println!("denied {id}"));
        }
        ApprovalsCommand::Modify {
            id,
            arguments,
            note,
        } => {
            let arguments: Value =
                serde_json::from_str(&arguments).context("--args must be a JSON object")?;
            if !arguments.is_object() {
                bail!("--args must be a JSON object");
            }
            let body = json!({ "arguments": arguments, "note": note })
                .to_string()
                .into_bytes();
            let v = c.call_raw("POST", &task_path(&id, "modify")?, body).await?;
            print(json, &v, |v| {
                println!(
                    "modified {id}: the task is {}",
                    v["state"].as_str().unwrap_or("-")
                );
                describe(v);
            });
        }
    }
    Ok(())
}

/// `warden approver ...`
pub async fn approver(t: Target, cmd: ApproverCommand) -> Result<()> {
    let c = Client::new(&t)?;
    let json = t.json();
    if let ApproverCommand::Set { name, .. } | ApproverCommand::Remove { name } = &cmd
        && !warden::identity::valid_segment(name)
    {
        bail!("`{name}` is not an admin name (1-32 lower-case letters, digits or '-')");
    }
    match cmd {
        ApproverCommand::Set {
            name,
            scopes,
            groups,
        } => {
            let body = json!({ "scopes": scopes, "groups": groups })
                .to_string()
                .into_bytes();
            let v = c
                .call_raw("PUT", &format!("/admin/v1/approvers/{name}"), body)
                .await?;
            print(json, &v, |_| println!("approver {name} saved"));
        }
        ApproverCommand::List => {
            let v = c.call("GET", "/admin/v1/approvers", None).await?;
            print(json, &v, |v| {
                for a in v["approvers"].as_array().into_iter().flatten() {
                    println!(
                        "{:<32} scopes={} groups={}",
                        a["name"].as_str().unwrap_or(""),
                        a["scopes"],
                        a["groups"]
                    );
                }
            });
        }
        ApproverCommand::Remove { name } => {
            let v = c
                .call_raw("DELETE", &format!("/admin/v1/approvers/{name}"), Vec::new())
                .await?;
            print(json, &v, |_| println!("approver {name} removed"));
        }
    }
    Ok(())
}
