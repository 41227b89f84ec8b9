//! Every environment variable warden reads, declared once. The CLI's options name these
//! constants (`#[arg(env = ...)]`), so a variable's name lives only here.

/// Log filter (`tracing` env-filter syntax; default `warn`).
pub const LOG: &str = "WARDEN_LOG";
/// The data directory.
pub const DATA_DIR: &str = "WARDEN_DATA_DIR";
/// The address `warden up` listens on.
pub const LISTEN: &str = "WARDEN_LISTEN";
/// Default calls per second per agent.
pub const RATE_LIMIT: &str = "WARDEN_RATE_LIMIT";
/// The URL clients reach the gateway at.
pub const PUBLIC_URL: &str = "WARDEN_PUBLIC_URL";
/// The gateway's MCP URL, for `warden connect`.
pub const URL: &str = "WARDEN_URL";
/// The agent token, for `warden connect`.
pub const TOKEN: &str = "WARDEN_TOKEN";
/// The admin API URL, for the operator CLI.
pub const ADMIN_URL: &str = "WARDEN_ADMIN_URL";
/// The admin token, for the operator CLI.
pub const ADMIN_TOKEN: &str = "WARDEN_ADMIN_TOKEN";
/// The registry's base URL (`warden skill publish`, `warden registry ...`).
pub const REGISTRY_URL: &str = "WARDEN_REGISTRY_URL";
/// A registry token (`wrg_...`).
pub const REGISTRY_TOKEN: &str = "WARDEN_REGISTRY_TOKEN";
/// The registry's data directory (`warden registry serve`; the CLI reads its `endpoint`
/// and `admin.token` files when no URL or token is given).
pub const REGISTRY_DIR: &str = "WARDEN_REGISTRY_DIR";
/// A warden-sdk checkout for `warden skill new`.
pub const SDK_PATH: &str = "WARDEN_SDK_PATH";
/// Cargo target directory of wasm builds.
pub const WASM_TARGET_DIR: &str = "WARDEN_WASM_TARGET_DIR";
/// The vault's root key (base64 of 32 bytes), for a vault created in `env` mode.
pub const VAULT_KEY: &str = "WARDEN_VAULT_KEY";
/// The vault's root key file (`warden up --vault-key-file`).
pub const VAULT_KEY_FILE: &str = "WARDEN_VAULT_KEY_FILE";
/// Debug builds only: comma-separated fault injection points (`audit-commit`: every audit
/// commit fails; `audit-change`: the transaction of every admin change fails;
/// `vault-rotate:N`: the process aborts after N re-wrap batches of a key rotation).
pub const FAILPOINTS: &str = "WARDEN_FAILPOINTS";

/// XDG base directory of user data.
pub const XDG_DATA_HOME: &str = "XDG_DATA_HOME";
/// The user's home directory.
pub const HOME: &str = "HOME";
/// Cargo's home (where rustup's toolchains and cargo's binaries live).
pub const CARGO_HOME: &str = "CARGO_HOME";
/// The executable search path.
pub const PATH: &str = "PATH";
