//! Policy decision cost: one `PolicyEngine::decide` on a 100-rule Cedar set (99 permits over
//! distinct namespaces and groups, one forbid), next to the token check it follows.
//!
//! Also the token check alone, auth + policy together, the listing check, and one durable
//! audit record with a single caller.
//!
//! Run: `cargo bench -p warden --bench policy`. Goal (issue 4): auth + policy < 10 us p50.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::Criterion;
use std::time::Duration;
use warden::policy::{Circumstances, PolicyEngine, Subject, Target};

fn policies(n: usize) -> String {
    let mut text = String::new();
    for i in 0..n - 1 {
        text.push_str(&format!(
            "@id(\"p{i}\")\npermit (principal in Warden::Group::\"team{i}\", action, resource) \
             when {{ resource.namespace == \"ns{i}\" && resource.readOnly }};\n"
        ));
    }
    text.push_str(
        "@id(\"no-destructive-in-prod\")\n@reason(\"no destructive tools in prod\")\n\
         forbid (principal, action, resource) when { resource.destructive && principal.environment == \"prod\" };\n",
    );
    text
}

fn main() {
    let engine = PolicyEngine::new(&policies(100)).unwrap();
    assert_eq!(engine.len(), 100);
    let subject = Subject {
        tenant: "acme".into(),
        workspace: "core".into(),
        environment: "prod".into(),
        agent: "bot".into(),
        groups: vec!["team42".into()],
    };
    let target = Target {
        exposed: "ns42_db__query".into(),
        namespace: "ns42".into(),
        skill: "db".into(),
        tool: "query".into(),
        publisher: "acme".into(),
        read_only: true,
        destructive: false,
        idempotent: true,
        open_world: false,
    };
    let ctx = Circumstances {
        now: "2026-11-25T10:00:00Z".into(),
        client_ip: Some("127.0.0.1".parse().unwrap()),
        rate: 1,
        arguments: serde_json::json!({"sql": "select 1", "limit": 10})
            .as_object()
            .cloned()
            .unwrap(),
    };
    assert!(matches!(
        engine.decide(&subject, &target, &ctx),
        warden::policy::Decision::Allow { .. }
    ));

    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(warden::storage::Store::open(&dir.path().join("db")).unwrap());
    for scope in ["acme", "acme/core", "acme/core/prod"] {
        warden::identity::create_scope(&*store, scope).unwrap();
    }
    warden::identity::put_agent(&*store, "acme/core/prod/bot", vec!["team42".into()], None)
        .unwrap();
    let token = warden::auth::issue_service_token(&store, "acme/core/prod/bot", "bench")
        .unwrap()
        .token;
    let header = format!("Bearer {token}");
    let audience = "http://127.0.0.1:7878/mcp";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = warden::audit::ChainKey::load_or_create(&dir.path().join("audit.key")).unwrap();
    let audit = rt.block_on(async { warden::audit::AuditLog::start(store.clone(), key).unwrap() });

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    c.bench_function("policy_decide_100_rules", |b| {
        b.iter(|| engine.decide(&subject, &target, &ctx))
    });
    // The same set with the forbid reading the arguments, the time and the client IP, so
    // the request carries everything (the most a decision builds).
    let heavy = PolicyEngine::new(&policies(100).replace(
        "when { resource.destructive && principal.environment == \"prod\" }",
        "when { (context.arguments.hasTag(\"sql\") && context.arguments.getTag(\"sql\") like \"*drop *\") \
         || (context.now.toTime() > duration(\"23h\") && context.clientIp.isLoopback()) }",
    ))
    .unwrap();
    assert!(matches!(
        heavy.decide(&subject, &target, &ctx),
        warden::policy::Decision::Allow { .. }
    ));
    c.bench_function("policy_decide_100_rules_reading_arguments_time_ip", |b| {
        b.iter(|| heavy.decide(&subject, &target, &ctx))
    });
    c.bench_function("token_check", |b| {
        b.iter(|| warden::auth::authenticate(&store, Some(&header), None, audience).unwrap())
    });
    c.bench_function("auth_plus_policy_100_rules", |b| {
        b.iter(|| {
            let p = warden::auth::authenticate(&store, Some(&header), None, audience).unwrap();
            engine.decide(&p.subject, &target, &ctx)
        })
    });
    c.bench_function("policy_list_check_100_rules", |b| {
        b.iter(|| engine.may_call(&subject, &target, &ctx))
    });
    // One caller alone: every record is its own durable commit (the worst case; under load
    // the writer batches). The enqueue itself is a channel send.
    c.bench_function("audit_record_durable_single_caller", |b| {
        b.to_async(&rt).iter(|| async {
            audit
                .record(warden::audit::AuditRecord {
                    request: "tools/call".into(),
                    principal: Some("acme/core/prod/bot".into()),
                    tool: Some("ns42_db__query".into()),
                    outcome: "ok".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
        })
    });
    c.final_summary();
}
