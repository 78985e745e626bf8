//! An engine with signed-on links and a stream of purchases through it, for the engine benches.

use std::time::{Duration, Instant};

use engine::{Action, ConnId, Engine, Event, LinkId, Now};
use iso8583::Message;

#[path = "message.rs"]
mod message;

/// One issuer with two links, reached by every card; the defaults for everything else.
pub(crate) const CONFIG: &str = r#"
[[listeners]]
address = "127.0.0.1:0"
dialect = "iso87bcd"
[[issuers]]
name = "visa"
hosts = ["127.0.0.1:1"]
connections_per_host = 2
"#;

/// Terminals this many: a key is (terminal, STAN), so the idempotency table fills as in production.
pub(crate) const TERMINALS: u64 = 1000;

pub(crate) struct Bench {
    pub(crate) engine: Engine,
    request: Message,
    now: Now,
    out: Vec<Action>,
    n: u64,
}

impl Bench {
    /// An engine configured by [`CONFIG`] followed by `extra` (TOML).
    pub(crate) fn new(extra: &str) -> Bench {
        let settings = switch::File::parse("bench", &format!("{CONFIG}{extra}"))
            .and_then(|f| f.check())
            .expect("a valid configuration");
        let terminal = settings.listeners[0].spec;
        let mut bench = Bench {
            engine: Engine::new(settings.engine),
            request: message::purchase(terminal),
            now: Now {
                mono: std::time::Instant::now(),
                wall: std::time::SystemTime::now(),
            },
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
    pub(crate) fn step(&mut self, event: Event) -> Option<Message> {
        self.out.clear();
        self.engine.handle(self.now, event, &mut self.out);
        self.out.drain(..).find_map(|a| match a {
            Action::Send { msg, .. } | Action::Answer { msg, .. } => Some(msg),
            _ => None,
        })
    }

    /// The next purchase: a new STAN and RRN, from the next terminal.
    pub(crate) fn next_request(&mut self) -> Message {
        self.n += 1;
        let mut m = self.request.clone();
        m.set_number(11, self.n % 999_999 + 1).expect("DE11");
        m.set(37, format!("{:012}", self.n)).expect("DE37");
        m.set(41, format!("T{:07}", self.n % TERMINALS))
            .expect("DE41");
        m
    }

    /// One purchase through the engine: returns the terminal's answer and the time the engine took.
    pub(crate) fn transaction(&mut self) -> (Message, Duration) {
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
pub(crate) fn approve(request: &Message) -> Message {
    let mut a = request
        .response(&[2, 3, 4, 7, 11, 32, 37, 41, 42, 49, 70])
        .expect("an answer");
    a.set(39, "00").expect("DE39");
    if request.mti().class() != iso8583::Class::NETWORK {
        a.set(38, "A1B2C3").expect("DE38");
    }
    a
}
