//! The simulated world around the engines: a clock and an event queue; the nodes, each with the shell
//! (the shipped write-ahead gate over its journal with group commit, and the engine's own timers) and
//! its links; the network, the terminals (through a load balancer when there are several nodes), the
//! issuer, and the faults — link flaps, dropped terminal connections and crashes with recovery through
//! the journal. One node journals to a simulated disk of real journal bytes; a cluster journals to one
//! simulated shared store, and adds lease expiry, takeover and paused nodes (`world/cluster.rs`).

mod cluster;
mod gates;
mod journal;
mod links;
mod nodes;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant, UNIX_EPOCH};

use engine::{
    Action, Config, ConnId, Engine, Event, Gate, Holder, Licence, LinkId, Now, Outbox, Plea,
    Record, Stans, TxnId,
};
use fastrand::Rng;
use iso8583::{Class, Message, Spec};
use sim::{Ledger, Outcome};

pub(crate) use self::gates::{Leaky, Unwithdrawn};
use self::journal::{Committed, Journal};
use self::links::Link;
use crate::disk::Disk;
use crate::issuer::Issuer;
use crate::store::{Batch, Store};
use crate::terminal::{self, Terminal};

/// Faults happen in this first stretch of simulated time; after it the world is calm until everything
/// the run started has finished.
const FAULTS: Duration = Duration::from_secs(30);
/// One commit of a cluster's store in this many stalls for seconds (during the faults).
const STALLS: u64 = 300;
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
    /// A node's link task takes its turn to write what is queued on the link's connection (epoch),
    /// while the node runs.
    Write(usize, LinkId, u64),
    /// Messages on a node's link. What the switch wrote reaches the issuer even if the link or the
    /// switch dies meanwhile (the kernel sends it); an answer is lost unless its connection (epoch) is
    /// still up.
    ToIssuer(usize, LinkId, u64, Message),
    FromIssuer(usize, LinkId, u64, Message),
    /// A node's earliest engine deadline (as it was when this was scheduled), as time from the start.
    Timers(usize, Duration),
    /// A node's group commit.
    Sync(usize),
    LinkDown(usize, LinkId),
    LinkUp(usize, LinkId),
    /// A node dies now, or in the middle of its next group commit.
    Crash(usize),
    Restart(usize),
    /// Cluster: a node renews its lease (and looks for lapsed ones), while its generation is current.
    Lease(usize, u64),
    /// Cluster: a node dies and is never started again.
    Lose(usize),
    /// Cluster: a node stops (SIGSTOP) and continues later; what it would see meanwhile waits.
    Pause(usize, Duration),
    Resume(usize),
    /// A terminal connection's close, as the engine of a paused node learns it when it continues.
    Closed(usize, ConnId),
    /// Cluster: the store cannot be reached for this long (a database restart or failover).
    Outage(Duration),
    /// Cluster, with [`Cluster::answers_first`] off: the store's answers to a commit's claims, for
    /// the node's incarnation of this lease generation.
    Answers(usize, u64, Vec<(TxnId, Option<Holder>)>),
    /// Cluster: the store's answer to a settlement message's read of its batch, for the node's
    /// incarnation of this lease generation (`None`: the read failed).
    BatchRead(usize, u64, TxnId, Option<Vec<(String, Record)>>),
}

/// Everything a run leaves for the invariant checks.
#[derive(Debug)]
pub(crate) struct Run {
    pub outcomes: Vec<Outcome>,
    /// Each terminal's settlement, by terminal id.
    pub settlements: Vec<(String, terminal::Settlement)>,
    /// Several nodes: a terminal's batch is spread over them, and each node's record of it is its own.
    pub cluster: bool,
    pub ledger: Ledger,
    pub forwards: BTreeMap<String, u32>,
    /// First attempts of advices the issuer received, per RRN.
    pub advices: BTreeMap<String, u32>,
    /// The durable journal across every incarnation of every node, with the node's name.
    pub journal: Vec<(String, Record)>,
    /// Requests each terminal connection sent and answers it received, by (MTI class, STAN).
    pub requests: BTreeMap<ConnId, BTreeMap<(Class, u32), u32>>,
    pub answers: BTreeMap<ConnId, BTreeMap<(Class, u32), u32>>,
    /// Connections that closed (dropped or crashed) before the end.
    pub closed: BTreeSet<ConnId>,
    pub pending_reversals: usize,
    pub pending_advices: usize,
    /// Everything the run started finished before [`SETTLE`].
    pub settled: bool,
    pub crashes: u32,
    /// Cluster: takeovers of a lapsed node's work, and commits refused by the fence.
    pub takeovers: u32,
    pub fenced: u32,
    /// Cluster: outages of the store.
    pub outages: u32,
    /// A hash of every event and every action, in order: the same seed gives the same trace.
    pub trace: u64,
    /// The trace itself, when asked for.
    pub lines: Option<Vec<String>>,
    /// Each (STAN, DE7) the issuer received, with the node, which of its engines and which link sent
    /// it first.
    pub stans: BTreeMap<(String, String), (String, u32, u32)>,
    /// Messages that reached the issuer under a STAN and DE7 another node or link had sent.
    pub stan_clashes: Vec<String>,
}

/// One switch process and what it owns.
struct Node<G> {
    name: String,
    /// The STANs its engine numbers upstream messages with.
    stans: Stans,
    /// Its engines so far: each start or restart is a new one.
    incarnation: u32,
    engine: Option<Engine>,
    gate: G,
    journal: Journal,
    links: Vec<Link>,
    /// The earliest engine deadline an [`Ev::Timers`] is queued for.
    timer_at: Option<Duration>,
    sync_due: bool,
    /// A crash waits for the next records to be appended, to die before they are durable.
    crash_armed: bool,
    /// Stopped: the events it would see, in order.
    paused: Option<Vec<Ev>>,
    /// A pause waits for the node's next message to the issuer, to stop it before the message is
    /// written.
    pause_armed: Option<Duration>,
    /// Lost with its machine: never started again.
    lost: bool,
    lease_generation: u64,
    /// Told the journal cannot write (its commit found the store unreachable), until a commit goes
    /// through.
    unwritable: bool,
    /// Cluster: the pleas its engine made and has not settled durably (see `engine::Plea`).
    pleas: BTreeSet<Plea>,
    /// Cluster: until when its links may write what needs a licence (`None`: anything, any time).
    licence: Option<Licence>,
}

pub(crate) struct World<G = Outbox> {
    rng: Rng,
    config: Config,
    nodes: Vec<Node<G>>,
    /// Cluster: the store the nodes share, and their lease.
    store: Option<Store>,
    lease: Duration,
    /// Cluster: when the store's current outage ends.
    outage: Option<Duration>,
    /// Cluster: see [`Cluster::answers_first`].
    answers_first: bool,
    /// Cluster: see [`Cluster::shared_batches`].
    shared_batches: bool,
    /// Cluster: see [`Cluster::outages_past_lease`].
    outages_past_lease: bool,
    /// Cluster: see [`Cluster::pleas_file`].
    pleas_file: bool,
    /// Cluster: see [`Cluster::licences`].
    licences: bool,
    start: (Instant, std::time::SystemTime),
    now: Duration,
    queue: BinaryHeap<Reverse<(Duration, u64)>>,
    events: HashMap<u64, Ev>,
    seq: u64,
    terminals: Vec<Terminal>,
    wakes: Vec<u64>,
    issuer: Issuer,
    /// Each open terminal connection's terminal and node.
    conns: BTreeMap<ConnId, (usize, usize)>,
    next_conn: u64,
    run: Run,
    trace: DefaultHasher,
}

/// A cluster to simulate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cluster {
    pub lease: Duration,
    /// Off: the store ignores epochs (what the simulation must catch).
    pub fencing: bool,
    /// Off: the writer reports a commit durable, letting its held effects out, before the store's
    /// answers to its claims, which come a while later (what the simulation must catch).
    pub answers_first: bool,
    /// Off: every node numbers its upstream messages from 000001, not within a block of STANs of its
    /// own (what the simulation must catch).
    pub stan_blocks: bool,
    /// Off: a settlement message reads its terminal's batch as only the node it reached recorded it
    /// (what the simulation must catch).
    pub shared_batches: bool,
    /// Off: the store keeps no pleas, so a node fenced with reversals it admitted in terminals'
    /// names, not yet durable, loses them (what the simulation must catch).
    pub pleas: bool,
    /// On: every run has one outage of the store longer than the lease (which the default schedule
    /// makes now and then), every terminal drops its connection during it and a node is killed, a 91
    /// is lost with its connection half the time (the terminal asks again on whichever node it
    /// reaches next), and no machine is lost (a lost node's pleas go with its disk): nodes are fenced,
    /// or killed, holding pleas that matter in many runs.
    pub outages_past_lease: bool,
    /// Off: a node's links write whatever it sends whenever they can, even after a pause past its
    /// lease (what the simulation must catch). On, what could add to the issuer's debits waits for a
    /// licence from a lease renewed by the node's own clock (`engine::Licence`).
    pub licences: bool,
    /// Off: a node keeps its pleas in memory only (no `cluster.pleas_file`), so that one killed before
    /// its pleas' records commit loses them (what the simulation must catch). On, a killed node's
    /// pleas are the next process's to take on.
    pub pleas_file: bool,
}

impl<G: Gate + Default> World<G> {
    /// One node on its own disk.
    pub(crate) fn new(seed: u64, config: Config, terminal_spec: &'static Spec) -> World<G> {
        World::build(seed, config, terminal_spec, None)
    }

    /// Two or three nodes on one shared store, behind a load balancer.
    pub(crate) fn cluster(
        seed: u64,
        mut config: Config,
        terminal_spec: &'static Spec,
        cluster: Cluster,
    ) -> World<G> {
        config.shared_store = true;
        config.terminal_patience = crate::terminal::PATIENCE;
        World::build(seed, config, terminal_spec, Some(cluster))
    }

    fn build(
        seed: u64,
        config: Config,
        terminal_spec: &'static Spec,
        cluster: Option<Cluster>,
    ) -> World<G> {
        let mut rng = Rng::with_seed(seed);
        let count = rng.usize(1..=6);
        let terminals: Vec<Terminal> = (0..count)
            .map(|i| {
                let transactions = rng.u32(3..=25);
                Terminal::new(&mut rng, i, terminal_spec, transactions)
            })
            .collect();
        let nodes = match cluster {
            Some(_) => rng.usize(2..=3),
            None => 1,
        };
        let links = config.issuers.iter().map(|i| i.links).sum::<usize>();
        let nodes = (0..nodes)
            .map(|n| Node {
                name: ((b'a' + n as u8) as char).to_string(),
                stans: match cluster {
                    Some(c) if c.stan_blocks => Stans::block(n as u32),
                    _ => Stans::ALL,
                },
                incarnation: 0,
                engine: None,
                gate: G::default(),
                journal: match cluster {
                    Some(_) => Journal::Shared {
                        epoch: 0,
                        next_seq: 1,
                        batch: Batch::default(),
                    },
                    None => Journal::Disk(Disk::new()),
                },
                links: (0..links).map(|_| Link::default()).collect(),
                timer_at: None,
                sync_due: false,
                crash_armed: false,
                paused: None,
                pause_armed: None,
                lost: false,
                lease_generation: 0,
                unwritable: false,
                pleas: BTreeSet::new(),
                licence: None,
            })
            .collect();
        let mut world = World {
            rng,
            config,
            nodes,
            store: cluster.map(|c| Store::new(c.lease, c.fencing, c.pleas)),
            lease: cluster.map_or(Duration::ZERO, |c| c.lease),
            outage: None,
            answers_first: cluster.is_none_or(|c| c.answers_first),
            shared_batches: cluster.is_none_or(|c| c.shared_batches),
            outages_past_lease: cluster.is_some_and(|c| c.outages_past_lease),
            pleas_file: cluster.is_some_and(|c| c.pleas_file),
            licences: cluster.is_some_and(|c| c.licences),
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
            conns: BTreeMap::new(),
            next_conn: 0,
            run: Run {
                outcomes: Vec::new(),
                settlements: Vec::new(),
                cluster: false,
                ledger: Ledger::default(),
                forwards: BTreeMap::new(),
                advices: BTreeMap::new(),
                journal: Vec::new(),
                requests: BTreeMap::new(),
                answers: BTreeMap::new(),
                closed: BTreeSet::new(),
                pending_reversals: 0,
                pending_advices: 0,
                settled: false,
                crashes: 0,
                takeovers: 0,
                fenced: 0,
                outages: 0,
                trace: 0,
                lines: None,
                stans: BTreeMap::new(),
                stan_clashes: Vec::new(),
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

    /// The first events: nodes start, terminals connect and start, and the faults of this seed.
    fn schedule_start(&mut self) {
        for n in 0..self.nodes.len() {
            self.start_node(n);
        }
        for t in 0..self.terminals.len() {
            let (connect, start) = (self.ms(0..100), self.ms(0..1_000));
            self.at(connect, Ev::Connect(t));
            self.wake(t, start);
        }
        let faults = |rng: &mut Rng, most| rng.u32(0..=most);
        for _ in 0..faults(&mut self.rng, 3) {
            let at = self.ms(0..FAULTS.as_millis() as u64);
            let n = self.any_node();
            self.at(at, Ev::Crash(n));
        }
        for _ in 0..faults(&mut self.rng, 4) {
            let links = self.nodes[0].links.len();
            let (at, link) = (
                self.ms(0..FAULTS.as_millis() as u64),
                self.rng.usize(0..links),
            );
            let n = self.any_node();
            self.at(at, Ev::LinkDown(n, LinkId(link as u32)));
        }
        for _ in 0..faults(&mut self.rng, 6) {
            let (at, t) = (
                self.ms(0..FAULTS.as_millis() as u64),
                self.rng.usize(0..self.terminals.len()),
            );
            self.at(at, Ev::Disconnect(t));
        }
        if self.store.is_some() {
            self.schedule_cluster_faults();
        }
    }

    /// A node picked at random (without touching the seed's numbers when there is one).
    fn any_node(&mut self) -> usize {
        match self.nodes.len() {
            1 => 0,
            n => self.rng.usize(0..n),
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
        let engines = self.nodes.iter().filter_map(|n| n.engine.as_ref());
        run.pending_reversals = engines.clone().map(Engine::pending_reversals).sum();
        run.pending_advices = engines.map(Engine::pending_advices).sum();
        run.outcomes = self
            .terminals
            .iter()
            .flat_map(|t| t.outcomes.clone())
            .collect();
        run.settlements = (self.terminals.iter())
            .map(|t| (t.id().to_string(), t.settlement.clone()))
            .collect();
        run.cluster = self.store.is_some();
        run.journal = match &self.store {
            Some(store) => store.records(),
            None => match &self.nodes[0].journal {
                Journal::Disk(disk) => {
                    let name = &self.nodes[0].name;
                    disk.records()
                        .into_iter()
                        .map(|r| (name.clone(), r))
                        .collect()
                }
                Journal::Shared { .. } => unreachable!("one node journals to its disk"),
            },
        };
        run.ledger = self.issuer.ledger;
        run.forwards = self.issuer.forwards;
        run.advices = self.issuer.advices;
        run.trace = self.trace.finish();
        run
    }

    fn settled(&self) -> bool {
        let node_settled = |node: &Node<G>| match &node.engine {
            Some(e) => {
                node.paused.is_none()
                    && node.gate.held() == 0
                    && !node.journal.unsynced()
                    && e.in_flight() == 0
                    && e.pending_reversals() == 0
                    && e.pending_advices() == 0
            }
            // Lost: settled once its work is another node's.
            None => node.lost && self.store.as_ref().is_some_and(|s| s.handed_on(&node.name)),
        };
        // Last, and only once the rest holds: no message on its way to or from a terminal (an answer
        // to a request its terminal already gave up on still counts).
        let in_transit = |ev: &Ev| matches!(ev, Ev::ToTerminal(..) | Ev::ToSwitch(..));
        self.now >= FAULTS
            && self.terminals.iter().all(Terminal::done)
            && self.nodes.iter().all(node_settled)
            && !self.events.values().any(in_transit)
    }

    fn faults(&self) -> bool {
        self.now < FAULTS
    }

    /// The node an event is for, if it waits while that node is paused.
    fn node_of(&self, ev: &Ev) -> Option<usize> {
        match ev {
            Ev::ToSwitch(conn, _) => self.conns.get(conn).map(|&(_, n)| n),
            Ev::FromIssuer(n, ..)
            | Ev::Write(n, ..)
            | Ev::Timers(n, _)
            | Ev::Sync(n)
            | Ev::LinkDown(n, _)
            | Ev::LinkUp(n, _)
            | Ev::Lease(n, _)
            | Ev::Answers(n, ..)
            | Ev::BatchRead(n, ..)
            | Ev::Closed(n, _) => Some(*n),
            _ => None,
        }
    }

    fn on(&mut self, ev: Ev) {
        if let Some(n) = self.node_of(&ev)
            && let Some(waiting) = &mut self.nodes[n].paused
        {
            return waiting.push(ev);
        }
        match ev {
            Ev::Wake(t, generation) if self.wakes[t] == generation => {
                let out = self.terminals[t].on_wake(&mut self.rng);
                self.terminal_out(t, out);
            }
            Ev::Wake(..) => {}
            Ev::Connect(t) => self.connect(t),
            Ev::Disconnect(t) => {
                if let Some(conn) = self.terminals[t].conn {
                    let n = self.conns[&conn].1;
                    self.close(conn);
                    self.on(Ev::Closed(n, conn));
                    let later = self.ms(100..2_000);
                    self.at(later, Ev::Connect(t));
                }
            }
            Ev::Closed(n, conn) => self.handle(n, Event::ConnClosed(conn)),
            Ev::ToSwitch(conn, msg) => {
                if let Some(&(_, n)) = self.conns.get(&conn) {
                    self.handle(n, Event::Request { conn, msg });
                }
            }
            Ev::ToTerminal(conn, msg) => {
                if let Some(&(t, _)) = self.conns.get(&conn) {
                    count(&mut self.run.answers, conn, &msg);
                    let out = self.terminals[t].on_answer(&mut self.rng, &msg);
                    self.terminal_out(t, out);
                }
            }
            Ev::Write(n, link, epoch) => self.write(n, link, epoch),
            Ev::ToIssuer(n, link, epoch, msg) => {
                self.numbered(n, link, &msg);
                let faults = self.faults();
                for (answer, delay) in self.issuer.on_message(&mut self.rng, &msg, faults) {
                    self.at(delay, Ev::FromIssuer(n, link, epoch, answer));
                }
            }
            Ev::FromIssuer(n, link, epoch, msg) => {
                if self.nodes[n].links[link.0 as usize].epoch == epoch {
                    self.handle(n, Event::Response { link, msg });
                }
            }
            Ev::Timers(n, at) => {
                let now = self.clock();
                let node = &mut self.nodes[n];
                if node.timer_at == Some(at) {
                    node.timer_at = None;
                }
                if let Some(engine) = node.engine.as_mut() {
                    let mut out = Vec::new();
                    engine.handle_timeout(now, &mut out);
                    self.carry_out(n, out);
                }
            }
            Ev::Sync(n) => self.sync(n),
            Ev::LinkDown(n, link) => self.link_down(n, link),
            Ev::LinkUp(n, link) => self.link_up(n, link),
            // A machine lost takes the node's pleas file with it: the one loss left, which the
            // default schedule makes rarely.
            Ev::Lose(_) if self.outages_past_lease => {}
            Ev::Crash(n) if self.rng.bool() => self.crash(n),
            Ev::Crash(n) => self.nodes[n].crash_armed = true,
            Ev::Restart(n) => self.restart(n),
            Ev::Lease(n, generation) => self.lease(n, generation),
            Ev::Lose(n) => {
                self.nodes[n].lost = true;
                self.crash(n);
            }
            Ev::Pause(n, for_) if self.rng.bool() => self.pause(n, for_),
            Ev::Pause(n, for_) => self.nodes[n].pause_armed = Some(for_),
            Ev::Resume(n) => self.resume(n),
            Ev::Outage(for_) => self.outage(for_),
            Ev::Answers(n, generation, answers) if self.nodes[n].lease_generation == generation => {
                self.answered(n, answers)
            }
            Ev::Answers(..) => {}
            Ev::BatchRead(n, generation, txn, records)
                if self.nodes[n].lease_generation == generation =>
            {
                self.handle(n, Event::BatchRead { txn, records })
            }
            Ev::BatchRead(..) => {}
        }
    }

    /// A terminal connects: to the node, or through the load balancer to any node that is up.
    fn connect(&mut self, t: usize) {
        if self.terminals[t].conn.is_some() {
            return;
        }
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].engine.is_some() && self.nodes[n].paused.is_none())
            .collect();
        let n = match up.len() {
            0 => {
                // Refused: no switch is up. The terminal tries again.
                let later = self.ms(500..1_500);
                return self.at(later, Ev::Connect(t));
            }
            1 => up[0],
            k => up[self.rng.usize(0..k)],
        };
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        self.conns.insert(conn, (t, n));
        let out = self.terminals[t].on_connected(&mut self.rng, conn);
        self.terminal_out(t, out);
    }

    fn close(&mut self, conn: ConnId) {
        if let Some((t, _)) = self.conns.remove(&conn) {
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

    /// One event into a node's engine, and its actions carried out the way the switch's driver does.
    fn handle(&mut self, n: usize, event: Event) {
        let now = self.clock();
        let Some(engine) = self.nodes[n].engine.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        engine.handle(now, event, &mut out);
        self.carry_out(n, out);
    }

    /// A node's actions through its gate, as the switch's driver carries them out; then the next
    /// group commit and the engine's next deadline are scheduled.
    fn carry_out(&mut self, n: usize, out: Vec<Action>) {
        for action in out {
            self.trace(&format!("{action:?}"));
            let node = &mut self.nodes[n];
            let journal = &mut node.journal;
            if let Some(effect) = node.gate.admit(action, |record| journal.append(record)) {
                self.effect(n, effect);
            }
        }
        let node = &mut self.nodes[n];
        if node.crash_armed && node.journal.unsynced() {
            node.crash_armed = false;
            return self.crash(n);
        }
        self.schedule_sync(n);
        self.schedule_timers(n);
    }

    /// Queues an [`Ev::Timers`] for a node's earliest deadline, unless one is queued for it already
    /// or earlier.
    fn schedule_timers(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        let Some(at) = node.engine.as_mut().and_then(Engine::poll_timeout) else {
            return;
        };
        // An instant prints as the machine's clock reading: kept as the time from the start.
        let at = at.saturating_duration_since(self.start.0);
        if node.timer_at.is_some_and(|queued| queued <= at) {
            return;
        }
        node.timer_at = Some(at);
        self.at(at.saturating_sub(self.now), Ev::Timers(n, at));
    }

    fn effect(&mut self, n: usize, effect: Action) {
        match effect {
            Action::Send { link, msg, .. } => self.send(n, link, msg),
            Action::Answer { conn, msg, .. } | Action::AnswerNow { conn, msg, .. } => {
                let delay = self.wire();
                let refused = msg.response_code().is_some_and(|rc| rc.as_str() == "91");
                if self.outages_past_lease && refused && self.rng.bool() {
                    // Queued first: the connection is gone when the 91 arrives.
                    if let Some(&(t, _)) = self.conns.get(&conn) {
                        self.at(delay, Ev::Disconnect(t));
                    }
                }
                self.at(delay, Ev::ToTerminal(conn, msg));
            }
            // Committed with the records before it.
            Action::Claim(claim) => self.nodes[n].journal.batch().claims.push(claim),
            Action::Lookup(key) => self.nodes[n].journal.batch().lookups.push(key),
            Action::ReadBatch(read) => self.nodes[n].journal.batch().reads.push(read),
            Action::Plead(plea) => {
                self.nodes[n].pleas.insert(plea.clone());
                self.hold_pleas(n, [plea]);
            }
            Action::PleaSettled(plea) => self.plea_settled(n, &plea),
            // The simulated terminals send only requests their dialect can answer.
            Action::NoAnswer { conn, why } => panic!("{conn:?} got no answer: {why:?}"),
            Action::CloseLink(link) => self.link_down(n, link),
            Action::Journal(_) | Action::Withdraw(_) => {}
        }
    }

    /// Notes the STAN and DE7 of a message node `n` sent the issuer on `link`, and a clash with another
    /// node's, or with another link's of the same engine. (One engine's with its predecessor's, after
    /// a restart within the same second, is not the clash the numbering prevents: a real restart takes
    /// longer.)
    fn numbered(&mut self, n: usize, link: LinkId, msg: &Message) {
        let (Some(stan), Some(sent)) = (msg.get(11), msg.get(7)) else {
            return;
        };
        let key = (stan.unmasked().to_string(), sent.unmasked().to_string());
        let node = &self.nodes[n];
        let sender = (node.name.clone(), node.incarnation, link.0);
        let first = self.run.stans.entry(key.clone()).or_insert(sender.clone());
        let clash = first.0 != sender.0 || (first.1 == sender.1 && first.2 != sender.2);
        if clash {
            let (a, b) = (&first, &sender);
            self.run.stan_clashes.push(format!(
                "STAN {} at {} from {} #{} link {} and {} #{} link {}",
                key.0, key.1, a.0, a.1, a.2, b.0, b.1, b.2
            ));
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
