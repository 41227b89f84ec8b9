//! Transports: the only place that knows wire formats. Streamable HTTP (`http`: the
//! routes and the `/mcp` admission layer; `jsonrpc`: the JSON-RPC guard; `mcp`: the rmcp
//! handler; `direct`: a plain stateless `tools/call` without rmcp's per-request service;
//! `slot`: how a request's pending audit record travels between them), the stdio bridge
//! (`stdio`, `warden connect`), `listen` (accepting connections: head deadline, connection
//! cap, graceful close), and `wire`, the one module that turns refusals and
//! failures into statuses and JSON-RPC errors. Each is an adapter around the gateway core
//! (`gateway::core`).

mod direct;
pub mod http;
pub mod jsonrpc;
pub mod listen;
pub mod mcp;
pub mod slot;
pub mod stdio;
pub mod wire;
