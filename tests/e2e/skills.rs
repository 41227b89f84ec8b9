//! Every tool of every first-party skill (and the example), called through the runtime.

use crate::support::{call, load, ok, tool_error};
use serde_json::{Value, json};
use warden::runtime::{CallError, OutboundPolicy, SkillSettings, ToolErrorKind};

#[tokio::test]
async fn hello_example_greets_and_validates() {
    let skill = load("hello", SkillSettings::default()).await;
    let tools: Vec<&str> = skill.tools().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(tools, ["greet"]);
    let greet = &skill.tools()[0];
    assert_eq!(greet.description, "Greet someone by name.");
    assert_eq!(greet.annotations.read_only, Some(true));
    assert_eq!(greet.annotations.title.as_deref(), Some("Greet"));
    assert_eq!(
        greet.input_schema["properties"]["name"]["description"],
        "Who to greet."
    );
    assert!(greet.output_schema.is_some());

    assert_eq!(
        ok(&skill, "greet", json!({"name": "Ada"})).await,
        json!({"message": "Hello, Ada!"})
    );
    assert_eq!(
        ok(&skill, "greet", json!({"name": "Ada", "style": "formal"})).await,
        json!({"message": "Good day, Ada."})
    );
    // Schema violations are caught by the host before the sandbox is entered.
    match call(&skill, "greet", json!({"name": 3})).await {
        Err(CallError::InvalidArguments(m)) => assert!(m.contains("/name"), "{m}"),
        other => panic!("expected invalid arguments, got {other:?}"),
    }
    match call(&skill, "greet", json!({"style": "loud", "name": "x"})).await {
        Err(CallError::InvalidArguments(_)) => {}
        other => panic!("expected invalid arguments, got {other:?}"),
    }
    // The tool's own validation reaches the caller as a typed tool error.
    let message = tool_error(
        &skill,
        "greet",
        json!({"name": "  "}),
        ToolErrorKind::InvalidArguments,
    )
    .await;
    assert_eq!(message, "name must not be empty");
    assert!(matches!(
        call(&skill, "nope", json!({})).await,
        Err(CallError::UnknownTool(t)) if t == "nope"
    ));
}

#[tokio::test]
async fn text_skill_every_tool() {
    let skill = load("text", SkillSettings::default()).await;
    let mut names: Vec<&str> = skill.tools().iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "base64",
            "hash",
            "json_pointer",
            "regex_find",
            "stats",
            "transform"
        ]
    );

    assert_eq!(
        ok(
            &skill,
            "stats",
            json!({"text": "héllo wörld\nsecond line\n"})
        )
        .await,
        json!({"chars": 24, "bytes": 26, "words": 4, "lines": 2})
    );
    for (op, expect) in [
        ("upper", "HELLO WORLD-WIDE"),
        ("lower", "hello world-wide"),
        ("title", "Hello World-wide"),
        ("snake", "hello_world_wide"),
        ("kebab", "hello-world-wide"),
        ("reverse", "ediW-dlroW olleH"),
    ] {
        let out = ok(
            &skill,
            "transform",
            json!({"text": "Hello World-Wide", "op": op}),
        )
        .await;
        assert_eq!(out["text"], expect, "op {op}");
    }
    assert_eq!(
        ok(&skill, "transform", json!({"text": "  x  ", "op": "trim"})).await["text"],
        "x"
    );

    let enc = ok(
        &skill,
        "base64",
        json!({"text": "warden ✓", "mode": "encode"}),
    )
    .await;
    assert_eq!(enc["text"], "d2FyZGVuIOKckw==");
    let dec = ok(
        &skill,
        "base64",
        json!({"text": "d2FyZGVuIOKckw==", "mode": "decode"}),
    )
    .await;
    assert_eq!(dec["text"], "warden ✓");
    let url = ok(
        &skill,
        "base64",
        json!({"text": "??>", "mode": "encode", "url_safe": true}),
    )
    .await;
    assert_eq!(url["text"], "Pz8-");
    let message = tool_error(
        &skill,
        "base64",
        json!({"text": "***", "mode": "decode"}),
        ToolErrorKind::InvalidArguments,
    )
    .await;
    assert!(message.contains("not valid base64"), "{message}");

    assert_eq!(
        ok(&skill, "hash", json!({"text": "abc"})).await["hex"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let sha512 = ok(
        &skill,
        "hash",
        json!({"text": "abc", "algorithm": "sha512"}),
    )
    .await;
    assert!(
        sha512["hex"]
            .as_str()
            .unwrap()
            .starts_with("ddaf35a193617aba")
    );

    let doc = json!({"items": [{"name": "a"}, {"name": "b/c"}], "n": 2});
    assert_eq!(
        ok(
            &skill,
            "json_pointer",
            json!({"document": doc, "pointer": "/items/1/name"})
        )
        .await,
        json!({"found": true, "value": "b/c"})
    );
    assert_eq!(
        ok(
            &skill,
            "json_pointer",
            json!({"document": doc, "pointer": "/missing"})
        )
        .await,
        json!({"found": false, "value": null})
    );
    assert_eq!(
        ok(
            &skill,
            "json_pointer",
            json!({"document": doc, "pointer": ""})
        )
        .await["value"],
        doc
    );

    let found = ok(
        &skill,
        "regex_find",
        json!({"text": "id=12, id=345, id=6", "pattern": "id=(\\d+)", "limit": 2}),
    )
    .await;
    assert_eq!(found["truncated"], true);
    assert_eq!(
        found["matches"][0],
        json!({"start": 0, "end": 5, "text": "id=12", "groups": ["12"]})
    );
    assert_eq!(found["matches"][1]["groups"][0], "345");
    let message = tool_error(
        &skill,
        "regex_find",
        json!({"text": "x", "pattern": "("}),
        ToolErrorKind::InvalidArguments,
    )
    .await;
    assert!(message.contains("bad pattern"), "{message}");
}

/// A loopback HTTP server for the http skill.
async fn upstream() -> std::net::SocketAddr {
    use axum::routing::{get, post};
    use axum::{Json, Router, http::HeaderMap, http::StatusCode};
    let app = Router::new()
        .route(
            "/json",
            get(|| async { Json(json!({"hello": "world", "n": [1, 2, 3]})) }),
        )
        .route(
            "/echo",
            post(|headers: HeaderMap, body: String| async move {
                let ct = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let custom = headers
                    .get("x-custom")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                Json(json!({"content_type": ct, "custom": custom, "body": body}))
            }),
        )
        .route(
            "/fail",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route("/big", get(|| async { "x".repeat(200_000) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn allow(addr: std::net::SocketAddr, allow_private: bool) -> SkillSettings {
    SkillSettings {
        outbound: OutboundPolicy {
            allowed_hosts: vec![addr.to_string()],
            allow_private,
        },
        ..SkillSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_skill_every_tool_through_the_outbound_policy() {
    let addr = upstream().await;
    let skill = load("http", allow(addr, true)).await;
    let mut names: Vec<&str> = skill.tools().iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["get_json", "request"]);
    assert_eq!(skill.tools()[0].annotations.open_world, Some(true));

    let got = ok(
        &skill,
        "request",
        json!({"url": format!("http://{addr}/json")}),
    )
    .await;
    assert_eq!(got["status"], 200);
    assert_eq!(got["json"], json!({"hello": "world", "n": [1, 2, 3]}));
    assert!(
        got["headers"]["content-type"]
            .as_str()
            .unwrap()
            .contains("application/json")
    );

    let echoed = ok(
        &skill,
        "request",
        json!({
            "method": "POST",
            "url": format!("http://{addr}/echo"),
            "headers": {"x-custom": "42"},
            "json": {"a": 1}
        }),
    )
    .await;
    assert_eq!(echoed["status"], 200);
    assert_eq!(
        echoed["json"],
        json!({"content_type": "application/json", "custom": "42", "body": "{\"a\":1}"})
    );

    let doc = ok(
        &skill,
        "get_json",
        json!({"url": format!("http://{addr}/json")}),
    )
    .await;
    assert_eq!(doc["hello"], "world");
    let message = tool_error(
        &skill,
        "get_json",
        json!({"url": format!("http://{addr}/fail")}),
        ToolErrorKind::Failed,
    )
    .await;
    assert!(message.contains("500"), "{message}");
    let message = tool_error(
        &skill,
        "request",
        json!({"url": format!("http://{addr}/big"), "max_bytes": 1000}),
        ToolErrorKind::Failed,
    )
    .await;
    assert!(message.contains("larger than 1000"), "{message}");
    tool_error(
        &skill,
        "request",
        json!({"url": "ftp://x/"}),
        ToolErrorKind::InvalidArguments,
    )
    .await;

    // Deny by default: the same skill without an allow-list reaches nothing.
    let closed = load("http", SkillSettings::default()).await;
    tool_error(
        &closed,
        "request",
        json!({"url": format!("http://{addr}/json")}),
        ToolErrorKind::Denied,
    )
    .await;
    // Allow-listed but loopback: refused unless private destinations are allowed.
    let private = load("http", allow(addr, false)).await;
    tool_error(
        &private,
        "get_json",
        json!({"url": format!("http://{addr}/json")}),
        ToolErrorKind::Denied,
    )
    .await;
}

#[tokio::test]
async fn tool_results_are_plain_json_values() {
    let skill = load("text", SkillSettings::default()).await;
    let outcome = crate::support::call(&skill, "stats", json!({"text": "a b"}))
        .await
        .unwrap();
    assert!(matches!(outcome.value, Value::Object(_)));
    assert_eq!(
        outcome.fuel_consumed, None,
        "fuel metering is off by default"
    );
}
