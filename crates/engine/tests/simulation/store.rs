//! The store every node of a cluster shares, simulated: what `acquiro_commit` (the schema's commit
//! function), the lease's renewal, the takeover, the join and the holder lookup of `crates/cluster`
//! decide, over maps instead of tables, each operation atomic as its transaction is. The statements
//! themselves are held to the same rules on a real PostgreSQL by `crates/cluster/tests/store.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use engine::{Claim, Holder, OpenBatch, Plea, Record, Step, TxnId};

/// What one group commit of a node carries (the cluster journal's batch).
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub records: Vec<(u64, Record)>,
    pub claims: Vec<Claim>,
    /// Keys to look up once the batch is committed.
    pub lookups: Vec<Claim>,
    /// Nodes whose work these records carry on, with the last record of theirs handed on.
    pub retire: Vec<(String, u64)>,
    /// Terminals' batches to read once the batch is committed.
    pub reads: Vec<OpenBatch>,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.claims.is_empty()
            && self.lookups.is_empty()
            && self.retire.is_empty()
            && self.reads.is_empty()
    }
}

/// A node's row.
#[derive(Debug, Default)]
struct Row {
    epoch: u64,
    /// Simulated time from the start.
    lease_until: Duration,
    /// Its records up to this one are handed on to the node that took it over.
    retired_seq: u64,
    /// Recovery needs none of its records before this one.
    needed_seq: u64,
    /// The last takeover: by which node, under which of its epochs, through which record.
    taken: Option<(String, u64, u64)>,
}

type Key = (String, String, u32, u16, bool);

fn key(c: &Claim) -> Key {
    (
        c.terminal.to_string(),
        c.merchant.to_string(),
        c.stan,
        c.date,
        c.reversal,
    )
}

/// The node's epoch is no longer current: nothing of it commits.
#[derive(Debug)]
pub(crate) struct Fenced;

pub(crate) struct Joined {
    pub epoch: u64,
    /// What recovery reads: the node's records after what was handed on or finished with.
    pub records: Vec<Record>,
    pub last_seq: u64,
    pub last_txn: Option<TxnId>,
}

pub(crate) struct Takeover {
    pub node: String,
    pub through: u64,
    pub records: Vec<Record>,
}

pub(crate) struct Store {
    lease: Duration,
    nodes: BTreeMap<String, Row>,
    records: BTreeMap<String, Vec<(u64, Record)>>,
    claims: BTreeMap<Key, (String, TxnId, u64)>,
    /// Pleas nodes left or hold (see `engine::Plea`), by key as `pleas` keeps them: when the last 91
    /// under it was told, and the node that took it on, under which epoch.
    pleas: BTreeMap<PleaKey, (SystemTime, Option<(String, u64)>)>,
    /// Off: commits, renewals and takeovers ignore the epoch, which is what the simulation must catch.
    fencing: bool,
    /// Off: pleas left are dropped, which is what the simulation must catch.
    keeps_pleas: bool,
}

/// A plea's key, as the `pleas` table's: terminal, merchant, STAN, date.
type PleaKey = (String, String, u32, u16);

fn plea_key(plea: Plea) -> (PleaKey, SystemTime) {
    let key = (plea.terminal, plea.merchant, plea.stan, plea.date);
    (key, plea.refused_at)
}

impl Store {
    pub(crate) fn new(lease: Duration, fencing: bool, keeps_pleas: bool) -> Store {
        Store {
            lease,
            nodes: BTreeMap::new(),
            records: BTreeMap::new(),
            claims: BTreeMap::new(),
            pleas: BTreeMap::new(),
            fencing,
            keeps_pleas,
        }
    }

    fn current(&self, node: &str, epoch: u64) -> bool {
        !self.fencing || self.nodes.get(node).is_some_and(|r| r.epoch == epoch)
    }

    fn last_seq(&self, node: &str) -> u64 {
        self.records
            .get(node)
            .and_then(|r| r.last())
            .map_or(0, |(seq, _)| *seq)
    }

    fn records_between(&self, node: &str, after: u64, through: u64) -> Vec<Record> {
        let all = self
            .records
            .get(node)
            .map(Vec::as_slice)
            .unwrap_or_default();
        all.iter()
            .filter(|(seq, _)| *seq > after && *seq <= through)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Joins as `node` under a new epoch; `None` while a live node is taking its work over (the node
    /// tries again).
    pub(crate) fn join(&mut self, node: &str, now: Duration) -> Option<Joined> {
        if let Some(row) = self.nodes.get(node)
            && let Some((by, by_epoch, through)) = &row.taken
            && row.retired_seq < *through
            && self
                .nodes
                .get(by)
                .is_some_and(|t| t.lease_until > now && t.epoch == *by_epoch)
        {
            return None;
        }
        let lease = self.lease;
        let row = self.nodes.entry(node.to_string()).or_default();
        row.epoch += 1;
        // A takeover left unfinished by a taker whose lease lapsed is abandoned: the node does its
        // work itself, and the taker's records of it, committed late, retire nothing of it.
        if row
            .taken
            .as_ref()
            .is_some_and(|(.., through)| row.retired_seq < *through)
        {
            row.taken = None;
        }
        row.lease_until = now + lease;
        let (epoch, after) = (
            row.epoch,
            row.retired_seq.max(row.needed_seq.saturating_sub(1)),
        );
        let all = self
            .records
            .get(node)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Some(Joined {
            epoch,
            records: self.records_between(node, after, u64::MAX),
            last_seq: self.last_seq(node),
            last_txn: all.iter().map(|(_, r)| r.txn).max(),
        })
    }

    /// A node leaves its pleas for the others: not behind the fence, which a node that leaves them has
    /// usually lost. One already there keeps its taker, and the later 91.
    pub(crate) fn plead(&mut self, pleas: impl IntoIterator<Item = Plea>) {
        self.put_pleas(pleas, None);
    }

    /// `node` holds `pleas` of its own, under `epoch`: taken on by it, so that they are free for
    /// another node once it lapses (a machine lost takes its memory and its pleas file with it). One
    /// already there keeps its taker, and the later 91.
    pub(crate) fn hold_pleas(
        &mut self,
        node: &str,
        epoch: u64,
        pleas: impl IntoIterator<Item = Plea>,
    ) {
        self.put_pleas(pleas, Some((node.to_string(), epoch)));
    }

    fn put_pleas(&mut self, pleas: impl IntoIterator<Item = Plea>, by: Option<(String, u64)>) {
        for plea in pleas.into_iter().filter(|_| self.keeps_pleas) {
            let (key, refused) = plea_key(plea);
            (self.pleas.entry(key))
                .and_modify(|(at, _)| *at = (*at).max(refused))
                .or_insert((refused, by.clone()));
        }
    }

    /// The pleas no live node has taken on (none did, or the one that did lost its lease or epoch
    /// since), taken on by `node` under `epoch`.
    pub(crate) fn take_pleas(&mut self, node: &str, epoch: u64, now: Duration) -> Vec<Plea> {
        let live = |(by, by_epoch): &(String, u64)| {
            (self.nodes.get(by)).is_some_and(|r| r.epoch == *by_epoch && r.lease_until > now)
        };
        let free: Vec<PleaKey> = (self.pleas.iter())
            .filter(|(_, (_, taken))| !taken.as_ref().is_some_and(live))
            .map(|(key, _)| key.clone())
            .collect();
        let mut taken = Vec::new();
        for key in free {
            let (refused, by) = self.pleas.get_mut(&key).expect("a plea just read");
            *by = Some((node.to_string(), epoch));
            let (terminal, merchant, stan, date) = key;
            let refused_at = *refused;
            (taken).push(Plea {
                terminal,
                merchant,
                stan,
                date,
                refused_at,
            });
        }
        taken
    }

    /// `plea`'s reversal has its outcome durable: deleted, unless a later 91 under its key is there.
    pub(crate) fn settle_plea(&mut self, plea: &Plea) {
        let (key, refused) = plea_key(plea.clone());
        if self.pleas.get(&key).is_some_and(|(at, _)| *at <= refused) {
            self.pleas.remove(&key);
        }
    }

    /// One batch in one transaction behind the fence; returns the claims it lost.
    pub(crate) fn commit(
        &mut self,
        node: &str,
        epoch: u64,
        batch: &Batch,
    ) -> Result<Vec<TxnId>, Fenced> {
        if !self.current(node, epoch) {
            return Err(Fenced);
        }
        for (y, seq) in &batch.retire {
            if let Some(row) = self.nodes.get_mut(y)
                && row.taken.as_ref().is_some_and(|(by, ..)| by == node)
            {
                row.retired_seq = row.retired_seq.max(*seq);
            }
        }
        let mut lost = Vec::new();
        for claim in &batch.claims {
            let holder = (node.to_string(), claim.txn, claim.fingerprint);
            let slot = self.claims.get_mut(&key(claim));
            match (&claim.replacing, slot) {
                (None, None) => {
                    self.claims.insert(key(claim), holder);
                }
                (Some((old_node, old_txn)), Some(held))
                    if held.0 == old_node.as_str() && held.1 == *old_txn =>
                {
                    *held = holder;
                }
                _ => lost.push(claim.txn),
            }
        }
        // A provisional forward stands only if its claim was won.
        let records = self.records.entry(node.to_string()).or_default();
        records.extend(batch.records.iter().map(|(seq, record)| {
            let kept = match engine::withdrawn(record, &batch.claims) {
                Some(stand_in) if lost.contains(&record.txn) => stand_in,
                _ => record.clone(),
            };
            (*seq, kept)
        }));
        Ok(lost)
    }

    /// Renews the lease, and notes that recovery needs none of the node's transactions before
    /// `oldest_needed`.
    pub(crate) fn renew(
        &mut self,
        node: &str,
        epoch: u64,
        now: Duration,
        oldest_needed: TxnId,
    ) -> Result<(), Fenced> {
        if !self.current(node, epoch) {
            return Err(Fenced);
        }
        let all = self
            .records
            .get(node)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let first_needed = all
            .iter()
            .filter(|(_, r)| r.txn >= oldest_needed)
            .min_by_key(|(seq, r)| (r.txn, *seq))
            .map(|(seq, _)| *seq);
        let needed = first_needed.unwrap_or(self.last_seq(node) + 1);
        let lease = self.lease;
        let row = self.nodes.get_mut(node).ok_or(Fenced)?;
        row.lease_until = now + lease;
        row.needed_seq = row.needed_seq.max(needed);
        Ok(())
    }

    /// Takes over the work of the first node whose lease lapsed, if one has work no live node is
    /// taking over already.
    pub(crate) fn take_over(
        &mut self,
        me: &str,
        epoch: u64,
        now: Duration,
    ) -> Result<Option<Takeover>, Fenced> {
        if !self.current(me, epoch) {
            return Err(Fenced);
        }
        if self.nodes.get(me).is_none_or(|r| r.lease_until <= now) {
            return Ok(None);
        }
        let live = |by: &str, by_epoch: u64| {
            self.nodes
                .get(by)
                .is_some_and(|t| t.lease_until >= now && t.epoch == by_epoch)
        };
        let lapsed = self.nodes.iter().find(|(y, row)| {
            y.as_str() != me
                && row.lease_until < now
                && self.last_seq(y) > row.retired_seq
                && row.taken.as_ref().is_none_or(|(by, by_epoch, through)| {
                    row.retired_seq >= *through || !live(by, *by_epoch)
                })
        });
        let Some((y, row)) = lapsed else {
            return Ok(None);
        };
        let (y, last) = (y.clone(), self.last_seq(y));
        let after = row.retired_seq.max(row.needed_seq.saturating_sub(1));
        let row = self.nodes.get_mut(&y).expect("the node's row");
        row.epoch += 1;
        row.taken = Some((me.to_string(), epoch, last));
        Ok(Some(Takeover {
            records: self.records_between(&y, after, last),
            node: y,
            through: last,
        }))
    }

    /// Who holds the key `claim` names, with that transaction's records, as node `asking` reads it.
    pub(crate) fn holder(&self, claim: &Claim, asking: &str) -> Option<Holder> {
        let (node, txn, fingerprint) = self.claims.get(&key(claim))?;
        let all = self
            .records
            .get(node)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mine: Vec<&(u64, Record)> = all.iter().filter(|(_, r)| r.txn == *txn).collect();
        let last = mine.last().map_or(0, |(seq, _)| *seq);
        let retired = self.nodes.get(node).map_or(0, |r| r.retired_seq);
        Some(Holder {
            node: node.as_str().into(),
            txn: *txn,
            fingerprint: *fingerprint,
            records: mine.into_iter().map(|(_, r)| r.clone()).collect(),
            fenced: last <= retired || node == asking,
            others: Vec::new(),
        })
    }

    /// [`Store::holder`], with every node's records of the other transactions at the key's terminal
    /// and STAN, as `crates/cluster` reads them for a lookup.
    pub(crate) fn looked_up(&self, claim: &Claim, asking: &str) -> Option<Holder> {
        let mut holder = self.holder(claim, asking)?;
        let at_stan = |r: &Record| matches!(&r.step, Step::Received(x) if x.terminal == claim.terminal && x.stan == claim.stan);
        for (node, records) in &self.records {
            let txns: BTreeSet<TxnId> = (records.iter())
                .filter(|(_, r)| at_stan(r))
                .map(|(_, r)| r.txn)
                .filter(|&txn| (node.as_str(), txn) != (holder.node.as_str(), holder.txn))
                .collect();
            let theirs = records.iter().filter(|(_, r)| txns.contains(&r.txn));
            let mut theirs: Vec<&Record> = theirs.map(|(_, r)| r).collect();
            theirs.sort_by_key(|r| r.txn);
            (holder.others).extend(
                theirs
                    .into_iter()
                    .map(|r| (node.as_str().into(), r.clone())),
            );
        }
        Some(holder)
    }

    /// Whether everything `node` committed was handed on to another node.
    pub(crate) fn handed_on(&self, node: &str) -> bool {
        self.last_seq(node) <= self.nodes.get(node).map_or(0, |r| r.retired_seq)
    }

    /// Every node's records of the transactions `batch`'s terminal made there (its own, and the copies
    /// of takeovers), in the order they were recorded: what `crates/cluster`'s read of a batch gives,
    /// less its bound (the terminal's last close, before which nothing counts).
    pub(crate) fn batch(&self, batch: &OpenBatch) -> Vec<(String, Record)> {
        let mut found = Vec::new();
        for (node, records) in &self.records {
            let theirs: std::collections::BTreeSet<TxnId> = (records.iter())
                .filter(|(_, r)| matches!(&r.step, Step::Received(r) if r.terminal == batch.terminal && r.merchant == batch.merchant))
                .map(|(_, r)| r.txn)
                .collect();
            let mine = records.iter().filter(|(_, r)| theirs.contains(&r.txn));
            found.extend(mine.map(|(seq, r)| (r.at, node.clone(), *seq, r.clone())));
        }
        found.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
        found.into_iter().map(|(_, node, _, r)| (node, r)).collect()
    }

    /// Every committed record, with its node.
    pub(crate) fn records(&self) -> Vec<(String, Record)> {
        let each = self.records.iter();
        each.flat_map(|(node, rs)| rs.iter().map(|(_, r)| (node.clone(), r.clone())))
            .collect()
    }
}
