//! The `warden` command: the CLI (`cli`), `warden up` (`up`), the operator CLI over the
//! admin API (`adminctl`) and the author tooling (`toolchain`, `scaffold`), over the
//! `warden` library. This file sets up logging and maps the outcome to an exit code.

mod adminctl;
mod cli;
mod scaffold;
mod toolchain;
mod up;

use std::process::ExitCode;

/// mimalloc instead of the system allocator: the request path allocates on one thread and
/// frees on another (records handed to the audit writer, responses to hyper), where glibc's
/// arenas spend a large share of the CPU (measured in `docs/benchmarks.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env(warden::env::LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a terminal: logs captured to files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
