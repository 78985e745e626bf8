//! Shared pieces of the end-to-end tests: a scripted issuer host and a terminal client, on real sockets.

#![allow(dead_code, unreachable_pub)]

pub mod issuer;
pub mod terminal;

use std::time::Duration;

/// A guard against a hung test, never a synchronisation: every wait below ends on an event long before.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}
