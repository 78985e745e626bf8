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
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use engine::{Action, ConnId, Engine, Event, LinkId, Now};
use iso8583::Message;

#[path = "support/message.rs"]
mod message;

/// One issuer with two links, reached by every card; the defaults for everything else.
const CONFIG: &str = r#"
[[listeners]]
address = "127.0.0.1:0"
dialect = "iso87bcd"
[[issuers]]
name = "visa"
hosts = ["127.0.0.1:1"]
connections_per_host = 2
"#;

/// Terminals this many: a key is (terminal, STAN), so the idempotency table fills as in production.
const TERMINALS: u64 = 1000;

struct Bench {
    engine: Engine,
    request: Message,
    now: Now,
    out: Vec<Action>,
    n: u64,
}

impl Bench {
    fn new() -> Bench {
        let settings = switch::File::parse("bench", CONFIG)
            .and_then(|f| f.check())
            .expect("a valid configuration");
        let terminal = settings.listeners[0].spec.clone();
        let mut bench = Bench {
            engine: Engine::new(settings.engine),
            request: message::purchase(terminal),
            now: Now::system(),
            out: Vec::new(),
            n: 0,
        };
        for link in [LinkId(0), LinkId(1)] {
            let sign_on = bench.step(Event::LinkUp(link)).expect("a sign-on");
            bench.step(Event::Response {
                link,
                msg: approve(&sign_on),
            });
        }
        bench
    }

    /// Handles `event`; returns the first message the engine sends or answers.
    fn step(&mut self, event: Event) -> Option<Message> {
        self.out.clear();
        self.engine.handle(self.now, event, &mut self.out);
        self.out.drain(..).find_map(|a| match a {
            Action::Send { msg, .. } | Action::Answer { msg, .. } => Some(msg),
            _ => None,
        })
    }

    /// The next purchase: a new STAN and RRN, from the next terminal.
    fn next_request(&mut self) -> Message {
        self.n += 1;
        let mut m = self.request.clone();
        m.set_number(11, self.n % 999_999 + 1).expect("DE11");
        m.set(37, format!("{:012}", self.n)).expect("DE37");
        m.set(41, format!("T{:07}", self.n % TERMINALS))
            .expect("DE41");
        m
    }

    /// One purchase through the engine: returns the terminal's answer and the time the engine took.
    fn transaction(&mut self) -> (Message, Duration) {
        let request = self.next_request();
        self.now = self.now.after(Duration::from_micros(10));
        let started = Instant::now();
        let forward = self
            .step(Event::Request {
                conn: ConnId(1),
                msg: request,
            })
            .expect("forwarded");
        let took = started.elapsed();
        // The issuer's work, not timed.
        let approval = approve(&forward);
        let started = Instant::now();
        let answer = self
            .step(Event::Response {
                link: LinkId(0),
                msg: approval,
            })
            .expect("answered");
        (answer, took + started.elapsed())
    }
}

/// The issuer's approval of `request`.
fn approve(request: &Message) -> Message {
    let mut a = request
        .response(&[2, 3, 4, 7, 11, 32, 37, 41, 42, 49, 70])
        .expect("an answer");
    a.set(39, "00").expect("DE39");
    if request.mti().class() != 8 {
        a.set(38, "A1B2C3").expect("DE38");
    }
    a
}

/// Times `iters` purchases through a fresh engine, after a warm-up that fills its tables.
fn run(iters: u64) -> Duration {
    let mut bench = Bench::new();
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
    let mut bench = Bench::new();
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
