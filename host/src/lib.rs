//! warden: the MCP control plane in one binary.
//!
//! This crate is the library behind the `warden` binary. Modules follow the request path
//! (see `ARCHITECTURE.md`): [`transport`] (wire formats; adapters around the core) ->
//! [`gateway`] (the transport-neutral core: admission through [`auth`] and [`ratelimit`],
//! [`policy`] decides, [`audit`] records) -> [`runtime`] (whose calls reach secrets and the network only through [`vault`] and its
//! grants), with [`identity`], [`storage`] and
//! [`datadir`] underneath and [`admin`] beside. [`env`] declares every environment variable.
//! The binary's own modules (the CLI, `warden up`, the operator CLI, author tooling) live
//! in the binary crate, not in this API.

pub mod admin;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod datadir;
pub mod desk;
pub mod env;
pub mod first_party;
pub mod gateway;
pub mod identity;
pub mod install;
pub mod packages;
pub mod policy;
pub mod ratelimit;
pub mod runtime;
pub mod storage;
pub mod transport;
pub mod vault;
pub mod webhooks;
