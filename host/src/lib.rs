//! warden: the MCP control plane in one binary.
//!
//! This crate is both the `warden` binary and its library. Modules follow the request path
//! (see `ARCHITECTURE.md`): [`transport`] -> [`auth`] (and [`ratelimit`]) -> [`gateway`]
//! ([`policy`] decides, [`audit`] records) -> [`runtime`], with [`identity`] and [`storage`]
//! underneath and [`admin`] beside; [`up`] assembles them into the running gateway. The author tooling
//! ([`toolchain`] to build skill components, [`scaffold`] to start a skill crate) and the
//! [`cli`] complete the binary.

pub mod admin;
pub mod adminctl;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod gateway;
pub mod identity;
pub mod policy;
pub mod ratelimit;
pub mod runtime;
pub mod scaffold;
pub mod storage;
pub mod toolchain;
pub mod transport;
pub mod up;
