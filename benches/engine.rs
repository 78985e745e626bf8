//! The engine's per-request path: a purchase from a terminal goes in and is forwarded, the issuer's
//! approval goes in and the terminal's answer comes out (idempotency, routing, matching, the journal
//! records, the answer built in the terminal's dialect). No sockets and no journal writes: what the
//! engine itself costs per transaction.
//!
//! Baselines measured in the same run:
//! - `codec per transaction`: what the shell does with the same messages around the engine (decode the
//!   request, encode the forward, decode the approval, encode the answer);
//! - the engine with a tracing subscriber at `info` (as `acquiro serve` runs), against none: what the
//!   per-transaction span costs.
//!
//!     cargo bench -p acquiro --bench engine

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use engine::{ConnId, Event};
use iso8583::Message;

#[path = "support/engine.rs"]
#[allow(dead_code)]
mod support;

use support::{Bench, TERMINALS, approve};

/// Times `iters` purchases through a fresh engine, after a warm-up that fills its tables.
fn run(iters: u64) -> Duration {
    let mut bench = Bench::new("");
    for _ in 0..TERMINALS * 10 {
        bench.transaction();
    }
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let (answer, took) = bench.transaction();
        black_box(answer);
        total += took;
    }
    total
}

fn engine(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    group.bench_function("purchase and approval", |b| b.iter_custom(run));
    group.bench_function("purchase and approval, info subscriber", |b| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, || b.iter_custom(run))
    });

    // The baseline: the codec work the shell does around the engine for the same transaction.
    let mut bench = Bench::new("");
    let request = bench.next_request();
    let forward = bench
        .step(Event::Request {
            conn: ConnId(1),
            msg: request.clone(),
        })
        .expect("forwarded");
    let approval = approve(&forward);
    let (answer, _) = bench.transaction();
    let (request_wire, approval_wire) = (request.to_bytes(), approval.to_bytes());
    let mut buf = BytesMut::with_capacity(1024);
    group.bench_function("codec per transaction (baseline)", |b| {
        b.iter(|| {
            let request = Message::decode(request.spec(), request_wire.clone()).expect("decodes");
            buf.clear();
            forward.encode(&mut buf);
            let approval =
                Message::decode(approval.spec(), approval_wire.clone()).expect("decodes");
            buf.clear();
            answer.encode(&mut buf);
            black_box((request, approval, buf.len()))
        })
    });
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
