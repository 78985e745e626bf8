//! Segments made ahead of time. With `batch` and `always`, the next segment is prepared on the
//! background thread while the current one fills: created under a spare name, zero-filled to the segment
//! size and made durable. A rotation writes the header into it and renames it into place.
//!
//! Zeros are written, not just space reserved (a longer file, or `fallocate`, whose extents stay marked
//! unwritten until written): records then overwrite blocks the file already has, its size and extents
//! do not change, and `fdatasync` has only data to flush, no file-system journal commit. On this
//! machine's ext4: 0.12 ms a sync instead of 0.20, and p99 0.21–0.27 ms instead of 0.42–0.55 ms while
//! other files are synced. The price is each segment written twice, the zeros off the writer thread.
//! The scan and the index take zeros to the end of a segment for space not written yet.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::frame;
use crate::segment::{self, Segment};

/// Not a segment's name: the scan and retention do not see it.
fn path(dir: &Path) -> PathBuf {
    dir.join("next.spare")
}

/// Makes the spare segment, `len` bytes of zeros, durable.
pub(crate) fn prepare(dir: &Path, len: u64) -> std::io::Result<File> {
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path(dir))?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64);
        file.write_all(&zeros[..n as usize])?;
        left -= n;
    }
    file.sync_all()?;
    segment::sync_dir(dir)?;
    Ok(file)
}

/// Makes the spare `file` the segment whose first record is `first_seq`, its name durable. Its header
/// becomes durable with the first sync of its records; a crash before leaves a segment of zeros, which
/// recovery removes.
pub(crate) fn adopt(dir: &Path, file: File, first_seq: u64) -> std::io::Result<(File, Segment)> {
    file.write_all_at(&frame::segment_header(first_seq), 0)?;
    let path = segment::path(dir, first_seq);
    std::fs::rename(self::path(dir), &path)?;
    segment::sync_dir(dir)?;
    Ok((file, Segment::starting(path, first_seq)))
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use engine::{Record, Step, TxnId};

    use super::*;
    use crate::{Mode, OnCorrupt, Options, Writer, scan};

    const RECOVER: Mode = Mode {
        repair: true,
        on_corrupt: OnCorrupt::Stop,
    };

    fn record(txn: u64) -> Record {
        Record {
            txn: TxnId(txn),
            at: UNIX_EPOCH,
            step: Step::TimedOut,
        }
    }

    fn read(dir: &Path) -> (crate::Scanned, Vec<u64>) {
        let mut txns = Vec::new();
        let scanned = scan(dir, RECOVER, |_, r| txns.push(r.txn.0)).unwrap();
        (scanned, txns)
    }

    #[test]
    fn a_prepared_segment_holds_its_records_and_the_writer_goes_on_after_them_not_after_its_zeros()
    {
        let dir = tempfile::tempdir().unwrap();
        let spare = prepare(dir.path(), 8192).unwrap();
        let (file, seg) = adopt(dir.path(), spare, 1).unwrap();
        assert!(!path(dir.path()).exists(), "renamed into place");
        let mut buf = Vec::new();
        let mut crc = 0;
        for seq in 1..=3 {
            crc = frame::encode(&record(seq), seq, crc, &mut buf).unwrap();
        }
        file.write_all_at(&buf, seg.bytes).unwrap();

        let (scanned, txns) = read(dir.path());
        assert_eq!(txns, [1, 2, 3]);
        assert_eq!(scanned.segments[0].bytes, seg.bytes + buf.len() as u64);
        assert!(scanned.torn.is_none() && scanned.problems.is_empty());
        assert_eq!(std::fs::metadata(&seg.path).unwrap().len(), 8192);

        let mut writer = Writer::start(dir.path(), Options::default(), &scanned, |_| {}).unwrap();
        for txn in 4..=6 {
            writer.append(record(txn));
        }
        writer.close();
        let (scanned, txns) = read(dir.path());
        assert_eq!(txns, [1, 2, 3, 4, 5, 6]);
        assert!(scanned.torn.is_none() && scanned.problems.is_empty());
    }

    #[test]
    fn a_torn_record_among_the_zeros_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let (file, seg) = adopt(dir.path(), prepare(dir.path(), 8192).unwrap(), 1).unwrap();
        let mut buf = Vec::new();
        frame::encode(&record(1), 1, 0, &mut buf).unwrap();
        let whole = buf.len();
        frame::encode(&record(2), 2, 0, &mut buf).unwrap();
        // The second record's last byte never reached the disk.
        file.write_all_at(&buf[..buf.len() - 1], seg.bytes).unwrap();

        let (scanned, txns) = read(dir.path());
        assert_eq!(txns, [1]);
        let torn = scanned.torn.expect("torn record reported");
        assert_eq!(torn.offset, seg.bytes + whole as u64);
        assert_eq!(std::fs::metadata(&seg.path).unwrap().len(), torn.offset);
    }

    #[test]
    fn a_spare_renamed_before_its_header_was_durable_is_removed_at_recovery() {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path(), 8192).unwrap();
        let seg = segment::path(dir.path(), 1);
        std::fs::rename(path(dir.path()), &seg).unwrap();

        let verify = Mode {
            repair: false,
            ..RECOVER
        };
        let scanned = scan(dir.path(), verify, |_, _| {}).unwrap();
        assert_eq!(scanned.torn.map(|t| t.offset), Some(0));
        assert!(seg.exists(), "verify changes nothing");
        let (scanned, txns) = read(dir.path());
        assert!(txns.is_empty() && scanned.segments.is_empty());
        assert!(!seg.exists());
    }
}
