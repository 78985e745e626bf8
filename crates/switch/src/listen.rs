//! Listening sockets that can take a reconnect storm.
//!
//! `TcpListener::bind` queues 128 connections not yet accepted, as the standard library does. When more
//! terminals than that connect at once (the switch restarted, a node lost behind a load balancer whose
//! terminals all come to the survivors, a network blip), the kernel drops the handshakes past the queue
//! and each of those terminals waits a second, then three, before it tries again: 200 terminals
//! connecting together lost 57 handshakes that way on the development machine.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Listens on `addr` with room for `backlog` connections not yet accepted (the kernel caps it at
/// `net.core.somaxconn`, 4 096 by default on Linux since 5.4).
pub fn listen(addr: SocketAddr, backlog: usize) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted switch binds again at once, beside its old connections
    // still in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    if let Some(cap) = kernel_cap().filter(|cap| *cap < backlog) {
        tracing::warn!(%addr, backlog, cap, "the kernel caps this listen queue (net.core.somaxconn): \
            connections past it that arrive at once wait a second for their handshake to be retried; \
            raise it with sysctl");
    }
    socket.listen(
        u32::try_from(backlog)
            .unwrap_or(u32::MAX)
            .min(i32::MAX as u32),
    )
}

/// The kernel's cap on every listen queue, where it can be read (Linux).
fn kernel_cap() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpStream;

    use super::*;

    /// Three hundred connections complete their handshakes while nothing accepts them: the queue holds
    /// them all. With the default queue of 128, the connections past it hang (the kernel drops their
    /// handshakes and retries after 1, 3 and 7 s), and the bound below, far above the milliseconds
    /// this takes, is passed.
    #[tokio::test]
    async fn a_burst_of_connections_larger_than_the_default_queue_completes_before_any_is_accepted()
    {
        // The kernel's own cap: under 300, no queue this process asks for can hold the burst.
        let cap = kernel_cap();
        if cap.is_some_and(|cap| cap < 300) {
            eprintln!(
                "SKIPPED: net.core.somaxconn is {cap:?}, under the 300 connections of this test"
            );
            return;
        }
        let listener = listen("127.0.0.1:0".parse().unwrap(), 1000).unwrap();
        let addr = listener.local_addr().unwrap();
        let connects: Vec<_> = (0..300)
            .map(|_| tokio::spawn(TcpStream::connect(addr)))
            .collect();
        let all = async {
            let mut streams = Vec::new();
            for c in connects {
                streams.push(c.await.unwrap().unwrap());
            }
            streams
        };
        let streams = tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .expect("every handshake completes without an accept");
        assert_eq!(streams.len(), 300);
        drop(listener);
    }
}
