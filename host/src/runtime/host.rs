//! Per-call host state (the `T` of `Store<T>`) and the host side of the skill's imports:
//! logging, secrets, plain WASI and outbound HTTP.
//!
//! Invariants:
//! - Plain WASI is deny-by-default: no environment, arguments, preopened directories or
//!   stdin; stdout/stderr are discarded; TCP, UDP and name lookup are disabled. Only clocks
//!   and randomness (which Rust's `std` needs) are provided.
//! - `secrets.reveal` answers `denied` unless a grant exists (grants arrive with the vault).
//! - Every outbound HTTP request passes [`OutboundPolicy`] before any connection is made:
//!   deny unless the host is allow-listed; private, loopback and link-local destinations are
//!   refused unless explicitly allowed, including names that resolve to them. Credential
//!   injection hooks in after the decision ([`CredentialInjector`]).
//! - A guest can neither flood the host log nor grow host memory through it: records are
//!   size-capped and counted per call.
//!
//! Threat: a hostile or compromised skill trying to reach the filesystem, the network, the
//! environment, other skills' secrets or the host's own log pipeline.

use super::bindings::warden::skill::{log, secrets, types};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Log records a guest may emit per call; later ones are counted and dropped.
const LOG_RECORDS_PER_CALL: u32 = 256;
/// Longest log message kept, in bytes.
const LOG_MESSAGE_MAX: usize = 2048;
/// Fields kept per record.
const LOG_FIELDS_MAX: usize = 16;
/// Longest field key or value kept, in bytes.
const LOG_FIELD_MAX: usize = 256;

/// Adds credentials to an outbound request that policy has allowed. The vault implements
/// this; until then no injector is installed and requests leave as the skill built them.
pub trait CredentialInjector: Send + Sync {
    /// Mutates the request (typically adds an `authorization` header) or refuses it.
    fn inject(&self, skill: &str, request: &mut http::request::Parts) -> Result<(), String>;
}

/// Which outbound HTTP requests a skill may make. The default allows nothing.
#[derive(Clone, Default)]
pub struct OutboundPolicy {
    /// Hosts the skill may call: `api.example.com`, `api.example.com:8443`, or
    /// `*.example.com` (any subdomain, any port unless given).
    pub allowed_hosts: Vec<String>,
    /// Allow destinations in loopback, private, link-local and other non-public ranges.
    /// Off by default: it is how a skill would reach cloud metadata or internal services.
    pub allow_private: bool,
    /// Adds credentials to allowed requests.
    pub injector: Option<Arc<dyn CredentialInjector>>,
}

impl std::fmt::Debug for OutboundPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundPolicy")
            .field("allowed_hosts", &self.allowed_hosts)
            .field("allow_private", &self.allow_private)
            .field("injector", &self.injector.is_some())
            .finish()
    }
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

/// Addresses a skill may not reach unless `allow_private` is set: loopback, private,
/// link-local (cloud metadata lives there), unspecified, multicast, shared and reserved ranges.
pub fn is_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 shared address space
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15 benchmarking
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_non_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
        }
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

/// The outbound HTTP hook: policy decision, then credential injection, then the default
/// sender.
struct OutboundHooks {
    skill: Arc<str>,
    policy: Arc<OutboundPolicy>,
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
        let policy = self.policy.clone();
        Box::new(async move {
            let (mut parts, body) = request.into_parts();
            authorize(&skill, &policy, &parts.uri).await?;
            if let Some(injector) = &policy.injector
                && let Err(why) = injector.inject(&skill, &mut parts)
            {
                tracing::warn!(skill = %skill, reason = %why, "credential injection refused request");
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            }
            let request = http::Request::from_parts(parts, body);
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// The policy decision for one outbound request. Refusals are logged (without the query
/// string, which may carry data) and reach the guest as `HttpRequestDenied`.
async fn authorize(
    skill: &str,
    policy: &OutboundPolicy,
    uri: &http::Uri,
) -> Result<(), wasmtime_wasi_http::Error> {
    let deny = |why: &str| {
        tracing::info!(skill = %skill, host = ?uri.host(), reason = why, "outbound request denied");
        Err(wasmtime_wasi_http::Error::HttpRequestDenied)
    };
    let Some(host) = uri.host() else {
        return deny("no host");
    };
    let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    if !policy.host_allowed(host, port) {
        return deny("host not on the skill's allow-list");
    }
    if policy.allow_private {
        return Ok(());
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return if is_non_public(ip) {
            deny("non-public address")
        } else {
            Ok(())
        };
    }
    match tokio::net::lookup_host((bare, port)).await {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            if addrs.is_empty() {
                return Err(wasmtime_wasi_http::Error::DestinationNotFound);
            }
            if addrs.iter().any(|a| is_non_public(a.ip())) {
                return deny("name resolves to a non-public address");
            }
            Ok(())
        }
        Err(_) => Err(wasmtime_wasi_http::Error::DestinationNotFound),
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
    log_records: u32,
    log_dropped: u32,
    /// The last panic message the guest reported (through the SDK's panic hook).
    pub(crate) panic_message: Option<String>,
    /// When the current call must end.
    pub(crate) deadline: Instant,
}

impl SkillState {
    pub fn new(skill: Arc<str>, policy: Arc<OutboundPolicy>, memory_bytes: usize) -> Self {
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
                policy,
            },
            limiter: MemoryLimiter::new(memory_bytes),
            skill,
            log_records: 0,
            log_dropped: 0,
            panic_message: None,
            deadline: Instant::now(),
        }
    }

    /// Resets per-call bookkeeping before a warm instance serves another call.
    pub fn begin_call(&mut self, deadline: Instant) {
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
            self.panic_message = Some(truncate(&message, LOG_MESSAGE_MAX).to_owned());
        }
        if self.log_records >= LOG_RECORDS_PER_CALL {
            self.log_dropped = self.log_dropped.saturating_add(1);
            return Ok(());
        }
        self.log_records += 1;
        let message = truncate(&message, LOG_MESSAGE_MAX);
        let fields: Vec<(&str, &str)> = fields
            .iter()
            .take(LOG_FIELDS_MAX)
            .map(|(k, v)| (truncate(k, LOG_FIELD_MAX), truncate(v, LOG_FIELD_MAX)))
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
        tracing::info!(skill = %self.skill, secret = %truncate(&name, LOG_FIELD_MAX), "secret reveal denied: no grant");
        Ok(Err(secrets::SecretError::Denied))
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

    #[test]
    fn non_public_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "255.255.255.255",
        ] {
            assert!(is_non_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(!is_non_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
