//! The upstream part of the engine: every link's state, what is outstanding on each (keyed by link, MTI
//! class and upstream STAN), and the late window of timed-out requests. STANs are allocated here and only
//! here, so that no two outstanding messages of one class on one link ever share one.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use iso8583::Class;

use crate::FastMap;
use crate::config::Stans;
use crate::event::{LinkId, TxnId};

/// How long after its timeout an answer still counts as late (rather than unmatched). Until then its
/// upstream STAN is not reused.
const LATE_WINDOW: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkState {
    Down,
    /// Connected; the sign-on (0800, DE70=001) is out.
    SigningOn,
    /// Signed on: carries traffic.
    Ready,
}

/// A network-management probe awaiting its 0810.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    SignOn,
    Echo,
}

/// What an upstream message answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pending {
    Request(TxnId),
    /// A request that timed out: its answer, if it comes, is late.
    Late(TxnId),
    /// An attempt of what the store-and-forward queue owes (a reversal or an advice).
    Saf(TxnId),
    Probe,
}

/// Where an issuer's answer is matched: the link it came on, its MTI class and its STAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PendingKey {
    pub(crate) link: LinkId,
    pub(crate) class: Class,
    pub(crate) stan: u32,
}

#[derive(Debug)]
struct Link {
    issuer: usize,
    state: LinkState,
    /// Requests forwarded and not yet answered or timed out: the load used to pick a link.
    in_flight: u32,
    last_traffic: Option<Instant>,
    probe: Option<(Probe, u32)>,
}

#[derive(Debug)]
pub(crate) struct Links {
    links: Vec<Link>,
    stans: Stans,
    /// The last STAN given, on any link: one sequence for them all, since an issuer reached over
    /// several links (or their hosts, under one DE32) takes them as one sender, and one STAN twice in
    /// a second of DE7 would make a reversal's DE90 name two requests.
    last_stan: u32,
    pending: FastMap<PendingKey, Pending>,
    /// Timed-out requests' keys, oldest first, with the end of their late window.
    late: VecDeque<(PendingKey, Instant)>,
}

impl Links {
    /// `links[i]` is the issuer index of link `i`; each numbers its messages with `stans`.
    pub(crate) fn new(issuers: impl Iterator<Item = usize>, stans: Stans) -> Links {
        let links = issuers
            .map(|issuer| Link {
                issuer,
                state: LinkState::Down,
                in_flight: 0,
                last_traffic: None,
                probe: None,
            })
            .collect();
        Links {
            links,
            stans,
            last_stan: 0,
            pending: FastMap::default(),
            late: VecDeque::new(),
        }
    }

    /// Every link with its issuer's index.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (LinkId, usize)> + '_ {
        self.links
            .iter()
            .enumerate()
            .map(|(i, l)| (LinkId(i as u32), l.issuer))
    }

    fn get(&self, link: LinkId) -> Option<&Link> {
        self.links.get(link.0 as usize)
    }

    fn get_mut(&mut self, link: LinkId) -> Option<&mut Link> {
        self.links.get_mut(link.0 as usize)
    }

    pub(crate) fn exists(&self, link: LinkId) -> bool {
        self.get(link).is_some()
    }

    pub(crate) fn issuer(&self, link: LinkId) -> Option<usize> {
        self.get(link).map(|l| l.issuer)
    }

    pub(crate) fn state(&self, link: LinkId) -> LinkState {
        self.get(link).map_or(LinkState::Down, |l| l.state)
    }

    pub(crate) fn is_ready(&self, link: LinkId) -> bool {
        self.state(link) == LinkState::Ready
    }

    pub(crate) fn issuer_ready(&self, issuer: usize) -> bool {
        self.links
            .iter()
            .any(|l| l.issuer == issuer && l.state == LinkState::Ready)
    }

    /// The least loaded signed-on link of `issuer`.
    pub(crate) fn pick(&self, issuer: usize) -> Option<LinkId> {
        self.links
            .iter()
            .enumerate()
            .filter(|(_, l)| l.issuer == issuer && l.state == LinkState::Ready)
            .min_by_key(|(_, l)| l.in_flight)
            .map(|(i, _)| LinkId(i as u32))
    }

    /// Allocates the next STAN for a message of `class` on `link` and records what its answer will
    /// answer. STANs run through the switch's [`Stans`], one sequence for every link, and skip any
    /// still outstanding (bounded: with the whole block outstanding, which in-flight caps rule out, the
    /// next one is reused).
    pub(crate) fn claim(&mut self, link: LinkId, class: Class, what: Pending) -> PendingKey {
        let mut key = PendingKey {
            link,
            class,
            stan: 0,
        };
        for _ in 0..self.stans.len() {
            self.last_stan = self.stans.after(self.last_stan);
            key.stan = self.last_stan;
            if !self.pending.contains_key(&key) {
                break;
            }
        }
        self.pending.insert(key, what);
        key
    }

    /// What an answer with `key` answers, forgetting it.
    pub(crate) fn take(&mut self, key: PendingKey) -> Option<Pending> {
        self.pending.remove(&key)
    }

    pub(crate) fn release(&mut self, key: PendingKey) {
        self.pending.remove(&key);
    }

    /// Traffic on `link` at `now` (the echo timer runs from the last).
    pub(crate) fn traffic(&mut self, link: LinkId, now: Instant) {
        if let Some(l) = self.get_mut(link) {
            l.last_traffic = Some(now);
        }
    }

    pub(crate) fn last_traffic(&self, link: LinkId) -> Option<Instant> {
        self.get(link).and_then(|l| l.last_traffic)
    }

    /// A request went out on `link`.
    pub(crate) fn request_sent(&mut self, link: LinkId, now: Instant) {
        if let Some(l) = self.get_mut(link) {
            l.in_flight += 1;
            l.last_traffic = Some(now);
        }
    }

    /// A request on `key`'s link was answered.
    pub(crate) fn request_answered(&mut self, key: PendingKey) {
        if let Some(l) = self.get_mut(key.link) {
            l.in_flight = l.in_flight.saturating_sub(1);
        }
    }

    /// A request on `key`'s link timed out at `now`: an answer to it is late until its window ends, and
    /// its STAN is not reused until then.
    pub(crate) fn request_timed_out(&mut self, key: PendingKey, txn: TxnId, now: Instant) {
        self.request_answered(key);
        self.pending.insert(key, Pending::Late(txn));
        self.late.push_back((key, now + LATE_WINDOW));
    }

    /// Forgets timed-out requests whose late window has passed.
    pub(crate) fn sweep_late(&mut self, now: Instant) {
        while let Some(&(key, until)) = self.late.front() {
            if until > now {
                break;
            }
            self.late.pop_front();
            if matches!(self.pending.get(&key), Some(Pending::Late(_))) {
                self.pending.remove(&key);
            }
        }
    }

    /// The link connected: its sign-on goes out next.
    pub(crate) fn connected(&mut self, link: LinkId, now: Instant) {
        if let Some(l) = self.get_mut(link) {
            l.state = LinkState::SigningOn;
            l.last_traffic = Some(now);
        }
    }

    /// The link dropped; a probe it had out is forgotten.
    pub(crate) fn dropped(&mut self, link: LinkId) {
        let Some(l) = self.get_mut(link) else {
            return;
        };
        l.state = LinkState::Down;
        if let Some((_, stan)) = l.probe.take() {
            self.release(PendingKey {
                link,
                class: Class::NETWORK,
                stan,
            });
        }
    }

    /// A probe went out on `link` with `key`.
    pub(crate) fn probe_sent(&mut self, probe: Probe, key: PendingKey) {
        if let Some(l) = self.get_mut(key.link) {
            l.probe = Some((probe, key.stan));
        }
    }

    pub(crate) fn probe(&self, link: LinkId) -> Option<Probe> {
        self.get(link).and_then(|l| l.probe).map(|(p, _)| p)
    }

    /// The probe answered by STAN `stan`, if it is the one `link` has out (now no longer out).
    pub(crate) fn probe_answered(&mut self, link: LinkId, stan: u32) -> Option<Probe> {
        let l = self.get_mut(link)?;
        match l.probe {
            Some((probe, expected)) if expected == stan => {
                l.probe = None;
                Some(probe)
            }
            _ => None,
        }
    }

    pub(crate) fn signed_on(&mut self, link: LinkId) {
        if let Some(l) = self.get_mut(link) {
            l.state = LinkState::Ready;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stans_claimed(stans: Stans, n: usize) -> Vec<u32> {
        let mut links = Links::new([0].into_iter(), stans);
        (0..n)
            .map(|_| {
                let key = links.claim(LinkId(0), Class::FINANCIAL, Pending::Probe);
                links.release(key);
                key.stan
            })
            .collect()
    }

    #[test]
    fn a_node_numbers_within_its_block_and_wraps_to_its_first() {
        let block = Stans::block(3);
        assert_eq!((block.first, block.last), (300_000, 399_999));
        let stans = stans_claimed(block, 100_002);
        assert_eq!(stans[..2], [300_000, 300_001]);
        assert_eq!(stans[99_999..], [399_999, 300_000, 300_001]);
        assert_eq!(Stans::block(0).first, 1, "000000 is no STAN");
        assert_eq!(Stans::block(9).last, 999_999);
    }

    #[test]
    fn every_link_takes_its_stans_from_one_sequence() {
        let mut links = Links::new([0, 0, 1].into_iter(), Stans::ALL);
        let stans: Vec<u32> = [0, 1, 2, 0]
            .map(|l| {
                links
                    .claim(LinkId(l), Class::FINANCIAL, Pending::Probe)
                    .stan
            })
            .to_vec();
        assert_eq!(stans, [1, 2, 3, 4]);
    }

    #[test]
    fn a_single_switch_numbers_through_every_stan_skipping_those_outstanding() {
        let mut links = Links::new([0].into_iter(), Stans::ALL);
        let first = links.claim(LinkId(0), Class::FINANCIAL, Pending::Probe);
        assert_eq!(first.stan, 1);
        links.last_stan = 999_998;
        let last = links.claim(LinkId(0), Class::FINANCIAL, Pending::Probe);
        assert_eq!(last.stan, 999_999);
        // Round again: 1 is still out, so 2.
        let again = links.claim(LinkId(0), Class::FINANCIAL, Pending::Probe);
        assert_eq!(again.stan, 2);
    }
}
