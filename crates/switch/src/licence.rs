//! The link tasks' leave to write upstream: in cluster mode, the lease task renews it with every
//! renewal that goes through, and each link task waits for it before a write (see
//! [`engine::Licence`]). The link tasks are where a message meets its socket, so a message queued
//! before a pause waits there too.

use engine::Licence;
use tokio::sync::watch;
use tokio::time::Instant;

/// Given to each link task. Without a lease (one node, its journal on disk) every write may go.
#[derive(Debug, Clone, Default)]
pub struct Licensed(Option<watch::Receiver<Licence>>);

impl Licensed {
    /// A leave the lease task renews through the sender, starting from `first`.
    pub(crate) fn leased(first: Licence) -> (watch::Sender<Licence>, Licensed) {
        let (renewals, licence) = watch::channel(first);
        (renewals, Licensed(Some(licence)))
    }

    /// Whether a write may go now.
    pub(crate) fn holds(&self) -> bool {
        (self.0.as_ref()).is_none_or(|licence| licence.borrow().allows(Instant::now().into_std()))
    }

    /// Waits until a write may go. `false`: it never will, for the lease task ended (the node was
    /// fenced, or it is stopping) and the last licence has run out.
    pub(crate) async fn wait(&mut self) -> bool {
        let Some(licence) = &mut self.0 else {
            return true;
        };
        let mut waited = false;
        loop {
            if licence
                .borrow_and_update()
                .allows(Instant::now().into_std())
            {
                if waited {
                    tracing::info!("lease renewed: requests to the issuer go again");
                }
                return true;
            }
            if !std::mem::replace(&mut waited, true) {
                tracing::warn!(
                    "this node's lease may have lapsed by its own clock (a pause, or the database out of reach): requests to the issuer wait until it is renewed"
                );
            }
            if licence.changed().await.is_err() {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LEASE: Duration = Duration::from_secs(5);

    #[tokio::test(start_paused = true)]
    async fn a_write_past_the_licence_waits_for_the_next_renewal() {
        let (renewals, mut licensed) =
            Licensed::leased(Licence::from_renewal(Instant::now().into_std(), LEASE));
        assert!(licensed.wait().await, "within the licence");
        tokio::time::advance(LEASE).await;
        let waiter = tokio::spawn(async move { licensed.wait().await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "past it, nothing is written");
        renewals.send_replace(Licence::from_renewal(Instant::now().into_std(), LEASE));
        let woken = tokio::time::timeout(LEASE, waiter).await;
        assert!(matches!(woken, Ok(Ok(true))), "{woken:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_licence_of_a_lease_task_that_ended_nothing_more_is_written() {
        let (renewals, mut licensed) =
            Licensed::leased(Licence::from_renewal(Instant::now().into_std(), LEASE));
        drop(renewals);
        assert!(licensed.wait().await, "the last licence still holds");
        tokio::time::advance(LEASE).await;
        assert!(!licensed.wait().await);
    }

    #[tokio::test]
    async fn without_a_lease_every_write_goes() {
        assert!(Licensed::default().wait().await);
    }
}
