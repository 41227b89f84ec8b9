//! Gateway load benchmark: `tools/call` over Streamable HTTP (protocol 2026-07-28, stateless
//! JSON) against the running `warden up` binary on loopback, side by side in the same run with
//! a minimal rmcp Streamable HTTP server calling a native echo tool (the MCP-stack baseline),
//! and with the bare in-process runtime call.
//!
//! A second `warden up` with `--unsafe-no-audit` gives the cost of the durable audit trail
//! (policy on in both).
//!
//! Run: `cargo bench -p warden --bench gateway`. Prints calls/s for 1, 16, 64 and 128
//! keep-alive connections (medians of interleaved rounds), 1-connection p50/p99, and the
//! ratios recorded in `docs/benchmarks.md`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::json;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const RUN: Duration = Duration::from_secs(3);
const WARMUP: Duration = Duration::from_millis(500);
/// Closed-loop connection counts. A durable acknowledgement adds a sync's latency to every
/// call, so more calls must be in flight to keep both cores busy (Little's law): 64 and 128
/// show the throughput the machine sustains, 1 and 16 the latency-bound regime.
const LEVELS: [usize; 4] = [1, 16, 64, 128];
/// Interleaved rounds per target and level.
const ROUNDS: usize = 5;

/// The MCP-stack baseline: one native tool that echoes its text.
#[derive(Clone)]
struct Echo;

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("echo", "1"))
    }

    async fn list_tools(
        &self,
        _r: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = json!({"type": "object", "properties": {"text": {"type": "string"}}});
        let schema = schema.as_object().cloned().unwrap();
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "echo",
            "Echo text.",
            Arc::new(schema),
        )]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let text = request
            .arguments
            .and_then(|a| a.get("text").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_default();
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }
}

async fn start_echo() -> String {
    let config = StreamableHttpServerConfig::default().with_json_response(true);
    let service = StreamableHttpService::new(
        || Ok(Echo),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let app = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|t| {
        let _ = t.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/mcp")
}

struct Target {
    url: String,
    token: Option<String>,
    tool: &'static str,
}

fn request(target: &Target, id: u64) -> hyper::Request<Full<Bytes>> {
    let uri: hyper::Uri = target.url.parse().unwrap();
    let body = json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {
            "name": target.tool,
            "arguments": {"text": "the quick brown fox jumps over the lazy dog"},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    });
    let mut req = hyper::Request::post(uri.clone())
        .header("host", uri.authority().unwrap().as_str())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", target.tool);
    if let Some(t) = &target.token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    req.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// Runs `conns` keep-alive connections for `RUN`; returns calls/s and per-call latencies.
async fn load(target: Arc<Target>, conns: usize) -> (f64, Vec<Duration>) {
    let calls = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (target, calls) = (target.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            let uri: hyper::Uri = target.url.parse().unwrap();
            let tcp = tokio::net::TcpStream::connect(uri.authority().unwrap().as_str())
                .await
                .unwrap();
            tcp.set_nodelay(true).unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut latencies = Vec::new();
            let mut id = (c as u64) << 32;
            loop {
                let now = Instant::now();
                if now.duration_since(start) > WARMUP + RUN {
                    break;
                }
                id += 1;
                let resp = send.send_request(request(&target, id)).await.unwrap();
                assert_eq!(resp.status(), 200);
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                assert!(
                    body.windows(8).any(|w| w == b"\"result\""),
                    "{}",
                    String::from_utf8_lossy(&body)
                );
                if now.duration_since(start) > WARMUP {
                    latencies.push(now.elapsed());
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (
        calls.load(Ordering::Relaxed) as f64 / RUN.as_secs_f64(),
        all,
    )
}

fn pct(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort_unstable();
    samples[((samples.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6
}

fn start_warden(
    data_dir: &std::path::Path,
    extra: &[&str],
) -> (std::process::Child, String, String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--rate-limit",
            "0",
            "--data-dir",
        ])
        .arg(data_dir)
        .args(extra)
        .env("WARDEN_WASM_TARGET_DIR", root.join("target/wasm-skills"))
        .env("WARDEN_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut token) = (None, None);
    while token.is_none() {
        let line = lines.next().unwrap().unwrap();
        let line = line.trim();
        if let Some(u) = line.strip_prefix("MCP URL:") {
            url = Some(u.trim().to_owned());
        } else if let Some(t) = line.strip_prefix("token:") {
            token = Some(t.trim().to_owned());
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, url.unwrap(), token.unwrap())
}

/// Load-only mode, for profiling a server started by hand: `WARDEN_BENCH_LOAD=<MCP URL>`
/// with `WARDEN_BENCH_TOKEN` and `WARDEN_BENCH_CONNS` (default 64) runs the closed loop
/// against it on `warden_text__stats` and prints calls/s.
const LOAD_ONLY: &str = "WARDEN_BENCH_LOAD";

fn load_only(url: String) {
    let conns = std::env::var("WARDEN_BENCH_CONNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    let target = Arc::new(Target {
        url,
        token: std::env::var("WARDEN_BENCH_TOKEN").ok(),
        tool: "warden_text__stats",
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (calls, mut lat) = rt.block_on(load(target, conns));
    println!(
        "{conns} conns: {calls:.0} calls/s, p50 {:.0} us, p99 {:.0} us",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
}

/// Runs the echo baseline as its own process (so both servers pay the same cross-process
/// costs as the load generator): the bench re-executes itself with this variable set.
const ECHO_CHILD: &str = "WARDEN_BENCH_ECHO_CHILD";

fn echo_child() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = start_echo().await;
        println!("MCP URL: {url}");
        println!("token: none");
        std::future::pending::<()>().await;
    });
}

fn start_echo_process() -> (std::process::Child, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ECHO_CHILD, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    let url = line
        .trim()
        .strip_prefix("MCP URL:")
        .unwrap()
        .trim()
        .to_owned();
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

fn main() {
    if std::env::var_os(ECHO_CHILD).is_some() {
        return echo_child();
    }
    if let Ok(url) = std::env::var(LOAD_ONLY) {
        return load_only(url);
    }
    let data = tempfile::tempdir().unwrap();
    let (mut warden, url, token) = start_warden(data.path(), &[]);
    let data_off = tempfile::tempdir().unwrap();
    let (mut warden_off, url_off, token_off) =
        start_warden(data_off.path(), &["--unsafe-no-audit"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mut echo, echo_url) = start_echo_process();

    // The bare in-process runtime call on the same skill and tool.
    let runtime_calls = rt.block_on(async {
        // The same component `warden up` serves: the embedded first-party package's.
        let text = warden::first_party::PACKAGES
            .iter()
            .find(|p| p.name == "text")
            .unwrap();
        let wasm = text.verify().unwrap().component;
        let runtime = warden::runtime::Runtime::new(Default::default()).unwrap();
        let skill = runtime
            .load("text", &wasm, Default::default())
            .await
            .unwrap();
        let args = json!({"text": "the quick brown fox jumps over the lazy dog"});
        let ctx = warden::runtime::CallContext::default();
        let start = Instant::now();
        let mut lat = Vec::new();
        while start.elapsed() < WARMUP + RUN {
            let t = Instant::now();
            skill.call("stats", &args, &ctx).await.unwrap();
            if start.elapsed() > WARMUP {
                lat.push(t.elapsed());
            }
        }
        (lat.len() as f64 / RUN.as_secs_f64(), pct(&mut lat, 0.5))
    });

    let targets = [
        (
            "warden up: warden_text__stats (fresh sandbox)",
            Target {
                url,
                token: Some(token),
                tool: "warden_text__stats",
            },
        ),
        (
            "warden up --unsafe-no-audit: same, policy on, audit off",
            Target {
                url: url_off,
                token: Some(token_off),
                tool: "warden_text__stats",
            },
        ),
        (
            "rmcp minimal server (own process): native echo",
            Target {
                url: echo_url,
                token: None,
                tool: "echo",
            },
        ),
    ];
    // Every target at every level, ROUNDS times, interleaved, so the drift of a shared VM
    // (often +-15% between runs) hits all servers alike; medians are reported, and the
    // audit on/off ratio is the median of the per-round ratios.
    let targets: Vec<(&str, Arc<Target>)> = targets
        .into_iter()
        .map(|(name, t)| (name, Arc::new(t)))
        .collect();
    let mut calls = vec![vec![Vec::new(); LEVELS.len()]; targets.len()];
    let mut one_conn = vec![Vec::new(); targets.len()];
    for _ in 0..ROUNDS {
        for (level, &conns) in LEVELS.iter().enumerate() {
            for (t, (_, target)) in targets.iter().enumerate() {
                let (rate, latencies) = rt.block_on(load(target.clone(), conns));
                calls[t][level].push(rate);
                if conns == 1 {
                    one_conn[t].extend(latencies);
                }
            }
        }
    }
    for child in [&mut warden, &mut warden_off, &mut echo] {
        let _ = child.kill();
        let _ = child.wait();
    }

    let levels: Vec<String> = LEVELS
        .iter()
        .map(|c| format!("{c} conns calls/s"))
        .collect();
    println!(
        "\n| server | {} | 1 conn p50 | 1 conn p99 |",
        levels.join(" | ")
    );
    println!("|---|{}---|---|", "---|".repeat(LEVELS.len()));
    for (t, (name, _)) in targets.iter().enumerate() {
        let rates: Vec<String> = calls[t]
            .iter()
            .map(|r| format!("{:.0}", median(r.clone())))
            .collect();
        println!(
            "| {name} | {} | {:.0} us | {:.0} us |",
            rates.join(" | "),
            pct(&mut one_conn[t], 0.5),
            pct(&mut one_conn[t], 0.99)
        );
    }
    println!(
        "| in-process runtime call (no HTTP, no MCP) | {:.0} | | | | {:.1} us | |",
        runtime_calls.0, runtime_calls.1
    );
    let ratio = |a: usize, b: usize, level: usize| {
        median(
            calls[a][level]
                .iter()
                .zip(&calls[b][level])
                .map(|(x, y)| x / y)
                .collect(),
        )
    };
    let ratios = |a: usize, b: usize| -> String {
        LEVELS
            .iter()
            .enumerate()
            .map(|(level, c)| format!("{c} conns {:.2}x", ratio(a, b, level)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "\ndurable audit on/off (median of {ROUNDS} per-round ratios): {}",
        ratios(0, 1)
    );
    println!("warden (audit on)/echo: {}", ratios(0, 2));
    println!(
        "p50 added over the in-process call (1 conn, audit on): {:.0} us",
        pct(&mut one_conn[0], 0.5) - runtime_calls.1
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
