//! Policy decision cost: one `PolicyEngine::decide` on a 100-rule Cedar set (99 permits over
//! distinct namespaces and groups, one forbid), next to the token check it follows.
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
        client_ip: "127.0.0.1".parse().unwrap(),
    };
    assert!(matches!(
        engine.decide(&subject, &target, &ctx),
        warden::policy::Decision::Allow { .. }
    ));

    let dir = tempfile::tempdir().unwrap();
    let store = warden::storage::Store::open(&dir.path().join("db")).unwrap();
    let token = warden::auth::issue_agent_token(&store, "bot").unwrap();
    let header = format!("Bearer {token}");

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    c.bench_function("policy_decide_100_rules", |b| {
        b.iter(|| engine.decide(&subject, &target, &ctx))
    });
    c.bench_function("token_check", |b| {
        b.iter(|| warden::auth::authenticate(&store, Some(&header), None).unwrap())
    });
    c.final_summary();
}
