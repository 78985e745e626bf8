//! Memory per idempotency entry: the process's resident set before and after N purchases (10 million by
//! default), each approved, through one engine whose table keeps them all. Each entry then holds what a
//! retransmit is replayed from and what a later terminal reversal needs.
//!
//!     cargo bench -p acquiro --bench idempotency_memory [-- ENTRIES]

#[path = "support/engine.rs"]
#[allow(dead_code)]
mod support;

use support::Bench;

/// The resident set in bytes, from /proc/self/statm (pages of 4 KiB).
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm's second field");
    pages * 4096
}

fn main() {
    let entries: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let mut bench = Bench::new(&format!("[idempotency]\nmax_entries = {entries}\n"));
    let before = resident();
    let started = std::time::Instant::now();
    for _ in 0..entries {
        bench.transaction();
    }
    let after = resident();
    let held = bench.engine.idempotency_entries() as u64;
    println!(
        "{held} entries in {:.1} s: resident {} MiB -> {} MiB, {} bytes per entry",
        started.elapsed().as_secs_f64(),
        before >> 20,
        after >> 20,
        (after - before) / held.max(1)
    );
}
