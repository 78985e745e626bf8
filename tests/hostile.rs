//! Malformed and hostile input: each class gets its documented outcome, is counted in the metrics, and
//! leaves a well-behaved terminal on another connection untouched.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use iso8583::{Message, Spec};
use support::issuer::Issuer;
use support::terminal::{Terminal, text};
use support::{http_get, within};
use switch::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wire::{FrameCodec, LengthHeader, Tpdu};

fn spec(name: &str) -> &'static Spec {
    dialects::builtin(name).unwrap()
}

fn rc(m: &Message) -> String {
    text(m, 39)
}

/// Listeners: 0 the main one (iso87ascii, two requests in flight at most), 1 iso87bcd with a TPDU,
/// 2 capped at two connections, 3 with short idle and read timeouts and one request in flight, 4 capped
/// at eight connections that may wait for their first frame, 5 that may not.
async fn start(issuer: &Issuer) -> Running {
    let sections = format!(
        r#"
        [[listeners]]
        address = "127.0.0.1:0"
        max_frame = 1024
        max_in_flight = 2
        [[listeners]]
        address = "127.0.0.1:0"
        dialect = "iso87bcd"
        tpdu = true
        [[listeners]]
        address = "127.0.0.1:0"
        max_connections = 2
        [[listeners]]
        address = "127.0.0.1:0"
        idle_timeout = "600ms"
        read_timeout = "300ms"
        max_in_flight = 1
        [[listeners]]
        address = "127.0.0.1:0"
        max_connections = 8
        first_frame_timeout = "1h"
        [[listeners]]
        address = "127.0.0.1:0"
        first_frame_timeout = "200ms"
        [[issuers]]
        hosts = ["{}"]
        response_timeout = "10s"
        "#,
        issuer.addr
    );
    support::start_ready(&sections).await
}

fn ascii(addr: SocketAddr, tid: &str) -> impl Future<Output = Terminal> {
    Terminal::connect(
        addr,
        spec("iso87ascii"),
        FrameCodec::new(LengthHeader::Binary2),
        tid,
    )
}

/// Sends `raw` (a message with its fields already encoded) and expects a 0210 with RC 30.
async fn rc30(t: &mut Terminal, raw: Vec<u8>) {
    t.send_raw(Bytes::from(raw)).await;
    let answer = t.answer().await;
    assert_eq!((answer.mti().as_str(), rc(&answer)), ("0210", "30".into()));
}

/// Whether the switch closes `stream` (reads end) before anything comes back.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(within("close", stream.read(&mut buf)).await, Ok(0) | Err(_))
}

#[tokio::test]
async fn each_class_of_bad_input_has_its_outcome_and_spares_other_connections() {
    let issuer = Issuer::start(spec("iso87ascii"), Duration::from_secs(60)).await;
    let switch = start(&issuer).await;
    let [main, bcd, capped, timed, ..] = switch.listeners[..] else {
        panic!("six listeners")
    };
    let mut good = ascii(main, "TERM000G").await;
    let mut stan = 0;
    let mut good_purchase = async || {
        stan += 1;
        assert_eq!(
            rc(&good.exchange(&good.purchase(stan, 100)).await),
            "00",
            "others carry on"
        );
    };
    good_purchase().await;

    // 1. A length header above max_frame: closed before anything is read or reserved.
    let mut s = TcpStream::connect(main).await.unwrap();
    s.write_all(&[0xFF, 0xFF, b'0']).await.unwrap();
    assert!(closed(&mut s).await);
    good_purchase().await;

    // 2. A zero-length frame is a keep-alive: ignored, and the connection goes on.
    let mut t = ascii(main, "TERM0002").await;
    t.send_raw(Bytes::new()).await;
    assert_eq!(rc(&t.exchange(&t.purchase(1, 100)).await), "00");

    // 3. A frame cut short by the terminal closing: that connection ends, nothing is forwarded.
    let mut s = TcpStream::connect(main).await.unwrap();
    s.write_all(&[0x00, 0x64, b'0', b'2', b'0', b'0'])
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    assert!(closed(&mut s).await);
    good_purchase().await;

    // 4-7. Messages whose MTI can be read but not the rest: RC 30, and the connection goes on.
    let mut t = ascii(main, "TERM0004").await;
    let purchase = t.purchase(4, 100).to_bytes().to_vec();
    // Offsets in iso87ascii: MTI 0..4, primary bitmap 4..12, DE2 "16"+16 digits 12..30, DE3 30..36.
    let mut tertiary = b"0200".to_vec();
    tertiary.extend([
        0x80, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0,
    ]);
    rc30(&mut t, tertiary).await; // bit 129: no field has a spec
    let mut letter = purchase.clone();
    letter[30] = b'A';
    rc30(&mut t, letter).await; // a letter in DE3, an n field
    let mut long = purchase.clone();
    long[12..14].copy_from_slice(b"20");
    rc30(&mut t, long).await; // DE2 declares 20 digits, over its max of 19
    let mut trailing = purchase.clone();
    trailing.extend(b"XYZ");
    rc30(&mut t, trailing).await;
    assert_eq!(rc(&t.exchange(&t.purchase(5, 100)).await), "00");
    good_purchase().await;

    // 8. An MTI the switch does not handle (0300): RC 30 from the engine.
    let mut unknown = purchase.clone();
    unknown[0..4].copy_from_slice(b"0300");
    t.send_raw(Bytes::from(unknown)).await;
    let answer = t.answer().await;
    assert_eq!((answer.mti().as_str(), rc(&answer)), ("0310", "30".into()));

    // 9. A bad BCD nibble (iso87bcd: MTI 0..2, bitmap 2..10, DE2 length 10, digits 11..19): RC 30.
    let mut b = Terminal::connect(
        bcd,
        spec("iso87bcd"),
        FrameCodec::new(LengthHeader::Binary2).with_tpdu(true),
        "TERM0009",
    )
    .await;
    b.tpdu = Some("6000010002".parse::<Tpdu>().unwrap());
    let mut nibble = b.purchase(9, 100).to_bytes().to_vec();
    nibble[11] = 0xAB;
    rc30(&mut b, nibble).await;
    good_purchase().await;

    // 10. A TPDU whose id is not 0x60/0x68: closed.
    let mut s = TcpStream::connect(bcd).await.unwrap();
    s.write_all(&[0x00, 0x07, 0x55, 0, 1, 0, 0, 0x02, 0x00])
        .await
        .unwrap();
    assert!(closed(&mut s).await);
    good_purchase().await;

    // 11. One more connection than the listener's cap while every connection has a request in flight
    // (888: the issuer answers only after the switch's timeout): closed at once.
    let mut first = ascii(capped, "TERM0011").await;
    let mut second = ascii(capped, "TERM0012").await;
    for t in [&mut first, &mut second] {
        assert_eq!(
            rc(&t.exchange(&t.purchase(11, 100)).await),
            "00",
            "within the cap"
        );
        t.send(&t.purchase(12, 888)).await;
    }
    let held = |r: &[Message]| r.iter().filter(|m| m.amount() == Some(888)).count();
    within("both held", issuer.wait_for(|r| held(r) == 2)).await;
    let mut third = TcpStream::connect(capped).await.unwrap();
    assert!(closed(&mut third).await);
    good_purchase().await;

    // 12. A byte-a-second sender: cut off by the read timeout before its frame is complete.
    let mut s = TcpStream::connect(timed).await.unwrap();
    let frame = [&[0x00, 0x40][..], &[b'0'; 0x40]].concat();
    let mut sent = 0;
    let cut_off = loop {
        // The pace is the input under test, not a synchronisation.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if sent == frame.len() || s.write_all(&frame[sent..=sent]).await.is_err() {
            break sent < frame.len();
        }
        sent += 1;
        if s.try_read(&mut [0u8; 8]).is_ok_and(|n| n == 0) {
            break true;
        }
    };
    assert!(cut_off, "the switch waited for the whole frame");
    good_purchase().await;

    // 13. A connection that sends nothing: closed after the idle timeout.
    let mut s = TcpStream::connect(timed).await.unwrap();
    assert!(closed(&mut s).await);

    // 14. A terminal flooding requests: two are forwarded, the rest wait unread until answers go out.
    let mut flood = ascii(main, "TERM000F").await;
    for n in 1..=5 {
        flood.send(&flood.purchase(n, 555)).await;
    }
    let from_flood = |r: &[Message]| r.iter().filter(|m| text(m, 41) == "TERM000F").count();
    within("two forwarded", issuer.wait_for(|r| from_flood(r) == 2)).await;
    good_purchase().await;
    assert_eq!(from_flood(&issuer.received()), 2, "the third is not read");
    issuer.release();
    for _ in 1..=5 {
        assert_eq!(rc(&flood.answer().await), "00");
    }
    good_purchase().await;

    let (_, metrics) = http_get(switch.admin.unwrap(), "/metrics").await;
    let has = |line: &str| {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        )
    };
    for reason in ["frame_too_long", "truncated_frame", "bad_tpdu"] {
        has(&format!(
            r#"acquiro_decode_errors_total{{reason="{reason}",source="terminal"}} 1"#
        ));
        has(&format!(
            r#"acquiro_terminal_closed_total{{reason="{reason}"}} 1"#
        ));
    }
    for reason in [
        "no_spec",
        "bad_char",
        "too_long",
        "trailing_bytes",
        "bad_bcd",
    ] {
        has(&format!(
            r#"acquiro_decode_errors_total{{reason="{reason}",source="terminal"}} 1"#
        ));
    }
    // The RC 30 answers the connections gave undecodable frames (4-7 and 9) are counted too.
    has(r#"acquiro_responses_total{issuer="local",mti="unknown",rc="30"} 5"#);
    has("acquiro_terminal_keepalives_total 1");
    has("acquiro_format_errors_total 1");
    has("acquiro_terminal_connections_refused_total 1");
    has(r#"acquiro_terminal_closed_total{reason="read_timeout"} 1"#);
    has(r#"acquiro_terminal_closed_total{reason="idle"} 1"#);
    // Once while two were held; again when answers freed room and the rest came in, however they raced.
    let throttled = metrics
        .lines()
        .find_map(|l| l.strip_prefix("acquiro_terminal_throttled_total "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(throttled.is_some_and(|n| n >= 1), "throttled {throttled:?}");
}

#[tokio::test]
async fn a_throttled_connection_is_not_taken_for_a_slow_sender() {
    let issuer = Issuer::start(spec("iso87ascii"), Duration::from_secs(60)).await;
    let switch = start(&issuer).await;
    let timed = switch.listeners[3];
    let mut t = ascii(timed, "TERM000T").await;
    // Two held purchases written together: the second is read with the first, and waits unparsed in
    // the connection's buffer while the first holds its only place in flight.
    for stan in [1, 2] {
        t.send(&t.purchase(stan, 555)).await;
    }
    let from_t = |r: &[Message]| r.iter().filter(|m| text(m, 41) == "TERM000T").count();
    within("one forwarded", issuer.wait_for(|r| from_t(r) == 1)).await;
    // Two slow senders cut off one after the other: more than twice the read timeout has passed.
    for _ in 0..2 {
        let mut s = TcpStream::connect(timed).await.unwrap();
        s.write_all(&[0x00]).await.unwrap();
        assert!(closed(&mut s).await);
    }
    issuer.release();
    for _ in [1, 2] {
        assert_eq!(
            rc(&t.answer().await),
            "00",
            "the throttled connection is still open"
        );
    }
}

/// The metrics line `line` is exposed.
async fn metric(switch: &Running, line: &str) {
    let (_, metrics) = http_get(switch.admin.unwrap(), "/metrics").await;
    assert!(
        metrics.lines().any(|l| l == line),
        "no `{line}` in\n{metrics}"
    );
}

#[tokio::test]
async fn idle_connections_cannot_keep_a_terminal_out() {
    let issuer = Issuer::start(spec("iso87ascii"), Duration::from_secs(60)).await;
    let switch = start(&issuer).await;
    let (capped, quick) = (switch.listeners[4], switch.listeners[5]);
    // Three times the cap of connections that never send a byte, then a real terminal.
    let mut silent = Vec::new();
    for _ in 0..24 {
        silent.push(TcpStream::connect(capped).await.unwrap());
    }
    let mut t = ascii(capped, "TERM00H1").await;
    assert_eq!(rc(&t.exchange(&t.purchase(1, 100)).await), "00", "served");
    // Each connection past the cap took the slot of the one idle longest: the oldest silent ones.
    metric(&switch, "acquiro_terminal_connections_evicted_total 17").await;
    metric(
        &switch,
        r#"acquiro_terminal_closed_total{reason="evicted"} 17"#,
    )
    .await;
    for s in &mut silent[..17] {
        assert!(closed(s).await, "an evicted connection is closed");
    }
    metric(&switch, "acquiro_terminal_connections_refused_total 0").await;
    // Where connections must send a frame soon, a silent one is closed without waiting for the cap.
    let mut s = TcpStream::connect(quick).await.unwrap();
    assert!(closed(&mut s).await);
    metric(
        &switch,
        r#"acquiro_terminal_closed_total{reason="first_frame_timeout"} 1"#,
    )
    .await;
}

#[tokio::test]
async fn a_connection_sending_only_responses_gets_nothing_back_and_is_closed_as_idle() {
    let issuer = Issuer::start(spec("iso87ascii"), Duration::from_secs(60)).await;
    let switch = start(&issuer).await;
    // One request in flight at most, idle after 600 ms.
    let timed = switch.listeners[3];
    let mut t = ascii(timed, "TERM000R").await;
    let mut response = t.purchase(1, 100);
    response.set_mti(iso8583::Mti::new(*b"0210").unwrap());
    response.set(39, "00").unwrap();
    // More of them than its in-flight cap: each is settled with no reply, so none holds a place.
    for _ in 0..3 {
        t.send(&response).await;
    }
    let answer = t.exchange(&t.purchase(2, 100)).await;
    assert_eq!(
        (answer.mti().as_str(), answer.stan(), rc(&answer).as_str()),
        ("0210", Some(2), "00"),
        "the first thing it gets is the answer to its own request"
    );
    metric(
        &switch,
        r#"acquiro_terminal_unanswered_total{reason="response_mti"} 3"#,
    )
    .await;
    // Responses alone are not activity: sent at a steady pace, they do not keep it open.
    let mut closed_after = None;
    for n in 0..50 {
        tokio::select! {
            next = t.framed.next() => {
                assert!(!matches!(next, Some(Ok(_))), "a response got a reply");
                closed_after = Some(n);
                break;
            }
            // The pace is the input under test, not a synchronisation.
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if t.framed.send(wire::Frame { tpdu: None, message: response.to_bytes() }).await.is_err() {
                    closed_after = Some(n);
                    break;
                }
            }
        }
    }
    assert!(closed_after.is_some(), "still open after 5 s of responses");
    metric(&switch, r#"acquiro_terminal_closed_total{reason="idle"} 1"#).await;
}
