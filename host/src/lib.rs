//! warden: the MCP control plane in one binary.
//!
//! This crate is both the `warden` binary and its library. Modules follow the request path
//! (see `ARCHITECTURE.md`): today the sandboxed skill [`runtime`], plus the author tooling
//! ([`toolchain`] to build skill components, [`scaffold`] to start a skill crate) and the
//! [`cli`] that ties them together.

pub mod cli;
pub mod runtime;
pub mod scaffold;
pub mod toolchain;
