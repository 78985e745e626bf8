//! What goes into the engine and what comes out of it.

use std::time::{Instant, SystemTime};

use iso8583::Message;
use serde::{Deserialize, Serialize};

use crate::claims::{Claim, Holder};
use crate::journal::Record;
use crate::settlement::OpenBatch;
use crate::store_reversals::Plea;

/// A terminal connection, numbered by the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// An upstream link (one TCP connection to one issuer host), numbered by the engine: see
/// [`Engine::links`](crate::Engine::links).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LinkId(pub u32);

/// The engine's handle on one transaction, also carried by its journal records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TxnId(pub u64);

/// Every timer the engine arms (in its own table: see [`Engine::poll_timeout`](crate::Engine::poll_timeout)).
/// Arming an id that is already armed moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerId {
    /// The issuer's answer to a forwarded request is due.
    Response(TxnId),
    /// The next attempt (or the expiry) of what the store-and-forward queue owes an issuer: a reversal
    /// or an advice.
    Saf(TxnId),
    /// Time to check a link: sign-on answer due, or echo when idle.
    Link(LinkId),
    /// Cluster mode: time to ask again about a key another node holds in flight, or to give up.
    Claim(TxnId),
}

/// The time of an event, read by the shell: the engine never reads a clock (a rule `clippy.toml` checks).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// For timers and ages.
    pub mono: Instant,
    /// For the dates and times written into messages (DE7, RRN) and journal records.
    pub wall: SystemTime,
}

impl Now {
    /// This instant plus `d` on both clocks.
    pub fn after(self, d: std::time::Duration) -> Now {
        Now {
            mono: self.mono + d,
            wall: self.wall + d,
        }
    }
}

#[derive(Debug)]
pub enum Event {
    /// A decoded message from a terminal, in the terminal dialect.
    Request {
        conn: ConnId,
        msg: Message,
    },
    /// A decoded message from an issuer link, in the issuer dialect.
    Response {
        link: LinkId,
        msg: Message,
    },
    /// A link connected (the engine signs on) or dropped.
    LinkUp(LinkId),
    LinkDown(LinkId),
    /// A terminal connection closed: answers for it can no longer be delivered.
    ConnClosed(ConnId),
    /// The grace period of a shutdown is over: every request still in flight times out now.
    GraceOver,
    /// Cluster mode: the shared store's answer to an [`Action::Claim`] (`None` when the key is this
    /// transaction's now, else who holds it) or to an [`Action::Lookup`] (who holds the key, if anyone).
    Claimed {
        txn: TxnId,
        holder: Option<Holder>,
    },
    /// Cluster mode: the shared store's answer to an [`Action::ReadBatch`]: every record of every node's
    /// transactions of that terminal since its last settlement closed (at least), each with the node
    /// that recorded it, in the order they were recorded; `None` if they could not be read.
    BatchRead {
        txn: TxnId,
        records: Option<Vec<(String, Record)>>,
    },
    /// Whether the journal can make records durable. While it cannot, new requests are refused at once
    /// (RC 91): nothing they lead to could be made durable.
    JournalWritable(bool),
    /// Cluster mode: a plea another node left in the store (see [`Plea`]), for this node to act on.
    Plea(Plea),
}

/// What the shell must do, in order: records to journal, and effects, each of which leaves only after
/// every record before it is durable (write-ahead: see [`Gate`](crate::Gate)).
///
/// The answer contract: every [`Event::Request`] gets exactly one [`Action::Answer`] or
/// [`Action::NoAnswer`] for its connection, at once or when its transaction ends (a retransmit that
/// joins a transaction in flight is answered with it), unless the connection closes first.
#[derive(Debug)]
pub enum Action {
    Journal(Record),
    /// Send a message (issuer dialect) on an upstream link; `txn` is the transaction it belongs to.
    Send {
        link: LinkId,
        txn: Option<TxnId>,
        msg: Message,
    },
    /// Answer a terminal (terminal dialect); `txn` is the transaction it ends, if it had one.
    Answer {
        conn: ConnId,
        txn: Option<TxnId>,
        msg: Message,
    },
    /// A terminal's message gets no answer: it was itself an answer (a response MTI), or its dialect
    /// cannot carry one.
    NoAnswer {
        conn: ConnId,
        why: Unanswered,
    },
    /// Close an upstream link (it failed to sign on or to echo); the shell reconnects it.
    CloseLink(LinkId),
    /// Cluster mode: claim an idempotency key in the shared store, in the same commit as the records
    /// before it; the store answers with [`Event::Claimed`].
    Claim(Claim),
    /// Cluster mode: ask the shared store who holds a key (claiming nothing), after the records before
    /// it are committed; answered with [`Event::Claimed`] (`None`: nobody).
    Lookup(Claim),
    /// Cluster mode: read a terminal's open batch from the shared store, after the records before it are
    /// committed; answered with [`Event::BatchRead`].
    ReadBatch(OpenBatch),
    /// Answer a terminal at once, ahead of held effects: an answer that needs no new record durable (a
    /// refusal of a request that was not forwarded, or a replay of a transaction's answer). Given
    /// while the journal cannot write. A replay names the transaction it `repeats`: it is held while
    /// a record of that transaction is not durable yet (the answer in memory may be one the journal
    /// has not made durable, which a restart or a takeover would contradict by a reversal).
    AnswerNow {
        conn: ConnId,
        msg: Message,
        repeats: Option<TxnId>,
    },
    /// Cluster mode: the provisional forward of this transaction, still held by the write-ahead gate
    /// behind its claim's commit, never goes out. The gate takes this; nothing else sees it.
    Withdraw(TxnId),
    /// Cluster mode: the switch admitted a reversal in a terminal's name (see [`Plea`]). Not held: the
    /// shell keeps the plea until [`Action::PleaSettled`], and leaves what it keeps in the store if the
    /// node ends first.
    Plead(Plea),
    /// Cluster mode: the reversal of this plea has its outcome recorded. Held like any effect: once
    /// those records are durable the plea is not needed any more, in the shell or in the store.
    PleaSettled(Plea),
}

/// Why a terminal's message got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// A response MTI (0110, 0210...): it answers nothing the switch asked.
    Response,
    /// The answer cannot be built in the terminal's dialect.
    Unbuildable,
}

impl Unanswered {
    /// A metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Unanswered::Response => "response_mti",
            Unanswered::Unbuildable => "unbuildable",
        }
    }
}
