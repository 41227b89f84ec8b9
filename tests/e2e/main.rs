//! End-to-end tests of warden, in one test binary (see `host/Cargo.toml`).
//!
//! The setup builds every guest crate (first-party skills, the example, the hostile and
//! bad-schema test skills) from source with the real `warden skill build`,
//! once per run, into a shared wasm target directory. The tests then drive the host runtime
//! API and the `warden` binary against those components (and `first_party` checks that the
//! packages embedded in the binary hold exactly the first-party components built here).
//! `approvals` drives human approvals through the real CLI and the official TypeScript SDK;
//! `desk` drives the web desk in Debian's Chromium (installed by the setup when missing).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod approvals;
mod bad_input;
mod bad_requests;
mod cli;
mod console;
mod desk;
mod first_party;
mod gateway;
mod hostile;
mod install;
mod packages;
mod policy;
mod registry;
mod skills;
mod support;
mod vault;
