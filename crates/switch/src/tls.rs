//! TLS (rustls, with the ring provider) for terminal listeners and issuer links, from PEM files.
//!
//! A listener with `client_ca` requires terminals to present a certificate issued by it (mutual TLS);
//! a link with `cert` and `key` presents them to its issuer. Handshakes are bounded by a timeout so a
//! peer that never completes one holds nothing for long.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::ServerName;
use rustls::server::WebPkiClientVerifier;
use serde::Deserialize;
use tlsfiles::{certs, key, provider, roots};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use tokio_util::either::Either;

/// Why a listener's or a link's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error(transparent)]
    Files(#[from] tlsfiles::Error),
    #[error(transparent)]
    Config(#[from] rustls::Error),
    #[error("client_ca: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
    #[error("server name {0:?} is not a DNS name or an IP address")]
    ServerName(String),
    #[error("cert and key go together")]
    Halves,
}

/// A connection, in the clear or over TLS.
pub(crate) type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// `[listeners.tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsFile {
    /// The listener's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA certificates (PEM) terminals' certificates must chain to: mutual TLS when present.
    pub client_ca: Option<PathBuf>,
}

/// `[issuers.tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerTlsFile {
    /// CA certificates (PEM) the issuer's certificate must chain to.
    pub ca: PathBuf,
    /// The name the issuer's certificate must carry; by default the host of each `hosts` entry.
    pub server_name: Option<String>,
    /// The switch's own certificate chain and key, for issuers that require mutual TLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// A listener's TLS side, ready to accept.
#[derive(Clone)]
pub struct Acceptor(TlsAcceptor);

/// A link's TLS side, ready to connect to one host.
#[derive(Clone)]
pub struct Connector {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Acceptor")
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Connector({:?})", self.name)
    }
}

impl ListenerTlsFile {
    pub(crate) fn check(&self) -> Result<Acceptor, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = match &self.client_ca {
            Some(ca) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider()).build()?,
            ),
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(certs(&self.cert)?, key(&self.key)?)?;
        Ok(Acceptor(TlsAcceptor::from(Arc::new(config))))
    }
}

impl IssuerTlsFile {
    /// The connector for `host` (`name:port`).
    pub(crate) fn check(&self, host: &str) -> Result<Connector, TlsError> {
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            _ => return Err(TlsError::Halves),
        };
        let config = tlsfiles::client(roots(&self.ca)?, identity)?;
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => host
                .rsplit_once(':')
                .map_or(host, |(name, _)| name)
                .trim_matches(['[', ']'])
                .to_string(),
        };
        Ok(Connector {
            connector: TlsConnector::from(Arc::new(config)),
            name: ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name))?,
        })
    }
}

impl Acceptor {
    pub(crate) async fn accept(&self, stream: TcpStream) -> std::io::Result<Stream> {
        let tls = self.0.accept(stream).await?;
        Ok(Either::Right(TlsStream::Server(tls)))
    }
}

impl Connector {
    pub(crate) async fn connect(&self, stream: TcpStream) -> std::io::Result<Stream> {
        let tls = self.connector.connect(self.name.clone(), stream).await?;
        Ok(Either::Right(TlsStream::Client(tls)))
    }
}
