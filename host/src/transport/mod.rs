//! Transports: the only place that knows wire formats. Today Streamable HTTP (`http`).

pub mod http;
pub mod jsonrpc;
