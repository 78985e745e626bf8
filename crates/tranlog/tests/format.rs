//! The journal's format is a contract: a journal written by an earlier release must still scan, verify
//! and recover. `tests/fixtures/journal-v1` was written by release 0.1.0 (every kind of record, a restart
//! in the middle, two requests in doubt and two reversals pending at the end) and is never rewritten;
//! `journal-v1.jsonl` beside it holds the same records as JSON, where steps are named rather than
//! numbered, so that a record that decodes as something else (variants reordered) is caught too.
//! A change that cannot read it is a defect, or carries a versioned migration with its own fixture test.
//!
//! A new fixture, for a new format version, is written by the ignored test below:
//! `cargo test -p tranlog --test format -- --ignored write_fixture` (it refuses to overwrite one).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use engine::{
    Action, Config, ConnId, Engine, Event, Idempotency, Issuer, LinkId, Now, Policy, Record,
    Recovered, Recovery, Reversal, Step,
};
use iso8583::{Class, Message, Mti, Spec};
use tranlog::{Mode, OnCorrupt, Options};

const FIXTURE: &str = "tests/fixtures/journal-v1";
const FIXTURE_JSON: &str = "tests/fixtures/journal-v1.jsonl";
const PAN: &str = "4761739001010010";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE)
}

fn fixture_json() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE_JSON)
}

fn spec() -> &'static Spec {
    dialects::builtin("iso87ascii").expect("a built-in dialect")
}

fn config() -> Config {
    Config {
        issuers: vec![Issuer {
            name: "visa".into(),
            spec: spec(),
            links: 2,
            response_timeout: Duration::from_secs(5),
            policy: Policy::default(),
        }],
        routes: vec![("4".into(), 0)],
        default_route: None,
        idempotency: Idempotency::default(),
        reversal: Reversal {
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
            max_attempts: 3,
            expiry: Duration::from_secs(3600),
        },
        acquirer_id: "12345".into(),
        echo_interval: Duration::from_secs(3600),
        card_key: engine::CardKey([7; 16]),
        shared_store: false,
        terminal_patience: Duration::ZERO,
        cutover: Default::default(),
        stans: engine::Stans::ALL,
    }
}

/// An engine and its clock; the wall clock starts at a fixed date, so that the fixture's records are
/// inside the idempotency window of the test that reads them.
struct Shell {
    engine: Engine,
    now: Now,
    records: Vec<Record>,
}

impl Shell {
    fn new(wall: SystemTime) -> Shell {
        Shell {
            engine: Engine::new(config()),
            now: Now {
                mono: Instant::now(),
                wall,
            },
            records: Vec::new(),
        }
    }

    fn keep(&mut self, out: Vec<Action>) -> Vec<Action> {
        self.records.extend(out.iter().filter_map(|a| match a {
            Action::Journal(r) => Some(r.clone()),
            _ => None,
        }));
        out
    }

    fn step(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        self.engine.handle(self.now, event, &mut out);
        self.keep(out)
    }

    /// Lets `d` pass and fires the timers due.
    fn pass(&mut self, d: Duration) -> Vec<Action> {
        self.now = self.now.after(d);
        let mut out = Vec::new();
        self.engine.handle_timeout(self.now, &mut out);
        self.keep(out)
    }

    fn recover(&mut self, records: &[Record]) -> Recovered {
        let mut recovery = Recovery::default();
        records.iter().for_each(|r| recovery.add(r.clone()));
        let mut out = Vec::new();
        let found = self.engine.recover(self.now, recovery, &mut out);
        self.keep(out);
        found
    }

    fn sign_on(&mut self) {
        for link in [LinkId(0), LinkId(1)] {
            let out = self.step(Event::LinkUp(link));
            let (_, sign_on) = sent(&out).next().expect("a sign-on");
            let msg = answer(sign_on, "00");
            self.step(Event::Response { link, msg });
        }
    }

    fn request(&mut self, conn: u64, msg: Message) -> Vec<Action> {
        self.step(Event::Request {
            conn: ConnId(conn),
            msg,
        })
    }

    /// The issuer answers `out`'s one message upstream with `rc`.
    fn issuer_answers(&mut self, out: &[Action], rc: &str) -> Vec<Action> {
        let (link, msg) = sent(out).next().expect("a message upstream");
        let msg = answer(msg, rc);
        self.step(Event::Response { link, msg })
    }
}

fn purchase(stan: u32, amount: u64) -> Message {
    let mut m = Message::new(spec(), Mti::FINANCIAL);
    m.set(2, PAN)
        .and_then(|m| m.set(3, "000000"))
        .and_then(|m| m.set_number(4, amount))
        .and_then(|m| m.set(7, "1121093000"))
        .and_then(|m| m.set_number(11, u64::from(stan)))
        .and_then(|m| m.set(12, "093000"))
        .and_then(|m| m.set(13, "1121"))
        .and_then(|m| m.set(22, "051"))
        .and_then(|m| m.set(25, "00"))
        .and_then(|m| m.set(41, "TERM0001"))
        .and_then(|m| m.set(42, "MERCHANT0000001"))
        .and_then(|m| m.set(49, "840"))
        .expect("a purchase");
    m
}

fn answer(request: &Message, rc: &str) -> Message {
    let mut a = request
        .response(&[2, 3, 4, 7, 11, 32, 37, 41, 42, 49, 70, 90])
        .expect("an answer");
    a.set(39, rc).expect("DE39");
    if rc == "00" && request.mti().class() != Class::NETWORK && request.mti() != Mti::REVERSAL {
        a.set(38, "A1B2C3").expect("DE38");
    }
    a
}

fn sent(out: &[Action]) -> impl Iterator<Item = (LinkId, &Message)> {
    out.iter().filter_map(|a| match a {
        Action::Send { link, msg, .. } => Some((*link, msg)),
        _ => None,
    })
}

fn answers(out: &[Action]) -> impl Iterator<Item = &Message> {
    out.iter().filter_map(|a| match a {
        Action::Answer { msg, .. } => Some(msg),
        _ => None,
    })
}

/// The start of the fixture's wall clock.
fn written_at() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_253_400)
}

/// The records of the fixture: every kind, as a day of traffic with one restart makes them.
fn traffic() -> Vec<Record> {
    let mut s = Shell::new(written_at());
    s.sign_on();
    // Approved, then retransmitted: Received, Forwarded, Answered, Told, Replayed.
    let out = s.request(1, purchase(1, 100));
    s.issuer_answers(&out, "00");
    s.request(1, purchase(1, 100));
    // Declined, with a retransmit that joins it in flight: Joined.
    let out = s.request(1, purchase(2, 151));
    s.request(1, purchase(2, 151));
    s.issuer_answers(&out, "51");
    // The same key with another amount: Rejected (94).
    s.request(1, purchase(1, 999));
    // Timed out, answered late, reversed: TimedOut, ReversalQueued, ReversalSent, LateAnswer,
    // ReversalAcknowledged.
    let forward = s.request(1, purchase(4, 400));
    let reversal = s.pass(Duration::from_secs(5));
    s.issuer_answers(&forward, "00");
    s.issuer_answers(&reversal, "00");
    // Timed out, its reversal never acknowledged: ReversalExpired.
    s.request(1, purchase(6, 600));
    s.pass(Duration::from_secs(5));
    for _ in 0..3 {
        s.pass(Duration::from_secs(1));
    }
    // Its terminal gone before the approval: Disconnected, Undeliverable, a reversal left pending.
    let out = s.request(9, purchase(5, 500));
    s.step(Event::ConnClosed(ConnId(9)));
    s.issuer_answers(&out, "00");
    // Forwarded, no outcome: in doubt at the restart (InDoubt), its reversal left pending.
    s.request(1, purchase(7, 700));
    let before = s.records.clone();
    let mut s = Shell {
        records: before.clone(),
        ..Shell::new(s.now.wall + Duration::from_secs(30))
    };
    s.recover(&before);
    s.sign_on();
    s.pass(Duration::ZERO);
    // After the restart, two more forwarded with no outcome: in doubt for whoever reads the fixture.
    s.request(1, purchase(8, 800));
    s.request(1, purchase(9, 900));
    s.records
}

/// The names of the record kinds (`Step`'s variants) in `records`.
fn kinds(records: &[Record]) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| {
            let step = format!("{:?}", r.step);
            step.split([' ', '(', '{'])
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

const EVERY_KIND: &[&str] = &[
    "Received",
    "Rejected",
    "Joined",
    "Disconnected",
    "Replayed",
    "Forwarded",
    "Answered",
    "TimedOut",
    "LateAnswer",
    "Told",
    "Undeliverable",
    "InDoubt",
    "ReversalQueued",
    "ReversalSent",
    "ReversalAcknowledged",
    "ReversalExpired",
];

#[test]
#[ignore = "writes a new fixture; run once per format version"]
fn write_fixture() {
    let dir = fixture();
    assert!(
        !dir.exists(),
        "{} exists: fixtures are never rewritten",
        dir.display()
    );
    std::fs::create_dir_all(&dir).unwrap();
    let records = traffic();
    assert_eq!(
        kinds(&records),
        EVERY_KIND.iter().map(|k| k.to_string()).collect()
    );
    let scanned = tranlog::scan(&dir, RECOVER, |_, _| {}).unwrap();
    let json: String = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    std::fs::write(fixture_json(), json).unwrap();
    let mut writer = tranlog::Writer::start(&dir, Options::default(), &scanned, |_| {}).unwrap();
    writer.append_all(records);
    writer.close();
}

const RECOVER: Mode = Mode {
    repair: true,
    on_corrupt: OnCorrupt::Stop,
};

#[test]
fn a_journal_written_by_release_0_1_0_scans_verifies_and_recovers() {
    // Read as `acquiro tranlog verify` does: nothing repaired, every checksum and link checked.
    let verify = Mode {
        repair: false,
        on_corrupt: OnCorrupt::Stop,
    };
    let mut records = Vec::new();
    let scanned = tranlog::scan(&fixture(), verify, |_, r| records.push(r)).unwrap();
    assert!(scanned.problems.is_empty(), "{:?}", scanned.problems);
    assert!(scanned.torn.is_none());
    assert_eq!(scanned.last_seq, records.len() as u64);
    let json = std::fs::read_to_string(fixture_json()).unwrap();
    let expected: Vec<Record> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        records, expected,
        "every record reads back as what was written"
    );
    let every: BTreeSet<String> = EVERY_KIND.iter().map(|k| k.to_string()).collect();
    assert_eq!(kinds(&records), every, "every kind of record reads back");
    assert!(tranlog::verify_indexes(&fixture()).unwrap().is_empty());

    // A restart a few minutes after the fixture's last record.
    let last = records.iter().map(|r| r.at).max().unwrap();
    let mut s = Shell::new(last + Duration::from_secs(300));
    let found = s.recover(&records);
    assert_eq!(
        found.in_doubt, 2,
        "the two requests forwarded with no outcome"
    );
    assert_eq!(
        found.reversals, 2,
        "the undeliverable approval's and the earlier in-doubt one's"
    );
    s.sign_on();
    let out = s.pass(Duration::ZERO);
    let reversals: Vec<_> = sent(&out)
        .map(|(_, m)| (m.mti(), m.original_data().map(|o| o.stan)))
        .collect();
    let forwarded_stan = |amount: u64| {
        records.iter().find_map(|r| match &r.step {
            Step::Forwarded {
                upstream_stan,
                original,
                ..
            } if original.field(4) == Some(&format!("{amount:012}")) => Some(*upstream_stan),
            _ => None,
        })
    };
    for amount in [800, 900] {
        assert!(
            reversals.contains(&(Mti::REVERSAL, forwarded_stan(amount))),
            "the in-doubt request of {amount} is reversed by its upstream STAN: {reversals:?}"
        );
    }
    for amount in [500, 700] {
        assert!(
            reversals.contains(&(Mti::REVERSAL_REPEAT, forwarded_stan(amount))),
            "the pending reversal of {amount} resumes as a repeat: {reversals:?}"
        );
    }
    assert_eq!(reversals.len(), 4);

    // Retransmits are replayed what their terminals were told, and nothing goes upstream.
    for (stan, amount, rc, auth_code) in [(1, 100, "00", "A1B2C3"), (2, 151, "51", "")] {
        let out = s.request(2, purchase(stan, amount));
        assert_eq!(sent(&out).count(), 0);
        let told: Vec<_> = answers(&out).map(|m| (text(m, 39), text(m, 38))).collect();
        assert_eq!(told, [(rc.to_string(), auth_code.to_string())]);
    }
}

fn text(m: &Message, n: u8) -> String {
    m.get(n)
        .map(|f| f.unmasked().to_string())
        .unwrap_or_default()
}

/// This release's writer goes on after a journal release 0.1.0 wrote (it writes in place, with zeros
/// ahead of its records, where that release appended): recovery repairs nothing, the new records
/// follow the old in one chain, and the segment ends at its records once the writer stops.
#[test]
fn this_release_writes_on_after_a_journal_release_0_1_0_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let segments: Vec<PathBuf> = std::fs::read_dir(fixture())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for from in &segments {
        std::fs::copy(from, dir.path().join(from.file_name().unwrap())).unwrap();
    }
    let mut old = Vec::new();
    let scanned = tranlog::scan(dir.path(), RECOVER, |_, r| old.push(r)).unwrap();
    assert!(scanned.torn.is_none() && scanned.problems.is_empty());
    let more: Vec<Record> = traffic().into_iter().take(8).collect();
    let mut writer =
        tranlog::Writer::start(dir.path(), Options::default(), &scanned, |_| {}).unwrap();
    writer.append_all(more.clone());
    writer.close();

    let verify = Mode {
        repair: false,
        on_corrupt: OnCorrupt::Stop,
    };
    let mut all = Vec::new();
    let again = tranlog::scan(dir.path(), verify, |_, r| all.push(r)).unwrap();
    assert!(again.problems.is_empty(), "{:?}", again.problems);
    assert!(again.torn.is_none());
    assert_eq!(all, [old.clone(), more].concat());
    assert_eq!(again.last_seq, old.len() as u64 + 8);
    let last = again.segments.last().unwrap();
    assert_eq!(
        std::fs::metadata(&last.path).unwrap().len(),
        last.bytes,
        "no zeros left"
    );
}
