//! The final report of a load run: throughput, latency percentiles, response codes, outcomes.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::terminals::{Run, Told};

impl Run {
    /// Transactions per second over the run.
    pub fn throughput(&self) -> f64 {
        self.outcomes.len() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// The latency at `quantile` (0..=1) in milliseconds.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// How many outcomes were `told`.
    pub fn told(&self, told: Told) -> usize {
        self.outcomes.iter().filter(|o| o.told == told).count()
    }

    /// A few lines for people.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "throughput   {:.0} transactions/s ({} in {:.1} s)",
            self.throughput(),
            self.outcomes.len(),
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "latency      p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            self.latency_ms(0.5),
            self.latency_ms(0.9),
            self.latency_ms(0.99),
            self.latency_ms(0.999),
            self.latency.max() as f64 / 1000.0
        );
        let mut rcs: BTreeMap<&str, usize> = BTreeMap::new();
        for o in &self.outcomes {
            *rcs.entry(o.rc.as_deref().unwrap_or("none")).or_default() += 1;
        }
        let rcs: Vec<String> = rcs.iter().map(|(rc, n)| format!("{rc}: {n}")).collect();
        let _ = writeln!(s, "answers      {}", rcs.join("  "));
        let retransmits: u32 = self.outcomes.iter().map(|o| o.retransmits).sum();
        let _ = writeln!(
            s,
            "terminals    approved {}  declined {}  reversed {}  unresolved {}  retransmits {}",
            self.told(Told::Approved),
            self.told(Told::Declined),
            self.told(Told::Reversed),
            self.told(Told::Unresolved),
            retransmits
        );
        s
    }
}
