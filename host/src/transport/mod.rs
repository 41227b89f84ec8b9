//! Transports: the only place that knows wire formats: Streamable HTTP (`http`, with the
//! JSON-RPC guard in `jsonrpc`) and the stdio bridge (`stdio`, `warden connect`).

pub mod http;
pub mod jsonrpc;
pub mod stdio;
