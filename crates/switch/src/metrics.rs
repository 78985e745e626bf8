//! Prometheus metrics; `specs/metrics.md` is their contract. Labels are only of low cardinality (MTI,
//! response code, issuer, link, outcome, reason): never a PAN, STAN, RRN, terminal or merchant id.
//!
//! This file is the registry; the driver's [`Recorder`](crate::recorder::Recorder) turns the journal and
//! the engine's state into transaction metrics, and connections, link connects and decode errors are
//! counted where they happen.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use engine::LinkId;
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
pub(crate) const LOCAL: &str = "local";

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub(crate) requests: IntCounterVec,
    pub(crate) forwarded: IntCounterVec,
    pub(crate) responses: IntCounterVec,
    pub(crate) upstream_seconds: HistogramVec,
    pub(crate) request_seconds: HistogramVec,
    pub(crate) timeouts: IntCounterVec,
    pub(crate) late_answers: IntCounter,
    pub(crate) forwards_withdrawn: IntCounter,
    pub(crate) undeliverable: IntCounter,
    pub(crate) duplicates: IntCounterVec,
    pub(crate) idempotency_entries: IntGauge,
    pub(crate) idempotency_evictions: IntCounter,
    pub(crate) format_errors: IntCounter,
    pub(crate) reversals: IntCounterVec,
    pub(crate) saf_depth: IntGauge,
    pub(crate) saf_oldest: OldestAge,
    pub(crate) advices: IntCounterVec,
    pub(crate) advice_depth: IntGauge,
    pub(crate) advice_oldest: OldestAge,
    pub(crate) settlements: IntCounterVec,
    pub(crate) batch_uploads: IntCounterVec,
    pub(crate) settlement_discrepancies: IntCounter,
    pub(crate) batch_evictions: IntCounter,
    pub(crate) refused_unknowing: IntCounter,
    pub(crate) pleas_taken: IntCounter,
    pub(crate) in_flight: IntGauge,
    pub(crate) link_up: IntGaugeVec,
    pub(crate) link_connect_failures: IntCounterVec,
    pub(crate) probe_failures: IntCounterVec,
    pub(crate) terminal_connections: IntGauge,
    pub(crate) terminal_refused: IntCounter,
    pub(crate) terminal_evicted: IntCounter,
    pub(crate) unanswered: IntCounterVec,
    pub(crate) unmatched: IntCounter,
    pub(crate) terminal_closed: IntCounterVec,
    pub(crate) terminal_throttled: IntCounter,
    pub(crate) terminal_keepalives: IntCounter,
    pub(crate) decode_errors: IntCounterVec,
    journal_sync_seconds: prometheus::Histogram,
    journal_batch_records: prometheus::Histogram,
    journal_bytes: IntCounter,
    journal_failures: IntCounter,
    lease_failures: IntCounter,
    /// Cluster mode: database connections lost and made again, by what each is for.
    reconnections: IntCounterVec,
    /// Cluster mode: synchronous standbys streaming, and pleas waiting (see `database`).
    standbys: IntGauge,
    pleas_waiting: IntGauge,
    pub(crate) in_doubt: IntCounter,
    pub(crate) adopted: IntCounter,
    /// Cluster mode: takeovers this node made. Not labelled by the node taken over: a series that
    /// first appears at 1 shows no increase to an alert, and `cluster status` names the node.
    takeovers: IntCounter,
}

/// Registers `metric` and hands it back (names are fixed in this file, so a failure is a bug here).
/// The age of the oldest entry of a queue, computed when scraped from the instant it was queued.
#[derive(Debug)]
pub(crate) struct OldestAge {
    gauge: Gauge,
    at: Mutex<Option<Instant>>,
}

impl OldestAge {
    fn new(r: &Registry, name: &str, help: &str) -> OldestAge {
        OldestAge {
            gauge: register(r, Gauge::new(name, help).expect("valid metric")),
            at: Mutex::new(None),
        }
    }

    pub(crate) fn set(&self, at: Option<Instant>) {
        *self.at.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    fn publish(&self) {
        let at = *self.at.lock().unwrap_or_else(|e| e.into_inner());
        self.gauge
            .set(at.map_or(0.0, |at| at.elapsed().as_secs_f64()));
    }
}

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
        let saf_oldest = OldestAge::new(
            &r,
            "acquiro_saf_oldest_age_seconds",
            "Age of the oldest reversal not yet acknowledged (0 when none).",
        );
        let advice_oldest = OldestAge::new(
            &r,
            "acquiro_advice_oldest_age_seconds",
            "Age of the oldest advice accepted from a terminal and not yet acknowledged by its issuer (0 when none).",
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
            forwards_withdrawn: counter(
                &r,
                "acquiro_forwards_withdrawn_total",
                "Provisional forwards withdrawn before they left: their key was another node's (cluster mode).",
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
                "Decoded terminal messages refused with RC 30 (unsupported MTI, missing key fields).",
            ),
            unanswered: counters(
                &r,
                "acquiro_terminal_unanswered_total",
                "Terminal messages that get no answer, by why: a response MTI, or an answer the dialect cannot carry.",
                &["reason"],
            ),
            unmatched: counter(
                &r,
                "acquiro_upstream_unmatched_total",
                "Issuer answers that match nothing outstanding (no DE11, or an unknown or long-forgotten STAN); dropped.",
            ),
            reversals: counters(
                &r,
                "acquiro_reversals_total",
                "Reversals by outcome: queued, sent (first attempt), repeated, acknowledged, refused (an answer the issuer's policy retries), expired.",
                &["outcome"],
            ),
            saf_depth: gauge(
                &r,
                "acquiro_saf_depth",
                "Reversals queued and not yet acknowledged or expired.",
            ),
            saf_oldest,
            advices: counters(
                &r,
                "acquiro_advices_total",
                "Terminal advices (0120, 0220) by outcome: queued (accepted, the terminal told 00), sent (first attempt), repeated (0121, 0221), acknowledged, refused (an answer the issuer's policy retries), expired.",
                &["outcome"],
            ),
            advice_depth: gauge(
                &r,
                "acquiro_advice_queue_depth",
                "Advices accepted from terminals and not yet acknowledged by their issuer or expired.",
            ),
            advice_oldest,
            settlements: counters(
                &r,
                "acquiro_settlements_total",
                "Terminal settlements (0500) by outcome: in_balance (the batch closed at once), out_of_balance (RC 95: a batch upload follows), closed_after_upload.",
                &["outcome"],
            ),
            batch_uploads: counters(
                &r,
                "acquiro_batch_uploads_total",
                "Transactions terminals uploaded (0320) after an out-of-balance settlement, by whether the switch's record of the batch has them with that amount.",
                &["matched"],
            ),
            batch_evictions: counter(
                &r,
                "acquiro_batch_evictions_total",
                "Transactions of open batches dropped because the switch's record of them was full (idempotency.max_entries): a terminal that does not settle.",
            ),
            refused_unknowing: counter(
                &r,
                "acquiro_refused_unknowing_total",
                "Cluster mode: requests told RC 91 before the database said whose their key is (unreachable, or too slow); whatever another node holds under that key is then reversed.",
            ),
            pleas_taken: counter(
                &r,
                "acquiro_pleas_taken_total",
                "Cluster mode: reversals another node admitted in terminals' names (see acquiro_refused_unknowing_total) and left in the database when it ended before their outcome was committed, taken on by this node.",
            ),
            settlement_discrepancies: counter(
                &r,
                "acquiro_settlement_discrepancies_total",
                "Discrepancies batches closed with after an upload: items the switch never saw or saw otherwise, and its own items not uploaded.",
            ),
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
            terminal_evicted: counter(
                &r,
                "acquiro_terminal_connections_evicted_total",
                "Idle terminal connections closed to make room for a new one at the listener's cap.",
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
                        "Time of each journal fdatasync (one per batch); in cluster mode, of each commit to PostgreSQL.",
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
                "Journal writes that failed, or the database becoming unavailable (new requests get RC 91 until it is back).",
            ),
            lease_failures: counter(
                &r,
                "acquiro_lease_renewal_failures_total",
                "Cluster mode: lease renewals that failed (the database down or not answering; a connection lost alone and renewed at once on a new one is not counted); /readyz fails until one goes through, and a node that renews none for its lease is taken over.",
            ),
            reconnections: counters(
                &r,
                "acquiro_database_reconnections_total",
                "Cluster mode: database connections lost and made again, by what each is for (commits, lease, upkeep, evidence). One lost alone, with the database answering, fails nothing else: this count is what shows it.",
                &["connection"],
            ),
            standbys: {
                let standbys = gauge(
                    &r,
                    "acquiro_database_synchronous_standbys",
                    "Cluster mode: standbys streaming synchronously from the database's primary, as the node last read them: 0 when none is configured (a lost primary may take its last commits with it) or none streams (every commit waits); -1 when not known (single-node mode, or the node's role lacks pg_monitor).",
                );
                standbys.set(-1);
                standbys
            },
            pleas_waiting: {
                let pleas = gauge(
                    &r,
                    "acquiro_pleas_waiting",
                    "Cluster mode: pleas in the database, as the node last read them: reversals in terminals' names that nodes left as they ended, not settled yet (each is taken on by a live node within a third of a lease, and settled once its outcome is committed); -1 when not known (single-node mode).",
                );
                pleas.set(-1);
                pleas
            },
            in_doubt: counter(
                &r,
                "acquiro_in_doubt_total",
                "Requests found forwarded with no outcome when the switch restarted (each one reversed).",
            ),
            adopted: counter(
                &r,
                "acquiro_cluster_adopted_total",
                "Transactions with work left (a reversal) taken over from a node whose lease lapsed.",
            ),
            takeovers: counter(
                &r,
                "acquiro_cluster_takeovers_total",
                "Cluster mode: takeovers of the work of a node whose lease lapsed, made by this node (acquiro cluster status names the node).",
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

    pub(crate) fn lease_failed(&self) {
        self.lease_failures.inc();
    }

    /// Cluster mode: the node's `connection` (commits, lease, upkeep, evidence) was made again.
    pub(crate) fn reconnected(&self, connection: &str) {
        self.reconnections.with_label_values(&[connection]).inc();
    }

    /// This node took over the work of a node whose lease lapsed.
    pub(crate) fn took_over(&self) {
        self.takeovers.inc();
    }

    /// The database as the node last read it.
    pub(crate) fn database(&self, database: &cluster::DatabaseStatus) {
        use cluster::Standbys::*;
        self.pleas_waiting.set(database.pleas);
        self.standbys.set(match database.standbys() {
            NoneConfigured | NotStreaming => 0,
            Unreadable => -1,
            Streaming(n) => n,
        });
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        self.saf_oldest.publish();
        self.advice_oldest.publish();
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
