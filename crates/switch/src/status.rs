//! What the switch tells about itself while it runs: which links are up and whether it is draining. The
//! driver publishes it after every event that changes it; readiness checks and tests wait on it.

use crate::journal::Fault;

/// A snapshot of the switch's state.
#[derive(Debug, Clone)]
pub struct Status {
    /// Every upstream link, in configuration order.
    pub links: Vec<LinkStatus>,
    /// Shutting down: no new requests are read.
    pub draining: bool,
    /// Why the journal cannot write (it stopped, or its database is unavailable), if it cannot.
    pub journal_failed: Option<Fault>,
    /// Cluster mode: why the lease's last renewal failed, if it did.
    pub lease_failed: Option<Fault>,
    /// Cluster mode: the node lost its epoch and stops.
    pub fenced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    pub issuer: String,
    pub host: String,
    /// Connected and signed on.
    pub up: bool,
}

impl Status {
    /// Issuers with no link up, each named once, in configuration order.
    pub fn issuers_down(&self) -> Vec<&str> {
        let mut down: Vec<&str> = Vec::new();
        for l in &self.links {
            let up = self.links.iter().any(|o| o.issuer == l.issuer && o.up);
            if !up && !down.contains(&l.issuer.as_str()) {
                down.push(&l.issuer);
            }
        }
        down
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(issuer: &str, up: bool) -> LinkStatus {
        LinkStatus {
            issuer: issuer.into(),
            host: "h:1".into(),
            up,
        }
    }

    #[test]
    fn an_issuer_is_down_only_when_all_its_links_are() {
        let status = Status {
            links: vec![
                link("visa", false),
                link("visa", true),
                link("amex", false),
                link("amex", false),
            ],
            draining: false,
            journal_failed: None,
            lease_failed: None,
            fenced: false,
        };
        assert_eq!(status.issuers_down(), ["amex"]);
    }
}
