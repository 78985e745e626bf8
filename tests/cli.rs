//! The `decode` and `encode` commands, run as the real binary.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// A BCD purchase: PAN, processing code, amount, STAN, POS entry mode, track 2, TID, currency.
const BCD_PURCHASE: &str = concat!(
    "0200",
    "7020040020808000",
    "164761739001010010",
    "000000",
    "000000001000",
    "000123",
    "0051",
    "214761739001010010D2512F",
    "5445524D30303031",
    "383430"
);

fn acquiro(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_acquiro"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run acquiro");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn decode_json_is_masked_by_default() {
    let out = acquiro(
        &[
            "decode",
            "--spec",
            "iso87bcd",
            "--json",
            "--hex",
            BCD_PURCHASE,
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(v["mti"], "0200");
    assert_eq!(v["fields"]["2"], "476173…0010");
    assert_eq!(v["fields"]["35"], "[redacted]");
    assert_eq!(v["fields"]["41"], "TERM0001");
    assert!(!text.contains("4761739001010010"), "{text}");
}

#[test]
fn decode_then_encode_roundtrips_byte_for_byte() {
    // Two frames with a 2-byte header and a TPDU, one of them with DE55.
    let with_emv = {
        let line = r#"{"mti":"0100","fields":{"2":"5413330089010434","4":"000000002500","11":"000777","55":"9F2701809F360200A1"},"tpdu":"6000038000"}"#;
        let out = acquiro(
            &["encode", "--spec", "iso87bcd", "--header", "binary2"],
            &format!("{line}\n"),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout(&out).trim().to_owned()
    };
    let plain = format!("{:04X}6000038000{BCD_PURCHASE}", BCD_PURCHASE.len() / 2 + 5);
    let input = format!("{plain}\n{with_emv}\n");
    let args = ["--spec", "iso87bcd", "--header", "binary2"];
    let decoded = acquiro(
        &[&["decode", "--json", "--unmasked", "--tpdu"][..], &args[..]].concat(),
        &input,
    );
    assert!(decoded.status.success());
    assert!(String::from_utf8_lossy(&decoded.stderr).contains("test data only"));
    let encoded = acquiro(&[&["encode"][..], &args[..]].concat(), &stdout(&decoded));
    assert!(
        encoded.status.success(),
        "{}",
        String::from_utf8_lossy(&encoded.stderr)
    );
    assert_eq!(stdout(&encoded), input);
}

#[test]
fn bad_lines_are_reported_and_the_run_goes_on() {
    let input = format!("0200\n{BCD_PURCHASE}\nzz\n");
    let out = acquiro(&["decode", "--spec", "iso87bcd"], &input);
    assert_eq!(out.status.code(), Some(1), "non-zero when a line failed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 1: primary bitmap at byte 2: truncated"),
        "{err}"
    );
    assert!(err.contains("line 3: not hex"), "{err}");
    assert!(
        stdout(&out).contains("Card Acceptor Terminal ID"),
        "line 2 still decoded"
    );
}

#[test]
fn tlv_listing() {
    let line = r#"{"mti":"0100","fields":{"55":"9F2701809F360200A1"}}"#;
    let hex = stdout(&acquiro(&["encode"], &format!("{line}\n")));
    let out = acquiro(&["decode", "--json", "--tlv", "--unmasked"], &hex);
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["tlv"]["55"][1]["tag"], "9F36");
    assert_eq!(v["tlv"]["55"][1]["value"], "00A1");
    // Masked: tags and lengths, never values.
    let masked = acquiro(&["decode", "--json", "--tlv"], &hex);
    let v: serde_json::Value = serde_json::from_str(stdout(&masked).trim()).unwrap();
    assert_eq!(v["tlv"]["55"][1]["tag"], "9F36");
    assert_eq!(v["tlv"]["55"][1]["len"], 2);
    assert_eq!(v["tlv"]["55"][1]["value"], "[redacted]");
    assert!(!stdout(&masked).contains("00A1"));
}

#[test]
fn encode_rejects_values_that_do_not_fit() {
    let out = acquiro(
        &["encode"],
        "{\"mti\":\"0200\",\"fields\":{\"3\":\"12AB56\"}}\n{\"mti\":\"0200\",\"fields\":{\"3\":\"123456\"}}\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1: field 3"));
    assert_eq!(
        stdout(&out).lines().count(),
        1,
        "the valid line is still encoded"
    );
}

#[test]
fn the_demo_reconciles_every_transaction_under_faults() {
    let out = acquiro(
        &[
            "demo",
            "--duration",
            "3s",
            "--terminals",
            "20",
            "--rate",
            "300",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        "",
    );
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdict = text
        .lines()
        .find(|l| l.starts_with("reconciliation:"))
        .expect("a verdict");
    assert!(
        verdict.contains(" 0 mismatches, 0 charged twice"),
        "{verdict}"
    );
    // The faults happened: some requests timed out and were reversed, some retransmits were caught.
    let figure = |line: &str, name: &str| -> u64 {
        let line = (text.lines())
            .find(|l| l.starts_with(line) && l.contains(name))
            .expect(name);
        let after = line.split(name).nth(1).expect(name);
        after.split_whitespace().next().unwrap().parse().unwrap()
    };
    assert!(figure("switch", "reversals queued") > 0, "{text}");
    assert!(figure("switch", "duplicates joined") > 0, "{text}");
    assert!(figure("terminals", "approved") > 0, "{text}");
    // The life cycle ran: advices were accepted, every terminal settled its batch (at once or after an
    // upload), and the merchants' settlement is the issuer's (an advice lost would be a difference).
    assert!(figure("switch", "advices queued") > 0, "{text}");
    assert_eq!(
        figure("switch", "in balance") + figure("switch", "closed after upload"),
        20,
        "{text}"
    );
    let settlement = (text.lines())
        .find(|l| l.starts_with("settlement:"))
        .expect("a settlement verdict");
    assert!(
        settlement.contains(" 0 differences with the issuer"),
        "{settlement}"
    );
}

/// Output cut short by its reader (`acquiro tranlog verify … | head -1`) ends the command quietly, with
/// the code of a tool SIGPIPE stopped: no panic, no error message. Both ways the commands write are
/// covered: a line at a time (`verify`) and through a buffer (`export`).
#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    let journal = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tranlog/tests/fixtures/journal-v1"
    );
    for command in ["verify", "export"] {
        // The reading end is closed before the command starts: its first write finds no reader.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_acquiro"))
            .args(["tranlog", command, "--journal-dir", journal])
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run acquiro");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{command}: {stderr}");
        assert!(stderr.is_empty(), "{command}: {stderr}");
    }
}
