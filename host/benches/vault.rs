//! Credential injection benchmark: the first-party `http` skill calls a local HTTP server
//! through a grant that injects a secret, and through the same grant without injection, in
//! the same run (interleaved); plus the cost of opening one secret.
//!
//! Both calls build the call's capabilities from the grants in force (as the gateway does
//! for every call) and go through the same egress path (route, address check, connection to
//! the checked address); the injected call also resolves the secret (sealed-value cache,
//! data key unwrap, value decryption), renders the header, and reads and masks the response.
//!
//! Run: `cargo bench -p warden --bench vault`. Prints p50/p99 of both calls, their p50
//! difference (goal: under 5 us) and the p50 of `Vault::resolve`, as recorded in
//! `docs/benchmarks.md`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden::runtime::{CallContext, Runtime, RuntimeConfig, SkillSettings};
use warden::storage::{ScopeRecord, SkillRecord, Store, Tables};
use warden::vault::grants::{self, CallGrants, GrantSpec, Grants};
use warden::vault::{SecretPath, Vault, VaultConfig};

const CALLS: usize = 4_000;
const SECRET: &str = "sk_live_bench_0123456789abcdef";

fn p(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() as f64 - 1.0) * q) as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let wasm = common::build_skill("http");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
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
    for scope in ["acme", "acme/core", "acme/core/prod", "acme/core/plain"] {
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
    vault
        .put(
            &*store,
            &SecretPath::parse("acme/core/prod/key").unwrap(),
            SECRET.as_bytes(),
            "bench",
        )
        .unwrap();

    // The upstream: a small JSON answer that checks nothing.
    let port = rt.block_on(async {
        let app = axum::Router::new().route(
            "/v1/items",
            axum::routing::get(|| async { axum::Json(json!({"items": [1, 2, 3]})) }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(l, app).await });
        port
    });
    let grant = |scope: &str, inject: Vec<String>| GrantSpec {
        skill: "http".into(),
        scope: scope.into(),
        host: Some(format!("127.0.0.1:{port}")),
        scheme: Some("http".into()),
        allow_private: true,
        inject,
        ..GrantSpec::default()
    };
    grants::add(
        &*store,
        &grant(
            "acme/core/prod",
            vec!["Authorization: Bearer {secret:key}".into()],
        ),
        "bench",
    )
    .unwrap();
    grants::add(&*store, &grant("acme/core/plain", Vec::new()), "bench").unwrap();
    let grants = Grants::new(store.clone());

    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let skill = rt
        .block_on(runtime.load("http", &wasm, SkillSettings::default()))
        .unwrap();
    let args = json!({"url": format!("http://127.0.0.1:{port}/v1/items")});
    let call = |env: &'static str| {
        let caps = Arc::new(CallGrants::new(
            grants.for_call("http", env).unwrap(),
            vault.clone(),
            "http",
            env,
        ));
        let ctx = CallContext {
            isolation_key: env.into(),
            capabilities: Some(caps),
        };
        let started = Instant::now();
        let out = rt.block_on(skill.call("request", &args, &ctx)).unwrap();
        let took = started.elapsed();
        assert_eq!(out.value["status"], 200, "{}", out.value);
        took
    };
    for _ in 0..CALLS / 10 {
        call("acme/core/prod");
        call("acme/core/plain");
    }
    let (mut injected, mut plain, mut again) = (
        Vec::with_capacity(CALLS),
        Vec::with_capacity(CALLS),
        Vec::with_capacity(CALLS),
    );
    for i in 0..CALLS {
        // Interleaved, alternating which goes first.
        if i % 2 == 0 {
            injected.push(call("acme/core/prod"));
            plain.push(call("acme/core/plain"));
            again.push(call("acme/core/plain"));
        } else {
            again.push(call("acme/core/plain"));
            plain.push(call("acme/core/plain"));
            injected.push(call("acme/core/prod"));
        }
    }
    // Each pair ran back to back: the median of the pairs' differences is less noisy than
    // the difference of the medians.
    let mut diffs: Vec<f64> = injected
        .iter()
        .zip(&plain)
        .map(|(a, b)| us(*a) - us(*b))
        .collect();
    diffs.sort_by(f64::total_cmp);
    let paired = diffs[diffs.len() / 2];
    // The same call twice: the noise floor of the pairing.
    let mut floor: Vec<f64> = again
        .iter()
        .zip(&plain)
        .map(|(a, b)| us(*a) - us(*b))
        .collect();
    floor.sort_by(f64::total_cmp);
    let floor = floor[floor.len() / 2];
    let (i50, i99) = (p(&mut injected, 0.5), p(&mut injected, 0.99));
    let (n50, n99) = (p(&mut plain, 0.5), p(&mut plain, 0.99));

    // Opening one secret (sealed-value cache warm, as between writes).
    let mut opens = Vec::with_capacity(20_000);
    for _ in 0..20_000 {
        let t = Instant::now();
        let opened = vault.resolve("acme/core/prod", "key").unwrap();
        opens.push(t.elapsed());
        assert_eq!(opened.value.len(), SECRET.len());
    }
    let o50 = p(&mut opens, 0.5);
    let o99 = p(&mut opens, 0.99);
    // What masking costs: the patterns of one value, and a scan of a small response.
    let body = br#"{"items":[1,2,3]}"#;
    let (mut builds, mut scans) = (Vec::with_capacity(20_000), Vec::with_capacity(20_000));
    for _ in 0..20_000 {
        let t = Instant::now();
        let mut masker = warden::vault::mask::Masker::default();
        masker.add("key", SECRET.as_bytes());
        builds.push(t.elapsed());
        let t = Instant::now();
        assert!(masker.mask_bytes(body).is_none());
        scans.push(t.elapsed());
    }
    let (b50, s50) = (p(&mut builds, 0.5), p(&mut scans, 0.5));

    println!("http skill call, {CALLS} each, interleaved:");
    println!(
        "  with injection:    p50 {:>8.1} us  p99 {:>8.1} us",
        us(i50),
        us(i99)
    );
    println!(
        "  without injection: p50 {:>8.1} us  p99 {:>8.1} us",
        us(n50),
        us(n99)
    );
    println!(
        "  injection adds:    p50 {:>8.1} us; median of paired differences {:.1} us  (goal < 5 us)",
        us(i50) - us(n50),
        paired
    );
    println!("  the same call twice: median of paired differences {floor:.1} us (noise floor)");
    println!(
        "Vault::resolve (one secret, cache warm): p50 {:.2} us  p99 {:.2} us",
        us(o50),
        us(o99)
    );
    println!(
        "masking: patterns of one value p50 {:.2} us; scan of a {}-byte body p50 {:.2} us",
        us(b50),
        body.len(),
        us(s50)
    );
}
