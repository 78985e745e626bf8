//! Differential test against pyiso8583 (PyPI `pyiso8583`), an independent implementation.
//!
//! Both directions, for `iso87ascii` (pyiso8583 `default`) and `iso87ascii-hexbitmap` (`default_ascii`):
//! messages pyiso8583 encodes decode here to the same values and re-encode byte for byte; messages
//! encoded here decode in pyiso8583 to the same values and re-encode there byte for byte.
//!
//! Needs `python3 -m pip install pyiso8583`. Without it the test says so and passes, unless
//! `ACQUIRO_REQUIRE_PYISO8583` is set (as `.ci/run` does), when a missing oracle is a failure.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use bytes::Bytes;
use iso8583::{FieldType, Message};
use serde_json::{Map, Value, json};
use support::{any_field, dialect, message, sample};

const CASES: usize = 3000;
const PAIRS: [(&str, &str); 2] = [
    ("default", "iso87ascii"),
    ("default_ascii", "iso87ascii-hexbitmap"),
];

fn oracle() -> Option<PathBuf> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pyiso8583/oracle.py");
    let ok = Command::new("python3")
        .args(["-c", "import iso8583"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(script);
    }
    assert!(
        std::env::var_os("ACQUIRO_REQUIRE_PYISO8583").is_none(),
        "pyiso8583 is required: python3 -m pip install pyiso8583"
    );
    eprintln!("SKIPPED: pyiso8583 not installed (python3 -m pip install pyiso8583)");
    None
}

/// The values of a message as pyiso8583 shows them: text as is, binary as uppercase hex.
fn fields_json(msg: &Message) -> Map<String, Value> {
    msg.fields()
        .map(|f| {
            let text = f.unmasked().to_string();
            debug_assert!(
                f.spec().kind != FieldType::B || text.chars().all(|c| c.is_ascii_hexdigit())
            );
            (f.number().to_string(), Value::String(text))
        })
        .collect()
}

#[test]
fn decodes_what_pyiso8583_encodes() {
    let Some(script) = oracle() else { return };
    let toml = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../specs/iso87ascii.toml");
    for (seed, (py_spec, ours)) in PAIRS.iter().enumerate() {
        let out = Command::new("python3")
            .arg(&script)
            .args(["generate", py_spec])
            .arg(&toml)
            .args([CASES.to_string(), seed.to_string()])
            .output()
            .expect("run the oracle");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let spec = dialect(ours);
        let mut count = 0;
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let case: Value = serde_json::from_str(line).unwrap();
            let wire = Bytes::from(hex::decode(case["hex"].as_str().unwrap()).unwrap());
            let msg = Message::decode(spec, wire.clone())
                .unwrap_or_else(|e| panic!("{ours}: {e}\n{line}"));
            assert_eq!(msg.mti().as_str(), case["mti"], "{line}");
            assert_eq!(
                Value::Object(fields_json(&msg)),
                case["fields"],
                "{ours}: {line}"
            );
            assert_eq!(msg.to_bytes(), wire, "{ours}: re-encoding differs: {line}");
            count += 1;
        }
        assert_eq!(count, CASES);
    }
}

#[test]
fn pyiso8583_decodes_what_we_encode() {
    let Some(script) = oracle() else { return };
    for (seed, (py_spec, ours)) in PAIRS.iter().enumerate() {
        let messages = sample(message(dialect(ours), any_field), CASES, seed as u8 + 1);
        let mut input = String::new();
        for msg in &messages {
            let line = json!({
                "hex": hex::encode_upper(msg.to_bytes()),
                "mti": msg.mti().as_str(),
                "fields": fields_json(msg),
            });
            input.push_str(&format!("{line}\n"));
        }
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["check", py_spec])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the oracle");
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{ours} vs pyiso8583 {py_spec}: {report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(report.trim(), format!("checked {CASES}, mismatches 0"));
    }
}
