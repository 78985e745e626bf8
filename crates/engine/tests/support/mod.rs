//! A harness that drives the engine with simulated time and picks actions apart.

// The harness plays the shell: it reads the clock once, to start simulated time from.
#![allow(dead_code, unreachable_pub, clippy::disallowed_methods)]

pub mod cluster;

use std::time::Duration;

use engine::{
    Action, Config, ConnId, Engine, Event, Idempotency, Issuer, LinkId, Now, Policy, Record,
    Recovered, Recovery, Reversal, Step, TimerId,
};
use iso8583::{Message, Mti, ResponseCode, Spec};

pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Longer than any test's stretch of time but the echo test's: links echo only where a test asks.
pub const ECHO: Duration = Duration::from_secs(3600);
pub const PAN: &str = "4761739001010010";

pub fn spec(name: &str) -> &'static Spec {
    dialects::builtin(name).expect("built-in dialect")
}

/// The engine's settings, and the terminals' dialect.
pub fn config(terminal: &str, issuer: &str) -> (Config, &'static Spec) {
    let config = Config {
        issuers: vec![
            Issuer {
                name: "visa".into(),
                spec: spec(issuer),
                links: 2,
                response_timeout: TIMEOUT,
                policy: Policy::default(),
            },
            Issuer {
                name: "other".into(),
                spec: spec(issuer),
                links: 1,
                response_timeout: TIMEOUT,
                policy: Policy::default(),
            },
        ],
        routes: vec![("4".into(), 0), ("5".into(), 1)],
        default_route: None,
        idempotency: Idempotency::default(),
        reversal: Reversal {
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
            max_attempts: 5,
            expiry: Duration::from_secs(3600),
        },
        acquirer_id: "12345".into(),
        echo_interval: ECHO,
        card_key: engine::CardKey([7; 16]),
        shared_store: false,
        terminal_patience: Duration::ZERO,
        cutover: Default::default(),
        stans: engine::Stans::ALL,
    };
    (config, spec(terminal))
}

pub struct Harness {
    pub engine: Engine,
    pub now: Now,
    pub terminal: &'static Spec,
    config: Config,
    /// Every record the engine journaled, oldest first.
    pub journal: Vec<Record>,
}

impl Harness {
    /// An engine whose links are all up and signed on.
    pub fn new() -> Harness {
        Harness::with(config("iso87ascii", "iso87ascii"))
    }

    pub fn with((config, terminal): (Config, &'static Spec)) -> Harness {
        let mut h = Harness {
            engine: Engine::new(config.clone()),
            now: Now {
                mono: std::time::Instant::now(),
                wall: std::time::SystemTime::now(),
            },
            terminal,
            config,
            journal: Vec::new(),
        };
        h.sign_on_all();
        h
    }

    fn sign_on_all(&mut self) {
        let links: Vec<LinkId> = self.engine.links().map(|(l, _)| l).collect();
        for link in links {
            self.sign_on(link);
        }
    }

    /// A new engine as a restart would build it from the first `durable` records of this one's journal,
    /// with what recovery did and its links signed on again.
    pub fn restart(&self, durable: usize) -> (Harness, Recovered, Vec<Action>) {
        let mut h = Harness {
            engine: Engine::new(self.config.clone()),
            now: self.now,
            terminal: self.terminal,
            config: self.config.clone(),
            journal: self.journal[..durable].to_vec(),
        };
        let mut recovery = Recovery::default();
        self.journal[..durable]
            .iter()
            .for_each(|r| recovery.add(r.clone()));
        let mut out = Vec::new();
        let found = h.engine.recover(h.now, recovery, &mut out);
        h.keep(&out);
        h.sign_on_all();
        (h, found, out)
    }

    fn keep(&mut self, out: &[Action]) {
        self.journal.extend(out.iter().filter_map(|a| match a {
            Action::Journal(r) => Some(r.clone()),
            _ => None,
        }));
    }

    pub fn sign_on(&mut self, link: LinkId) {
        let out = self.step(Event::LinkUp(link));
        let signon = sent(&out).next().expect("sign-on sent").1.clone();
        assert_eq!(signon.mti(), Mti::NETWORK);
        assert_eq!(text(&signon, 70), "001");
        self.step(Event::Response {
            link,
            msg: answer(&signon, "00"),
        });
    }

    pub fn step(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        self.engine.handle(self.now, event, &mut out);
        self.keep(&out);
        out
    }

    pub fn advance(&mut self, d: Duration) {
        self.now = self.now.after(d);
    }

    /// A purchase from terminal `tid` with STAN `stan`.
    pub fn purchase(&self, tid: &str, stan: u32, amount: u64) -> Message {
        let mut m = Message::new(self.terminal, Mti::FINANCIAL);
        m.set(2, PAN)
            .unwrap()
            .set(3, "000000")
            .unwrap()
            .set_number(4, amount)
            .unwrap()
            .set(7, "1121093000")
            .unwrap()
            .set_number(11, u64::from(stan))
            .unwrap()
            .set(12, "093000")
            .unwrap()
            .set(13, "1121")
            .unwrap()
            .set(22, "051")
            .unwrap()
            .set(25, "00")
            .unwrap()
            .set(41, tid)
            .unwrap()
            .set(42, "MERCHANT0000001")
            .unwrap()
            .set(49, "840")
            .unwrap();
        m
    }

    pub fn request(&mut self, conn: u64, msg: Message) -> Vec<Action> {
        self.step(Event::Request {
            conn: ConnId(conn),
            msg,
        })
    }

    /// Lets `d` pass and fires every timer due by then.
    pub fn pass(&mut self, d: Duration) -> Vec<Action> {
        self.advance(d);
        let mut out = Vec::new();
        self.engine.handle_timeout(self.now, &mut out);
        self.keep(&out);
        out
    }

    /// Moves the clock to timer `id`'s deadline, if it is armed and later, and fires what is due.
    pub fn fire(&mut self, id: TimerId) -> Vec<Action> {
        if let Some(at) = self.engine.timer(id)
            && at > self.now.mono
        {
            self.advance(at - self.now.mono);
        }
        let mut out = Vec::new();
        self.engine.handle_timeout(self.now, &mut out);
        self.keep(&out);
        out
    }
}

/// The issuer's answer to `request` with `rc` (and an auth code when approving).
pub fn answer(request: &Message, rc: &str) -> Message {
    let mut a = request
        .response(&[2, 3, 4, 7, 11, 32, 37, 41, 42, 49, 70])
        .unwrap();
    a.set(39, rc).unwrap();
    if rc == "00"
        && a.spec().field(38).is_some()
        && request.mti().class() != iso8583::Class::NETWORK
    {
        a.set(38, "A1B2C3").unwrap();
    }
    a
}

pub fn text(m: &Message, n: u8) -> String {
    m.get(n)
        .map(|f| f.unmasked().to_string())
        .unwrap_or_default()
}

pub fn rc(m: &Message) -> ResponseCode {
    m.response_code().expect("DE39")
}

pub fn sent(out: &[Action]) -> impl Iterator<Item = (LinkId, &Message)> {
    out.iter().filter_map(|a| match a {
        Action::Send { link, msg, .. } => Some((*link, msg)),
        _ => None,
    })
}

pub fn answers(out: &[Action]) -> impl Iterator<Item = (ConnId, &Message)> {
    out.iter().filter_map(|a| match a {
        Action::Answer { conn, msg, .. } => Some((*conn, msg)),
        _ => None,
    })
}

pub fn steps(out: &[Action]) -> Vec<&Step> {
    out.iter()
        .filter_map(|a| match a {
            Action::Journal(r) => Some(&r.step),
            _ => None,
        })
        .collect()
}

/// The one message sent upstream.
pub fn one_sent(out: &[Action]) -> (LinkId, Message) {
    let all: Vec<_> = sent(out).collect();
    assert_eq!(all.len(), 1, "expected one message upstream, got {out:#?}");
    (all[0].0, all[0].1.clone())
}

/// The one answer to a terminal.
pub fn one_answer(out: &[Action]) -> (ConnId, Message) {
    let all: Vec<_> = answers(out).collect();
    assert_eq!(all.len(), 1, "expected one answer, got {out:#?}");
    (all[0].0, all[0].1.clone())
}
