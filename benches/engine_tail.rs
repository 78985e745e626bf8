//! The engine's slowest transactions as its tables fill: N purchases (1 million by default), each
//! approved, through one engine with the default configuration, each timed alone. A table that grows
//! by doubling moves everything it holds at once, and the transaction that triggers it waits for all of
//! it: that shows here as the maximum, and in the switch as a stall of every message behind it.
//!
//!     MIMALLOC_PURGE_DELAY=-1 cargo bench -p acquiro --bench engine_tail [-- PURCHASES]
//!
//! (the allocator setting deploy/ runs the switch with; without it, freeing a large table shows).

#[path = "support/engine.rs"]
#[allow(dead_code)]
mod support;

use std::time::Duration;

use support::Bench;

/// The switch's allocator (see `main.rs`): how a table's memory comes and goes is part of its tail.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let purchases: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut bench = Bench::new("");
    let mut times: Vec<(Duration, u64)> = Vec::with_capacity(purchases as usize);
    for n in 0..purchases {
        times.push((bench.transaction().1, n));
    }
    let mut sorted: Vec<Duration> = times.iter().map(|(t, _)| *t).collect();
    sorted.sort_unstable();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    println!(
        "{purchases} purchases: µs per transaction p50 {:.1}, p99 {:.1}, p99.9 {:.1}, p99.99 {:.1}, max {:.1}",
        at(0.5),
        at(0.99),
        at(0.999),
        at(0.9999),
        at(1.0)
    );
    let over = |ms: u64| {
        let limit = Duration::from_millis(ms);
        times.iter().filter(|(t, _)| *t > limit).count()
    };
    println!("over 1 ms: {}, over 5 ms: {}", over(1), over(5));
    times.sort_unstable_by_key(|&(t, _)| std::cmp::Reverse(t));
    let slowest: Vec<String> = (times.iter().take(8))
        .map(|(t, n)| format!("{:.1} ms at {n}", t.as_secs_f64() * 1e3))
        .collect();
    println!("slowest: {}", slowest.join(", "));
}
