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
        Err(err) => {
            eprintln!("acquiro: {err:#}");
            ExitCode::from(2)
        }
    }
}
