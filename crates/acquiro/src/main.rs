//! acquiro: an acquirer-side ISO 8583 switch.

mod cli;
mod logging;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than glibc's allocator: messages, records and their fields are allocated and freed
/// across threads on every transaction, and glibc's arenas spent 6 % of the workers' time there. Built
/// without transparent huge pages (the `no_thp` feature): it asked the kernel for them on its memory,
/// and the first touch of each 2 MiB page, zeroed (or compacted for) in the fault, stalled the thread
/// that touched it for milliseconds to a quarter of a second while the process grew.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        // The reader of the output went away (`acquiro tranlog show … | head`): the output ends there,
        // quietly, with the code of a tool that SIGPIPE stopped. (The process ignores SIGPIPE, as Rust
        // programs do, so that a switch writing to a closed socket gets an error, not a signal.)
        Err(err) if broken_pipe(&err) => ExitCode::from(141),
        Err(err) => {
            eprintln!("acquiro: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Whether `err` comes of writing to a closed pipe (directly, or through JSON written to it).
fn broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let kind = (cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind))
        .or_else(|| cause.downcast_ref::<serde_json::Error>()?.io_error_kind());
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}
