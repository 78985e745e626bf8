//! The byte relay: the reference for what a hop in front of the issuer costs at the least. Each terminal
//! connection gets its own connection to the issuer, and bytes are copied both ways without being
//! framed or parsed, so the relay does none of the switch's work.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

/// Relays every connection accepted on `listener` to `upstream` until the runtime stops.
pub async fn relay(listener: TcpListener, upstream: SocketAddr) {
    loop {
        let (mut terminal, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "relay: accept failed");
                continue;
            }
        };
        tokio::spawn(async move {
            let mut issuer = match TcpStream::connect(upstream).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, %upstream, "relay: cannot reach the issuer");
                    return;
                }
            };
            let _ = terminal.set_nodelay(true);
            let _ = issuer.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut terminal, &mut issuer).await;
        });
    }
}
