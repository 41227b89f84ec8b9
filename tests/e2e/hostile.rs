//! The hostile skill: every abuse ends in the right trap or denial within a bounded time,
//! the instance is discarded, and a normal call succeeds right after.

use crate::support::{call, load, ok, wait_until, wasm};
use serde_json::json;
use std::time::{Duration, Instant};
use warden::runtime::{
    CallContext, CallError, OutboundPolicy, Runtime, RuntimeConfig, SkillLimits, SkillSettings,
    ToolErrorKind, TrapKind, UNHEALTHY_AFTER_TRAPS,
};

fn limited(deadline_ms: u64, memory_mib: usize) -> SkillSettings {
    SkillSettings {
        limits: SkillLimits {
            deadline: Duration::from_millis(deadline_ms),
            memory_bytes: memory_mib << 20,
            ..SkillLimits::default()
        },
        ..SkillSettings::default()
    }
}

async fn expect_trap(
    skill: &warden::runtime::Skill,
    tool: &str,
    args: serde_json::Value,
) -> TrapKind {
    match call(skill, tool, args).await {
        Err(CallError::Trap(kind)) => kind,
        other => panic!("{tool}: expected a trap, got {other:?}"),
    }
}

async fn still_works(skill: &warden::runtime::Skill) {
    assert_eq!(ok(skill, "ok", json!({})).await, json!({"ok": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_hits_the_deadline() {
    let skill = load("hostile", limited(200, 64)).await;
    let started = Instant::now();
    assert_eq!(
        expect_trap(&skill, "spin", json!({})).await,
        TrapKind::Deadline
    );
    // Bounded: far below the 10 s default, whatever the machine's load.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    still_works(&skill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_host_call_hits_the_deadline() {
    let skill = load("hostile", limited(200, 64)).await;
    assert_eq!(
        expect_trap(&skill, "sleep", json!({"ms": 60_000})).await,
        TrapKind::Deadline
    );
    still_works(&skill).await;
}

#[tokio::test]
async fn memory_bomb_is_refused_at_the_cap() {
    let skill = load("hostile", limited(10_000, 32)).await;
    assert_eq!(
        expect_trap(&skill, "hog", json!({})).await,
        TrapKind::MemoryLimit
    );
    still_works(&skill).await;
    // The fallible path gets a clean error instead of a trap, below the cap.
    match call(&skill, "hog_fallible", json!({})).await {
        Err(CallError::Tool {
            kind: ToolErrorKind::Failed,
            message,
        }) => {
            let bytes: u64 = message
                .trim_start_matches("out of memory after ")
                .trim_end_matches(" bytes")
                .parse()
                .expect("byte count");
            assert!(bytes > 8 << 20 && bytes <= 32 << 20, "{bytes}");
        }
        other => panic!("expected a clean failure, got {other:?}"),
    }
}

#[tokio::test]
async fn deep_recursion_overflows_the_stack() {
    let skill = load("hostile", limited(10_000, 64)).await;
    assert_eq!(
        expect_trap(&skill, "recurse", json!({})).await,
        TrapKind::StackOverflow
    );
    still_works(&skill).await;
}

#[tokio::test]
async fn panic_is_reported_with_its_message() {
    let skill = load("hostile", limited(10_000, 64)).await;
    match expect_trap(&skill, "panic", json!({})).await {
        TrapKind::Panic(m) => assert!(m.contains("panicked on purpose"), "{m}"),
        other => panic!("expected a panic, got {other:?}"),
    }
    still_works(&skill).await;
}

/// Runs `warden skill call hostile TOOL ARGS` as a real process with `stdin` fed to it and
/// an extra environment variable; returns (stdout JSON, stderr).
fn skill_call(tool: &str, args: serde_json::Value, stdin: &[u8]) -> (serde_json::Value, String) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(crate::support::warden_bin())
        .args(["skill", "call"])
        .arg(crate::support::component("hostile"))
        .arg(tool)
        .arg(args.to_string())
        .env("WARDEN_LOG", "info")
        .env("WARDEN_PROBE_CANARY", "must-not-be-seen")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // The host may never read it; a closed pipe is fine.
    let _ = input.write_all(stdin);
    drop(input);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

#[test]
fn every_plain_capability_is_denied() {
    // Something listens, so a refused connection is the sandbox's refusal, not an empty
    // port's; the host process has a non-empty stdin and an extra variable the guest must
    // not see.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (probe, _) = skill_call(
        "probe",
        json!({ "port": port }),
        b"stdin the guest must not read\n",
    );
    assert_eq!(
        probe,
        json!({
            "env_vars": 0,
            "args": 0,
            "read_root_dir": false,
            "open_etc_passwd": false,
            "read_cwd": false,
            "create_file": false,
            "stdin_bytes": 0,
            "tcp_connect": "create: access-denied",
            "udp_bind": false,
            "dns_lookup": false,
            "secret_revealed": false,
            "http_unlisted": "denied",
        })
    );
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "nothing connected to the listener"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_destinations_are_refused_even_when_listed() {
    // Cloud metadata (link-local), by IP literal.
    let skill = load(
        "hostile",
        SkillSettings {
            outbound: OutboundPolicy {
                allowed_hosts: vec!["169.254.169.254".into(), "localhost:1".into()],
                ..OutboundPolicy::default()
            },
            ..SkillSettings::default()
        },
    )
    .await;
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:1/",
    ] {
        match call(&skill, "fetch", json!({ "url": url })).await {
            Err(CallError::Tool {
                kind: ToolErrorKind::Denied,
                ..
            }) => {}
            other => panic!("{url}: expected denial, got {other:?}"),
        }
    }
}

#[test]
fn log_flood_is_bounded() {
    // The skill emits 10,000 records of 100,000 bytes; the host keeps 256 of at most
    // 2,048 bytes each and says how many it dropped.
    let (ack, stderr) = skill_call("log_flood", json!({}), b"");
    assert_eq!(ack, json!({"ok": true}));
    let kept = stderr
        .lines()
        .filter(|l| l.contains("warden::skill"))
        .count();
    assert_eq!(kept, 256, "records kept");
    assert!(
        stderr.contains("dropped=9744"),
        "the drop is reported: {}",
        stderr.lines().last().unwrap_or_default()
    );
    assert!(
        stderr.lines().all(|l| l.len() < 4096),
        "a record longer than the cap reached the log"
    );
    assert!(stderr.len() < 256 * 4096, "{} bytes of log", stderr.len());
}

#[tokio::test]
async fn fuel_budget_traps_and_reports_cost() {
    let rt = Runtime::new(RuntimeConfig {
        fuel: true,
        cache_dir: Some(crate::support::cache_dir()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let settings = SkillSettings {
        limits: SkillLimits {
            fuel: Some(50_000_000),
            ..SkillLimits::default()
        },
        ..SkillSettings::default()
    };
    let skill = rt
        .load("hostile", &wasm("hostile"), settings)
        .await
        .unwrap();
    let outcome = call(&skill, "ok", json!({})).await.unwrap();
    let cost = outcome.fuel_consumed.expect("fuel reported");
    assert!(cost > 0 && cost < 50_000_000, "{cost}");
    assert_eq!(
        expect_trap(&skill, "spin", json!({})).await,
        TrapKind::OutOfFuel
    );
    still_works(&skill).await;
}

#[tokio::test]
async fn repeated_traps_mark_the_skill_unhealthy_until_it_recovers() {
    let skill = load("hostile", limited(10_000, 64)).await;
    assert!(skill.health().healthy);
    for _ in 0..UNHEALTHY_AFTER_TRAPS {
        expect_trap(&skill, "panic", json!({})).await;
    }
    let health = skill.health();
    assert!(!health.healthy);
    assert_eq!(health.consecutive_traps, UNHEALTHY_AFTER_TRAPS);
    assert!(health.last_error.unwrap().contains("panicked"));
    still_works(&skill).await;
    let health = skill.health();
    assert!(health.healthy);
    assert_eq!(health.total_traps, u64::from(UNHEALTHY_AFTER_TRAPS));
    assert_eq!(health.calls, u64::from(UNHEALTHY_AFTER_TRAPS) + 1);
}

#[tokio::test]
async fn fresh_instance_per_call_by_default() {
    let skill = load("hostile", SkillSettings::default()).await;
    for _ in 0..3 {
        assert_eq!(ok(&skill, "counter", json!({})).await["calls"], 1);
    }
}

#[tokio::test]
async fn warm_instances_are_reused_only_within_an_isolation_key() {
    let skill = load(
        "hostile",
        SkillSettings {
            warm: true,
            ..limited(10_000, 64)
        },
    )
    .await;
    let tenant = |k: &str| CallContext {
        isolation_key: k.into(),
        capabilities: None,
    };
    let count = |k: &'static str| {
        let skill = skill.clone();
        async move {
            skill
                .call("counter", &json!({}), &tenant(k))
                .await
                .unwrap()
                .value["calls"]
                .as_u64()
                .unwrap()
        }
    };
    assert_eq!(count("a").await, 1);
    assert_eq!(count("a").await, 2);
    assert_eq!(
        count("b").await,
        1,
        "another tenant never gets tenant a's instance"
    );
    assert_eq!(count("a").await, 3);
    // A trap discards the instance: the next call starts fresh.
    assert!(matches!(
        skill.call("panic", &json!({}), &tenant("a")).await,
        Err(CallError::Trap(_))
    ));
    assert_eq!(count("a").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_skill_queues_then_refuses_beyond_the_queue() {
    let settings = SkillSettings {
        limits: SkillLimits {
            max_concurrency: 1,
            max_queue: 1,
            ..SkillLimits::default()
        },
        ..SkillSettings::default()
    };
    let skill = load("hostile", settings).await;
    let first = tokio::spawn({
        let s = skill.clone();
        async move { call(&s, "sleep", json!({"ms": 400})).await }
    });
    wait_until("first call running", || skill.load().0 == 1).await;
    let second = tokio::spawn({
        let s = skill.clone();
        async move { call(&s, "ok", json!({})).await }
    });
    wait_until("second call queued", || skill.load().1 == 1).await;
    // The queue is full: a third call is refused at once instead of piling up.
    assert!(matches!(
        call(&skill, "ok", json!({})).await,
        Err(CallError::Busy)
    ));
    // Backpressure, not failure: the queued call completes once the slot frees.
    assert!(first.await.unwrap().is_ok());
    assert_eq!(second.await.unwrap().unwrap().value, json!({"ok": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_skill_does_not_starve_other_calls() {
    let hostile = load("hostile", limited(3_000, 64)).await;
    let text = load("text", SkillSettings::default()).await;
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            let s = hostile.clone();
            tokio::spawn(async move { call(&s, "spin", json!({})).await })
        })
        .collect();
    wait_until("spinners running", || hostile.load().0 == 4).await;
    // With more spinning calls than worker threads, other calls still get through
    // because long calls yield every epoch tick.
    for _ in 0..5 {
        ok(&text, "stats", json!({"text": "still responsive"})).await;
    }
    assert_eq!(
        hostile.load().0,
        4,
        "the spinners were still running during the calls"
    );
    for s in spinners {
        assert!(matches!(
            s.await.unwrap(),
            Err(CallError::Trap(TrapKind::Deadline))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_instance_pool_queues_instead_of_failing() {
    let rt = Runtime::new(RuntimeConfig {
        pool_instances: 2,
        cache_dir: Some(crate::support::cache_dir()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let skill = rt
        .load("hostile", &wasm("hostile"), SkillSettings::default())
        .await
        .unwrap();
    let sleepers: Vec<_> = (0..2)
        .map(|_| {
            let s = skill.clone();
            tokio::spawn(async move { call(&s, "sleep", json!({"ms": 300})).await })
        })
        .collect();
    wait_until("both pool slots taken", || rt.free_slots() == 0).await;
    // The pool has no free instance: this call waits for one rather than failing.
    let third = call(&skill, "ok", json!({})).await;
    assert_eq!(third.unwrap().value, json!({"ok": true}));
    for s in sleepers {
        assert!(s.await.unwrap().is_ok());
    }
    assert!(skill.health().healthy);
}
