//! TLS on terminal listeners and issuer links, with a CA and certificates made at test time (rcgen):
//! mutual TLS both ways, and what a TLS listener does with garbage and with a terminal that has no
//! certificate.

mod support;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use iso8583::Message;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sim::Purchase;
use support::issuer::Issuer;
use support::terminal::text;
use support::{http_get, within};
use switch::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::codec::Framed;
use wire::{Frame, FrameCodec, LengthHeader};

/// A test CA and the certificates it issues, as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `localhost` signed by the CA: (chain, key) files named after `who`.
    fn issue(&self, who: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let (cert_path, key_path) = (
            self.dir.path().join(format!("{who}.pem")),
            self.dir.path().join(format!("{who}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        Arc::new(roots)
    }

    /// A TLS client trusting the CA, presenting `who`'s certificate if given.
    fn client(&self, who: Option<&str>) -> TlsConnector {
        let builder = ClientConfig::builder().with_root_certificates(self.roots());
        let config = match who {
            Some(who) => {
                let (cert, key) = self.issue(who);
                builder
                    .with_client_auth_cert(chain(&cert), private(&key))
                    .unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        TlsConnector::from(Arc::new(config))
    }
}

fn chain(path: &PathBuf) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn private(path: &PathBuf) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).unwrap()
}

/// An issuer host behind a TLS front that requires a client certificate from the CA: it decrypts and
/// passes the bytes to the plain test issuer, and counts the clients that showed a certificate.
async fn tls_front(pki: &Pki, issuer: &Issuer) -> (std::net::SocketAddr, Arc<Mutex<usize>>) {
    let (cert, key) = pki.issue("issuer");
    let verifier = WebPkiClientVerifier::builder(pki.roots()).build().unwrap();
    let config = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain(&cert), private(&key))
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (backend, authenticated) = (issuer.addr, Arc::new(Mutex::new(0)));
    let seen = authenticated.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                if tls.get_ref().1.peer_certificates().is_some() {
                    *seen.lock().unwrap() += 1;
                }
                let mut plain = TcpStream::connect(backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, authenticated)
}

/// The switch: one TLS listener requiring terminal certificates, one issuer reached over mutual TLS.
async fn start(pki: &Pki, issuer_addr: std::net::SocketAddr) -> Running {
    let (cert, key) = pki.issue("switch");
    let (client_cert, client_key) = pki.issue("switch-client");
    let sections = format!(
        r#"
        [[listeners]]
        address = "127.0.0.1:0"
        read_timeout = "2s"
        [listeners.tls]
        cert = "{}"
        key = "{}"
        client_ca = "{}"
        [[issuers]]
        hosts = ["{issuer_addr}"]
        response_timeout = "5s"
        [issuers.tls]
        ca = "{}"
        server_name = "localhost"
        cert = "{}"
        key = "{}"
        "#,
        cert.display(),
        key.display(),
        pki.ca().display(),
        pki.ca().display(),
        client_cert.display(),
        client_key.display(),
    );
    support::start_ready(&sections).await
}

/// A purchase from `tid` over a TLS connection made by `client`; its answer's RC.
async fn purchase(client: &TlsConnector, addr: std::net::SocketAddr, tid: &str) -> String {
    let spec = dialects::builtin("iso87ascii").unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    let tls = client
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .unwrap();
    let mut framed = Framed::new(tls, FrameCodec::new(LengthHeader::Binary2));
    let request = Purchase {
        terminal: tid.into(),
        ..Purchase::example()
    }
    .message(spec)
    .unwrap();
    let frame = Frame {
        tpdu: None,
        message: request.to_bytes(),
    };
    framed.send(frame).await.unwrap();
    let answer = within("answer", framed.next()).await.unwrap().unwrap();
    text(&Message::decode(spec, answer.message).unwrap(), 39)
}

/// The CA, the issuer behind its TLS front (with the count of clients that showed a certificate), and
/// the switch.
async fn setup() -> (Pki, Issuer, Arc<Mutex<usize>>, Running) {
    let pki = Pki::new();
    let spec = dialects::builtin("iso87ascii").unwrap();
    let issuer = Issuer::start(spec, Duration::from_secs(60)).await;
    let (front, authenticated) = tls_front(&pki, &issuer).await;
    let switch = start(&pki, front).await;
    (pki, issuer, authenticated, switch)
}

#[tokio::test]
async fn terminals_and_issuers_are_reached_over_mutual_tls() {
    let (pki, issuer, authenticated, switch) = setup().await;
    let terminal = pki.client(Some("terminal"));
    assert_eq!(
        purchase(&terminal, switch.listeners[0], "TERM0001").await,
        "00"
    );
    let forwarded = issuer.of_class(2);
    assert_eq!(
        text(&forwarded[0], 41),
        "TERM0001",
        "the issuer got it through TLS"
    );
    assert!(
        *authenticated.lock().unwrap() >= 1,
        "the switch showed its certificate"
    );
}

#[tokio::test]
async fn garbage_and_terminals_without_a_certificate_are_closed_and_counted() {
    let (pki, _issuer, _, switch) = setup().await;
    let addr = switch.listeners[0];

    // A plain ISO 8583 frame on the TLS listener.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"\x00\x040200").await.unwrap();
    // The switch answers with a TLS alert at most, then closes.
    let _ = within("close", plain.read_to_end(&mut Vec::new())).await;

    // A TLS terminal with no certificate: the handshake fails (on TLS 1.3 the client learns it on its
    // first read).
    let anonymous = pki.client(None);
    let stream = TcpStream::connect(addr).await.unwrap();
    let refused = match anonymous
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
    {
        Err(_) => true,
        Ok(mut tls) => {
            let _ = tls.write_all(b"\x00\x040200").await;
            matches!(
                within("refusal", tls.read(&mut [0u8; 64])).await,
                Ok(0) | Err(_)
            )
        }
    };
    assert!(refused);

    let terminal = pki.client(Some("terminal"));
    assert_eq!(
        purchase(&terminal, addr, "TERM0002").await,
        "00",
        "others carry on"
    );
    let (_, metrics) = http_get(switch.admin.unwrap(), "/metrics").await;
    let line = r#"acquiro_terminal_closed_total{reason="tls_handshake"} 2"#;
    assert!(
        metrics.lines().any(|l| l == line),
        "no `{line}` in\n{metrics}"
    );
}
