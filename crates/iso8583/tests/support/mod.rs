//! Random valid messages for any dialect, shared by the round-trip and differential tests.
#![allow(dead_code, unreachable_pub)]

use iso8583::{Encoding, FieldSpec, FieldType, LengthKind, Message, Mti, Spec};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// Longest variable-length value generated: long enough to cross every length-prefix digit boundary
/// that matters (9/10, 99/100) without making cases slow.
const MAX_VAR: usize = 120;

/// A logical value that fits `fs`.
pub fn value(fs: &FieldSpec) -> BoxedStrategy<Vec<u8>> {
    // Lengths count hex digits in a hex field: half as many bytes.
    let max = usize::from(fs.max) / if fs.encoding == Encoding::Hex { 2 } else { 1 };
    let len: BoxedStrategy<usize> = match fs.length {
        LengthKind::Fixed => Just(max).boxed(),
        _ => (0..=max.min(MAX_VAR)).boxed(),
    };
    let kind = fs.kind;
    len.prop_flat_map(move |len| {
        let any_byte = match kind {
            FieldType::N | FieldType::Xn => (b'0'..=b'9').boxed(),
            FieldType::Z => prop_oneof![9 => b'0'..=b'9', 1 => Just(b'=')].boxed(),
            FieldType::An => prop_oneof![b'0'..=b'9', b'A'..=b'Z', b'a'..=b'z', Just(b' ')].boxed(),
            FieldType::Ans => (0x20u8..=0x7E).boxed(),
            FieldType::B => any::<u8>().boxed(),
        };
        let body = proptest::collection::vec(any_byte, len);
        if kind == FieldType::Xn && len > 0 {
            (prop_oneof![Just(b'C'), Just(b'D')], body)
                .prop_map(|(sign, mut v)| {
                    v[0] = sign;
                    v
                })
                .boxed()
        } else {
            body.boxed()
        }
    })
    .boxed()
}

/// A message of `spec` with a random MTI and a random subset of the fields `allowed` admits.
pub fn message(spec: &'static Spec, allowed: impl Fn(u8) -> bool) -> BoxedStrategy<Message> {
    let fields: Vec<(u8, BoxedStrategy<Vec<u8>>)> = spec
        .fields()
        .filter(|(n, _)| allowed(*n))
        .map(|(n, fs)| (n, value(fs)))
        .collect();
    let picks: Vec<_> = fields
        .into_iter()
        .map(|(n, strategy)| {
            proptest::option::weighted(0.3, strategy).prop_map(move |v| v.map(|v| (n, v)))
        })
        .collect();
    let mti = prop_oneof![
        Just(*b"0100"),
        Just(*b"0110"),
        Just(*b"0200"),
        Just(*b"0210"),
        Just(*b"0400"),
        Just(*b"0800")
    ];
    (mti, picks)
        .prop_map(move |(mti, values)| {
            let mut msg = Message::new(spec, Mti::new(mti).expect("digits"));
            for (n, v) in values.into_iter().flatten() {
                msg.set(n, &v).expect("generated values fit their field");
            }
            msg
        })
        .boxed()
}

pub fn any_field(_: u8) -> bool {
    true
}

/// `count` messages from a fixed seed: the same list on every run.
pub fn sample(strategy: BoxedStrategy<Message>, count: usize, seed: u8) -> Vec<Message> {
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    (0..count)
        .map(|_| strategy.new_tree(&mut runner).expect("strategy").current())
        .collect()
}

pub fn dialect(name: &str) -> &'static Spec {
    dialects::builtin(name).expect("built-in dialect")
}

/// A small ASCII dialect with the given `[fields]` lines, for tests of what the built-ins lack.
pub fn custom(tertiary: bool, fields: &str) -> &'static Spec {
    let text = format!(
        r#"
        name = "custom"
        mti = "ascii"
        bitmap = "binary"
        tertiary_bitmap = {tertiary}
        length_encoding = "ascii"
        [encoding]
        n = "ascii"
        z = "ascii"
        "x+n" = "ascii"
        an = "ascii"
        ans = "ascii"
        b = "binary"
        [fields]
        {fields}
        "#
    );
    dialects::leak(dialects::parse("custom", &text).expect("test dialect"))
}
