//! A listener's connection slots. At most `max_connections` terminals are connected at once; when all
//! slots are taken, the connection that has been idle longest with nothing awaiting an answer gives its
//! slot to the new one. So idle or silent connections (a thousand that never send a byte) cannot keep a
//! real terminal out: only connections with requests in flight can fill a listener.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::ConnId;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How long a new connection waits for an evicted one to give its slot back.
const HANDOVER: Duration = Duration::from_secs(1);

/// One connection's slot, shared between its task and the listener.
#[derive(Debug)]
pub(crate) struct Slot {
    /// When the connection last did something useful (connected, was answered, sent a keep-alive), in
    /// nanoseconds since the listener's epoch. A message that gets no answer (a response MTI) does not
    /// count: a connection sending only those stays first in line to give way.
    active: AtomicU64,
    /// Requests awaiting their answers: a connection with any is never evicted.
    in_flight: AtomicU32,
    /// Asks the connection to give its slot up; it does so only with nothing in flight, and only while
    /// `wanted` says the listener is still waiting for it (a wake-up left over from a request it
    /// declined while busy is ignored).
    evict: Notify,
    wanted: AtomicBool,
    epoch: Instant,
}

impl Slot {
    pub(crate) fn active(&self) {
        let at = self.epoch.elapsed().as_nanos() as u64;
        self.active.store(at, Ordering::Relaxed);
    }

    pub(crate) fn set_in_flight(&self, n: usize) {
        self.in_flight.store(n as u32, Ordering::Relaxed);
    }

    /// Resolves when the listener may want this slot back; [`Slot::give_up`] tells whether it does.
    pub(crate) async fn evicted(&self) {
        self.evict.notified().await
    }

    /// Whether the listener is waiting for this slot (and now gets it).
    pub(crate) fn give_up(&self) -> bool {
        self.wanted.swap(false, Ordering::Relaxed)
    }
}

/// A connection's hold on its slot: released when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) slot: Arc<Slot>,
    conn: ConnId,
    slots: Arc<Slots>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.slots.lock().remove(&self.conn);
    }
}

#[derive(Debug)]
pub(crate) struct Slots {
    permits: Arc<Semaphore>,
    open: Mutex<HashMap<ConnId, Arc<Slot>>>,
    epoch: Instant,
}

impl Slots {
    pub(crate) fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            permits: Arc::new(Semaphore::new(max)),
            open: Mutex::default(),
            epoch: Instant::now(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, Arc<Slot>>> {
        // The map is consistent after any panic while it is held (single inserts and removes).
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for `conn`: a free one, or the one an idle connection gives up (`evicted` is then true).
    /// `None` when every slot is held by a connection with requests in flight.
    pub(crate) async fn take(self: &Arc<Self>, conn: ConnId) -> Option<(Held, bool)> {
        let (permit, evicted) = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => (permit, false),
            Err(_) => {
                let victim = self.idlest()?;
                victim.wanted.store(true, Ordering::Relaxed);
                victim.evict.notify_one();
                let permit = tokio::time::timeout(HANDOVER, self.permits.clone().acquire_owned());
                match permit.await {
                    Ok(Ok(permit)) => (permit, true),
                    // It turned busy before it saw the request: it keeps its slot.
                    _ => {
                        victim.wanted.store(false, Ordering::Relaxed);
                        return None;
                    }
                }
            }
        };
        let slot = Arc::new(Slot {
            active: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            evict: Notify::new(),
            wanted: AtomicBool::new(false),
            epoch: self.epoch,
        });
        slot.active();
        self.lock().insert(conn, slot.clone());
        let held = Held {
            slot,
            conn,
            slots: self.clone(),
            _permit: permit,
        };
        Some((held, evicted))
    }

    /// The connection idle longest with nothing in flight.
    fn idlest(&self) -> Option<Arc<Slot>> {
        self.lock()
            .values()
            .filter(|s| s.in_flight.load(Ordering::Relaxed) == 0)
            .min_by_key(|s| s.active.load(Ordering::Relaxed))
            .cloned()
    }
}
