//! Finding (and, where allowed, installing) a toolchain that builds wasm32-wasip2 skill
//! components, and running the build.
//!
//! Resolution order:
//! 1. the rustup target `wasm32-wasip2`, when installed (the normal developer machine);
//! 2. the offline toolchain from Debian packages (`rustc-web`, `cargo-web`, `rust-web-src`,
//!    `wasi-libc`): Debian's rustc builds `std` for wasm with `-Z build-std`, linked by the
//!    `wasm-component-ld` and `wasm-ld` that ship with the rustup toolchain;
//! 3. otherwise, install (2) with apt-get when running as root and allowed, saying so, or
//!    print the exact commands.
//!
//! Invariants: the child cargo runs with the caller's cargo/rustc environment removed (a
//! `cargo test` parent must not leak its target dir, flags or toolchain into the guest
//! build); the output is checked to be a component before it is reported.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The guest target.
pub const TARGET: &str = "wasm32-wasip2";
/// Debian packages that make up the offline toolchain.
pub const DEBIAN_PACKAGES: &[&str] = &["rustc-web", "cargo-web", "rust-web-src", "wasi-libc"];
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_STD_SRC: &str = "/usr/lib/rustlib/src/rust/library";
const WASI_LIBC: &str = "/usr/lib/wasm32-wasi";

/// Errors of toolchain resolution and builds.
#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    /// No toolchain found and none could be installed.
    #[error("no toolchain can build {TARGET} components here.\n{0}")]
    Missing(String),
    /// Installing the offline toolchain failed.
    #[error("installing the offline toolchain failed: {0}")]
    Install(String),
    /// The skill crate is not usable.
    #[error("{0}")]
    Crate(String),
    /// cargo failed.
    #[error("the build failed (cargo exited with {0}); see the compiler output above")]
    Build(String),
    /// A command could not be run.
    #[error("running {cmd}: {source}")]
    Spawn {
        /// The command.
        cmd: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Whether the resolver may install missing packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// Install with apt-get when running as root.
    IfPossible,
    /// Never install; explain what to run instead.
    Never,
}

/// A toolchain able to build `wasm32-wasip2` components.
#[derive(Debug, Clone)]
pub enum Toolchain {
    /// rustup's own `wasm32-wasip2` target.
    Rustup {
        /// The cargo to run.
        cargo: PathBuf,
    },
    /// Debian's rustc with `-Z build-std`, linked by rustup's `wasm-component-ld`.
    Debian {
        /// Directory holding `wasm-component-ld` (and `gcc-ld/wasm-ld` below it).
        linker_dir: PathBuf,
    },
}

impl Toolchain {
    /// A one-line description for users.
    pub fn describe(&self) -> String {
        match self {
            Self::Rustup { .. } => format!("rustup target {TARGET}"),
            Self::Debian { .. } => format!(
                "offline Debian toolchain ({DEBIAN_RUSTC} with -Z build-std, linker from the rustup toolchain)"
            ),
        }
    }
}

fn run_capture(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The rustup-managed `rustc` (not Debian's), used to locate the bundled linkers.
fn rustup_rustc() -> PathBuf {
    if let Some(home) = std::env::var_os(warden::env::CARGO_HOME)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os(warden::env::HOME).map(|h| PathBuf::from(h).join(".cargo")))
    {
        let candidate = home.join("bin/rustc");
        if candidate.exists() {
            return candidate;
        }
    }
    PathBuf::from("rustc")
}

fn host_rustc_env(cmd: &mut Command) -> &mut Command {
    // Inside `cargo test`, RUSTUP_TOOLCHAIN etc. point at the parent's toolchain; that is
    // what we want for rustup's rustc, but never the parent's flags.
    for key in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
    ] {
        cmd.env_remove(key);
    }
    cmd
}

fn rustup_target_installed(rustc: &Path) -> bool {
    let Some(libdir) = run_capture(host_rustc_env(Command::new(rustc).args([
        "--print",
        "target-libdir",
        "--target",
        TARGET,
    ]))) else {
        return false;
    };
    std::fs::read_dir(&libdir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
        })
        .unwrap_or(false)
}

fn rustup_linker_dir(rustc: &Path) -> Option<PathBuf> {
    let sysroot = run_capture(host_rustc_env(
        Command::new(rustc).args(["--print", "sysroot"]),
    ))?;
    let vv = run_capture(host_rustc_env(Command::new(rustc).arg("-vV")))?;
    let host = vv
        .lines()
        .find_map(|l| l.strip_prefix("host: "))?
        .trim()
        .to_owned();
    let dir = PathBuf::from(sysroot)
        .join("lib/rustlib")
        .join(host)
        .join("bin");
    (dir.join("wasm-component-ld").exists() && dir.join("gcc-ld/wasm-ld").exists()).then_some(dir)
}

fn debian_ready() -> bool {
    Path::new(DEBIAN_RUSTC).exists()
        && Path::new(DEBIAN_CARGO).exists()
        && Path::new(DEBIAN_STD_SRC).exists()
        && Path::new(WASI_LIBC).join("libc.a").exists()
}

fn install_commands() -> String {
    format!(
        "apt-get update\napt-get install -y {}",
        DEBIAN_PACKAGES.join(" ")
    )
}

fn is_root() -> bool {
    run_capture(Command::new("id").arg("-u")).as_deref() == Some("0")
}

/// Finds a toolchain, installing the offline one when allowed and possible.
pub fn resolve(install: Install) -> Result<Toolchain, ToolchainError> {
    let rustc = rustup_rustc();
    if rustup_target_installed(&rustc) {
        let cargo = rustc.with_file_name("cargo");
        let cargo = if cargo.exists() {
            cargo
        } else {
            PathBuf::from("cargo")
        };
        return Ok(Toolchain::Rustup { cargo });
    }
    let Some(linker_dir) = rustup_linker_dir(&rustc) else {
        return Err(ToolchainError::Missing(format!(
            "The rustup toolchain has no wasm-component-ld/wasm-ld. Either run `rustup target add {TARGET}` \
             (needs access to rustup's servers), or install `cargo install wasm-component-ld` and Debian's `lld`."
        )));
    };
    if !debian_ready() {
        let can_install =
            install == Install::IfPossible && Path::new("/usr/bin/apt-get").exists() && is_root();
        if !can_install {
            return Err(ToolchainError::Missing(format!(
                "Either run `rustup target add {TARGET}` (needs access to rustup's servers), or install the \
                 offline toolchain from Debian packages (as root):\n\n{}\n",
                install_commands()
            )));
        }
        eprintln!(
            "warden: installing the offline {TARGET} toolchain from Debian packages ({}) with apt-get...",
            DEBIAN_PACKAGES.join(", ")
        );
        let apt = |args: &[&str]| -> Result<(), ToolchainError> {
            // apt's progress goes to stderr: stdout carries the build summary (`--json`).
            let status = Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(std::io::stderr())
                .status()
                .map_err(|source| ToolchainError::Spawn {
                    cmd: "apt-get".into(),
                    source,
                })?;
            if status.success() {
                Ok(())
            } else {
                Err(ToolchainError::Install(format!(
                    "`apt-get {}` exited with {status}",
                    args.join(" ")
                )))
            }
        };
        apt(&["update", "-qq"])?;
        let mut args = vec!["install", "-y", "-qq"];
        args.extend(DEBIAN_PACKAGES);
        apt(&args)?;
        if !debian_ready() {
            return Err(ToolchainError::Install(
                "packages installed but the toolchain files are still missing".into(),
            ));
        }
    }
    Ok(Toolchain::Debian { linker_dir })
}

/// What `build` produced.
#[derive(Debug, Clone)]
pub struct Built {
    /// Path of the component.
    pub wasm: PathBuf,
}

/// Reads the package name and library target name of a skill crate.
fn crate_names(manifest: &Path) -> Result<(String, String), ToolchainError> {
    let text = std::fs::read_to_string(manifest)
        .map_err(|e| ToolchainError::Crate(format!("cannot read {}: {e}", manifest.display())))?;
    let doc: toml::Table = text
        .parse()
        .map_err(|e| ToolchainError::Crate(format!("{}: {e}", manifest.display())))?;
    let package = doc
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str)
        .ok_or_else(|| ToolchainError::Crate(format!("{}: no [package] name", manifest.display())))?
        .to_owned();
    let lib = doc.get("lib");
    let crate_types_ok = lib
        .and_then(|l| l.get("crate-type"))
        .and_then(toml::Value::as_array)
        .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("cdylib")));
    if !crate_types_ok {
        return Err(ToolchainError::Crate(format!(
            "{}: a skill crate needs `[lib] crate-type = [\"cdylib\"]`",
            manifest.display()
        )));
    }
    let lib_name = lib
        .and_then(|l| l.get("name"))
        .and_then(toml::Value::as_str)
        .unwrap_or(&package)
        .replace('-', "_");
    Ok((package, lib_name))
}

/// `--remap-path-prefix` rules for the paths a build compiles into the component: the
/// source tree ([`source_root`]), the target directory (generated sources) and cargo's home
/// (the registry sources).
fn remap_flags(crate_dir: &Path, target_dir: &Path) -> Vec<String> {
    // Lexically absolute, not canonical: a reproducible build reaches the sources through
    // a fixed link, and that link is the path to remap.
    let crate_dir = std::path::absolute(crate_dir).unwrap_or_else(|_| crate_dir.to_owned());
    let target_dir = std::path::absolute(target_dir).unwrap_or_else(|_| target_dir.to_owned());
    // rustc applies the last matching rule: the more specific ones go last.
    let mut flags = vec![
        format!(
            "--remap-path-prefix={}=/src",
            source_root(&crate_dir).display()
        ),
        format!("--remap-path-prefix={}=/target", target_dir.display()),
    ];
    if let Some(home) = std::env::var_os(warden::env::CARGO_HOME)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os(warden::env::HOME).map(|h| PathBuf::from(h).join(".cargo")))
    {
        let home = home.canonicalize().unwrap_or(home);
        flags.push(format!("--remap-path-prefix={}=/cargo", home.display()));
    }
    flags
}

/// The fixed path builds reach the source tree through (a link to it, in a 0700 directory
/// owned by the user, held under a lock for the build): cargo hashes the absolute path of a
/// path dependency outside the crate's workspace (such as the SDK) into every symbol, which
/// reorders the output, so only a fixed path gives the same bytes wherever the sources are.
/// The compiler flags stay the same for every crate, so builds sharing a target directory
/// share its compiled dependencies too.
pub const REPRODUCIBLE_LINK: &str = "/tmp/warden-reproducible/src";

/// Builds the skill crate at `crate_dir` in release mode into `target_dir`, through
/// [`REPRODUCIBLE_LINK`] when it can be used (Linux, the user's own directory), else where
/// the crate is, saying so.
pub fn build(
    toolchain: &Toolchain,
    crate_dir: &Path,
    target_dir: &Path,
) -> Result<Built, ToolchainError> {
    match fixed_path(crate_dir) {
        Ok((lock, path)) => {
            let built = build_at(toolchain, &path, target_dir);
            drop(lock);
            built
        }
        Err(why) => {
            eprintln!(
                "warning: building {} where it is, not through {REPRODUCIBLE_LINK} ({why}); the component's bytes may depend on where its sources are",
                crate_dir.display()
            );
            build_at(toolchain, crate_dir, target_dir)
        }
    }
}

/// Points [`REPRODUCIBLE_LINK`] at the repository holding `crate_dir` and returns the
/// held lock and the crate's path through the link.
#[cfg(target_os = "linux")]
fn fixed_path(crate_dir: &Path) -> Result<(std::fs::File, PathBuf), String> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    let crate_dir = std::path::absolute(crate_dir).map_err(|e| e.to_string())?;
    let root = source_root(&crate_dir);
    let rel = crate_dir.strip_prefix(&root).unwrap_or(Path::new(""));
    let link = Path::new(REPRODUCIBLE_LINK);
    let dir = link.parent().unwrap_or(Path::new("/tmp"));
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    }
    // Another user's directory (or a link planted in its place) could point the build at
    // other sources: use only our own private directory.
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir()
        || meta.uid() != rustix::process::geteuid().as_raw()
        || meta.mode() & 0o077 != 0
    {
        return Err(format!(
            "{} is not a private directory of this user",
            dir.display()
        ));
    }
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .map_err(|e| format!("the build lock: {e}"))?;
    lock.lock().map_err(|e| format!("the build lock: {e}"))?;
    match std::fs::remove_file(link) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{REPRODUCIBLE_LINK}: {e}")),
    }
    std::os::unix::fs::symlink(&root, link).map_err(|e| format!("{REPRODUCIBLE_LINK}: {e}"))?;
    Ok((lock, link.join(rel)))
}

#[cfg(not(target_os = "linux"))]
fn fixed_path(_crate_dir: &Path) -> Result<(std::fs::File, PathBuf), String> {
    Err("supported on Linux only".into())
}

/// The repository holding `crate_dir` (the nearest ancestor with `.git`, so that path
/// dependencies such as the SDK are inside it too), or else the crate itself.
fn source_root(crate_dir: &Path) -> PathBuf {
    crate_dir
        .ancestors()
        .find(|d| d.join(".git").exists())
        .unwrap_or(crate_dir)
        .to_owned()
}

fn build_at(
    toolchain: &Toolchain,
    crate_dir: &Path,
    target_dir: &Path,
) -> Result<Built, ToolchainError> {
    let manifest = crate_dir.join("Cargo.toml");
    let (_package, lib_name) = crate_names(&manifest)?;
    let mut cmd = match toolchain {
        Toolchain::Rustup { cargo } => Command::new(cargo),
        Toolchain::Debian { .. } => Command::new(DEBIAN_CARGO),
    };
    // Start from a clean cargo environment: nothing of a parent cargo/rustc may leak in.
    let inherited: Vec<OsString> = std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| {
            let k = k.to_string_lossy();
            (k.starts_with("CARGO_") && k != "CARGO_HOME")
                || k.starts_with("RUSTC")
                || k.starts_with("RUSTDOC")
                || k == "RUSTFLAGS"
                || k == "CARGO"
                || k == "RUSTUP_TOOLCHAIN"
                || k.starts_with("DEP_")
        })
        .collect();
    for k in inherited {
        cmd.env_remove(k);
    }
    cmd.arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", target_dir)
        .env("CARGO_TERM_COLOR", "never");
    // Reproducible output: the paths compiled into the component (panic locations) name
    // the source tree and cargo's registry by fixed prefixes, not by where they happen to
    // be on this machine.
    let mut rustflags = remap_flags(crate_dir, target_dir);
    if let Toolchain::Debian { linker_dir } = toolchain {
        rustflags.push(format!("-L{WASI_LIBC}"));
        let path = std::env::var_os(warden::env::PATH).unwrap_or_default();
        let mut paths = vec![linker_dir.join("gcc-ld")];
        paths.extend(std::env::split_paths(&path));
        let path = std::env::join_paths(paths).map_err(|e| ToolchainError::Crate(e.to_string()))?;
        cmd.args(["-Z", "build-std=std,panic_abort"])
            .env("RUSTC", DEBIAN_RUSTC)
            .env("RUSTC_BOOTSTRAP", "1")
            .env("PATH", path)
            .env(
                "CARGO_TARGET_WASM32_WASIP2_LINKER",
                linker_dir.join("wasm-component-ld"),
            );
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags.join("\u{1f}"));
    let status = cmd.status().map_err(|source| ToolchainError::Spawn {
        cmd: format!("{cmd:?}"),
        source,
    })?;
    if !status.success() {
        return Err(ToolchainError::Build(status.to_string()));
    }
    let wasm = target_dir
        .join(TARGET)
        .join("release")
        .join(format!("{lib_name}.wasm"));
    if !wasm.exists() {
        return Err(ToolchainError::Crate(format!(
            "cargo succeeded but {} is missing",
            wasm.display()
        )));
    }
    Ok(Built { wasm })
}
