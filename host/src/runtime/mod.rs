//! The skill runtime: compiles skill components once, keeps them pre-linked
//! (`InstancePre`), and runs each tool call in a sandboxed instance from wasmtime's pooling
//! allocator.
//!
//! Invariants:
//! - Default isolation is a fresh instance per call; it is dropped afterwards, so no state
//!   survives between calls. A skill may opt into warm instances, which are reused only for
//!   calls with the same isolation key (tenant + grants) and never after a trap.
//! - Nothing is compiled on the call path: `load` compiles (or loads a cached artifact this
//!   host compiled) and validates the contract; `call` only instantiates.
//! - Every call is bounded: a wall-clock deadline (epoch interruption; long calls yield to
//!   the executor every tick so other skills keep running), a memory cap, optional fuel,
//!   and a per-skill concurrency cap whose bounded wait queue gives backpressure, not
//!   failure, when the pool is busy.
//! - A trap ends the call with an error naming its cause, discards the instance and never
//!   takes the host down. Repeated traps or a failed instantiation mark the skill unhealthy.
//!
//! Threat: denial of service and escape attempts by untrusted skill code (loops, memory
//! bombs, deep recursion, panics, capability probing).

mod bindings;
pub(crate) mod cache;
pub mod contract;
mod egress;
mod host;

pub use cache::{ArtifactCache, CacheError};
pub use contract::{Annotations, ContractError, ToolInfo};
pub use egress::is_non_public;
pub use egress::{Capabilities, Destination, MASKED_BODY_MAX, RevealRefusal, Route};
pub use host::OutboundPolicy;

use bindings::{Skill as SkillBindings, SkillPre};
use host::SkillState;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};

/// Consecutive traps after which a skill is reported unhealthy.
pub const UNHEALTHY_AFTER_TRAPS: u32 = 5;

/// Engine-wide settings, fixed for the life of a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled artifacts are cached; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Compile with fuel metering so calls report a cost figure and may have a fuel budget.
    /// Costs some speed; changes the compiled code (and so the cache key).
    pub fuel: bool,
    /// Component instances the pooling allocator holds (calls running at once, plus idle
    /// warm instances, across all skills).
    pub pool_instances: u32,
    /// Largest linear memory any skill may be granted.
    pub max_memory_bytes: usize,
    /// Epoch tick: the granularity of deadlines and of cooperative yielding.
    pub epoch_tick: Duration,
    /// Bytes of each pooled linear memory that are reset in place instead of being
    /// returned to the kernel. On Linux 6.7+ only the pages that are resident are cleared
    /// (`PAGEMAP_SCAN`), so this bounds what stays resident per slot rather than what every
    /// drop clears; elsewhere that many leading bytes are cleared on every drop. Measured
    /// in `docs/benchmarks.md`.
    pub memory_keep_resident: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            fuel: false,
            pool_instances: 256,
            max_memory_bytes: 256 << 20,
            epoch_tick: Duration::from_millis(5),
            memory_keep_resident: 8 << 20,
        }
    }
}

/// Per-skill limits.
#[derive(Debug, Clone)]
pub struct SkillLimits {
    /// Wall-clock time a call may take, instantiation included.
    pub deadline: Duration,
    /// Linear memory cap of one instance.
    pub memory_bytes: usize,
    /// Fuel budget of one call (only with [`RuntimeConfig::fuel`]); `None` = unlimited.
    pub fuel: Option<u64>,
    /// Calls of this skill running at once.
    pub max_concurrency: usize,
    /// Calls that may wait for a slot; beyond this a call is refused as busy.
    pub max_queue: usize,
    /// How long a call waits for a slot before it is refused as busy.
    pub queue_timeout: Duration,
}

impl Default for SkillLimits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(10),
            memory_bytes: 64 << 20,
            fuel: None,
            max_concurrency: 32,
            max_queue: 256,
            queue_timeout: Duration::from_secs(10),
        }
    }
}

/// How a skill is run.
#[derive(Debug, Clone, Default)]
pub struct SkillSettings {
    /// Limits.
    pub limits: SkillLimits,
    /// Outbound HTTP policy (default: nothing allowed).
    pub outbound: OutboundPolicy,
    /// Reuse instances between calls with the same isolation key (opt-in).
    pub warm: bool,
}

/// Per-call context.
#[derive(Clone, Default)]
pub struct CallContext {
    /// Warm instances are only reused between calls with the same key. Callers put the
    /// tenant and the grants that shaped the instance in it.
    pub isolation_key: String,
    /// What the call may reach (grants, secrets); `None`: the skill's static policy.
    pub capabilities: Option<Arc<dyn Capabilities>>,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("isolation_key", &self.isolation_key)
            .field("capabilities", &self.capabilities.is_some())
            .finish()
    }
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not WebAssembly at all.
    #[error("not a WebAssembly file (bad magic number)")]
    NotWasm,
    /// A core module rather than a component.
    #[error(
        "a core WebAssembly module, not a component: build the skill for wasm32-wasip2 (`warden skill build`)"
    )]
    CoreModule,
    /// Unknown binary layer or version.
    #[error("unsupported WebAssembly binary version")]
    UnsupportedVersion,
    /// Compilation failed.
    #[error("the component does not compile: {0}")]
    Compile(String),
    /// The component imports something the host does not provide, or lacks the exports of
    /// the `warden:skill/skill` world.
    #[error("the component does not match the warden:skill@0.1.0 contract: {0}")]
    Contract(String),
    /// Instantiating or listing tools failed.
    #[error("the skill failed while describing its tools: {0}")]
    Describe(String),
    /// The declared tools are invalid.
    #[error("invalid tool declarations: {0}")]
    Tools(ContractError),
    /// The settings cannot be honoured.
    #[error("invalid skill settings: {0}")]
    Settings(String),
    /// The compile cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl From<ContractError> for LoadError {
    fn from(e: ContractError) -> Self {
        Self::Tools(e)
    }
}

/// What ended a call abnormally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrapKind {
    /// The wall-clock deadline passed.
    Deadline,
    /// The fuel budget ran out.
    OutOfFuel,
    /// The guest needed more memory than its cap.
    MemoryLimit,
    /// The guest overflowed its stack.
    StackOverflow,
    /// The guest panicked (with its message).
    Panic(String),
    /// Any other trap.
    Other(String),
}

impl std::fmt::Display for TrapKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Deadline => f.write_str("deadline exceeded"),
            Self::OutOfFuel => f.write_str("fuel budget exhausted"),
            Self::MemoryLimit => f.write_str("memory limit exceeded"),
            Self::StackOverflow => f.write_str("stack overflow"),
            Self::Panic(m) => write!(f, "skill panicked: {m}"),
            Self::Other(m) => write!(f, "{m}"),
        }
    }
}

/// The error class a skill reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolErrorKind {
    /// Bad arguments.
    InvalidArguments,
    /// Refused.
    Denied,
    /// Something named does not exist.
    NotFound,
    /// Anything else.
    Failed,
}

/// Why a call did not produce a result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The skill has no such tool.
    #[error("unknown tool `{0}`")]
    UnknownTool(String),
    /// The arguments do not match the tool's input schema.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The tool ran and reported an error.
    #[error("{message}")]
    Tool {
        /// Its class.
        kind: ToolErrorKind,
        /// The skill's message.
        message: String,
    },
    /// The call trapped; the instance was discarded.
    #[error("the skill was stopped: {0}")]
    Trap(TrapKind),
    /// Too many calls waiting for this skill.
    #[error("the skill is busy; try again later")]
    Busy,
    /// The skill could not be instantiated.
    #[error("the skill is unavailable: {0}")]
    Unavailable(String),
    /// The skill returned something that is not JSON.
    #[error("the skill returned an invalid result: {0}")]
    BadResult(String),
}

/// A successful call.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    /// The tool's result.
    pub value: Value,
    /// Fuel consumed, when fuel metering is on.
    pub fuel_consumed: Option<u64>,
    /// Time from admission to result, instantiation included.
    pub duration: Duration,
}

/// Health of a skill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Whether the skill is healthy.
    pub healthy: bool,
    /// Traps since the last successful call.
    pub consecutive_traps: u32,
    /// Traps since load.
    pub total_traps: u64,
    /// Calls since load.
    pub calls: u64,
    /// The last trap or instantiation failure.
    pub last_error: Option<String>,
}

struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct RuntimeInner {
    engine: Engine,
    /// One permit per pooled component instance: calls wait here (bounded by their queue
    /// timeout) instead of failing when the pool is exhausted.
    slots: Arc<Semaphore>,
    linker: Linker<SkillState>,
    cache: Option<ArtifactCache>,
    config: RuntimeConfig,
    _ticker: EpochTicker,
}

/// The sandboxed runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Builds the wasmtime configuration the runtime uses. Exposed so benchmarks can compare
/// against a bare harness on the same engine settings.
pub fn engine_config(config: &RuntimeConfig) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    let n = config.pool_instances.max(1);
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(8))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .total_stacks(n)
        .max_memory_size(config.max_memory_bytes)
        .linear_memory_keep_resident(config.memory_keep_resident)
        .table_keep_resident(1 << 16)
        // Reset only the pages a call made resident (Linux 6.7+ `PAGEMAP_SCAN`; elsewhere
        // the first `memory_keep_resident` bytes are cleared whether used or not).
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut c = Config::new();
    c.wasm_component_model(true)
        .epoch_interruption(true)
        .consume_fuel(config.fuel)
        .max_wasm_stack(512 << 10)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    c
}

impl Runtime {
    /// Creates the engine, the linker with the host interfaces, and the epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Self, LoadError> {
        let engine = Engine::new(&engine_config(&config))
            .map_err(|e| LoadError::Settings(format!("engine: {e}")))?;
        let linker =
            build_linker(&engine).map_err(|e| LoadError::Settings(format!("linker: {e}")))?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(ArtifactCache::open(dir, &engine)?),
            None => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop.clone();
            let tick = config.epoch_tick;
            std::thread::Builder::new()
                .name("warden-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| LoadError::Settings(format!("epoch ticker: {e}")))?;
        }
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                slots: Arc::new(Semaphore::new(config.pool_instances.max(1) as usize)),
                engine,
                linker,
                cache,
                config,
                _ticker: EpochTicker { stop },
            }),
        })
    }

    /// The engine (for diagnostics and benchmarks).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Pooled instance slots not in use (running calls and idle warm instances hold one).
    pub fn free_slots(&self) -> usize {
        self.inner.slots.available_permits()
    }

    /// The compile cache, if configured.
    pub fn cache(&self) -> Option<&ArtifactCache> {
        self.inner.cache.as_ref()
    }

    /// Loads a skill component: checks it is a component, compiles it (or loads the cached
    /// artifact), links it against the host interfaces, reads and validates its tools.
    /// Nothing is cached unless every check passed.
    pub async fn load(
        &self,
        name: &str,
        wasm: &[u8],
        settings: SkillSettings,
    ) -> Result<Skill, LoadError> {
        check_header(wasm)?;
        let limits = &settings.limits;
        if limits.memory_bytes > self.inner.config.max_memory_bytes {
            return Err(LoadError::Settings(format!(
                "memory cap {} exceeds the runtime's maximum {}",
                limits.memory_bytes, self.inner.config.max_memory_bytes
            )));
        }
        if limits.max_concurrency == 0 {
            return Err(LoadError::Settings(
                "max_concurrency must be at least 1".into(),
            ));
        }
        let digest = blake3::hash(wasm).to_hex().to_string();
        let engine = &self.inner.engine;
        let cached = self
            .inner
            .cache
            .as_ref()
            .and_then(|c| c.load(engine, &digest));
        let from_cache = cached.is_some();
        let component = match cached {
            Some(c) => c,
            None => Component::new(engine, wasm).map_err(|e| LoadError::Compile(root_cause(&e)))?,
        };
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Contract(root_cause(&e)))?;
        let pre = SkillPre::new(pre).map_err(|e| LoadError::Contract(root_cause(&e)))?;

        let name: Arc<str> = Arc::from(name);
        let outbound = Arc::new(settings.outbound.clone());
        let raw = {
            let _slot = tokio::time::timeout(
                settings.limits.queue_timeout,
                self.inner.slots.clone().acquire_owned(),
            )
            .await
            .map_err(|_| LoadError::Describe("the instance pool stayed full".into()))?
            .map_err(|_| LoadError::Describe("the runtime is shutting down".into()))?;
            let mut store = new_store(
                engine,
                &name,
                &outbound,
                &settings.limits,
                self.inner.config.fuel,
            );
            let run = async {
                let instance = pre.instantiate_async(&mut store).await?;
                instance
                    .warden_skill_tools()
                    .call_list_tools(&mut store)
                    .await
            };
            match tokio::time::timeout(settings.limits.deadline, run).await {
                Ok(Ok(tools)) => tools,
                Ok(Err(e)) => return Err(LoadError::Describe(root_cause(&e))),
                Err(_) => return Err(LoadError::Describe("deadline exceeded".into())),
            }
        };
        let tools = contract::validate_tools(raw)?;
        if !from_cache && let Some(cache) = &self.inner.cache {
            cache.store(&digest, &component)?;
        }
        let max_concurrency = settings.limits.max_concurrency;
        Ok(Skill {
            inner: Arc::new(SkillInner {
                runtime: self.inner.clone(),
                name,
                digest,
                pre,
                tools,
                outbound,
                settings,
                permits: Arc::new(Semaphore::new(max_concurrency)),
                waiting: AtomicUsize::new(0),
                warm: Mutex::new(HashMap::new()),
                health: Mutex::new(HealthState::default()),
                calls: AtomicU64::new(0),
            }),
        })
    }
}

fn build_linker(engine: &Engine) -> wasmtime::Result<Linker<SkillState>> {
    use wasmtime::component::HasSelf;
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    bindings::warden::skill::types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    bindings::warden::skill::log::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    bindings::warden::skill::secrets::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    Ok(linker)
}

fn check_header(wasm: &[u8]) -> Result<(), LoadError> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(LoadError::NotWasm);
    }
    match wasm[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(LoadError::CoreModule),
        _ => Err(LoadError::UnsupportedVersion),
    }
}

/// The innermost message of an error chain (wasmtime wraps causes in context).
fn root_cause(e: &wasmtime::Error) -> String {
    let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    chain.join(": ")
}

fn new_store(
    engine: &Engine,
    name: &Arc<str>,
    outbound: &Arc<OutboundPolicy>,
    limits: &SkillLimits,
    fuel: bool,
) -> Store<SkillState> {
    let mut store = Store::new(
        engine,
        SkillState::new(name.clone(), outbound.clone(), limits.memory_bytes),
    );
    store.limiter(|s| &mut s.limiter);
    // Deadline enforcement: wake every tick; yield to the executor so a long call never
    // monopolises a worker thread, and interrupt once the call's deadline has passed.
    store.epoch_deadline_callback(|ctx| {
        if Instant::now() >= ctx.data().deadline {
            Ok(UpdateDeadline::Interrupt)
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    arm(&mut store, limits, fuel, None);
    store
}

/// Sets the deadline, fuel budget and capabilities for the next call on `store`.
fn arm(
    store: &mut Store<SkillState>,
    limits: &SkillLimits,
    fuel: bool,
    caps: Option<Arc<dyn Capabilities>>,
) {
    store
        .data_mut()
        .begin_call(Instant::now() + limits.deadline, caps);
    store.set_epoch_deadline(1);
    if fuel {
        // Cannot fail: fuel is enabled on this engine.
        let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
    }
}

#[derive(Default)]
struct HealthState {
    consecutive_traps: u32,
    total_traps: u64,
    failed_instantiation: bool,
    last_error: Option<String>,
}

struct WarmInstance {
    store: Store<SkillState>,
    instance: SkillBindings,
    /// The pool slot this idle instance occupies; released when it is dropped.
    _slot: OwnedSemaphorePermit,
}

struct SkillInner {
    runtime: Arc<RuntimeInner>,
    name: Arc<str>,
    digest: String,
    pre: SkillPre<SkillState>,
    tools: Vec<ToolInfo>,
    outbound: Arc<OutboundPolicy>,
    settings: SkillSettings,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    warm: Mutex<HashMap<String, Vec<WarmInstance>>>,
    health: Mutex<HealthState>,
    calls: AtomicU64,
}

/// A loaded skill. Cheap to clone; calls may run concurrently.
#[derive(Clone)]
pub struct Skill {
    inner: Arc<SkillInner>,
}

impl std::fmt::Debug for Skill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Skill")
            .field("name", &self.inner.name)
            .field("digest", &self.inner.digest)
            .field("tools", &self.inner.tools.len())
            .finish_non_exhaustive()
    }
}

/// Decrements the wait-queue counter when a waiting call leaves the queue.
struct QueueSlot<'a>(&'a AtomicUsize);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How one guest invocation ended.
enum Invocation {
    Returned(Result<String, bindings::warden::skill::types::CallError>),
    Trapped(TrapKind),
}

impl Skill {
    /// The skill's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// BLAKE3 digest (hex) of the component bytes.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// The validated tools.
    pub fn tools(&self) -> &[ToolInfo] {
        &self.inner.tools
    }

    /// The settings the skill runs with.
    pub fn settings(&self) -> &SkillSettings {
        &self.inner.settings
    }

    /// Calls running now and calls waiting for a slot.
    pub fn load(&self) -> (usize, usize) {
        let limits = &self.inner.settings.limits;
        let running = limits.max_concurrency - self.inner.permits.available_permits();
        (running, self.inner.waiting.load(Ordering::Acquire))
    }

    /// Current health.
    pub fn health(&self) -> Health {
        let h = lock(&self.inner.health);
        Health {
            healthy: !h.failed_instantiation && h.consecutive_traps < UNHEALTHY_AFTER_TRAPS,
            consecutive_traps: h.consecutive_traps,
            total_traps: h.total_traps,
            calls: self.inner.calls.load(Ordering::Relaxed),
            last_error: h.last_error.clone(),
        }
    }

    /// Calls a tool. Arguments are checked against the tool's input schema before the
    /// sandbox is entered.
    pub async fn call(
        &self,
        tool: &str,
        arguments: &Value,
        ctx: &CallContext,
    ) -> Result<CallOutcome, CallError> {
        let info = self
            .inner
            .tools
            .iter()
            .find(|t| t.name == tool)
            .ok_or_else(|| CallError::UnknownTool(tool.to_owned()))?;
        info.check_arguments(arguments)
            .map_err(CallError::InvalidArguments)?;
        let arguments = arguments.to_string();
        let _permit = self.admit().await?;
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let limits = &self.inner.settings.limits;
        // Host-side blocking (e.g. a slow upstream in an outbound request) is not wasm
        // execution, so epoch interruption alone cannot end it: bound the whole call too.
        let run = async {
            if self.inner.settings.warm {
                self.invoke_warm(tool, &arguments, ctx).await
            } else {
                self.invoke_fresh(tool, &arguments, ctx).await
            }
        };
        let (invocation, fuel_consumed) = match tokio::time::timeout(limits.deadline, run).await {
            Ok(result) => result?,
            Err(_) => (Invocation::Trapped(TrapKind::Deadline), None),
        };
        let duration = started.elapsed();
        match invocation {
            Invocation::Trapped(kind) => {
                self.record_trap(&kind);
                Err(CallError::Trap(kind))
            }
            Invocation::Returned(result) => {
                self.record_success();
                let text = result.map_err(tool_error)?;
                let value =
                    serde_json::from_str(&text).map_err(|e| CallError::BadResult(e.to_string()))?;
                Ok(CallOutcome {
                    value,
                    fuel_consumed,
                    duration,
                })
            }
        }
    }

    async fn admit(&self) -> Result<OwnedSemaphorePermit, CallError> {
        if let Ok(permit) = self.inner.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let limits = &self.inner.settings.limits;
        let waiting = self.inner.waiting.fetch_add(1, Ordering::AcqRel) + 1;
        let _slot = QueueSlot(&self.inner.waiting);
        if waiting > limits.max_queue {
            return Err(CallError::Busy);
        }
        match tokio::time::timeout(
            limits.queue_timeout,
            self.inner.permits.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(CallError::Unavailable("skill is shutting down".into())),
            Err(_) => Err(CallError::Busy),
        }
    }

    /// Takes a pool slot. When the pool is full, idle warm instances of this skill are
    /// evicted first; then the call waits (backpressure) up to the queue timeout.
    async fn slot(&self) -> Result<OwnedSemaphorePermit, CallError> {
        let slots = &self.inner.runtime.slots;
        loop {
            if let Ok(permit) = slots.clone().try_acquire_owned() {
                return Ok(permit);
            }
            let evicted = {
                let mut warm = lock(&self.inner.warm);
                warm.values_mut().find_map(Vec::pop)
            };
            if evicted.is_none() {
                break;
            }
        }
        match tokio::time::timeout(
            self.inner.settings.limits.queue_timeout,
            slots.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(CallError::Unavailable(
                "the runtime is shutting down".into(),
            )),
            Err(_) => Err(CallError::Busy),
        }
    }

    fn new_store(&self, ctx: &CallContext) -> Store<SkillState> {
        let mut store = new_store(
            &self.inner.runtime.engine,
            &self.inner.name,
            &self.inner.outbound,
            &self.inner.settings.limits,
            self.inner.runtime.config.fuel,
        );
        if ctx.capabilities.is_some() {
            arm(
                &mut store,
                &self.inner.settings.limits,
                self.inner.runtime.config.fuel,
                ctx.capabilities.clone(),
            );
        }
        store
    }

    async fn instantiate(&self, store: &mut Store<SkillState>) -> Result<SkillBindings, CallError> {
        match self.inner.pre.instantiate_async(&mut *store).await {
            Ok(instance) => {
                lock(&self.inner.health).failed_instantiation = false;
                Ok(instance)
            }
            Err(e) => {
                let kind = classify(&e, store.data());
                if !matches!(kind, TrapKind::Other(_)) {
                    // A limit hit while running constructors is a trap like any other.
                    return Err(CallError::Trap(kind));
                }
                let message = root_cause(&e);
                tracing::error!(skill = %self.inner.name, error = %message, "instantiation failed");
                let mut h = lock(&self.inner.health);
                h.failed_instantiation = true;
                h.last_error = Some(format!("instantiation failed: {message}"));
                Err(CallError::Unavailable(
                    "the skill could not be started".into(),
                ))
            }
        }
    }

    async fn invoke_fresh(
        &self,
        tool: &str,
        arguments: &str,
        ctx: &CallContext,
    ) -> Result<(Invocation, Option<u64>), CallError> {
        let _slot = self.slot().await?;
        let mut store = self.new_store(ctx);
        let instance = match self.instantiate(&mut store).await {
            Err(CallError::Trap(kind)) => return Ok((Invocation::Trapped(kind), None)),
            other => other?,
        };
        let result = instance
            .warden_skill_tools()
            .call_call(&mut store, tool, arguments)
            .await;
        Ok(self.finish(&mut store, result))
    }

    async fn invoke_warm(
        &self,
        tool: &str,
        arguments: &str,
        ctx: &CallContext,
    ) -> Result<(Invocation, Option<u64>), CallError> {
        let key = ctx.isolation_key.as_str();
        let reused = lock(&self.inner.warm).get_mut(key).and_then(Vec::pop);
        let mut warm = match reused {
            Some(mut w) => {
                arm(
                    &mut w.store,
                    &self.inner.settings.limits,
                    self.inner.runtime.config.fuel,
                    ctx.capabilities.clone(),
                );
                w
            }
            None => {
                let slot = self.slot().await?;
                let mut store = self.new_store(ctx);
                let instance = match self.instantiate(&mut store).await {
                    Err(CallError::Trap(kind)) => return Ok((Invocation::Trapped(kind), None)),
                    other => other?,
                };
                WarmInstance {
                    store,
                    instance,
                    _slot: slot,
                }
            }
        };
        let result = warm
            .instance
            .warden_skill_tools()
            .call_call(&mut warm.store, tool, arguments)
            .await;
        let outcome = self.finish(&mut warm.store, result);
        // An instance that held a secret is never reused: its memory may still hold it.
        if matches!(outcome.0, Invocation::Returned(_)) && !warm.store.data().tainted {
            let mut pool = lock(&self.inner.warm);
            let idle = pool.entry(key.to_owned()).or_default();
            if idle.len() < self.inner.settings.limits.max_concurrency {
                idle.push(warm);
            }
        }
        Ok(outcome)
    }

    fn finish(
        &self,
        store: &mut Store<SkillState>,
        result: wasmtime::Result<Result<String, bindings::warden::skill::types::CallError>>,
    ) -> (Invocation, Option<u64>) {
        store.data_mut().end_call();
        let fuel = if self.inner.runtime.config.fuel {
            let budget = self.inner.settings.limits.fuel.unwrap_or(u64::MAX);
            store
                .get_fuel()
                .ok()
                .map(|left| budget.saturating_sub(left))
        } else {
            None
        };
        let invocation = match result {
            Ok(r) => Invocation::Returned(r),
            Err(e) => Invocation::Trapped(classify(&e, store.data())),
        };
        (invocation, fuel)
    }

    fn record_trap(&self, kind: &TrapKind) {
        tracing::warn!(skill = %self.inner.name, trap = %kind, "call trapped; instance discarded");
        let mut h = lock(&self.inner.health);
        h.consecutive_traps = h.consecutive_traps.saturating_add(1);
        h.total_traps += 1;
        h.last_error = Some(kind.to_string());
        if h.consecutive_traps == UNHEALTHY_AFTER_TRAPS {
            tracing::error!(skill = %self.inner.name, traps = h.consecutive_traps, "skill marked unhealthy");
        }
    }

    fn record_success(&self) {
        lock(&self.inner.health).consecutive_traps = 0;
    }
}

/// Names the cause of a trap. Order matters: explicit limits first, then what the guest
/// told us (a panic message), then memory pressure, then whatever wasmtime reported.
fn classify(e: &wasmtime::Error, state: &SkillState) -> TrapKind {
    let trap = e.downcast_ref::<Trap>();
    match trap {
        Some(Trap::Interrupt) => return TrapKind::Deadline,
        Some(Trap::OutOfFuel) => return TrapKind::OutOfFuel,
        Some(Trap::StackOverflow) => return TrapKind::StackOverflow,
        _ => {}
    }
    if let Some(message) = &state.panic_message {
        return TrapKind::Panic(message.clone());
    }
    if state.limiter.hit_cap {
        return TrapKind::MemoryLimit;
    }
    match trap {
        Some(t) => TrapKind::Other(format!("wasm trap: {t}")),
        None => TrapKind::Other(root_cause(e)),
    }
}

fn tool_error(e: bindings::warden::skill::types::CallError) -> CallError {
    use bindings::warden::skill::types::CallError as W;
    let (kind, message) = match e {
        W::InvalidArguments(m) => (ToolErrorKind::InvalidArguments, m),
        W::Denied(m) => (ToolErrorKind::Denied, m),
        W::NotFound(m) => (ToolErrorKind::NotFound, m),
        W::Failed(m) => (ToolErrorKind::Failed, m),
    };
    CallError::Tool { kind, message }
}

/// Locks a mutex, recovering from poisoning (the guarded state stays consistent: every
/// critical section is a few field updates).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
