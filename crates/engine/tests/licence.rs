//! Cluster mode's licence to write upstream (`engine::Licence`), on the harness's clock: the shell
//! reads the time, the licence only compares it.

mod support;

use std::time::Duration;

use engine::Licence;
use support::Harness;

#[test]
fn a_licence_ends_a_fifth_of_the_lease_before_the_lease_would_lapse() {
    let (sent, lease) = (Harness::new().now.mono, Duration::from_secs(5));
    let licence = Licence::from_renewal(sent, lease);
    assert!(licence.allows(sent));
    assert!(licence.allows(sent + Duration::from_millis(3_999)));
    assert!(!licence.allows(sent + Duration::from_secs(4)));
    assert!(!licence.allows(sent + lease));
}
