//! The dialect files: every built-in loads, `specs/` holds exactly the built-ins, and mistakes in a file
//! are errors that name the key and the reason.

use iso8583::{Encoding, FieldType, LengthKind, Sensitivity};

const HEAD: &str = r#"
name = "t"
mti = "ascii"
bitmap = "binary"
length_encoding = "ascii"
[encoding]
n = "ascii"
z = "ascii"
"x+n" = "ascii"
an = "ascii"
ans = "ascii"
b = "binary"
"#;

fn parse_err(fields: &str) -> String {
    dialects::parse("t.toml", &format!("{HEAD}[fields]\n{fields}"))
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn every_builtin_loads_and_specs_dir_matches() {
    let mut files: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../specs"))
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter_map(|f| f.strip_suffix(".toml").map(str::to_owned))
            .collect();
    files.sort();
    let mut names: Vec<&str> = dialects::names().collect();
    names.sort();
    assert_eq!(
        files, names,
        "every file in specs/ is built in, and only those"
    );
    for name in names {
        let spec = dialects::builtin(name).unwrap();
        assert_eq!(spec.name(), name);
        let pan = spec.field(2).unwrap();
        assert_eq!(
            (pan.kind, pan.length, pan.max, pan.sensitivity),
            (FieldType::N, LengthKind::Ll, 19, Sensitivity::Pan)
        );
        for secret in [35, 45, 52, 55] {
            assert_eq!(
                spec.field(secret).unwrap().sensitivity,
                Sensitivity::Secret,
                "{name} DE{secret}"
            );
        }
        assert_eq!(spec.field(90).unwrap().subfields.len(), 5);
    }
    assert_eq!(
        dialects::builtin("iso87bcd")
            .unwrap()
            .field(2)
            .unwrap()
            .encoding,
        Encoding::Bcd
    );
}

#[test]
fn load_by_path_and_unknown_names() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../specs/iso87ebcdic.toml");
    assert_eq!(dialects::load(path).unwrap().name(), "iso87ebcdic");
    let err = dialects::load("iso93").unwrap_err().to_string();
    assert!(
        err.contains("unknown dialect \"iso93\"") && err.contains("iso87bcd"),
        "{err}"
    );
    assert!(
        dialects::load("/nonexistent/x.toml")
            .unwrap_err()
            .to_string()
            .contains("cannot read")
    );
}

#[test]
fn mistakes_name_the_key_and_reason() {
    let err =
        parse_err(r#"2 = { name = "PAN", type = "n", length = "LL", max = 19, colour = "red" }"#);
    assert!(err.contains("unknown field `colour`"), "{err}");
    let err = parse_err(r#"2 = { name = "PAN", type = "q", max = 19 }"#);
    assert!(err.contains("unknown variant `q`"), "{err}");
    let err = parse_err(r#"two = { name = "PAN", type = "n", max = 19 }"#);
    assert!(err.contains("fields.two: not a field number"), "{err}");
    let err = parse_err(r#"2 = { name = "PAN", type = "n", length = "LL", max = 100 }"#);
    assert!(
        err.contains("field 2: max length does not fit the length prefix"),
        "{err}"
    );
    let err = parse_err(r#"3 = { name = "x", type = "an", max = 6, encoding = "bcd" }"#);
    assert!(
        err.contains("field 3: BCD encoding holds only n, z and x+n fields"),
        "{err}"
    );
    let err = parse_err(r#"129 = { name = "x", type = "an", max = 6 }"#);
    assert!(
        err.contains("field 129: field number out of range"),
        "{err}"
    );
}
