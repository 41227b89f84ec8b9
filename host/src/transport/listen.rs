//! Accepting HTTP/1.1 connections, for the gateway and the registry alike: each accepted
//! socket is served by hyper with a deadline on request heads and a cap on how many are
//! open at once, and a shutdown lets every open connection finish what it is answering.
//!
//! Invariants: at most [`MAX_CONNECTIONS`] connections are served at once (further clients
//! wait in the kernel's accept backlog); a connection that has not sent a whole request
//! head within [`HEADER_TIMEOUT`] of starting one (or of going idle between requests) is
//! closed; a handler sees the peer's address as `ConnectInfo<SocketAddr>`; after the
//! shutdown token is cancelled nothing new is accepted, each connection closes once its
//! response in progress is done, and [`serve`] returns when the last one has closed.
//!
//! Threat it stops: slowloris. A client that opens sockets and trickles header bytes (or
//! never sends any) would otherwise hold a socket and a task for ever, and enough of them
//! exhaust the process's file descriptors; body reads are bounded by each server's own
//! request timeouts.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a client has to send a request's head (request line and headers).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 4096;

/// Serves `app` on `listener` until `shutdown` is cancelled and every connection has
/// closed (see the module's invariants).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, app, shutdown, HEADER_TIMEOUT, MAX_CONNECTIONS).await
}

async fn serve_with(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    header_timeout: Duration,
    max_connections: usize,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "TCP_NODELAY failed");
        }
        let (app, shutdown) = (app.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(req)
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder.serve_connection(TokioIo::new(tcp), service);
            let mut conn = std::pin::pin!(conn);
            let done = tokio::select! {
                r = conn.as_mut() => r,
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = done {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // Every slot back: every connection has closed.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(header_timeout: Duration, max: usize) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                peer.ip().to_string()
            }),
        );
        let stop = CancellationToken::new();
        tokio::spawn(serve_with(listener, app, stop.clone(), header_timeout, max));
        (addr, stop)
    }

    async fn get(addr: SocketAddr) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_trickled_request_head_is_cut_off_and_others_are_served() {
        let (addr, _stop) = start(Duration::from_millis(300), 64).await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let answer = get(addr).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("127.0.0.1"), "{answer}");
        // The slow client is answered 408 or simply closed, well before it finishes.
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest));
        assert!(read.await.is_ok(), "the trickled connection stayed open");
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_for_a_slot() {
        let (addr, _stop) = start(Duration::from_millis(400), 1).await;
        let holder = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The second client is not served while the first holds the only slot ...
        let second = tokio::spawn(get(addr));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!second.is_finished());
        // ... and is once the first is cut off (it sent nothing).
        let answer = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("served after the slot came back")
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        drop(holder);
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_returns_once_connections_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, app, stop.clone()));
        assert!(get(addr).await.starts_with("HTTP/1.1 200"));
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returned")
            .unwrap()
            .unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
