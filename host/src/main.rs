//! The `warden` command. All behaviour lives in the library (`warden::cli`); this file only
//! sets up logging and maps the outcome to an exit code.

use std::process::ExitCode;

/// mimalloc instead of the system allocator: the request path allocates on one thread and
/// frees on another (records handed to the audit writer, responses to hyper), where glibc's
/// arenas spend a large share of the CPU (measured in `docs/benchmarks.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match warden::cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
