//! The `warden` command: the CLI (`cli`), `warden up` (`up`), the operator CLI over the
//! admin API (`adminctl`) and the author tooling (`toolchain`, `scaffold`), over the
//! `warden` library. This file chooses the allocator and its memory behaviour, sets up
//! logging and maps the outcome to an exit code.

mod adminctl;
mod apiclient;
mod approvalctl;
mod cli;
mod desktui;
mod packaging;
mod registryctl;
mod scaffold;
mod toolchain;
mod up;

use std::process::ExitCode;

/// mimalloc instead of the system allocator: the request path allocates on one thread and
/// frees on another (records handed to the audit writer, responses to hyper), where glibc's
/// arenas spend a large share of the CPU (measured in `docs/benchmarks.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// No transparent huge pages for this process (Linux). mimalloc asks for them, so a page it
/// reuses after giving it back to the kernel faults in as 2 MiB to be zeroed, and compacted
/// first when memory is fragmented: on the audit writer's thread, which is on every call's
/// path, that cost the gateway about a tenth of its throughput (`docs/benchmarks.md`).
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(error = %e, "could not turn off transparent huge pages");
    }
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env(warden::env::LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a terminal: logs captured to files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    no_huge_pages();
    // rustls is built with two crypto providers (ring, which warden's own TLS uses, and
    // aws-lc-rs, which the Sigstore verifier's HTTP client brings): name the default so no
    // configuration built without an explicit provider can fail to choose.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
