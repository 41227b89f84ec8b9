//! Data-driven policy cases: one folder per case under `tests/policy/` with the policy set
//! (`policy.cedar`), the request (`request.json`) and the expected decision
//! (`expected.json`).

use crate::support::repo_root;
use serde_json::Value;
use warden::policy::{Circumstances, Decision, PolicyEngine, PolicyError, Subject, Target};

fn subject(v: &Value) -> Subject {
    Subject {
        tenant: v["tenant"].as_str().unwrap().into(),
        workspace: v["workspace"].as_str().unwrap().into(),
        environment: v["environment"].as_str().unwrap().into(),
        agent: v["agent"].as_str().unwrap().into(),
        groups: v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap().to_owned())
            .collect(),
    }
}

fn target(v: &Value) -> Target {
    let s = |k: &str| v[k].as_str().unwrap().to_owned();
    let b = |k: &str| v[k].as_bool().unwrap();
    Target {
        exposed: s("exposed"),
        namespace: s("namespace"),
        skill: s("skill"),
        tool: s("tool"),
        publisher: s("publisher"),
        read_only: b("read_only"),
        destructive: b("destructive"),
        idempotent: b("idempotent"),
        open_world: b("open_world"),
    }
}

fn as_json(d: &Decision) -> Value {
    d.to_json()
}

#[test]
fn policy_cases() {
    let dir = repo_root().join("tests/policy");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 10,
        "expected the policy case table in {}",
        dir.display()
    );
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(case.join("policy.cedar")).unwrap();
        if name == "readme-example" {
            let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
            let body = text.split_once('\n').unwrap().1;
            assert!(
                readme.contains(body),
                "README.md's policy example and {name} differ"
            );
        }
        let request: Value =
            serde_json::from_str(&std::fs::read_to_string(case.join("request.json")).unwrap())
                .unwrap();
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(case.join("expected.json")).unwrap())
                .unwrap();
        let engine = PolicyEngine::new(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let c: Circumstances = serde_json::from_value(request["circumstances"].clone())
            .unwrap_or_else(|e| panic!("{name}: circumstances: {e}"));
        let (s, t) = (subject(&request["subject"]), target(&request["target"]));
        let decision = engine.decide(&s, &t, &c);
        // Listing agrees with calling: a tool that can be called is listed.
        if !matches!(decision, Decision::Deny { .. }) {
            assert!(
                engine.may_call(&s, &t, &c),
                "case {name}: allowed but not listed"
            );
        }
        if let Some(listed) = expected.get("listed") {
            assert_eq!(
                engine.may_call(&s, &t, &c),
                listed.as_bool().unwrap(),
                "case {name}: listing"
            );
        }
        let expected = {
            let mut e = expected.clone();
            if let Some(o) = e.as_object_mut() {
                o.remove("listed");
            }
            e
        };
        assert_eq!(as_json(&decision), expected, "case {name}");
    }
}

#[test]
fn invalid_policy_sets_are_refused_whole() {
    // Does not parse.
    assert!(matches!(
        PolicyEngine::new("permit (principal"),
        Err(PolicyError::Parse(_))
    ));
    // Parses, but names an attribute the schema does not have.
    let err = PolicyEngine::new(
        r#"permit (principal, action, resource) when { resource.costCenter == "x" };"#,
    )
    .unwrap_err();
    assert!(matches!(err, PolicyError::Invalid(_)), "{err}");
    // Parses, but one of two policies uses an unknown entity type: nothing is applied.
    let err = PolicyEngine::new(
        r#"permit (principal, action, resource);
           permit (principal == Warden::Robot::"x", action, resource);"#,
    )
    .unwrap_err();
    assert!(matches!(err, PolicyError::Invalid(_)), "{err}");
    // Duplicate @id.
    assert!(
        PolicyEngine::new(
            r#"@id("a") permit (principal, action, resource);
           @id("a") forbid (principal, action, resource);"#
        )
        .is_err()
    );
    assert!(PolicyEngine::new("").unwrap().is_empty());
}
