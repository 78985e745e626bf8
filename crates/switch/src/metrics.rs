//! Prometheus metrics; `specs/metrics.md` is their contract. Labels are only of low cardinality (MTI,
//! response code, issuer, link, outcome, reason): never a PAN, STAN, RRN, terminal or merchant id.
//!
//! Transaction metrics are a projection of the journal ([`Recorder::observe`]), so they count exactly
//! what the journal says happened; gauges of the engine's state are set after every event
//! ([`Recorder::sync`]) and when a link changes state ([`Recorder::link_up`]); connections, link connects
//! and decode errors are counted where they happen.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use engine::{Engine, LinkId, Record, Stats, Step, TxnId};
use iso8583::{Mti, ResponseCode};
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::config::Link;

/// Latency buckets in seconds; [`Metrics::new`] adds some past the longest issuer timeout.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The label of requests answered by the switch itself (rejected, or a terminal's reversal or 0800).
const LOCAL: &str = "local";

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    forwarded: IntCounterVec,
    responses: IntCounterVec,
    upstream_seconds: HistogramVec,
    request_seconds: HistogramVec,
    timeouts: IntCounterVec,
    late_answers: IntCounter,
    undeliverable: IntCounter,
    duplicates: IntCounterVec,
    idempotency_entries: IntGauge,
    idempotency_evictions: IntCounter,
    format_errors: IntCounter,
    reversals: IntCounterVec,
    saf_depth: IntGauge,
    saf_oldest_age: Gauge,
    /// When the oldest pending reversal was queued: its age is computed when scraped.
    saf_oldest: Mutex<Option<Instant>>,
    in_flight: IntGauge,
    link_up: IntGaugeVec,
    pub(crate) link_connect_failures: IntCounterVec,
    probe_failures: IntCounterVec,
    pub(crate) terminal_connections: IntGauge,
    pub(crate) terminal_refused: IntCounter,
    pub(crate) terminal_closed: IntCounterVec,
    pub(crate) terminal_throttled: IntCounter,
    pub(crate) terminal_keepalives: IntCounter,
    pub(crate) decode_errors: IntCounterVec,
    journal_sync_seconds: prometheus::Histogram,
    journal_batch_records: prometheus::Histogram,
    journal_bytes: IntCounter,
    journal_failures: IntCounter,
    in_doubt: IntCounter,
}

/// Registers `metric` and hands it back (names are fixed in this file, so a failure is a bug here).
fn register<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, metric: M) -> M {
    r.register(Box::new(metric.clone())).expect("unique metric");
    metric
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    register(r, IntCounter::new(name, help).expect("valid metric"))
}

fn counters(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(r, IntGauge::new(name, help).expect("valid metric"))
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(
        r,
        HistogramVec::new(opts, &["issuer"]).expect("valid metric"),
    )
}

impl Metrics {
    /// Every metric registered; latency buckets reach twice past `longest_timeout`.
    pub fn new(longest_timeout: Duration) -> Metrics {
        let r = Registry::new();
        let mut buckets = BUCKETS.to_vec();
        for extra in [1.5, 2.0] {
            let b = longest_timeout.as_secs_f64() * extra;
            if b > *buckets.last().expect("buckets") {
                buckets.push(b);
            }
        }
        let build = register(
            &r,
            IntGaugeVec::new(
                Opts::new("acquiro_build_info", "Always 1; the version is a label."),
                &["version"],
            )
            .expect("valid metric"),
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let saf_oldest_age = register(
            &r,
            Gauge::new(
                "acquiro_saf_oldest_age_seconds",
                "Age of the oldest reversal not yet acknowledged (0 when none).",
            )
            .expect("valid metric"),
        );
        let link_up = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "acquiro_link_up",
                    "1 while the link is connected and signed on.",
                ),
                &["issuer", "link", "host"],
            )
            .expect("valid metric"),
        );
        Metrics {
            requests: counters(
                &r,
                "acquiro_requests_total",
                "Terminal requests that opened a transaction.",
                &["mti"],
            ),
            forwarded: counters(
                &r,
                "acquiro_forwarded_total",
                "Requests forwarded to an issuer.",
                &["mti", "issuer"],
            ),
            responses: counters(
                &r,
                "acquiro_responses_total",
                "Answers told to terminals, by the request's MTI, the response code and who decided it (an issuer, or local).",
                &["mti", "rc", "issuer"],
            ),
            upstream_seconds: histogram(
                &r,
                "acquiro_upstream_latency_seconds",
                "From forwarding a request to the issuer's answer in time.",
                &buckets,
            ),
            request_seconds: histogram(
                &r,
                "acquiro_request_duration_seconds",
                "From a forwarded request's arrival to its answer to the terminal (timeouts included).",
                &buckets,
            ),
            timeouts: counters(
                &r,
                "acquiro_timeouts_total",
                "Requests the issuer did not answer in time (each one reversed).",
                &["issuer"],
            ),
            late_answers: counter(
                &r,
                "acquiro_late_answers_total",
                "Issuer answers that came after the timeout.",
            ),
            undeliverable: counter(
                &r,
                "acquiro_undeliverable_total",
                "Answers with no terminal connection left to tell.",
            ),
            duplicates: counters(
                &r,
                "acquiro_duplicates_total",
                "Retransmits and repeats: joined the request in flight, replayed the stored answer, or rejected (RC 94).",
                &["outcome"],
            ),
            idempotency_entries: gauge(
                &r,
                "acquiro_idempotency_entries",
                "Keys in the idempotency window.",
            ),
            idempotency_evictions: counter(
                &r,
                "acquiro_idempotency_evictions_total",
                "Keys evicted before their window ended because the table was full.",
            ),
            format_errors: counter(
                &r,
                "acquiro_format_errors_total",
                "Decoded terminal messages refused (RC 30: unsupported MTI, missing key fields) or ignored (a response MTI).",
            ),
            reversals: counters(
                &r,
                "acquiro_reversals_total",
                "Reversals by outcome: queued, sent (first attempt), repeated, acknowledged, expired.",
                &["outcome"],
            ),
            saf_depth: gauge(
                &r,
                "acquiro_saf_depth",
                "Reversals queued and not yet acknowledged or expired.",
            ),
            saf_oldest_age,
            saf_oldest: Mutex::new(None),
            in_flight: gauge(
                &r,
                "acquiro_in_flight",
                "Requests forwarded and awaiting the issuer.",
            ),
            link_up,
            link_connect_failures: counters(
                &r,
                "acquiro_link_connect_failures_total",
                "Failed connection attempts to issuer hosts.",
                &["issuer", "link", "host"],
            ),
            probe_failures: counters(
                &r,
                "acquiro_link_probe_failures_total",
                "Sign-ons and echoes refused or unanswered (the link is closed and reconnects).",
                &["probe"],
            ),
            terminal_connections: gauge(
                &r,
                "acquiro_terminal_connections",
                "Terminal connections open.",
            ),
            terminal_refused: counter(
                &r,
                "acquiro_terminal_connections_refused_total",
                "Terminal connections closed at once because the listener was at its cap.",
            ),
            terminal_closed: counters(
                &r,
                "acquiro_terminal_closed_total",
                "Terminal connections ended, by why (the terminal closed, idle, read timeout, framing error...).",
                &["reason"],
            ),
            terminal_throttled: counter(
                &r,
                "acquiro_terminal_throttled_total",
                "Times a terminal connection reached its in-flight cap and was not read until an answer went out.",
            ),
            terminal_keepalives: counter(
                &r,
                "acquiro_terminal_keepalives_total",
                "Zero-length frames (keep-alives) received from terminals and ignored.",
            ),
            decode_errors: counters(
                &r,
                "acquiro_decode_errors_total",
                "Unreadable frames and messages, by who sent them and why.",
                &["source", "reason"],
            ),
            journal_sync_seconds: register(
                &r,
                prometheus::Histogram::with_opts(
                    HistogramOpts::new(
                        "acquiro_journal_sync_seconds",
                        "Time of each journal fdatasync (one per batch).",
                    )
                    .buckets(vec![
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 1.0,
                    ]),
                )
                .expect("valid metric"),
            ),
            journal_batch_records: register(
                &r,
                prometheus::Histogram::with_opts(
                    HistogramOpts::new(
                        "acquiro_journal_batch_records",
                        "Records made durable together by one write (and one sync).",
                    )
                    .buckets(prometheus::exponential_buckets(1.0, 4.0, 9).expect("buckets")),
                )
                .expect("valid metric"),
            ),
            journal_bytes: counter(
                &r,
                "acquiro_journal_bytes_total",
                "Bytes written to the journal.",
            ),
            journal_failures: counter(
                &r,
                "acquiro_journal_write_failures_total",
                "Journal writes that failed (the journal stops: nothing is forwarded or answered after).",
            ),
            in_doubt: counter(
                &r,
                "acquiro_in_doubt_total",
                "Requests found forwarded with no outcome when the switch restarted (each one reversed).",
            ),
            registry: r,
        }
    }

    /// A journal batch made durable.
    pub(crate) fn journal_batch(&self, batch: &tranlog::Batch) {
        if let Some(sync) = batch.sync {
            self.journal_sync_seconds.observe(sync.as_secs_f64());
        }
        self.journal_batch_records.observe(batch.records as f64);
        self.journal_bytes.inc_by(batch.bytes as u64);
    }

    pub(crate) fn journal_failed(&self) {
        self.journal_failures.inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let oldest = *self.saf_oldest.lock().unwrap_or_else(|e| e.into_inner());
        self.saf_oldest_age
            .set(oldest.map_or(0.0, |at| at.elapsed().as_secs_f64()));
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding of gathered metrics");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// The sum over every series of the counter or gauge `name` whose labels include `labels` (0 when
    /// none): for summaries and tests that read the metrics in process.
    pub fn total(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let families = self.registry.gather();
        let Some(family) = families.iter().find(|f| f.name() == name) else {
            return 0.0;
        };
        family
            .get_metric()
            .iter()
            .filter(|m| {
                labels.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *k && l.value() == *v)
                })
            })
            .map(|m| m.get_counter().get_value() + m.get_gauge().get_value())
            // Not `sum()`: a float sum of nothing is -0, which prints as "-0".
            .fold(0.0, |a, b| a + b)
    }

    /// The link label values of `link`, for the per-link metrics.
    pub(crate) fn link_labels(id: LinkId, link: &Link) -> [String; 3] {
        [link.issuer.clone(), id.0.to_string(), link.host.clone()]
    }
}

/// A transaction between its arrival and its answer.
#[derive(Debug)]
struct Open {
    mti: Mti,
    received: Instant,
    /// Index into [`Recorder::issuers`] and when the request left, once forwarded.
    forwarded: Option<(usize, Instant)>,
}

/// Turns the driver's journal records and engine state into metrics.
#[derive(Debug)]
pub(crate) struct Recorder {
    metrics: std::sync::Arc<Metrics>,
    issuers: Vec<String>,
    links: Vec<IntGauge>,
    open: HashMap<TxnId, Open>,
    last: Stats,
    /// The oldest pending reversal last published to [`Metrics`].
    oldest_reversal: Option<Instant>,
}

impl Recorder {
    pub(crate) fn new(metrics: std::sync::Arc<Metrics>, links: &[Link]) -> Recorder {
        let mut issuers: Vec<String> = Vec::new();
        for l in links {
            if !issuers.contains(&l.issuer) {
                issuers.push(l.issuer.clone());
            }
        }
        let links = links
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let labels = Metrics::link_labels(LinkId(i as u32), l);
                let gauge = metrics.link_up.with_label_values(&labels);
                gauge.set(0);
                gauge
            })
            .collect();
        Recorder {
            metrics,
            issuers,
            links,
            open: HashMap::new(),
            last: Stats::default(),
            oldest_reversal: None,
        }
    }

    /// Counts one journal record.
    pub(crate) fn observe(&mut self, record: &Record) {
        let m = &self.metrics;
        let now = Instant::now();
        match &record.step {
            Step::Received(r) => {
                m.requests.with_label_values(&[r.mti.as_str()]).inc();
                let open = Open {
                    mti: r.mti,
                    received: now,
                    forwarded: None,
                };
                self.open.insert(record.txn, open);
            }
            Step::Forwarded { issuer, .. } => {
                let Some(index) = self.issuers.iter().position(|i| i == issuer) else {
                    return;
                };
                if let Some(open) = self.open.get_mut(&record.txn) {
                    m.forwarded
                        .with_label_values(&[open.mti.as_str(), issuer.as_str()])
                        .inc();
                    open.forwarded = Some((index, now));
                }
            }
            Step::Answered { .. } => {
                if let Some((issuer, at)) = self.forwarded(record.txn) {
                    m.upstream_seconds
                        .with_label_values(&[issuer])
                        .observe(now.duration_since(at).as_secs_f64());
                }
            }
            Step::TimedOut => {
                if let Some((issuer, _)) = self.forwarded(record.txn) {
                    m.timeouts.with_label_values(&[issuer]).inc();
                }
            }
            Step::Told { rc } | Step::Rejected { rc } => self.told(record.txn, *rc, now),
            Step::Undeliverable { .. } => {
                m.undeliverable.inc();
                self.open.remove(&record.txn);
            }
            Step::LateAnswer { .. } => m.late_answers.inc(),
            Step::Joined => m.duplicates.with_label_values(&["joined"]).inc(),
            Step::Replayed { .. } => m.duplicates.with_label_values(&["replayed"]).inc(),
            Step::ReversalQueued => m.reversals.with_label_values(&["queued"]).inc(),
            Step::ReversalSent { attempt, .. } => {
                let outcome = if *attempt == 1 { "sent" } else { "repeated" };
                m.reversals.with_label_values(&[outcome]).inc();
            }
            Step::ReversalAcknowledged { .. } => {
                m.reversals.with_label_values(&["acknowledged"]).inc();
            }
            Step::ReversalExpired { .. } => m.reversals.with_label_values(&["expired"]).inc(),
            Step::InDoubt => m.in_doubt.inc(),
            Step::Disconnected => {}
        }
    }

    fn forwarded(&self, txn: TxnId) -> Option<(&str, Instant)> {
        let (issuer, at) = self.open.get(&txn)?.forwarded?;
        Some((self.issuers[issuer].as_str(), at))
    }

    fn told(&mut self, txn: TxnId, rc: ResponseCode, now: Instant) {
        let m = &self.metrics;
        if rc == ResponseCode::DUPLICATE {
            m.duplicates.with_label_values(&["rejected"]).inc();
        }
        let rc = std::str::from_utf8(&rc.0).unwrap_or("??");
        // A request refused before it had a key (RC 30) was never recorded as received.
        let Some(open) = self.open.remove(&txn) else {
            m.responses.with_label_values(&["unknown", rc, LOCAL]).inc();
            return;
        };
        let issuer = match open.forwarded {
            Some((i, _)) => {
                let issuer = self.issuers[i].as_str();
                m.request_seconds
                    .with_label_values(&[issuer])
                    .observe(now.duration_since(open.received).as_secs_f64());
                issuer
            }
            None => LOCAL,
        };
        m.responses
            .with_label_values(&[open.mti.as_str(), rc, issuer])
            .inc();
    }

    /// Records that link number `index` went up or down.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn link_up(&self, index: usize, up: bool) {
        self.links[index].set(i64::from(up));
    }

    /// Sets the gauges of the engine's state and counts what its totals say happened since last time.
    pub(crate) fn sync(&mut self, engine: &mut Engine) {
        let m = &self.metrics;
        m.in_flight.set(engine.in_flight() as i64);
        m.saf_depth.set(engine.pending_reversals() as i64);
        m.idempotency_entries
            .set(engine.idempotency_entries() as i64);
        let oldest = engine.oldest_reversal();
        // The lock is shared with scrapes: take it only when the answer changes.
        if oldest != self.oldest_reversal {
            self.oldest_reversal = oldest;
            *m.saf_oldest.lock().unwrap_or_else(|e| e.into_inner()) = oldest;
        }
        let (stats, last) = (engine.stats(), &self.last);
        m.idempotency_evictions
            .inc_by(stats.idempotency_evictions - last.idempotency_evictions);
        m.format_errors
            .inc_by(stats.format_errors - last.format_errors);
        for (probe, now, before) in [
            ("sign_on", stats.sign_on_failures, last.sign_on_failures),
            ("echo", stats.echo_failures, last.echo_failures),
        ] {
            if now > before {
                m.probe_failures
                    .with_label_values(&[probe])
                    .inc_by(now - before);
            }
        }
        self.last = stats.clone();
    }
}
