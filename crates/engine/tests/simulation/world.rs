//! The simulated world around one engine: a clock and an event queue, the shell (the shipped write-ahead
//! gate over a simulated disk of real journal bytes with group commit, and the engine's own timers), the
//! network, the terminals, the issuer, and the faults — link flaps, dropped terminal connections and
//! crashes with recovery through the journal's real scan.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant, UNIX_EPOCH};

use engine::{Action, Config, ConnId, Engine, Event, Gate, LinkId, Now, Outbox, Record};
use fastrand::Rng;
use iso8583::{Class, Message, Spec};
use sim::{Ledger, Outcome};

use crate::disk::Disk;
use crate::issuer::Issuer;
use crate::terminal::{self, Terminal};

/// Faults happen in this first stretch of simulated time; after it the world is calm until everything
/// the run started has finished.
const FAULTS: Duration = Duration::from_secs(30);
/// A run that has not settled this long after the faults stopped has lost something.
const SETTLE: Duration = Duration::from_secs(2 * 3600);

#[derive(Debug)]
enum Ev {
    /// A terminal's own timer, valid while its generation is current.
    Wake(usize, u64),
    Connect(usize),
    Disconnect(usize),
    /// A terminal's request on the wire.
    ToSwitch(ConnId, Message),
    ToTerminal(ConnId, Message),
    /// Messages on a link. What the switch wrote reaches the issuer even if the link or the switch dies
    /// meanwhile (the kernel sends it); an answer is lost unless its connection (epoch) is still up.
    ToIssuer(LinkId, u64, Message),
    FromIssuer(LinkId, u64, Message),
    /// The engine's earliest deadline (as it was when this was scheduled), as time from the start.
    Timers(Duration),
    /// The journal's group commit.
    Sync,
    LinkDown(LinkId),
    LinkUp(LinkId),
    /// The process dies now, or in the middle of the next group commit.
    Crash,
    Restart,
}

/// Everything a run leaves for the invariant checks.
#[derive(Debug)]
pub(crate) struct Run {
    pub outcomes: Vec<Outcome>,
    pub ledger: Ledger,
    pub forwards: BTreeMap<String, u32>,
    /// The durable journal across every incarnation of the switch.
    pub journal: Vec<Record>,
    /// Requests each terminal connection sent and answers it received, by (MTI class, STAN).
    pub requests: BTreeMap<ConnId, BTreeMap<(Class, u32), u32>>,
    pub answers: BTreeMap<ConnId, BTreeMap<(Class, u32), u32>>,
    /// Connections that closed (dropped or crashed) before the end.
    pub closed: BTreeSet<ConnId>,
    pub pending_reversals: usize,
    /// Everything the run started finished before [`SETTLE`].
    pub settled: bool,
    pub crashes: u32,
    /// A hash of every event and every action, in order: the same seed gives the same trace.
    pub trace: u64,
    /// The trace itself, when asked for.
    pub lines: Option<Vec<String>>,
}

struct Link {
    up: bool,
    epoch: u64,
}

/// A gate that lets every effect out at once: what the simulation must catch.
#[derive(Debug, Default)]
pub(crate) struct Leaky;

impl Gate for Leaky {
    fn appended(&mut self, _: u64) {}
    fn effect(&mut self, effect: Action) -> Option<Action> {
        Some(effect)
    }
    fn durable(&mut self, _: u64, _: &mut Vec<Action>) {}
    fn held(&self) -> usize {
        0
    }
}

pub(crate) struct World<G = Outbox> {
    rng: Rng,
    config: Config,
    engine: Option<Engine>,
    start: (Instant, std::time::SystemTime),
    now: Duration,
    queue: BinaryHeap<Reverse<(Duration, u64)>>,
    events: HashMap<u64, Ev>,
    seq: u64,
    terminals: Vec<Terminal>,
    wakes: Vec<u64>,
    issuer: Issuer,
    links: Vec<Link>,
    conns: BTreeMap<ConnId, usize>,
    next_conn: u64,
    /// The earliest engine deadline an [`Ev::Timers`] is queued for.
    timer_at: Option<Duration>,
    // The shell: the journal's disk, and the write-ahead gate of the current incarnation.
    disk: Disk,
    gate: G,
    sync_due: bool,
    /// A crash waits for the next records to be appended, to die before they are durable.
    crash_armed: bool,
    run: Run,
    trace: DefaultHasher,
}

impl<G: Gate + Default> World<G> {
    pub(crate) fn new(seed: u64, config: Config, terminal_spec: &'static Spec) -> World<G> {
        let mut rng = Rng::with_seed(seed);
        let count = rng.usize(1..=6);
        let terminals: Vec<Terminal> = (0..count)
            .map(|i| {
                let transactions = rng.u32(3..=25);
                Terminal::new(&mut rng, i, terminal_spec, transactions)
            })
            .collect();
        let links = (0..config.issuers.iter().map(|i| i.links).sum::<usize>())
            .map(|_| Link {
                up: false,
                epoch: 0,
            })
            .collect();
        let mut world = World {
            rng,
            engine: Some(Engine::new(config.clone())),
            config,
            start: (
                Instant::now(),
                UNIX_EPOCH + Duration::from_secs(1_795_000_000),
            ),
            now: Duration::ZERO,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            wakes: vec![0; terminals.len()],
            terminals,
            issuer: Issuer::default(),
            links,
            conns: BTreeMap::new(),
            next_conn: 0,
            timer_at: None,
            disk: Disk::new(),
            gate: G::default(),
            sync_due: false,
            crash_armed: false,
            run: Run {
                outcomes: Vec::new(),
                ledger: Ledger::default(),
                forwards: BTreeMap::new(),
                journal: Vec::new(),
                requests: BTreeMap::new(),
                answers: BTreeMap::new(),
                closed: BTreeSet::new(),
                pending_reversals: 0,
                settled: false,
                crashes: 0,
                trace: 0,
                lines: None,
            },
            trace: DefaultHasher::new(),
        };
        world.schedule_start();
        world
    }

    /// Keeps every line of the trace in [`Run::lines`].
    pub(crate) fn traced(mut self) -> World<G> {
        self.run.lines = Some(Vec::new());
        self
    }

    /// The first events: links up, terminals connect and start, and the faults of this seed.
    fn schedule_start(&mut self) {
        for link in 0..self.links.len() {
            self.at(Duration::ZERO, Ev::LinkUp(LinkId(link as u32)));
        }
        for t in 0..self.terminals.len() {
            let (connect, start) = (self.ms(0..100), self.ms(0..1_000));
            self.at(connect, Ev::Connect(t));
            self.wake(t, start);
        }
        let faults = |rng: &mut Rng, most| rng.u32(0..=most);
        for _ in 0..faults(&mut self.rng, 3) {
            let at = self.ms(0..FAULTS.as_millis() as u64);
            self.at(at, Ev::Crash);
        }
        for _ in 0..faults(&mut self.rng, 4) {
            let (at, link) = (
                self.ms(0..FAULTS.as_millis() as u64),
                self.rng.usize(0..self.links.len()),
            );
            self.at(at, Ev::LinkDown(LinkId(link as u32)));
        }
        for _ in 0..faults(&mut self.rng, 6) {
            let (at, t) = (
                self.ms(0..FAULTS.as_millis() as u64),
                self.rng.usize(0..self.terminals.len()),
            );
            self.at(at, Ev::Disconnect(t));
        }
    }

    /// Runs until everything settles (or [`SETTLE`] passes) and hands over what happened.
    pub(crate) fn run(mut self) -> Run {
        while let Some(Reverse((at, seq))) = self.queue.pop() {
            let ev = self.events.remove(&seq).expect("queued event");
            self.now = at;
            self.trace(&format!("{at:?} {ev:?}"));
            self.on(ev);
            if self.settled() {
                self.run.settled = true;
                break;
            }
            if self.now > FAULTS + SETTLE {
                break;
            }
        }
        let mut run = self.run;
        run.pending_reversals = self.engine.as_ref().map_or(0, Engine::pending_reversals);
        run.outcomes = self
            .terminals
            .iter()
            .flat_map(|t| t.outcomes.clone())
            .collect();
        run.journal = self.disk.records();
        run.ledger = self.issuer.ledger;
        run.forwards = self.issuer.forwards;
        run.trace = self.trace.finish();
        run
    }

    fn settled(&self) -> bool {
        self.now >= FAULTS
            && self.terminals.iter().all(Terminal::done)
            && self.gate.held() == 0
            && !self.disk.unsynced()
            && self
                .engine
                .as_ref()
                .is_some_and(|e| e.in_flight() == 0 && e.pending_reversals() == 0)
    }

    fn faults(&self) -> bool {
        self.now < FAULTS
    }

    fn on(&mut self, ev: Ev) {
        match ev {
            Ev::Wake(t, generation) if self.wakes[t] == generation => {
                let out = self.terminals[t].on_wake(&mut self.rng);
                self.terminal_out(t, out);
            }
            Ev::Wake(..) => {}
            Ev::Connect(t) => self.connect(t),
            Ev::Disconnect(t) => {
                if let Some(conn) = self.terminals[t].conn {
                    self.close(conn);
                    self.handle(Event::ConnClosed(conn));
                    let later = self.ms(100..2_000);
                    self.at(later, Ev::Connect(t));
                }
            }
            Ev::ToSwitch(conn, msg) => {
                if self.conns.contains_key(&conn) {
                    self.handle(Event::Request { conn, msg });
                }
            }
            Ev::ToTerminal(conn, msg) => {
                if let Some(&t) = self.conns.get(&conn) {
                    count(&mut self.run.answers, conn, &msg);
                    let out = self.terminals[t].on_answer(&mut self.rng, &msg);
                    self.terminal_out(t, out);
                }
            }
            Ev::ToIssuer(link, epoch, msg) => {
                let faults = self.faults();
                for (answer, delay) in self.issuer.on_message(&mut self.rng, &msg, faults) {
                    self.at(delay, Ev::FromIssuer(link, epoch, answer));
                }
            }
            Ev::FromIssuer(link, epoch, msg) => {
                if self.links[link.0 as usize].epoch == epoch {
                    self.handle(Event::Response { link, msg });
                }
            }
            Ev::Timers(at) => {
                if self.timer_at == Some(at) {
                    self.timer_at = None;
                }
                let now = self.clock();
                if let Some(engine) = self.engine.as_mut() {
                    let mut out = Vec::new();
                    engine.handle_timeout(now, &mut out);
                    self.carry_out(out);
                }
            }
            Ev::Sync => self.sync(),
            Ev::LinkDown(link) => self.link_down(link),
            Ev::LinkUp(link) => {
                let state = &mut self.links[link.0 as usize];
                if self.engine.is_some() && !state.up {
                    state.up = true;
                    state.epoch += 1;
                    self.handle(Event::LinkUp(link));
                }
            }
            Ev::Crash if self.rng.bool() => self.crash(),
            Ev::Crash => self.crash_armed = true,
            Ev::Restart => self.restart(),
        }
    }

    fn connect(&mut self, t: usize) {
        if self.terminals[t].conn.is_some() {
            return;
        }
        if self.engine.is_none() {
            // Refused: the switch is down. The terminal tries again.
            let later = self.ms(500..1_500);
            return self.at(later, Ev::Connect(t));
        }
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        self.conns.insert(conn, t);
        let out = self.terminals[t].on_connected(&mut self.rng, conn);
        self.terminal_out(t, out);
    }

    fn close(&mut self, conn: ConnId) {
        if let Some(t) = self.conns.remove(&conn) {
            self.terminals[t].conn = None;
            self.run.closed.insert(conn);
        }
    }

    fn terminal_out(&mut self, t: usize, out: Vec<terminal::Out>) {
        for o in out {
            match o {
                terminal::Out::Send(msg) => {
                    let conn = self.terminals[t].conn.expect("sends only when connected");
                    count(&mut self.run.requests, conn, &msg);
                    let delay = self.wire();
                    self.at(delay, Ev::ToSwitch(conn, msg));
                }
                terminal::Out::Wake(after) => self.wake(t, after),
            }
        }
    }

    fn wake(&mut self, t: usize, after: Duration) {
        self.wakes[t] += 1;
        let generation = self.wakes[t];
        self.at(after, Ev::Wake(t, generation));
    }

    /// One event into the engine, and its actions carried out the way the switch's driver does.
    fn handle(&mut self, event: Event) {
        let now = self.clock();
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        engine.handle(now, event, &mut out);
        self.carry_out(out);
    }

    /// The engine's actions through the gate, as the switch's driver carries them out; then the next
    /// group commit and the engine's next deadline are scheduled.
    fn carry_out(&mut self, out: Vec<Action>) {
        for action in out {
            self.trace(&format!("{action:?}"));
            let disk = &mut self.disk;
            if let Some(effect) = self.gate.admit(action, |record| disk.append(&record)) {
                self.effect(effect);
            }
        }
        if self.crash_armed && self.disk.unsynced() {
            self.crash_armed = false;
            return self.crash();
        }
        if self.disk.unsynced() && !self.sync_due {
            self.sync_due = true;
            let commit = Duration::from_micros(self.rng.u64(0..5_000));
            self.at(commit, Ev::Sync);
        }
        self.schedule_timers();
    }

    /// Queues an [`Ev::Timers`] for the engine's earliest deadline, unless one is queued for it already
    /// or earlier.
    fn schedule_timers(&mut self) {
        let Some(at) = self.engine.as_mut().and_then(Engine::poll_timeout) else {
            return;
        };
        // An instant prints as the machine's clock reading: kept as the time from the start.
        let at = at.saturating_duration_since(self.start.0);
        if self.timer_at.is_some_and(|queued| queued <= at) {
            return;
        }
        self.timer_at = Some(at);
        self.at(at.saturating_sub(self.now), Ev::Timers(at));
    }

    /// The group commit: every appended record is durable, and the effects held for them go out.
    fn sync(&mut self) {
        self.sync_due = false;
        let seq = self.disk.sync();
        let mut released = Vec::new();
        self.gate.durable(seq, &mut released);
        for effect in released {
            self.effect(effect);
        }
    }

    fn effect(&mut self, effect: Action) {
        match effect {
            Action::Send { link, msg, .. } => {
                let state = &self.links[link.0 as usize];
                if state.up {
                    let (epoch, delay) = (state.epoch, self.wire());
                    self.at(delay, Ev::ToIssuer(link, epoch, msg));
                }
            }
            Action::Answer { conn, msg, .. } | Action::AnswerNow { conn, msg } => {
                let delay = self.wire();
                self.at(delay, Ev::ToTerminal(conn, msg));
            }
            // One node has no shared store: its engine claims no key.
            Action::Claim(claim) | Action::Lookup(claim) => {
                panic!("single-node engine asked the shared store about {claim:?}")
            }
            // The simulated terminals send only requests their dialect can answer.
            Action::NoAnswer { conn, why } => panic!("{conn:?} got no answer: {why:?}"),
            Action::CloseLink(link) => self.link_down(link),
            Action::Journal(_) => {}
        }
    }

    /// A link drops (its messages in flight are lost) and reconnects a little later.
    fn link_down(&mut self, link: LinkId) {
        let state = &mut self.links[link.0 as usize];
        if !state.up {
            return;
        }
        state.up = false;
        state.epoch += 1;
        self.handle(Event::LinkDown(link));
        let later = self.ms(200..5_000);
        self.at(later, Ev::LinkUp(link));
    }

    /// The process dies: what was not yet durable is lost, except that the disk may hold any prefix of
    /// it (a torn group commit); held effects never happen, or the last commit went through and only some
    /// of its effects did.
    fn crash(&mut self) {
        if self.engine.is_none() {
            return;
        }
        self.run.crashes += 1;
        if self.rng.bool() {
            let seq = self.disk.sync();
            let mut released = Vec::new();
            self.gate.durable(seq, &mut released);
            let done = self.rng.usize(0..=released.len());
            for effect in released.drain(..done) {
                self.effect(effect);
            }
        } else {
            self.disk.crash(&mut self.rng);
        }
        self.gate = G::default();
        self.sync_due = false;
        self.timer_at = None;
        self.engine = None;
        for conn in self.conns.keys().copied().collect::<Vec<_>>() {
            self.close(conn);
        }
        for t in 0..self.terminals.len() {
            let later = self.ms(100..2_000);
            self.at(later, Ev::Connect(t));
        }
        for state in &mut self.links {
            state.up = false;
            state.epoch += 1;
        }
        let downtime = self.ms(500..5_000);
        self.at(downtime, Ev::Restart);
    }

    /// A new engine recovers from the durable journal, then its links connect.
    fn restart(&mut self) {
        let mut engine = Engine::new(self.config.clone());
        let recovery = self.disk.recover();
        let mut out = Vec::new();
        engine.recover(self.clock(), recovery, &mut out);
        self.engine = Some(engine);
        self.carry_out(out);
        for link in 0..self.links.len() {
            let after = self.ms(10..500);
            self.at(after, Ev::LinkUp(LinkId(link as u32)));
        }
    }

    fn at(&mut self, after: Duration, ev: Ev) {
        self.seq += 1;
        self.events.insert(self.seq, ev);
        self.queue.push(Reverse((self.now + after, self.seq)));
    }

    fn clock(&self) -> Now {
        Now {
            mono: self.start.0 + self.now,
            wall: self.start.1 + self.now,
        }
    }

    fn ms(&mut self, range: std::ops::Range<u64>) -> Duration {
        Duration::from_millis(self.rng.u64(range))
    }

    /// A network hop.
    fn wire(&mut self) -> Duration {
        Duration::from_micros(self.rng.u64(50..2_000))
    }

    fn trace(&mut self, what: &str) {
        what.hash(&mut self.trace);
        if let Some(lines) = &mut self.run.lines {
            lines.push(what.to_string());
        }
    }
}

fn count(book: &mut BTreeMap<ConnId, BTreeMap<(Class, u32), u32>>, conn: ConnId, msg: &Message) {
    let key = (msg.mti().class(), msg.stan().unwrap_or(0));
    *book.entry(conn).or_default().entry(key).or_default() += 1;
}
