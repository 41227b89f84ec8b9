//! Runtime benchmark: a fresh pooled instance per call (instantiate + call + drop) and a
//! warm call, through warden's runtime and through a bare wasmtime harness on the same
//! component and engine configuration (the limit).
//!
//! Run: `cargo bench -p warden --bench runtime`. Builds the first-party `text` skill with
//! the same toolchain resolver as `warden skill build`, runs criterion, then a fixed-count
//! latency pass that prints p50/p99 and the warden/bare ratios (recorded in
//! `docs/benchmarks.md`).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use criterion::Criterion;
use serde_json::json;
use std::time::{Duration, Instant};
use warden::runtime::{CallContext, Runtime, RuntimeConfig, Skill, SkillSettings, engine_config};
use wasmtime::component::{
    Component, ComponentType, InstancePre, Lift, Linker, ResourceTable, Val,
};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

const TOOL: &str = "stats";
const ARGS: &str = r#"{"text":"the quick brown fox jumps over the lazy dog"}"#;

/// The contract's error variant, for the bare harness's typed call.
#[derive(ComponentType, Lift, Debug)]
#[component(variant)]
#[allow(dead_code)]
enum BareCallError {
    #[component(name = "invalid-arguments")]
    InvalidArguments(String),
    #[component(name = "denied")]
    Denied(String),
    #[component(name = "not-found")]
    NotFound(String),
    #[component(name = "failed")]
    Failed(String),
}

type CallFn = wasmtime::component::TypedFunc<(String, String), (Result<String, BareCallError>,)>;

/// The minimum store state a wasip2 component needs.
struct Bare {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Bare {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

struct Harness {
    engine: Engine,
    pre: InstancePre<Bare>,
}

impl Harness {
    fn new(engine: Engine, wasm: &[u8]) -> Self {
        let component = Component::new(&engine, wasm).unwrap();
        let mut linker: Linker<Bare> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).unwrap();
        linker.instance("warden:skill/types@0.1.0").unwrap();
        linker
            .instance("warden:skill/log@0.1.0")
            .unwrap()
            .func_new("emit", |_, _, _, _| Ok(()))
            .unwrap();
        linker
            .instance("warden:skill/secrets@0.1.0")
            .unwrap()
            .func_new("reveal", |_, _, _, results| {
                results[0] = Val::Result(Err(Some(Box::new(Val::Enum("denied".into())))));
                Ok(())
            })
            .unwrap();
        let pre = linker.instantiate_pre(&component).unwrap();
        Self { engine, pre }
    }

    fn store(&self) -> Store<Bare> {
        let mut store = Store::new(
            &self.engine,
            Bare {
                wasi: WasiCtx::builder().build(),
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
            },
        );
        store.set_epoch_deadline(u64::MAX / 2);
        store
    }

    async fn instantiate(&self, store: &mut Store<Bare>) -> CallFn {
        let instance = self.pre.instantiate_async(&mut *store).await.unwrap();
        let iface = instance
            .get_export_index(&mut *store, None, "warden:skill/tools@0.1.0")
            .unwrap();
        let call = instance
            .get_export_index(&mut *store, Some(&iface), "call")
            .unwrap();
        instance.get_typed_func(&mut *store, call).unwrap()
    }

    async fn fresh_call(&self) -> String {
        let mut store = self.store();
        let f = self.instantiate(&mut store).await;
        let (r,) = f
            .call_async(&mut store, (TOOL.into(), ARGS.into()))
            .await
            .unwrap();
        r.unwrap()
    }
}

struct Warm {
    store: Store<Bare>,
    f: CallFn,
}

impl Warm {
    async fn call(&mut self) -> String {
        let (r,) = self
            .f
            .call_async(&mut self.store, (TOOL.into(), ARGS.into()))
            .await
            .unwrap();
        r.unwrap()
    }
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    (at(0.50), at(0.99))
}

async fn sample<F, Fut>(n: usize, mut f: F) -> (Duration, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..n / 10 {
        f().await;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await;
        samples.push(t.elapsed());
    }
    percentiles(samples)
}

fn main() {
    let wasm = common::build_skill("text");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = RuntimeConfig::default();
    let runtime = Runtime::new(config.clone()).unwrap();
    let (fresh, warm): (Skill, Skill) = rt.block_on(async {
        let fresh = runtime
            .load("text", &wasm, SkillSettings::default())
            .await
            .unwrap();
        let warm = runtime
            .load(
                "text",
                &wasm,
                SkillSettings {
                    warm: true,
                    ..SkillSettings::default()
                },
            )
            .await
            .unwrap();
        (fresh, warm)
    });
    // The bare harness: its own engine with the identical configuration, plus an epoch
    // ticker like the runtime's (deadlines are armed far in the future).
    let engine = Engine::new(&engine_config(&config)).unwrap();
    let harness = Harness::new(engine, &wasm);
    let mut bare_warm = rt.block_on(async {
        let mut store = harness.store();
        let f = harness.instantiate(&mut store).await;
        Warm { store, f }
    });
    let args = serde_json::from_str::<serde_json::Value>(ARGS).unwrap();
    let ctx = CallContext::default();

    // Sanity: both paths compute the same answer.
    let expected = json!({"chars": 43, "bytes": 43, "words": 9, "lines": 1});
    rt.block_on(async {
        assert_eq!(fresh.call(TOOL, &args, &ctx).await.unwrap().value, expected);
        let bare: serde_json::Value = serde_json::from_str(&harness.fresh_call().await).unwrap();
        assert_eq!(bare, expected);
    });

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    {
        let mut g = c.benchmark_group("fresh_instance_call");
        g.bench_function("warden", |b| {
            b.to_async(&rt).iter(|| fresh.call(TOOL, &args, &ctx))
        });
        g.bench_function("bare_wasmtime", |b| {
            b.to_async(&rt).iter(|| harness.fresh_call())
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("warm_call");
        g.bench_function("warden", |b| {
            b.to_async(&rt).iter(|| warm.call(TOOL, &args, &ctx))
        });
        g.bench_function("bare_wasmtime", |b| {
            b.iter(|| rt.block_on(bare_warm.call()));
        });
        g.finish();
    }
    c.final_summary();

    // Fixed-count latency pass for percentiles (criterion reports means).
    let n = 20_000;
    let (fw50, fw99) = rt.block_on(sample(n, || async {
        fresh.call(TOOL, &args, &ctx).await.unwrap();
    }));
    let (fb50, fb99) = rt.block_on(sample(n, || async {
        harness.fresh_call().await;
    }));
    let (ww50, ww99) = rt.block_on(sample(n, || async {
        warm.call(TOOL, &args, &ctx).await.unwrap();
    }));
    let (wb50, wb99) = rt.block_on(async {
        let bw = &mut bare_warm;
        let mut samples = Vec::with_capacity(n);
        for i in 0..n + n / 10 {
            let t = Instant::now();
            bw.call().await;
            if i >= n / 10 {
                samples.push(t.elapsed());
            }
        }
        percentiles(samples)
    });
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("\n| path | warden p50 | warden p99 | bare p50 | bare p99 | ratio p50 |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| fresh instance: instantiate + call + drop | {:.1} us | {:.1} us | {:.1} us | {:.1} us | {:.2}x |",
        us(fw50),
        us(fw99),
        us(fb50),
        us(fb99),
        us(fw50) / us(fb50)
    );
    println!(
        "| warm instance: call | {:.2} us | {:.2} us | {:.2} us | {:.2} us | {:.2}x |",
        us(ww50),
        us(ww99),
        us(wb50),
        us(wb99),
        us(ww50) / us(wb50)
    );
}
