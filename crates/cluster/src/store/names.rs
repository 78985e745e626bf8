//! How a node's connections show in `pg_stat_activity`: what each is for, and its name there.

/// What a node's connection is for: each of its connections shows in `pg_stat_activity` as
/// `acquiro NODE PURPOSE` (whatever `application_name` the connection string names), so that an
/// operator sees whose connection waits or holds a lock, and on what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The batches of records and claims (the connection a node joins on).
    Commits,
    Lease,
    /// Takeovers, the partitions' upkeep and the standbys' state.
    Upkeep,
    /// The copy of the evidence to its indexes.
    Evidence,
}

impl Purpose {
    /// Every connection a node holds.
    pub const ALL: [Purpose; 4] = [
        Purpose::Commits,
        Purpose::Lease,
        Purpose::Upkeep,
        Purpose::Evidence,
    ];

    /// `commits`, `lease`, `upkeep` or `evidence`: in the connection's name, and a metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Commits => "commits",
            Purpose::Lease => "lease",
            Purpose::Upkeep => "upkeep",
            Purpose::Evidence => "evidence",
        }
    }
}

/// The most of an `application_name` PostgreSQL keeps (`NAMEDATALEN` − 1 bytes).
const NAME_MOST: usize = 63;

/// How `node`'s connection for `purpose` shows in `pg_stat_activity`: `acquiro NODE PURPOSE`. A node
/// name PostgreSQL would cut (the name is kept to 63 bytes) or change (it keeps printable ASCII only)
/// shows as much of it as fits in printable ASCII, then `~` and a hash of the whole name, so that
/// `cluster status` still finds every connection of such a node and tells two such nodes apart.
pub(crate) fn name(node: &str, purpose: Purpose) -> String {
    let purpose = purpose.as_str();
    let plain = format!("acquiro {node} {purpose}");
    if plain.len() <= NAME_MOST && plain.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return plain;
    }
    let hash = format!("~{:08x}", fnv1a(node.as_bytes()));
    let room = NAME_MOST - "acquiro ".len() - hash.len() - " ".len() - purpose.len();
    let kept: String = (node.chars())
        .take_while(|c| *c == ' ' || c.is_ascii_graphic())
        .take(room)
        .collect();
    format!("acquiro {kept}{hash} {purpose}")
}

/// The names of all of `node`'s connections.
pub(crate) fn of(node: &str) -> Vec<String> {
    Purpose::ALL.iter().map(|p| name(node, *p)).collect()
}

/// FNV-1a, folded to 32 bits: stable across releases and platforms (the standard library's hasher
/// is not), so that every release names a node's connections alike.
fn fnv1a(bytes: &[u8]) -> u32 {
    let hash = (bytes.iter()).fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash ^ (hash >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_ascii_node_name_shows_as_it_is() {
        assert_eq!(name("node-a", Purpose::Lease), "acquiro node-a lease");
    }

    #[test]
    fn a_name_postgresql_would_cut_or_change_shows_whole_and_apart() {
        let long = "x".repeat(64);
        let other = format!("{}y", "x".repeat(63));
        for node in [long.as_str(), &other, "zürich-1", "節點"] {
            let names = of(node);
            for n in &names {
                assert!(n.len() <= NAME_MOST, "{n}");
                assert!(n.bytes().all(|b| b == b' ' || b.is_ascii_graphic()), "{n}");
            }
            let mut apart = names.clone();
            apart.dedup();
            assert_eq!(apart.len(), Purpose::ALL.len(), "{names:?}");
        }
        assert_ne!(name(&long, Purpose::Lease), name(&other, Purpose::Lease));
        assert_ne!(
            name("zürich-1", Purpose::Lease),
            name("zürich-2", Purpose::Lease)
        );
        // The same in every release: `cluster status` of one counts the connections of another.
        assert_eq!(name("zürich-1", Purpose::Lease), "acquiro z~1a8b0421 lease");
    }
}
