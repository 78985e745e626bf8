//! rustls configurations from PEM files, with the ring provider: the one place acquiro reads
//! certificates and keys, for its terminal listeners, its issuer links and its database connections.
//! Errors name the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain, leaf first (at least one certificate).
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    Ok(certs)
}

pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Where Linux distributions keep the system's trusted CA certificates, in one PEM bundle (Debian and
/// Ubuntu, Red Hat and Fedora, Alpine): OpenSSL's default file on each.
const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The file of the system's trusted CA certificates (what libpq's `sslrootcert=system` reads, through
/// OpenSSL): the one `SSL_CERT_FILE` names, else the first of the distributions' bundles found.
pub fn system_roots_file() -> Result<PathBuf, String> {
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        return Ok(file.into());
    }
    SYSTEM_BUNDLES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            format!(
                "no system certificate bundle ({}): install ca-certificates or set SSL_CERT_FILE",
                SYSTEM_BUNDLES.join(", ")
            )
        })
}

/// The CA certificates in `path`, as the roots a peer's certificate must chain to.
pub fn roots(path: &Path) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(Arc::new(roots))
}

/// A client whose servers' certificates must chain to `ca` (and name the server, checked by rustls
/// at each connection); with `identity` (certificate chain and key), it presents them (mutual TLS).
pub fn client(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(ca)?);
    match identity {
        Some((cert, key_path)) => builder
            .with_client_auth_cert(certs(cert)?, key(key_path)?)
            .map_err(|e| e.to_string()),
        None => Ok(builder.with_no_client_auth()),
    }
}
