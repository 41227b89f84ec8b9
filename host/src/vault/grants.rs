//! Grants: which skill may reach which destination, with which secrets, in which workspace
//! or environment; and [`CallGrants`], the capabilities of one call built from them.
//!
//! A grant names a skill and a scope (`tenant/workspace` or `tenant/workspace/env`) and
//! gives it an outbound destination (scheme, host or `*.domain`, port, path prefix,
//! methods, whether non-public addresses are allowed), credentials added to requests to
//! that destination (a header, a query parameter or HTTP basic auth, each a template with
//! `{secret:NAME}` placeholders), and secrets the skill may read itself (`reveal`).
//!
//! Invariants:
//! - Deny by default: a call reaches only destinations its skill's grants in the caller's
//!   environment (or its workspace) name, and reads only the secrets they list to reveal.
//! - A credential is added only to a request its own grant routed; the guest's header or
//!   parameter of the same name is replaced, never merged.
//! - Grants are never edited: adding or removing one is a new revision; a removed grant
//!   stays in the table as history and no longer applies from the next call on.
//! - Every use and every refusal is noted for the call's audit record (names and hosts,
//!   never values); every value the call used is masked in what the call returns.
//!
//! Threat: a skill using a credential where it was not granted (another host, another
//! environment, another skill), or reading one it was only allowed to have injected.

use super::mask::Masker;
use super::{Vault, VaultError, valid_name};
use crate::audit::CapabilityUse;
use crate::identity::valid_segment;
use crate::runtime::{Capabilities, Destination, RevealRefusal, Route};
use crate::storage::{EgressRule, GrantRecord, Injection, Removal, Store, StoreError, Tables};
use base64::Engine as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Uses and refusals noted per call (more are counted, not kept).
const EVENTS_KEPT: usize = 32;
/// How long a grant's rendered credentials are reused before its secrets are decrypted
/// again (a store write, a seal or an unseal drops them at once).
const PREPARED_TTL: Duration = Duration::from_secs(30);
/// Rendered credentials kept at most (grant and environment pairs).
const PREPARED_MAX: usize = 4096;

/// A grant's credentials rendered for one environment: header values, query parameters,
/// and the masking patterns of every secret in them, in wiped buffers. Reused for
/// [`PREPARED_TTL`] while the store and the vault's state are unchanged, so a call neither
/// decrypts its secrets nor derives their patterns again.
pub(super) struct Prepared {
    at: Instant,
    headers: Vec<(http::HeaderName, Zeroizing<String>)>,
    query: Vec<(String, Zeroizing<String>)>,
    masker: Arc<Masker>,
}

/// The vault's store of [`Prepared`] credentials: environment -> grant id -> credentials,
/// valid at one store generation and one vault epoch (bumped by a seal or an unseal).
#[derive(Default)]
pub(super) struct PreparedCache {
    generation: u64,
    epoch: u64,
    by_env: HashMap<String, HashMap<String, Arc<Prepared>>>,
    held: usize,
}

impl PreparedCache {
    fn clear(&mut self) {
        self.by_env.clear();
        self.held = 0;
    }

    /// Drops every rendered credential (wiped as the last call holding it ends) and makes
    /// renderings under way not cacheable.
    pub(super) fn forget(&mut self) {
        self.clear();
        self.epoch += 1;
    }
}

/// A grant as an operator asks for it (`warden grant add`, `POST /admin/v1/grants`).
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
pub struct GrantSpec {
    /// The skill: `namespace/name`, or its name when one namespace has it.
    pub skill: String,
    /// `tenant/workspace` or `tenant/workspace/environment`.
    pub scope: String,
    /// `host`, `host:port`, `*.domain`, or an IP literal (`[::1]:8080`).
    pub host: Option<String>,
    /// `https` (default) or `http`.
    pub scheme: Option<String>,
    /// Path prefix (default `/`: any path).
    pub path_prefix: Option<String>,
    /// Methods (default: any).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Allow loopback, private, link-local and other non-public addresses.
    #[serde(default)]
    pub allow_private: bool,
    /// Headers to add: `Name: value with {secret:NAME}`.
    #[serde(default)]
    pub inject: Vec<String>,
    /// Query parameters to add: `name=value with {secret:NAME}`.
    #[serde(default)]
    pub inject_query: Vec<String>,
    /// HTTP basic auth: `user:password`, either part may hold `{secret:NAME}`.
    pub basic_auth: Option<String>,
    /// Secrets the skill may read itself (`secrets.reveal`).
    #[serde(default)]
    pub reveal: Vec<String>,
}

/// Why a grant was refused.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// Malformed.
    #[error("{0}")]
    Invalid(String),
    /// The skill or scope does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(m: impl Into<String>) -> GrantError {
    GrantError::Invalid(m.into())
}

/// The pieces of a template: literal text and secret names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Secret(&'a str),
}

/// Splits a template into text and `{secret:NAME}` placeholders.
fn pieces(template: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{secret:") {
        if start > 0 {
            out.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + "{secret:".len()..];
        let end = after
            .find('}')
            .ok_or_else(|| "unclosed `{secret:` placeholder".to_owned())?;
        let name = &after[..end];
        if !valid_name(name) {
            return Err(format!(
                "`{{secret:{name}}}`: a secret name is 1-64 of [A-Za-z0-9_-]"
            ));
        }
        out.push(Piece::Secret(name));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// Secret names a template uses.
fn secrets_of(template: &str) -> Vec<String> {
    pieces(template)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| match p {
            Piece::Secret(n) => Some(n.to_owned()),
            Piece::Text(_) => None,
        })
        .collect()
}

/// Headers a grant may not set (framing, routing, and what the host sets itself).
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

fn parse_host(spec: &str) -> Result<(String, Option<u16>), GrantError> {
    let spec = spec.trim().to_ascii_lowercase();
    if spec.contains("://") || spec.contains('/') || spec.contains('@') || spec.is_empty() {
        return Err(invalid(format!(
            "--host `{spec}` is a host name, `host:port` or `*.domain` (no scheme, path or user)"
        )));
    }
    let (host, port) = if let Some(rest) = spec.strip_prefix('[') {
        let (h, tail) = rest
            .split_once(']')
            .ok_or_else(|| invalid("unclosed `[` in --host"))?;
        let port = match tail.strip_prefix(':') {
            Some(p) => Some(p.parse().map_err(|_| invalid("bad port in --host"))?),
            None if tail.is_empty() => None,
            None => return Err(invalid("bad --host")),
        };
        (h.to_owned(), port)
    } else {
        match spec.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (
                h.to_owned(),
                Some(p.parse().map_err(|_| invalid("bad port in --host"))?),
            ),
            _ => (spec.clone(), None),
        }
    };
    let name = host.strip_prefix("*.").unwrap_or(&host);
    let ok = name.parse::<std::net::IpAddr>().is_ok()
        || (!name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }));
    if !ok || (host.starts_with("*.") && !name.contains('.')) {
        return Err(invalid(format!("--host `{host}` is not a host name")));
    }
    Ok((host, port))
}

impl GrantSpec {
    /// Checks the spec and turns it into a record (without id, revision and authorship).
    fn validate(&self) -> Result<Checked, GrantError> {
        let segments: Vec<&str> = self.scope.split('/').collect();
        if !(2..=3).contains(&segments.len()) || !segments.iter().all(|s| valid_segment(s)) {
            return Err(invalid(format!(
                "scope `{}` is tenant/workspace or tenant/workspace/environment",
                self.scope.chars().take(100).collect::<String>()
            )));
        }
        let mut inject = Vec::new();
        for line in &self.inject {
            let (name, template) = line
                .split_once(':')
                .ok_or_else(|| invalid("--inject is `Header-Name: value with {secret:NAME}`"))?;
            let name = name.trim().to_ascii_lowercase();
            let template = template.trim().to_owned();
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || RESERVED_HEADERS.contains(&name.as_str())
            {
                return Err(invalid(format!("`{name}` cannot be injected as a header")));
            }
            inject.push(Injection {
                kind: "header".into(),
                name,
                template,
            });
        }
        for pair in &self.inject_query {
            let (name, template) = pair
                .split_once('=')
                .ok_or_else(|| invalid("--inject-query is `name={secret:NAME}`"))?;
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
            {
                return Err(invalid(format!("`{name}` is not a query parameter name")));
            }
            inject.push(Injection {
                kind: "query".into(),
                name: name.to_owned(),
                template: template.to_owned(),
            });
        }
        if let Some(basic) = &self.basic_auth {
            if !basic.contains(':') {
                return Err(invalid(
                    "--basic-auth is `user:password` (either may be {secret:NAME})",
                ));
            }
            if inject.iter().any(|i| i.name == "authorization") {
                return Err(invalid(
                    "--basic-auth and an `Authorization` header cannot both be injected",
                ));
            }
            inject.push(Injection {
                kind: "basic".into(),
                name: String::new(),
                template: basic.clone(),
            });
        }
        for i in &inject {
            pieces(&i.template).map_err(invalid)?;
            if secrets_of(&i.template).is_empty() {
                return Err(invalid(format!(
                    "`{}` uses no secret: write `{{secret:NAME}}` where the value goes",
                    i.template.chars().take(100).collect::<String>()
                )));
            }
            if i.template.bytes().any(|b| b.is_ascii_control()) {
                return Err(invalid("an injected value cannot hold control characters"));
            }
        }
        for name in &self.reveal {
            if !valid_name(name) {
                return Err(invalid(format!(
                    "--reveal `{name}`: a secret name is 1-64 of [A-Za-z0-9_-]"
                )));
            }
        }
        let egress = match &self.host {
            None => {
                if !inject.is_empty() {
                    return Err(invalid(
                        "credentials are injected for a destination: give --host",
                    ));
                }
                if self.reveal.is_empty() {
                    return Err(invalid(
                        "a grant gives a destination (--host) or secrets to reveal (--reveal)",
                    ));
                }
                None
            }
            Some(host) => {
                let (host, port) = parse_host(host)?;
                let scheme = self
                    .scheme
                    .as_deref()
                    .unwrap_or("https")
                    .to_ascii_lowercase();
                if scheme != "https" && scheme != "http" {
                    return Err(invalid("--scheme is https or http"));
                }
                let path_prefix = self.path_prefix.clone().unwrap_or_else(|| "/".into());
                if !path_prefix.starts_with('/') || path_prefix.contains(['?', '#']) {
                    return Err(invalid("--path starts with `/` and has no query"));
                }
                let mut methods = Vec::new();
                for m in &self.methods {
                    let m = m.to_ascii_uppercase();
                    if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                        return Err(invalid(format!("`{m}` is not an HTTP method")));
                    }
                    methods.push(m);
                }
                Some(EgressRule {
                    scheme,
                    host,
                    port,
                    path_prefix,
                    methods,
                    allow_private: self.allow_private,
                })
            }
        };
        Ok(Checked {
            egress,
            inject,
            reveal: self.reveal.clone(),
        })
    }
}

/// A spec that passed [`GrantSpec::validate`].
struct Checked {
    egress: Option<EgressRule>,
    inject: Vec<Injection>,
    reveal: Vec<String>,
}

/// Adds a grant (in `tx`, with the change's audit record).
pub fn add(tx: &impl Tables, spec: &GrantSpec, by: &str) -> Result<GrantRecord, GrantError> {
    let Checked {
        egress,
        inject,
        reveal,
    } = spec.validate()?;
    let skill = tx
        .resolve_skill(&spec.skill)?
        .map_err(GrantError::NotFound)?;
    if tx.scope(&spec.scope)?.is_none() {
        return Err(GrantError::NotFound(format!(
            "scope `{}` does not exist",
            spec.scope
        )));
    }
    let mut id_bytes = [0u8; 9];
    getrandom::fill(&mut id_bytes).map_err(|_| StoreError::Corrupt("no randomness".into()))?;
    let record = GrantRecord {
        id: format!(
            "grt_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id_bytes)
        ),
        skill,
        scope: spec.scope.clone(),
        egress,
        inject,
        reveal,
        revision: next_revision(tx)?,
        created_at: crate::identity::now_secs(),
        created_by: by.to_owned(),
        removed: None,
    };
    tx.put_grant(&record)?;
    Ok(record)
}

fn next_revision(tx: &impl Tables) -> Result<u64, StoreError> {
    Ok(tx
        .grants()?
        .iter()
        .flat_map(|(_, g)| [Some(g.revision), g.removed.as_ref().map(|r| r.revision)])
        .flatten()
        .max()
        .unwrap_or(0)
        + 1)
}

/// Removes a grant (it stays as history); `None` if there is no such grant in force.
pub fn remove(tx: &impl Tables, id: &str, by: &str) -> Result<Option<GrantRecord>, StoreError> {
    let Some(mut record) = tx.grant(id)?.filter(|g| g.removed.is_none()) else {
        return Ok(None);
    };
    record.removed = Some(Removal {
        revision: next_revision(tx)?,
        at: crate::identity::now_secs(),
        by: by.to_owned(),
    });
    tx.put_grant(&record)?;
    Ok(Some(record))
}

/// The grants in force for one skill in one environment, most specific first.
#[derive(Debug, Default)]
pub struct GrantSet {
    grants: Vec<GrantRecord>,
}

impl GrantSet {
    fn new(all: &[GrantRecord], skill: &str, env: &str) -> Self {
        let workspace = env.rsplit_once('/').map_or(env, |(w, _)| w);
        let mut grants: Vec<GrantRecord> = all
            .iter()
            .filter(|g| g.removed.is_none() && g.skill == skill)
            .filter(|g| g.scope == env || g.scope == workspace)
            .cloned()
            .collect();
        // Environment grants before workspace grants; then the longer path prefix.
        grants.sort_by_key(|g| {
            (
                std::cmp::Reverse(g.scope.len()),
                std::cmp::Reverse(g.egress.as_ref().map_or(0, |e| e.path_prefix.len())),
            )
        });
        Self { grants }
    }

    /// Whether no grant applies.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }
}

/// What [`Grants`] keeps: every grant record and the sets built from them, as read at
/// one store generation.
struct GrantCache {
    generation: u64,
    all: Option<Arc<Vec<GrantRecord>>>,
    /// Skill -> environment -> set (nested, so a lookup allocates nothing).
    sets: HashMap<String, HashMap<String, Arc<GrantSet>>>,
    /// Sets held.
    held: usize,
}

/// The grants in force, cached per skill and environment while the store is unchanged.
pub struct Grants {
    store: Arc<Store>,
    cache: Mutex<GrantCache>,
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Grants")
    }
}

impl Grants {
    /// Grants read from `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            cache: Mutex::new(GrantCache {
                generation: u64::MAX,
                all: None,
                sets: HashMap::new(),
                held: 0,
            }),
        }
    }

    /// The grants in force for `skill` in `env` (`tenant/workspace/environment`).
    pub fn for_call(&self, skill: &str, env: &str) -> Result<Arc<GrantSet>, StoreError> {
        let generation = self.store.generation();
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.generation != generation {
            cache.generation = generation;
            cache.all = None;
            cache.sets.clear();
            cache.held = 0;
        }
        if let Some(set) = cache.sets.get(skill).and_then(|by_env| by_env.get(env)) {
            return Ok(set.clone());
        }
        let all = match &cache.all {
            Some(all) => all.clone(),
            None => {
                let all: Arc<Vec<GrantRecord>> =
                    Arc::new(self.store.grants()?.into_iter().map(|(_, g)| g).collect());
                cache.all = Some(all.clone());
                all
            }
        };
        let set = Arc::new(GrantSet::new(&all, skill, env));
        if cache.held < 4096 {
            cache.held += 1;
            cache
                .sets
                .entry(skill.to_owned())
                .or_default()
                .insert(env.to_owned(), set.clone());
        }
        Ok(set)
    }
}

/// Whether `path` is inside `prefix` (a prefix ending in `/` covers what is below it; one
/// without covers itself and what is below it), with no `.`/`..` segment (also
/// percent-encoded) that the server could resolve out of it.
fn path_within(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    if decoded.split(['/', '\\']).any(|s| s == "." || s == "..") {
        return false;
    }
    if prefix.ends_with('/') {
        path.starts_with(prefix)
    } else {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|r| r.starts_with('/'))
    }
}

fn host_matches(rule: &str, host: &str) -> bool {
    match rule.strip_prefix("*.") {
        Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
        None => rule == host,
    }
}

/// The capabilities of one call: its grant set, the vault, and what it used.
pub struct CallGrants {
    set: Arc<GrantSet>,
    vault: Arc<Vault>,
    skill: String,
    env: String,
    /// Patterns of every secret the call used (shared with the grants' prepared
    /// credentials until the call uses a second one).
    masker: Mutex<Arc<Masker>>,
    events: Mutex<(Vec<CapabilityUse>, usize)>,
}

impl std::fmt::Debug for CallGrants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallGrants")
            .field("skill", &self.skill)
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl CallGrants {
    /// The capabilities of a call of `skill` by an agent in `env`.
    pub fn new(set: Arc<GrantSet>, vault: Arc<Vault>, skill: &str, env: &str) -> Self {
        Self {
            set,
            vault,
            skill: skill.to_owned(),
            env: env.to_owned(),
            masker: Mutex::new(Arc::new(Masker::default())),
            events: Mutex::new((Vec::new(), 0)),
        }
    }

    fn note(&self, event: CapabilityUse) {
        let mut events = lock(&self.events);
        if events.0.len() < EVENTS_KEPT {
            events.0.push(event);
        } else {
            events.1 += 1;
        }
    }

    /// What the call used and was refused (for its audit record), and how many more
    /// were not kept.
    pub fn take_events(&self) -> (Vec<CapabilityUse>, usize) {
        std::mem::take(&mut *lock(&self.events))
    }

    /// The refusals of the call, as short sentences for the agent.
    pub fn refusals(&self) -> Vec<String> {
        lock(&self.events)
            .0
            .iter()
            .filter(|e| e.decision == "denied")
            .map(|e| {
                format!(
                    "{} {}: {}",
                    e.kind,
                    e.target,
                    e.reason.as_deref().unwrap_or("refused")
                )
            })
            .collect()
    }

    /// Masks every secret the call used in `text`.
    pub fn mask_string(&self, text: &mut String) {
        lock(&self.masker).mask_string(text);
    }

    /// Masks every secret the call used in every string of `value`.
    pub fn mask_value(&self, value: &mut serde_json::Value) {
        lock(&self.masker).mask_value(value);
    }

    fn open(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, String> {
        match self.vault.resolve(&self.env, name) {
            Ok(opened) => Ok(opened.value),
            Err(VaultError::NotFound(_)) => {
                Err(format!("secret `{name}` is not set for {}", self.env))
            }
            Err(VaultError::Sealed) => Err("the vault is sealed".into()),
            Err(VaultError::Corrupt(_)) => Err(format!(
                "secret `{name}` does not decrypt (altered or moved)"
            )),
            Err(e) => {
                tracing::error!(error = %e, "the vault failed");
                Err("the vault failed".into())
            }
        }
    }

    /// `template` with its secrets filled in; each secret's patterns go to `masker`.
    fn render(&self, template: &str, masker: &mut Masker) -> Result<Zeroizing<String>, String> {
        let mut out = Zeroizing::new(String::new());
        for piece in pieces(template)? {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Secret(name) => {
                    let value = self.open(name)?;
                    masker.add(name, &value);
                    let text = std::str::from_utf8(&value)
                        .map_err(|_| format!("secret `{name}` is not text"))?;
                    out.push_str(text);
                }
            }
        }
        Ok(out)
    }

    /// The credentials of `grant` for this call's environment: rendered recently, or now.
    fn prepared(&self, grant: &GrantRecord) -> Result<Arc<Prepared>, String> {
        let generation = self.vault.store.generation();
        let epoch = {
            let mut cache = lock(&self.vault.prepared);
            if cache.generation != generation {
                cache.clear();
                cache.generation = generation;
            }
            if let Some(hit) = cache
                .by_env
                .get(self.env.as_str())
                .and_then(|by_grant| by_grant.get(grant.id.as_str()))
                && hit.at.elapsed() < PREPARED_TTL
            {
                return Ok(hit.clone());
            }
            cache.epoch
        };
        let prepared = Arc::new(self.prepare(grant)?);
        let mut cache = lock(&self.vault.prepared);
        // Kept only if nothing changed meanwhile (a seal, a write): never cached stale.
        if cache.generation == generation && cache.epoch == epoch && cache.held < PREPARED_MAX {
            let fresh = cache
                .by_env
                .entry(self.env.clone())
                .or_default()
                .insert(grant.id.clone(), prepared.clone())
                .is_none();
            if fresh {
                cache.held += 1;
            }
        }
        Ok(prepared)
    }

    /// Renders the credentials of `grant` (decrypting its secrets).
    fn prepare(&self, grant: &GrantRecord) -> Result<Prepared, String> {
        let mut masker = Masker::default();
        let mut headers = Vec::new();
        let mut query = Vec::new();
        for injection in &grant.inject {
            let value = self.render(&injection.template, &mut masker)?;
            match injection.kind.as_str() {
                "header" => {
                    let name = http::HeaderName::from_bytes(injection.name.as_bytes())
                        .map_err(|_| "bad header name".to_owned())?;
                    if http::HeaderValue::from_str(&value).is_err() {
                        return Err(format!(
                            "the value for `{name}` is not a valid header value"
                        ));
                    }
                    headers.push((name, value));
                }
                "basic" => {
                    masker.add("basic-auth", value.as_bytes());
                    let encoded = Zeroizing::new(format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(value.as_bytes())
                    ));
                    if http::HeaderValue::from_str(&encoded).is_err() {
                        return Err("bad basic auth value".into());
                    }
                    headers.push((http::header::AUTHORIZATION, encoded));
                }
                "query" => query.push((injection.name.clone(), value)),
                other => return Err(format!("unknown injection `{other}`")),
            }
        }
        Ok(Prepared {
            at: Instant::now(),
            headers,
            query,
            masker: Arc::new(masker),
        })
    }
}

fn describe(d: &Destination<'_>) -> String {
    format!(
        "{} {}://{}:{}{}",
        d.method, d.scheme, d.host, d.port, d.path
    )
}

impl Capabilities for CallGrants {
    fn route(&self, d: &Destination<'_>) -> Result<Route, String> {
        let default_port = if d.scheme == "https" { 443 } else { 80 };
        let mut host_known = false;
        for (index, grant) in self.set.grants.iter().enumerate() {
            let Some(rule) = &grant.egress else { continue };
            if !host_matches(&rule.host, d.host) || rule.port.unwrap_or(default_port) != d.port {
                continue;
            }
            host_known = true;
            if rule.scheme != d.scheme
                || !path_within(d.path, &rule.path_prefix)
                || !(rule.methods.is_empty() || rule.methods.iter().any(|m| m == d.method))
            {
                continue;
            }
            let secrets: Vec<String> = grant
                .inject
                .iter()
                .flat_map(|i| secrets_of(&i.template))
                .collect();
            self.note(CapabilityUse {
                kind: "egress".into(),
                target: describe(d),
                decision: "allowed".into(),
                grant: Some(grant.id.clone()),
                secrets,
                reason: None,
            });
            return Ok(Route {
                grant: index,
                allow_private: rule.allow_private,
                injects: !grant.inject.is_empty(),
            });
        }
        let reason = if host_known {
            format!(
                "no grant of skill `{}` in {} allows this scheme, method or path",
                self.skill, self.env
            )
        } else {
            format!(
                "no grant lets skill `{}` reach this host in {}",
                self.skill, self.env
            )
        };
        self.note(CapabilityUse {
            kind: "egress".into(),
            target: describe(d),
            decision: "denied".into(),
            grant: None,
            secrets: Vec::new(),
            reason: Some(reason.clone()),
        });
        Err(reason)
    }

    fn inject(&self, route: &Route, request: &mut http::request::Parts) -> Result<(), String> {
        let Some(grant) = self.set.grants.get(route.grant) else {
            return Err("the grant is gone".into());
        };
        if grant.inject.is_empty() {
            return Ok(());
        }
        let prepared = match self.prepared(grant) {
            Ok(prepared) => prepared,
            Err(reason) => {
                self.note(CapabilityUse {
                    kind: "inject".into(),
                    target: grant
                        .egress
                        .as_ref()
                        .map_or_else(String::new, |e| e.host.clone()),
                    decision: "denied".into(),
                    grant: Some(grant.id.clone()),
                    secrets: grant
                        .inject
                        .iter()
                        .flat_map(|i| secrets_of(&i.template))
                        .collect(),
                    reason: Some(reason.clone()),
                });
                return Err(reason);
            }
        };
        // Masked from here on, whatever happens to the request.
        {
            let mut masker = lock(&self.masker);
            if masker.is_empty() {
                *masker = prepared.masker.clone();
            } else if !Arc::ptr_eq(&masker, &prepared.masker) {
                Arc::make_mut(&mut masker).merge(&prepared.masker);
            }
        }
        for (name, value) in &prepared.headers {
            // Checked when prepared; a value that no longer parses is refused, not sent.
            let mut v = http::HeaderValue::from_str(value)
                .map_err(|_| format!("the value for `{name}` is not a valid header value"))?;
            v.set_sensitive(true);
            request.headers.remove(name);
            request.headers.insert(name.clone(), v);
        }
        for (name, value) in &prepared.query {
            request.uri = with_query(&request.uri, name, value)?;
        }
        Ok(())
    }

    fn reveal(&self, name: &str) -> Result<Zeroizing<String>, RevealRefusal> {
        let grant = self
            .set
            .grants
            .iter()
            .find(|g| g.reveal.iter().any(|r| r == name));
        let Some(grant) = grant else {
            self.note(CapabilityUse {
                kind: "reveal".into(),
                target: name.chars().take(64).collect(),
                decision: "denied".into(),
                grant: None,
                secrets: Vec::new(),
                reason: Some(format!(
                    "no grant lets skill `{}` read this secret in {}",
                    self.skill, self.env
                )),
            });
            return Err(RevealRefusal::Denied);
        };
        let mut event = CapabilityUse {
            kind: "reveal".into(),
            target: name.to_owned(),
            decision: "allowed".into(),
            grant: Some(grant.id.clone()),
            secrets: vec![name.to_owned()],
            reason: None,
        };
        let opened = self.open(name);
        if let Ok(value) = &opened {
            // Masked in everything the call returns, before the skill holds it.
            Arc::make_mut(&mut lock(&self.masker)).add(name, value);
        }
        let result = match opened {
            Ok(value) => match String::from_utf8(value.to_vec()) {
                Ok(text) => Ok(Zeroizing::new(text)),
                Err(e) => {
                    let mut bytes = e.into_bytes();
                    zeroize::Zeroize::zeroize(&mut bytes);
                    event.decision = "denied".into();
                    event.reason = Some("the secret is not text".into());
                    Err(RevealRefusal::Denied)
                }
            },
            Err(reason) => {
                event.decision = "denied".into();
                let not_found = reason.contains("is not set");
                event.reason = Some(reason);
                Err(if not_found {
                    RevealRefusal::NotFound
                } else {
                    RevealRefusal::Denied
                })
            }
        };
        self.note(event);
        result
    }

    fn mask(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        lock(&self.masker).mask_bytes(bytes)
    }

    fn refused(&self, d: &Destination<'_>, reason: &str) {
        let mut events = lock(&self.events);
        // The route was noted as allowed; the address check overrules it.
        if let Some(last) = events
            .0
            .iter_mut()
            .rev()
            .find(|e| e.kind == "egress" && e.target == describe(d))
        {
            last.decision = "denied".into();
            last.reason = Some(reason.to_owned());
            last.secrets.clear();
        }
    }
}

/// `uri` with query parameter `name` set to `value` (any the guest set is dropped).
fn with_query(uri: &http::Uri, name: &str, value: &str) -> Result<http::Uri, String> {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let mut query: Vec<String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            p.split('=').next().is_some_and(|k| {
                percent_encoding::percent_decode_str(k).decode_utf8_lossy() != name
            })
        })
        .map(str::to_owned)
        .collect();
    let encoded = Zeroizing::new(format!(
        "{name}={}",
        utf8_percent_encode(value, NON_ALPHANUMERIC)
    ));
    query.push(encoded.to_string());
    let pq = Zeroizing::new(format!("{}?{}", uri.path(), query.join("&")));
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().map_err(|_| "bad query".to_owned())?);
    http::Uri::from_parts(parts).map_err(|_| "bad query".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_hosts_parse() {
        assert_eq!(
            pieces("Bearer {secret:stripe_key}").unwrap(),
            vec![Piece::Text("Bearer "), Piece::Secret("stripe_key")]
        );
        assert!(pieces("{secret:bad name}").is_err());
        assert!(pieces("{secret:open").is_err());
        assert_eq!(
            parse_host("API.stripe.com").unwrap(),
            ("api.stripe.com".into(), None)
        );
        assert_eq!(
            parse_host("127.0.0.1:8080").unwrap(),
            ("127.0.0.1".into(), Some(8080))
        );
        assert_eq!(parse_host("[::1]:9").unwrap(), ("::1".into(), Some(9)));
        for bad in [
            "https://x.com",
            "x.com/path",
            "u@x.com",
            "*.com",
            "",
            "a..b",
        ] {
            assert!(parse_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_stay_inside_their_prefix() {
        assert!(path_within("/v1/charges", "/v1"));
        assert!(path_within("/v1", "/v1"));
        assert!(!path_within("/v1x", "/v1"));
        assert!(path_within("/v1/x", "/v1/"));
        assert!(!path_within("/v1/../admin", "/v1"));
        assert!(!path_within("/v1/%2e%2e/admin", "/v1"));
        assert!(path_within("/anything/../x", "/"));
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "a.example.com.evil"));
    }

    #[test]
    fn specs_are_checked() {
        let base = GrantSpec {
            skill: "http".into(),
            scope: "acme/core/prod".into(),
            host: Some("api.stripe.com".into()),
            inject: vec!["Authorization: Bearer {secret:stripe_key}".into()],
            ..GrantSpec::default()
        };
        let checked = base.validate().unwrap();
        assert_eq!(checked.egress.unwrap().scheme, "https");
        assert_eq!(checked.inject[0].name, "authorization");
        for bad in [
            GrantSpec {
                inject: vec!["Host: {secret:x}".into()],
                ..base.clone()
            },
            GrantSpec {
                inject: vec!["X-Key: literal".into()],
                ..base.clone()
            },
            GrantSpec {
                host: None,
                ..base.clone()
            },
            GrantSpec {
                scope: "acme".into(),
                ..base.clone()
            },
            GrantSpec {
                scheme: Some("ftp".into()),
                ..base.clone()
            },
            GrantSpec {
                inject: vec![],
                reveal: vec![],
                host: None,
                ..base.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn query_injection_replaces_the_guests_parameter() {
        let uri: http::Uri = "https://h/x?a=1&api_key=guess&b=2".parse().unwrap();
        let out = with_query(&uri, "api_key", "s3cr&t").unwrap();
        assert_eq!(out.to_string(), "https://h/x?a=1&b=2&api_key=s3cr%26t");
    }

    #[test]
    fn rendered_credentials_follow_writes_seals_and_unseals() {
        use crate::storage::{ScopeRecord, SkillRecord};
        use crate::vault::{SecretPath, VaultConfig};
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("warden.redb")).unwrap());
        let vault = Arc::new(
            Vault::open(
                store.clone(),
                VaultConfig {
                    key_file: dir.path().join("vault.key"),
                    passphrase: false,
                },
            )
            .unwrap(),
        );
        for scope in ["acme", "acme/core", "acme/core/prod"] {
            store
                .create_scope(scope, &ScopeRecord { created_at: 0 })
                .unwrap();
        }
        store
            .put_skill(
                "http",
                &SkillRecord {
                    namespace: "warden".into(),
                    digest: String::new(),
                    component: "http.wasm".into(),
                    workspaces: vec!["*".into()],
                    package: None,
                    embedded: None,
                },
            )
            .unwrap();
        let set = |value: &str| {
            vault
                .put(
                    &*store,
                    &SecretPath::parse("acme/core/prod/k").unwrap(),
                    value.as_bytes(),
                    "t",
                )
                .unwrap();
        };
        set("first-value-123");
        let spec = GrantSpec {
            skill: "http".into(),
            scope: "acme/core/prod".into(),
            host: Some("api.example.com".into()),
            inject: vec!["X-Key: k={secret:k}".into()],
            ..GrantSpec::default()
        };
        add(&*store, &spec, "t").unwrap();
        let grants = Grants::new(store.clone());
        let destination = Destination {
            method: "GET",
            scheme: "https",
            host: "api.example.com",
            port: 443,
            path: "/",
        };
        // One call: the header it sends, and what it masks.
        let call = || {
            let caps = CallGrants::new(
                grants.for_call("http", "acme/core/prod").unwrap(),
                vault.clone(),
                "http",
                "acme/core/prod",
            );
            let route = caps.route(&destination).unwrap();
            let mut parts = http::Request::builder()
                .uri("https://api.example.com/")
                .body(())
                .unwrap()
                .into_parts()
                .0;
            let sent = caps
                .inject(&route, &mut parts)
                .map(|()| parts.headers["x-key"].to_str().unwrap().to_owned());
            let masked = caps.mask(b"echo first-value-123 second-value-456");
            (sent, masked.map(|m| String::from_utf8(m).unwrap()))
        };
        let (sent, masked) = call();
        assert_eq!(sent.unwrap(), "k=first-value-123");
        assert_eq!(
            masked.unwrap(),
            "echo [masked:k] second-value-456",
            "the secret used is masked"
        );
        // Served from the rendered credentials: the same.
        assert_eq!(call().0.unwrap(), "k=first-value-123");
        // A new value applies from the next call on.
        set("second-value-456");
        let (sent, masked) = call();
        assert_eq!(sent.unwrap(), "k=second-value-456");
        assert_eq!(masked.unwrap(), "echo first-value-123 [masked:k]");
        // Sealed: nothing rendered earlier is used.
        vault.seal();
        let (sent, masked) = call();
        assert_eq!(sent.unwrap_err(), "the vault is sealed");
        assert_eq!(masked, None);
        vault.unseal(None).unwrap();
        assert_eq!(call().0.unwrap(), "k=second-value-456");
    }
}
