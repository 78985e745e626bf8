//! The lease: renewed on a connection of its own, reported when it cannot be.

use std::sync::Arc;

use cluster::Store;
use engine::Licence;
use tokio::sync::{mpsc, watch};

use super::{bounded, reconnect};
use crate::config::ClusterSettings;
use crate::journal::{Fault, Progress, Report};

/// Renews the lease a third of its length before it would lapse, until the journal is dropped; a
/// renewal refused by the fence is reported as the journal's failure, and one that fails otherwise as
/// the lease's (readiness fails until a renewal goes through). After a failure the connection is made
/// again, and if that works the lease is renewed at once rather than a third of the lease later.
/// A renewal that failed with an error rather than silence, after one that went through, may be its
/// connection's alone (its backend ended, a proxy between restarted): it is reported only if the
/// connection cannot be made again or the renewal at once fails too, so that a lost connection does
/// not fail readiness while the database answers. Silence is reported at once: the database may be
/// gone, and waiting for a reconnection would hide it for one more `cluster.timeout`. Nothing else runs
/// on the lease's connection, so that nothing slow holds up a renewal. Each renewal that goes through
/// renews the links' licence to write upstream, from when it was sent; the licence ends with this task
/// only once it runs out.
pub(super) async fn keep_lease(
    mut store: Store,
    settings: ClusterSettings,
    progress: watch::Receiver<Progress>,
    licence: watch::Sender<Licence>,
    reports: mpsc::UnboundedSender<Report>,
) {
    let mut every = tokio::time::interval(settings.lease / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether the last renewal failed and was reported: every failure reported is counted, and the
    // first success after one is reported too.
    let mut unrenewed = false;
    // The next renewal goes at once, not at the next tick: after a failure and a new connection. Never
    // twice in a row, so that a renewal that fails on a working connection goes at the lease's pace.
    let mut again = false;
    let report = |fault: Fault, unrenewed: &mut bool| {
        *unrenewed = true;
        tracing::warn!(error = %fault, "lease not renewed; connecting again");
        let _ = reports.send(Report::LeaseUnrenewed(Some(fault)));
    };
    loop {
        let at_once = std::mem::take(&mut again);
        if !at_once {
            tokio::select! {
                _ = every.tick() => {}
                () = reports.closed() => return,
            }
        }
        let p = *progress.borrow();
        let sent = tokio::time::Instant::now().into_std();
        let renewal = store.renew(settings.lease, p.in_flight, p.reversals, p.oldest_needed);
        match bounded(settings.timeout, renewal).await {
            Ok(()) => {
                licence.send_replace(Licence::from_renewal(sent, settings.lease));
                if std::mem::take(&mut unrenewed) {
                    let _ = reports.send(Report::LeaseUnrenewed(None));
                } else if at_once {
                    tracing::info!("lease renewed on a new connection");
                }
            }
            Err(error) if error.is_fenced() => {
                tracing::error!(%error, "lease lost");
                let _ = reports.send(Report::Fenced(Fault::Database(Arc::new(error))));
                return;
            }
            Err(error) => {
                // Once a failure is reported, the next ones are too: the connection is down with
                // the database, not alone.
                let connection_only =
                    !at_once && !unrenewed && !matches!(error, cluster::Error::NoAnswer(_));
                let fault = Fault::Database(Arc::new(error));
                if connection_only {
                    tracing::warn!(error = %fault, "lease renewal failed; connecting again to renew at once");
                } else {
                    report(fault.clone(), &mut unrenewed);
                }
                let reconnected =
                    reconnect(&mut store, &settings.database, settings.timeout, &reports);
                match reconnected.await {
                    Ok(()) => again = !at_once,
                    Err(_) if connection_only => report(fault, &mut unrenewed),
                    Err(_) => {}
                }
            }
        }
    }
}
