//! TLS to the database on a real PostgreSQL (a throw-away server from Debian's binaries, serving TLS with
//! a CA made at test time; SKIPPED without one, required in CI). The server takes TCP connections only
//! over TLS, so a connection that works went through TLS, and `pg_stat_ssl` says so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cluster::Store;
use cluster::throwaway::Server;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A CA that issues certificates, written as PEM files in `dir`.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    dir: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert,
            key,
            dir: dir.to_owned(),
        }
    }

    /// The CA's certificate, as a file.
    fn file(&self, name: &str) -> PathBuf {
        self.write(name, &self.cert.pem())
    }

    /// A certificate for `names`, with `common_name` (PEM certificate and key).
    fn issue(&self, names: &[&str], common_name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(&self, name: &str, pem: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    }
}

/// A throw-away server serving TLS with a certificate for `localhost` from a CA made here (the CA's
/// certificate file is returned); with `clients`, also a CA whose certificates the server takes for
/// `cert` authentication.
fn serving_tls(test: &str, clients: bool) -> Option<(Server, PathBuf, Option<Ca>)> {
    let mut pg = Server::start(test)?;
    let ca = Ca::new(pg.dir(), "database CA");
    let (cert, key) = ca.issue(&["localhost"], "localhost");
    let clients = clients.then(|| Ca::new(pg.dir(), "clients CA"));
    pg.serve_tls(
        &cert,
        &key,
        clients.as_ref().map(|c| c.cert.pem()).as_deref(),
    );
    let root = ca.file("ca.pem");
    Some((pg, root, clients))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn url(host: &str, pg: &Server, tls: &str) -> String {
    format!(
        "host={host} port={} user=postgres dbname=postgres {tls}",
        pg.port()
    )
}

/// Whether the connection is TLS, as the server sees it.
async fn over_tls(url: &str) -> Result<bool, cluster::Error> {
    let client = cluster::connect(url).await?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

#[test]
fn a_node_joins_over_tls_verifying_the_databases_certificate_and_name() {
    let Some((pg, root, _)) = serving_tls("tls::verify", false) else {
        return;
    };
    let other = Ca::new(pg.dir(), "another CA").file("other.pem");
    rt().block_on(async {
        let tls = format!("sslmode=verify-full sslrootcert={}", root.display());
        assert!(over_tls(&url("localhost", &pg, &tls)).await.unwrap());
        // The whole node, not only a connection.
        let joined = Store::join(
            &url("localhost", &pg, &tls),
            "a",
            Duration::from_secs(5),
            &[7; 16],
        )
        .await
        .unwrap();
        assert_eq!(joined.store.node(), "a");

        // In the clear, the server refuses it: the connections above were TLS.
        let error = over_tls(&url("localhost", &pg, "sslmode=disable"))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("no encryption"), "{error}");

        // A certificate from another CA, or for another name, is refused.
        let error = over_tls(&url(
            "localhost",
            &pg,
            &format!("sslmode=require sslrootcert={}", other.display()),
        ))
        .await
        .unwrap_err();
        assert!(format!("{error:?}").contains("UnknownIssuer"), "{error:?}");
        let error = over_tls(&url("127.0.0.1", &pg, &tls)).await.unwrap_err();
        assert!(
            format!("{error:?}").contains("NotValidForName"),
            "{error:?}"
        );
        // A failover's multi-host string connects over TLS too, past a host the certificate does
        // not name.
        let port = pg.port();
        let both = format!(
            "host=127.0.0.1,localhost port={port},{port} user=postgres dbname=postgres target_session_attrs=read-write {tls}"
        );
        assert!(over_tls(&both).await.unwrap());
    });
}

#[test]
fn a_database_that_requires_a_client_certificate_gets_the_nodes() {
    let Some((pg, root, Some(clients))) = serving_tls("tls::client_certificate", true) else {
        return;
    };
    // `cert` authentication: the certificate names the database user.
    let (cert, key) = clients.issue(&[], "postgres");
    let (cert, key) = (
        clients.write("node.crt", &cert),
        clients.write("node.key", &key),
    );
    rt().block_on(async {
        let tls = format!(
            "sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
            root.display(),
            cert.display(),
            key.display()
        );
        assert!(over_tls(&url("localhost", &pg, &tls)).await.unwrap());
        let without = format!("sslmode=verify-full sslrootcert={}", root.display());
        let error = over_tls(&url("localhost", &pg, &without))
            .await
            .unwrap_err();
        assert!(format!("{error:?}").contains("certificate"), "{error:?}");
    });
}

/// `sslrootcert=system`: the system's trusted CAs. They do not include the CA made here, so the
/// server's certificate is refused; with `SSL_CERT_FILE` naming that CA, or `SSL_CERT_DIR` a directory
/// holding it, it is taken. Those halves run in child processes of this test (the environment is the
/// whole process's).
#[test]
fn sslrootcert_system_verifies_against_the_systems_trusted_cas() {
    const CHILD: &str = "ACQUIRO_TEST_SYSTEM_ROOTS_URL";
    if let Some(url) = std::env::var_os(CHILD) {
        assert!(rt().block_on(over_tls(url.to_str().unwrap())).unwrap());
        return;
    }
    let Some((pg, root, _)) = serving_tls("tls::system", false) else {
        return;
    };
    let system = url("localhost", &pg, "sslmode=verify-full sslrootcert=system");
    let error = rt().block_on(over_tls(&system)).unwrap_err();
    assert!(format!("{error:?}").contains("UnknownIssuer"), "{error:?}");

    // A directory as OpenSSL's `c_rehash` leaves it: the CA's file, a link to it by its hash, and a
    // file that holds no certificate.
    let dir = pg.dir().join("certs");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(&root, dir.join("database-ca.pem")).unwrap();
    std::os::unix::fs::symlink(dir.join("database-ca.pem"), dir.join("1a2b3c4d.0")).unwrap();
    std::fs::write(dir.join("README"), "not a certificate").unwrap();
    let test = "sslrootcert_system_verifies_against_the_systems_trusted_cas";
    for (var, value) in [("SSL_CERT_FILE", &root), ("SSL_CERT_DIR", &dir)] {
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture"])
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .env(CHILD, &system)
            .env(var, value)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&child.stdout);
        assert!(
            child.status.success() && out.contains("1 passed"),
            "{var}: {out}{}",
            String::from_utf8_lossy(&child.stderr)
        );
    }
}

/// The deployment the README recommends, whole: the nodes reach the database over TLS, by a multi-host
/// string naming a primary and its synchronous standby, the standby first (`target_session_attrs=
/// read-write` passes it by, after the TLS handshake). After the primary is lost and the standby
/// promoted, a node connecting again is on the promoted standby, over TLS, verifying its
/// certificate, with every batch it committed before.
#[test]
fn over_tls_a_node_follows_a_failover_to_the_synchronous_standby() {
    let Some((mut primary, mut standby)) = Server::start_pair("tls::failover") else {
        return;
    };
    let ca = Ca::new(primary.dir(), "database CA");
    let (cert, key) = ca.issue(&["localhost"], "localhost");
    primary.serve_tls(&cert, &key, None);
    standby.serve_tls(&cert, &key, None);
    let root = ca.file("ca.pem");
    let url = format!(
        "host=localhost,localhost port={},{} user=postgres dbname=postgres target_session_attrs=read-write sslmode=verify-full sslrootcert={}",
        standby.port(),
        primary.port(),
        root.display()
    );
    let record = |txn| engine::Record {
        txn: engine::TxnId(txn),
        at: std::time::SystemTime::now(),
        step: engine::Step::Withdrawn,
    };
    // The port of the server `url` connects to, and whether over TLS.
    let on = |url: String| async move {
        let client = cluster::connect(&url).await.unwrap();
        let row = client
            .query_one(
                "SELECT inet_server_port(), ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        (row.get::<_, i32>(0) as u16, row.get::<_, bool>(1))
    };
    rt().block_on(async {
        assert_eq!(on(url.clone()).await, (primary.port(), true));
        let mut a = Store::join(&url, "a", Duration::from_secs(5), &[7; 16])
            .await
            .unwrap()
            .store;
        a.commit(&[(1, record(1))], &[], &[]).await.unwrap();

        primary.kill();
        standby.promote();
        a.reconnect(&url).await.unwrap();
        a.commit(&[(2, record(2))], &[], &[]).await.unwrap();
        assert_eq!(on(url.clone()).await, (standby.port(), true));
        // Restarted: the process before has ended (one still connected would be waited for).
        drop(a);
        let again = Store::join(&url, "a", Duration::from_secs(5), &[7; 16])
            .await
            .unwrap();
        assert_eq!(again.last_seq, 2, "both batches on the promoted standby");
    });
}
