//! rustls configurations from PEM files, with the ring provider: the one place acquiro reads
//! certificates and keys, for its terminal listeners, its issuer links and its database connections.
//! Errors name the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// Why a TLS configuration could not be made: the file and what is wrong with it, or what rustls
/// refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file that cannot be read, or holds no PEM object of the kind wanted.
    #[error("{}: {why}", .path.display())]
    Read { path: PathBuf, why: pem::Error },
    #[error("{}: no certificate", .path.display())]
    NoCertificate { path: PathBuf },
    /// A CA certificate that cannot serve as a root.
    #[error("{}: {why}", .path.display())]
    Root { path: PathBuf, why: rustls::Error },
    /// rustls refused the configuration: a key that does not fit its certificate, for one.
    #[error(transparent)]
    Config(#[from] rustls::Error),
    #[error(
        "no system CA certificates (none in SSL_CERT_FILE or SSL_CERT_DIR, nor in {}): install ca-certificates or set SSL_CERT_FILE",
        SYSTEM_BUNDLES.join(", ")
    )]
    NoSystemRoots,
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain, leaf first (at least one certificate).
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|why| read(path, why))?;
    if certs.is_empty() {
        return Err(Error::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path).map_err(|why| read(path, why))
}

fn read(path: &Path, why: pem::Error) -> Error {
    Error::Read {
        path: path.to_owned(),
        why,
    }
}

/// Where Linux distributions keep the system's trusted CA certificates, in one PEM bundle (Debian and
/// Ubuntu, Red Hat and Fedora, Alpine): OpenSSL's default file on each.
const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The system's trusted CA certificates, where OpenSSL (and so libpq's `sslrootcert=system`) finds
/// them: the bundle `SSL_CERT_FILE` names, else the first of the distributions' bundles found; and with
/// `SSL_CERT_DIR` (directories separated by `:`, as a hashed certificate directory), the certificates
/// of every file in them. A file there that holds none, or a certificate that cannot serve as a root,
/// is passed over, as OpenSSL would never match it.
pub fn system_roots() -> Result<Arc<RootCertStore>, Error> {
    let bundle = match std::env::var_os("SSL_CERT_FILE") {
        Some(file) => Some(PathBuf::from(file)),
        None => (SYSTEM_BUNDLES.iter().map(PathBuf::from)).find(|p| p.exists()),
    };
    let mut roots = RootCertStore::empty();
    if let Some(bundle) = bundle {
        roots.add_parsable_certificates(certs(&bundle)?);
    }
    let dirs = std::env::var_os("SSL_CERT_DIR").unwrap_or_default();
    for dir in std::env::split_paths(&dirs).filter(|d| !d.as_os_str().is_empty()) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let found = CertificateDer::pem_file_iter(entry.path())
                .map(|i| i.filter_map(Result::ok).collect::<Vec<_>>());
            roots.add_parsable_certificates(found.unwrap_or_default());
        }
    }
    if roots.is_empty() {
        return Err(Error::NoSystemRoots);
    }
    Ok(Arc::new(roots))
}

/// The CA certificates in `path`, as the roots a peer's certificate must chain to.
pub fn roots(path: &Path) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    for cert in certs(path)? {
        roots.add(cert).map_err(|why| Error::Root {
            path: path.to_owned(),
            why,
        })?;
    }
    Ok(Arc::new(roots))
}

/// A client whose servers' certificates must chain to `roots` (and name the server, checked by rustls
/// at each connection); with `identity` (certificate chain and key), it presents them (mutual TLS).
pub fn client(
    roots: Arc<RootCertStore>,
    identity: Option<(&Path, &Path)>,
) -> Result<ClientConfig, Error> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match identity {
        Some((cert, key_path)) => builder.with_client_auth_cert(certs(cert)?, key(key_path)?)?,
        None => builder.with_no_client_auth(),
    })
}
