//! The switch end to end: real sockets between terminals, acquiro and a scripted issuer host.

mod support;

use std::time::Duration;

use engine::Step;
use iso8583::{Message, Mti, Spec};
use support::issuer::Issuer;
use support::terminal::{Terminal, text};
use support::{http_get, within};
use switch::{File, MemoryJournal, Running};
use wire::{FrameCodec, LengthHeader, Tpdu};

const TIMEOUT: &str = "400ms";

fn spec(name: &str) -> &'static Spec {
    dialects::builtin(name).unwrap()
}

struct Setup {
    switch: Running,
    journal: MemoryJournal,
    issuer: Issuer,
    terminal_spec: &'static Spec,
    codec: FrameCodec,
}

impl Setup {
    async fn new() -> Setup {
        Setup::with("iso87ascii", false, "echo_interval = \"1h\"").await
    }

    /// A switch with one listener (`dialect`, binary2 header, optional TPDU) and one issuer on
    /// iso87ascii with two connections, signed on before this returns. `extra` is more TOML.
    async fn with(dialect: &str, tpdu: bool, extra: &str) -> Setup {
        let issuer = Issuer::start(spec("iso87ascii"), Duration::from_millis(1200)).await;
        let toml = format!(
            r#"
            acquirer_id = "12345"
            {extra}
            [[listeners]]
            address = "127.0.0.1:0"
            dialect = "{dialect}"
            tpdu = {tpdu}
            max_frame = 1024
            [[issuers]]
            name = "visa"
            hosts = ["{}"]
            connections_per_host = 2
            response_timeout = "{TIMEOUT}"
            [reversals]
            backoff = "300ms"
            "#,
            issuer.addr
        );
        let settings = File::parse("test", &toml).unwrap().check().unwrap();
        let journal = MemoryJournal::new(10_000);
        let switch = switch::start(settings, Box::new(journal.clone()), Default::default())
            .await
            .unwrap();
        // Both links signed on: the issuer got two sign-ons, and the switch has taken an answer.
        within(
            "sign-on",
            issuer.wait_for(|r| r.iter().filter(|m| text(m, 70) == "001").count() == 2),
        )
        .await;
        within("ready", switch.ready()).await;
        let codec = FrameCodec::new(LengthHeader::Binary2).with_tpdu(tpdu);
        Setup {
            switch,
            journal,
            issuer,
            terminal_spec: spec(dialect),
            codec,
        }
    }

    async fn terminal(&self, tid: &str) -> Terminal {
        Terminal::connect(
            self.switch.listeners[0],
            self.terminal_spec,
            self.codec,
            tid,
        )
        .await
    }

    async fn wait_journal(&self, what: &str, mut f: impl FnMut(&Step) -> bool, count: usize) {
        within(
            what,
            self.journal
                .wait_for(|r| r.iter().filter(|r| f(&r.step)).count() >= count),
        )
        .await;
    }

    fn count(&self, mut f: impl FnMut(&Step) -> bool) -> usize {
        self.journal.records().iter().filter(|r| f(&r.step)).count()
    }
}

fn rc(m: &Message) -> String {
    text(m, 39)
}

#[tokio::test]
async fn approve_and_decline_restore_the_terminals_fields() {
    let s = Setup::new().await;
    let mut t = s.terminal("TERM0001").await;
    let answer = t.exchange(&t.purchase(123, 2500)).await;
    assert_eq!(answer.mti().as_str(), "0210");
    assert_eq!(
        (rc(&answer), text(&answer, 38)),
        ("00".into(), "A1B2C3".into())
    );
    assert_eq!(answer.stan(), Some(123));
    assert_eq!(
        (text(&answer, 41), text(&answer, 42)),
        ("TERM0001".into(), "MERCHANT0000001".into())
    );
    let declined = t.exchange(&t.purchase(124, 5151)).await;
    assert_eq!(
        (rc(&declined), declined.has(38), declined.stan()),
        ("51".into(), false, Some(124))
    );
    let up = s.issuer.of_class(2);
    assert_eq!(text(&up[0], 32), "12345", "DE32 set by the switch");
    assert_eq!(
        text(&up[0], 52).len(),
        16,
        "the PIN block reaches the issuer"
    );
}

#[tokio::test]
async fn links_are_persistent_multiplexed_and_renumber_stans() {
    let s = Setup::new().await;
    assert_eq!(
        *s.issuer.connections.lock().unwrap(),
        2,
        "connections_per_host links"
    );
    let mut a = s.terminal("TERM000A").await;
    let mut b = s.terminal("TERM000B").await;
    // Same STAN from two terminals, both held in flight at once.
    a.send(&a.purchase(42, 555)).await;
    b.send(&b.purchase(42, 555)).await;
    within(
        "both forwarded",
        s.issuer
            .wait_for(|r| r.iter().filter(|m| m.mti().class().digit() == 2).count() == 2),
    )
    .await;
    let up: Vec<_> = s
        .issuer
        .received_on()
        .into_iter()
        .filter(|(_, m)| m.mti().class().digit() == 2)
        .collect();
    let keys: Vec<_> = up.iter().map(|(conn, m)| (*conn, m.stan())).collect();
    assert_ne!(keys[0], keys[1], "(link, upstream STAN) never collide");
    s.issuer.release();
    let (x, y) = (a.answer().await, b.answer().await);
    assert_eq!((x.stan(), text(&x, 41)), (Some(42), "TERM000A".into()));
    assert_eq!((y.stan(), text(&y, 41)), (Some(42), "TERM000B".into()));
    assert_eq!(
        *s.issuer.connections.lock().unwrap(),
        2,
        "no new connection per request"
    );
}

#[tokio::test]
async fn retransmits_join_replay_or_get_rc94() {
    let s = Setup::new().await;
    let mut t = s.terminal("TERM0001").await;
    let mut again = s.terminal("TERM0001").await;
    let purchase = t.purchase(7, 555);
    t.send(&purchase).await;
    s.wait_journal("forward", |st| matches!(st, Step::Forwarded { .. }), 1)
        .await;
    again.send(&purchase).await;
    s.wait_journal("join", |st| *st == Step::Joined, 1).await;
    s.issuer.release();
    let (first, second) = (t.answer().await, again.answer().await);
    assert_eq!((rc(&first), rc(&second)), ("00".into(), "00".into()));
    assert_eq!(s.issuer.of_class(2).len(), 1, "one request upstream");
    // After completion: replayed, same DE38/DE39, nothing upstream.
    let replay = t.exchange(&purchase).await;
    assert_eq!(
        (text(&replay, 38), rc(&replay)),
        (text(&first, 38), rc(&first))
    );
    assert_eq!(s.count(|st| matches!(st, Step::Replayed { .. })), 1);
    // Same key, other amount: 94.
    assert_eq!(rc(&t.exchange(&t.purchase(7, 556)).await), "94");
    // Missing key field: 30.
    let mut no_tid = t.purchase(8, 100);
    no_tid.remove(41);
    assert_eq!(rc(&t.exchange(&no_tid).await), "30");
    assert_eq!(s.issuer.of_class(2).len(), 1, "still one request upstream");
}

#[tokio::test]
async fn a_timeout_gets_rc91_and_a_reversal_that_repeats_until_acknowledged() {
    let s = Setup::new().await;
    let mut t = s.terminal("TERM0001").await;
    let answer = t.exchange(&t.purchase(9, 778)).await;
    assert_eq!((rc(&answer), answer.stan()), ("91".into(), Some(9)));
    within(
        "0401",
        s.issuer
            .wait_for(|r| r.iter().any(|m| m.mti() == Mti::REVERSAL_REPEAT)),
    )
    .await;
    s.wait_journal(
        "ack",
        |st| matches!(st, Step::ReversalAcknowledged { .. }),
        1,
    )
    .await;
    let original = &s.issuer.of_class(2)[0];
    let reversals = s.issuer.of_class(4);
    assert_eq!(reversals[0].mti(), Mti::REVERSAL);
    let de90 = reversals[0].original_data().unwrap();
    assert_eq!(
        (de90.mti, Some(de90.stan)),
        (Mti::FINANCIAL, original.stan())
    );
    assert_eq!(Some(de90.transmission), original.transmission_time());
    assert_eq!(de90.acquirer, 12345);
    for n in [2, 3, 4, 7, 22, 25, 32, 37, 41, 42, 49] {
        assert_eq!(text(&reversals[0], n), text(original, n), "DE{n}");
    }
}

#[tokio::test]
async fn a_late_answer_is_journaled_and_never_reaches_the_terminal() {
    let s = Setup::new().await;
    let mut t = s.terminal("TERM0001").await;
    assert_eq!(rc(&t.exchange(&t.purchase(10, 888)).await), "91");
    s.wait_journal("late answer", |st| matches!(st, Step::LateAnswer { .. }), 1)
        .await;
    // The next thing on the connection is the answer to the next request, not the late approval.
    let next = t.exchange(&t.purchase(11, 100)).await;
    assert_eq!((next.stan(), rc(&next)), (Some(11), "00".into()));
    assert_eq!(
        s.count(|st| *st == Step::ReversalQueued),
        1,
        "the reversal stands"
    );
}

#[tokio::test]
async fn an_approval_for_a_closed_connection_is_reversed() {
    let s = Setup::new().await;
    let mut t = s.terminal("TERM0001").await;
    t.send(&t.purchase(12, 555)).await;
    s.wait_journal("forward", |st| matches!(st, Step::Forwarded { .. }), 1)
        .await;
    drop(t);
    s.wait_journal("disconnect", |st| *st == Step::Disconnected, 1)
        .await;
    s.issuer.release();
    within(
        "reversal",
        s.issuer
            .wait_for(|r| r.iter().any(|m| m.mti() == Mti::REVERSAL)),
    )
    .await;
    assert_eq!(s.count(|st| matches!(st, Step::Undeliverable { .. })), 1);
}

#[tokio::test]
async fn a_terminal_reversal_reverses_an_approval_once() {
    let s = Setup::new().await;
    let mut t = s.terminal("TERM0001").await;
    assert_eq!(rc(&t.exchange(&t.purchase(13, 100)).await), "00");
    let mut reversal = t.purchase(13, 100);
    reversal.set_mti(Mti::REVERSAL);
    let answer = t.exchange(&reversal).await;
    assert_eq!((answer.mti().as_str(), rc(&answer)), ("0410", "00".into()));
    within(
        "upstream reversal",
        s.issuer
            .wait_for(|r| r.iter().any(|m| m.mti() == Mti::REVERSAL)),
    )
    .await;
    reversal.set_mti(Mti::REVERSAL_REPEAT);
    assert_eq!(t.exchange(&reversal).await.mti().as_str(), "0410");
    assert_eq!(
        s.count(|st| *st == Step::ReversalQueued),
        1,
        "not reversed twice"
    );
    // A reversal of a decline is answered locally.
    assert_eq!(rc(&t.exchange(&t.purchase(14, 5151)).await), "51");
    let mut reversal = t.purchase(14, 5151);
    reversal.set_mti(Mti::REVERSAL);
    assert_eq!(t.exchange(&reversal).await.mti().as_str(), "0410");
    assert_eq!(s.count(|st| *st == Step::ReversalQueued), 1);
}

#[tokio::test]
async fn a_terminal_0800_is_answered_locally() {
    let s = Setup::new().await;
    let mut t = s.terminal("TERM0001").await;
    let mut echo = Message::new(s.terminal_spec, Mti::NETWORK);
    echo.set(11, "000001")
        .unwrap()
        .set(41, "TERM0001")
        .unwrap()
        .set(70, "301")
        .unwrap();
    let answer = t.exchange(&echo).await;
    assert_eq!(
        (answer.mti().as_str(), rc(&answer), text(&answer, 70)),
        ("0810", "00".into(), "301".into())
    );
    assert!(
        s.issuer.received().iter().all(|m| text(m, 70) == "001"),
        "only the switch's sign-ons upstream"
    );
}

#[tokio::test]
async fn bcd_terminals_with_a_tpdu_reach_an_ascii_issuer() {
    let s = Setup::with("iso87bcd", true, "echo_interval = \"1h\"").await;
    let mut t = s.terminal("TERM0001").await;
    t.tpdu = Some("6000010002".parse::<Tpdu>().unwrap());
    let request = t.purchase(15, 2500);
    let answer = t.exchange(&request).await;
    assert_eq!(
        (rc(&answer), text(&answer, 38), answer.stan()),
        ("00".into(), "A1B2C3".into(), Some(15))
    );
    let up = &s.issuer.of_class(2)[0];
    assert_eq!(
        (up.amount(), text(up, 35)),
        (Some(2500), text(&request, 35)),
        "BCD track 2 translated to ASCII"
    );
}

#[tokio::test]
async fn bad_input_gets_rc30_or_closes_that_connection_only() {
    let s = Setup::new().await;
    let mut good = s.terminal("TERM000G").await;
    // An undecodable 0200 (bitmap announces fields that are not there): RC 30.
    let mut bad = s.terminal("TERM000B").await;
    bad.send_raw(bytes::Bytes::from_static(
        b"0200\x70\x00\x00\x00\x00\x00\x00\x00123",
    ))
    .await;
    let answer = bad.answer().await;
    assert_eq!((answer.mti().as_str(), rc(&answer)), ("0210", "30".into()));
    // Garbage without a readable MTI: closed.
    bad.send_raw(bytes::Bytes::from_static(b"\xFF\xFE")).await;
    assert!(bad.closed().await);
    // A frame over the listener's limit: closed before it is read.
    let mut big = s.terminal("TERM000L").await;
    big.send_raw(bytes::Bytes::from(vec![b'0'; 2000])).await;
    assert!(big.closed().await);
    assert_eq!(
        rc(&good.exchange(&good.purchase(16, 100)).await),
        "00",
        "others carry on"
    );
}

#[tokio::test]
async fn no_link_up_answers_rc91_at_once() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[issuers]]\nhosts = [\"{closed}\"]\nresponse_timeout = \"1h\"\n"
    );
    let switch = support::start(&text).await;
    let codec = FrameCodec::new(LengthHeader::Binary2);
    let mut t = Terminal::connect(switch.listeners[0], spec("iso87ascii"), codec, "TERM0001").await;
    // The issuer timeout is an hour: only an immediate 91 can answer in time.
    assert_eq!(rc(&t.exchange(&t.purchase(1, 100)).await), "91");
}

#[tokio::test]
async fn traffic_fails_over_to_another_host_and_the_lost_host_reconnects() {
    let late = Duration::from_secs(60);
    let (a, b) = (
        Issuer::start(spec("iso87ascii"), late).await,
        Issuer::start(spec("iso87ascii"), late).await,
    );
    let text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[issuers]]\nhosts = [\"{}\", \"{}\"]\nresponse_timeout = \"1h\"\n",
        a.addr, b.addr
    );
    let switch = support::start(&text).await;
    let a_host = a.addr.to_string();
    within(
        "both links up",
        switch.wait_status(|s| s.links.iter().all(|l| l.up)),
    )
    .await;

    a.stop();
    within(
        "the switch to see host A go",
        switch.wait_status(|s| s.links.iter().all(|l| l.up == (l.host != a_host))),
    )
    .await;
    let codec = FrameCodec::new(LengthHeader::Binary2);
    let mut t = Terminal::connect(switch.listeners[0], spec("iso87ascii"), codec, "TERM0001").await;
    // The timeout is an hour: only host B answering makes these approvals.
    for stan in 1..=4 {
        assert_eq!(rc(&t.exchange(&t.purchase(stan, 100)).await), "00");
    }
    assert_eq!((a.of_class(2).len(), b.of_class(2).len()), (0, 4));

    // Host A comes back on its address: its link reconnects (after its backoff) and signs on again.
    let a = Issuer::start_at(a.addr, spec("iso87ascii"), late).await;
    within(
        "sign-on on the returned host",
        a.wait_for(|r| r.iter().any(|m| support::terminal::text(m, 70) == "001")),
    )
    .await;
    within(
        "both links up again",
        switch.wait_status(|s| s.links.iter().all(|l| l.up)),
    )
    .await;
    // Both carry traffic again: requests go to the least loaded link, so held ones spread over both.
    t.send(&t.purchase(5, 555)).await;
    t.send(&t.purchase(6, 555)).await;
    within("one held request on each host", async {
        a.wait_for(|r| r.iter().any(|m| m.mti().class().digit() == 2))
            .await;
        b.wait_for(|r| r.iter().filter(|m| m.mti().class().digit() == 2).count() == 5)
            .await;
    })
    .await;
}

#[tokio::test]
async fn metrics_and_readiness_are_served_on_the_admin_endpoint() {
    let s = Setup::with(
        "iso87ascii",
        false,
        "echo_interval = \"1h\"\nadmin_listen = \"127.0.0.1:0\"",
    )
    .await;
    let admin = s.switch.admin.expect("admin endpoint bound");
    assert_eq!(http_get(admin, "/healthz").await.0, 200);
    assert_eq!(
        http_get(admin, "/readyz").await,
        (200, "listeners: ok\njournal: ok\nissuers: ok\n".into())
    );
    let mut t = s.terminal("TERM0001").await;
    assert_eq!(rc(&t.exchange(&t.purchase(1, 100)).await), "00");
    assert_eq!(rc(&t.exchange(&t.purchase(2, 151)).await), "51");
    assert_eq!(rc(&t.exchange(&t.purchase(1, 100)).await), "00", "replayed");
    assert_eq!(
        rc(&t.exchange(&t.purchase(3, 777)).await),
        "91",
        "timed out"
    );
    s.wait_journal(
        "reversal ack",
        |st| matches!(st, Step::ReversalAcknowledged { .. }),
        1,
    )
    .await;

    let (code, body) = http_get(admin, "/metrics").await;
    assert_eq!(code, 200);
    let has = |line: &str| assert!(body.lines().any(|l| l == line), "no `{line}` in\n{body}");
    has(r#"acquiro_requests_total{mti="0200"} 3"#);
    has(r#"acquiro_forwarded_total{issuer="visa",mti="0200"} 3"#);
    has(r#"acquiro_responses_total{issuer="visa",mti="0200",rc="00"} 1"#);
    has(r#"acquiro_responses_total{issuer="visa",mti="0200",rc="51"} 1"#);
    has(r#"acquiro_responses_total{issuer="visa",mti="0200",rc="91"} 1"#);
    has(r#"acquiro_duplicates_total{outcome="replayed"} 1"#);
    has(r#"acquiro_timeouts_total{issuer="visa"} 1"#);
    has(r#"acquiro_upstream_latency_seconds_count{issuer="visa"} 2"#);
    has(r#"acquiro_request_duration_seconds_count{issuer="visa"} 3"#);
    for outcome in ["queued", "sent", "acknowledged"] {
        has(&format!(
            r#"acquiro_reversals_total{{outcome="{outcome}"}} 1"#
        ));
    }
    has("acquiro_saf_depth 0");
    has("acquiro_in_flight 0");
    has("acquiro_terminal_connections 1");
    let link = format!(
        r#"acquiro_link_up{{host="{}",issuer="visa",link="0"}} 1"#,
        s.issuer.addr
    );
    has(&link);
    assert!(!body.contains(support::terminal::PAN));

    // Readiness follows the links: with the issuer gone it fails and says why.
    s.issuer.stop();
    within(
        "links down",
        s.switch.wait_status(|st| !st.issuers_down().is_empty()),
    )
    .await;
    assert_eq!(
        http_get(admin, "/readyz").await,
        (
            503,
            "listeners: ok\njournal: ok\nissuers: FAILED (no link up for visa)\n".into()
        )
    );
}

#[tokio::test]
async fn idle_links_echo() {
    let s = Setup::with("iso87ascii", false, "echo_interval = \"200ms\"").await;
    within(
        "echo",
        s.issuer
            .wait_for(|r| r.iter().any(|m| text(m, 70) == "301")),
    )
    .await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let s = Setup::new().await;
    let mut t = s.terminal("TERM0001").await;
    t.send(&t.purchase(17, 555)).await;
    s.wait_journal("forward", |st| matches!(st, Step::Forwarded { .. }), 1)
        .await;
    s.switch.shutdown();
    s.issuer.release();
    assert_eq!(rc(&t.answer().await), "00", "answered while draining");
    within("stop", s.switch.stopped()).await;
}

/// A cluster node's journal that makes nothing durable and answers no claim: the test sends its
/// reports. It says when a key is claimed, and keeps the reversals in terminals' names the switch
/// holds or leaves in the store.
struct Silent {
    reports: Option<tokio::sync::mpsc::UnboundedReceiver<switch::Report>>,
    claimed: tokio::sync::mpsc::UnboundedSender<()>,
    pleas: std::sync::Arc<std::sync::Mutex<Vec<engine::Plea>>>,
    next: u64,
}

impl switch::Journal for Silent {
    fn append(&mut self, _: engine::Record) -> u64 {
        self.next += 1;
        self.next
    }
    fn reports(&mut self) -> Option<tokio::sync::mpsc::UnboundedReceiver<switch::Report>> {
        self.reports.take()
    }
    fn claim(&mut self, _: engine::Claim) {
        let _ = self.claimed.send(());
    }
    fn hold_pleas(&mut self, pleas: Vec<engine::Plea>) {
        self.pleas.lock().unwrap().extend(pleas);
    }
    fn leave_pleas(&mut self, pleas: Vec<engine::Plea>) -> tokio::sync::oneshot::Receiver<bool> {
        self.pleas.lock().unwrap().extend(pleas);
        let (left, answer) = tokio::sync::oneshot::channel();
        let _ = left.send(true);
        answer
    }
}

/// A cluster node fenced (its work taken over while it was paused, most often) tells its terminals
/// nothing more, not even 91 to a request still waiting for its claim: the connection may be one its
/// terminal left long ago, and a 91 would admit a reversal in the terminal's name for an approval the
/// terminal may have heard from the node that took over. The node stops; the terminal's connection
/// closes unanswered, and it asks again elsewhere.
#[tokio::test]
async fn a_fenced_node_tells_a_request_waiting_for_its_claim_nothing() {
    let toml = r#"
        acquirer_id = "12345"
        echo_interval = "1h"
        [[listeners]]
        address = "127.0.0.1:0"
        [[issuers]]
        name = "visa"
        hosts = ["127.0.0.1:1"]
        response_timeout = "1h"
        "#;
    let mut settings = File::parse("test", toml).unwrap().check().unwrap();
    settings.engine.shared_store = true;
    let (reports, rx) = tokio::sync::mpsc::unbounded_channel();
    let (claimed, mut claims) = tokio::sync::mpsc::unbounded_channel();
    let pleas = std::sync::Arc::default();
    let journal = Silent {
        reports: Some(rx),
        claimed,
        pleas: std::sync::Arc::clone(&pleas),
        next: 0,
    };
    let switch = switch::start(settings, Box::new(journal), Default::default())
        .await
        .unwrap();
    let codec = FrameCodec::new(LengthHeader::Binary2);
    let mut t = Terminal::connect(switch.listeners[0], spec("iso87ascii"), codec, "TERM0001").await;
    t.send(&t.purchase(7, 100)).await;
    within("the key claimed", claims.recv()).await;
    let fenced = std::io::Error::other("node a is fenced");
    let _ = reports.send(switch::Report::Fenced(switch::Fault::Disk(fenced.into())));
    within("stop", switch.stopped()).await;
    assert!(t.closed().await, "told nothing");
    assert_eq!(
        *pleas.lock().unwrap(),
        [],
        "no reversal in the terminal's name"
    );
}
