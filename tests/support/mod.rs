//! Shared pieces of the end-to-end tests: a scripted issuer host and a terminal client, on real sockets.

#![allow(dead_code, unreachable_pub)]

pub mod cluster;
pub mod issuer;
pub mod pci;
pub mod process;
pub mod settlement;
pub mod terminal;

use std::time::Duration;

/// A guard against a hung test, never a synchronisation: every wait below ends on an event long before.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A switch on configuration `text` with an in-memory journal.
pub async fn start(text: &str) -> switch::Running {
    let settings = switch::File::parse("test", text).unwrap().check().unwrap();
    let journal = Box::new(switch::MemoryJournal::new(1000));
    switch::start(settings, journal, Default::default())
        .await
        .unwrap()
}

/// A switch on `sections` (listeners, issuers...) after what the tests that watch it share: an
/// acquirer id, no echo test during the run, the admin endpoint on any port. Ready before this returns.
pub async fn start_ready(sections: &str) -> switch::Running {
    let text = format!(
        "acquirer_id = \"12345\"\necho_interval = \"1h\"\nadmin_listen = \"127.0.0.1:0\"\n{sections}"
    );
    let switch = start(&text).await;
    within("the switch ready", switch.ready()).await;
    switch
}

/// `GET path` over HTTP/1.0 (the server closes after answering): the status code and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, body.to_string())
}
