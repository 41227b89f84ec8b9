//! Per-call host state (the `T` of `Store<T>`) and the host side of the skill's imports:
//! logging, secrets, plain WASI and outbound HTTP.
//!
//! Invariants:
//! - Plain WASI is deny-by-default: no environment, arguments, preopened directories or
//!   stdin; stdout/stderr are discarded; TCP, UDP and name lookup are disabled. Only clocks
//!   and randomness (which Rust's `std` needs) are provided.
//! - What a call may reach is its [`Capabilities`]: the call's own (built by the gateway
//!   from the grants in force) or, without one, the skill's static [`OutboundPolicy`]
//!   (which allows listed hosts and never hands out a secret). `secrets.reveal` answers
//!   `denied` unless they grant the secret; every outbound request goes through
//!   [`super::egress`] (decision, address check, injection, connection).
//! - An instance that was given a secret is never reused for another call.
//! - A guest can neither flood the host log nor grow host memory through it: records are
//!   size-capped and counted per call; secrets the call used are masked in them.
//!
//! Threat: a hostile or compromised skill trying to reach the filesystem, the network, the
//! environment, other skills' secrets or the host's own log pipeline.

use super::bindings::warden::skill::{log, secrets, types};
use super::egress::{Capabilities, Destination, RevealRefusal, Route};
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};
use zeroize::Zeroizing;

/// Log records a guest may emit per call; later ones are counted and dropped.
const LOG_RECORDS_PER_CALL: u32 = 256;
/// Longest log message kept, in bytes.
const LOG_MESSAGE_MAX: usize = 2048;
/// Fields kept per record.
const LOG_FIELDS_MAX: usize = 16;
/// Longest field key or value kept, in bytes.
const LOG_FIELD_MAX: usize = 256;

/// Which outbound HTTP requests a skill may make. The default allows nothing.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    /// Hosts the skill may call: `api.example.com`, `api.example.com:8443`, or
    /// `*.example.com` (any subdomain, any port unless given).
    pub allowed_hosts: Vec<String>,
    /// Allow destinations in loopback, private, link-local and other non-public ranges.
    /// Off by default: it is how a skill would reach cloud metadata or internal services.
    pub allow_private: bool,
}

/// The static policy as a call's capabilities: listed hosts, no credentials, no secrets.
impl Capabilities for OutboundPolicy {
    fn route(&self, d: &Destination<'_>) -> Result<Route, String> {
        if !self.host_allowed(d.host, d.port) {
            return Err("host not on the skill's allow-list".into());
        }
        Ok(Route {
            grant: 0,
            allow_private: self.allow_private,
            injects: false,
        })
    }
    fn inject(&self, _: &Route, _: &mut http::request::Parts) -> Result<(), String> {
        Ok(())
    }
    fn reveal(&self, _: &str) -> Result<Zeroizing<String>, RevealRefusal> {
        Err(RevealRefusal::Denied)
    }
    fn mask(&self, _: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn refused(&self, _: &Destination<'_>, _: &str) {}
}

impl OutboundPolicy {
    /// Whether `host` (no port) with `port` matches the allow-list.
    pub fn host_allowed(&self, host: &str, port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allowed_hosts.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            let (pat_host, pat_port) = split_host_port(&pattern);
            if pat_port.is_some_and(|p| p != port) {
                return false;
            }
            match pat_host.strip_prefix("*.") {
                Some(suffix) => host.len() > suffix.len() && host.ends_with(&format!(".{suffix}")),
                None => pat_host == host,
            }
        })
    }
}

/// Splits `host:port` (bracketed IPv6 allowed); the port is `None` when absent or invalid.
fn split_host_port(s: &str) -> (&str, Option<u16>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((h, tail)) = rest.split_once(']') {
            return (h, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
        return (s, None);
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (s, None),
    }
}

/// Records whether the guest hit its memory cap, so a following trap can be named.
pub struct MemoryLimiter {
    inner: StoreLimits,
    pub(crate) hit_cap: bool,
}

impl MemoryLimiter {
    pub fn new(memory_bytes: usize) -> Self {
        Self {
            inner: wasmtime::StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .instances(16)
                .tables(64)
                .memories(4)
                .build(),
            hit_cap: false,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.inner.memory_growing(current, desired, maximum)?;
        if !ok {
            self.hit_cap = true;
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }
    fn tables(&self) -> usize {
        self.inner.tables()
    }
    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// The outbound HTTP hook: every request goes through [`super::egress::send`] with the
/// current call's capabilities.
struct OutboundHooks {
    skill: Arc<str>,
    caps: Arc<dyn Capabilities>,
}

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        drop(fut);
        let skill = self.skill.clone();
        let caps = self.caps.clone();
        Box::new(async move { super::egress::send(&skill, &caps, request, options).await })
    }
}

/// Everything one sandboxed instance can reach. Built fresh per instance.
pub struct SkillState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: OutboundHooks,
    pub(crate) limiter: MemoryLimiter,
    skill: Arc<str>,
    /// The skill's own capabilities (its static policy), used when a call brings none.
    default_caps: Arc<dyn Capabilities>,
    log_records: u32,
    log_dropped: u32,
    /// Whether this instance was given a secret (it is then never reused).
    pub(crate) tainted: bool,
    /// The last panic message the guest reported (through the SDK's panic hook).
    pub(crate) panic_message: Option<String>,
    /// When the current call must end.
    pub(crate) deadline: Instant,
}

impl SkillState {
    pub fn new(skill: Arc<str>, policy: Arc<OutboundPolicy>, memory_bytes: usize) -> Self {
        let default_caps: Arc<dyn Capabilities> = policy;
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: OutboundHooks {
                skill: skill.clone(),
                caps: default_caps.clone(),
            },
            limiter: MemoryLimiter::new(memory_bytes),
            skill,
            default_caps,
            log_records: 0,
            log_dropped: 0,
            tainted: false,
            panic_message: None,
            deadline: Instant::now(),
        }
    }

    /// Resets per-call bookkeeping before an instance serves a call, with the call's
    /// capabilities (or the skill's static policy when it brings none).
    pub fn begin_call(&mut self, deadline: Instant, caps: Option<Arc<dyn Capabilities>>) {
        self.hooks.caps = caps.unwrap_or_else(|| self.default_caps.clone());
        self.deadline = deadline;
        self.log_records = 0;
        self.log_dropped = 0;
        self.panic_message = None;
        self.limiter.hit_cap = false;
    }

    /// Logs how many records were dropped during the call, if any.
    pub fn end_call(&mut self) {
        if self.log_dropped > 0 {
            tracing::warn!(skill = %self.skill, dropped = self.log_dropped, "skill log budget exceeded; records dropped");
        }
    }
}

impl WasiView for SkillState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for SkillState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl types::Host for SkillState {}

impl log::Host for SkillState {
    fn emit(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let is_panic = fields.iter().any(|(k, v)| k == "panic" && v == "true");
        if is_panic {
            let message = self.hooks.caps.mask(message.as_bytes()).map_or_else(
                || message.clone(),
                |m| String::from_utf8_lossy(&m).into_owned(),
            );
            self.panic_message = Some(truncate(&message, LOG_MESSAGE_MAX).to_owned());
        }
        if self.log_records >= LOG_RECORDS_PER_CALL {
            self.log_dropped = self.log_dropped.saturating_add(1);
            return Ok(());
        }
        self.log_records += 1;
        let caps = &self.hooks.caps;
        let clean = |s: &str| -> String {
            caps.mask(s.as_bytes()).map_or_else(
                || s.to_owned(),
                |m| String::from_utf8_lossy(&m).into_owned(),
            )
        };
        let message = clean(&message);
        let message = truncate(&message, LOG_MESSAGE_MAX);
        let fields: Vec<(String, String)> = fields
            .iter()
            .take(LOG_FIELDS_MAX)
            .map(|(k, v)| {
                (
                    truncate(&clean(k), LOG_FIELD_MAX).to_owned(),
                    truncate(&clean(v), LOG_FIELD_MAX).to_owned(),
                )
            })
            .collect();
        let skill = &*self.skill;
        match level {
            log::Level::Trace => {
                tracing::trace!(target: "warden::skill", skill, ?fields, "{message}")
            }
            log::Level::Debug => {
                tracing::debug!(target: "warden::skill", skill, ?fields, "{message}")
            }
            log::Level::Info => {
                tracing::info!(target: "warden::skill", skill, ?fields, "{message}")
            }
            log::Level::Warn => {
                tracing::warn!(target: "warden::skill", skill, ?fields, "{message}")
            }
            log::Level::Error => {
                tracing::error!(target: "warden::skill", skill, ?fields, "{message}")
            }
        }
        Ok(())
    }
}

impl secrets::Host for SkillState {
    fn reveal(&mut self, name: String) -> wasmtime::Result<Result<String, secrets::SecretError>> {
        let name = truncate(&name, LOG_FIELD_MAX);
        match self.hooks.caps.reveal(name) {
            Ok(value) => {
                self.tainted = true;
                tracing::info!(skill = %self.skill, secret = %name, "secret revealed to the skill");
                Ok(Ok(value.as_str().to_owned()))
            }
            Err(RevealRefusal::NotFound) => Ok(Err(secrets::SecretError::NotFound)),
            Err(RevealRefusal::Denied) => {
                tracing::info!(skill = %self.skill, secret = %name, "secret reveal denied");
                Ok(Err(secrets::SecretError::Denied))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matching() {
        let p = OutboundPolicy {
            allowed_hosts: vec![
                "api.example.com".into(),
                "*.svc.example.org".into(),
                "127.0.0.1:8080".into(),
                "[::1]:9000".into(),
            ],
            ..Default::default()
        };
        assert!(p.host_allowed("api.example.com", 443));
        assert!(p.host_allowed("API.example.com.", 80));
        assert!(!p.host_allowed("evil.api.example.com", 443));
        assert!(!p.host_allowed("api.example.com.evil.net", 443));
        assert!(p.host_allowed("a.svc.example.org", 443));
        assert!(!p.host_allowed("svc.example.org", 443));
        assert!(!p.host_allowed("a.svc.example.org.evil", 443));
        assert!(p.host_allowed("127.0.0.1", 8080));
        assert!(!p.host_allowed("127.0.0.1", 8081));
        assert!(p.host_allowed("::1", 9000));
        assert!(!OutboundPolicy::default().host_allowed("api.example.com", 443));
    }
}
