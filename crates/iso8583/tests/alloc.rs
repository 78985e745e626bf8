//! Decode allocates nothing but the message's field table, and reading fields allocates nothing.

mod support;

use std::alloc::System;

use iso8583::Message;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn decode_allocates_only_the_field_table() {
    for name in ["iso87ascii", "iso87bcd", "iso87ebcdic"] {
        let spec = support::dialect(name);
        let mut m = Message::new(spec, iso8583::Mti::FINANCIAL);
        for (n, v) in [
            (2, "4761739001010010"),
            (3, "000000"),
            (4, "000000001000"),
            (11, "000123"),
            (41, "TERM0001"),
        ] {
            m.set(n, v).unwrap();
        }
        m.set(55, [0x9F, 0x27, 0x01, 0x80]).unwrap();
        m.set(70, "301").unwrap();
        let wire = m.to_bytes();

        let region = Region::new(GLOBAL);
        let decoded = Message::decode(spec, wire.clone()).unwrap();
        let after_decode = region.change();
        let stan = decoded.stan();
        let pan = decoded.pan();
        let tid_is = decoded.terminal_id().unwrap().eq_bytes(b"TERM0001");
        let after_reads = region.change();

        assert_eq!(
            after_decode.allocations, 1,
            "{name}: one allocation, the field table"
        );
        assert_eq!(
            after_reads.allocations, 1,
            "{name}: typed reads allocate nothing"
        );
        assert_eq!(
            (stan, pan.map(|p| p.len()), tid_is),
            (Some(123), Some(16), true)
        );
        // The fields are slices of the frame: field_bytes hands out the same memory.
        let de41 = decoded.field_bytes(41).unwrap();
        let frame_range = wire.as_ptr() as usize..wire.as_ptr() as usize + wire.len();
        assert!(
            frame_range.contains(&(de41.as_ptr() as usize)),
            "{name}: DE41 points into the frame"
        );
    }
}
