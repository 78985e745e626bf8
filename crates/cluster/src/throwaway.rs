//! A private PostgreSQL server for tests and scripts, from Debian's binaries (`postgresql`): `initdb` in a
//! temporary directory, a free port, a Unix socket in the same directory; stopped and removed on drop. As
//! root the server runs as the `postgres` user (PostgreSQL refuses to run as root).
//!
//! [`Server::start`] gives `None` when no server binaries are installed: a test then says SKIPPED,
//! unless `ACQUIRO_REQUIRE_POSTGRES` is set (as in CI), where it fails.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug)]
pub struct Server {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    /// A primary whose commits wait for a synchronous standby (see [`Server::start_pair`]).
    synchronous: bool,
    /// What the server listens on besides its socket: nothing, or TLS on 127.0.0.1 (see
    /// [`Server::serve_tls`]), as `postgres` options.
    listen: String,
}

/// The newest installed server's binaries.
fn binaries() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

impl Server {
    /// Starts a server, or says why a test cannot run (see the module documentation); `test` names the
    /// test in that message.
    pub fn start(test: &str) -> Option<Server> {
        let Some(bin) = binaries() else {
            assert!(
                std::env::var_os("ACQUIRO_REQUIRE_POSTGRES").is_none(),
                "{test}: ACQUIRO_REQUIRE_POSTGRES is set but no PostgreSQL server is installed (Debian package postgresql)"
            );
            eprintln!("SKIPPED {test}: no PostgreSQL server installed (Debian package postgresql)");
            return None;
        };
        let server = Server::made(bin);
        server.run(server.command("initdb").arg("-D").arg(server.data()).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]));
        server.start_again();
        Some(server)
    }

    /// A primary and its standby, streaming, the standby synchronous (`synchronous_standby_names`):
    /// the primary acknowledges a commit once the standby has it on disk, as in the deployment the
    /// README describes. [`Server::promote`] makes the standby the primary after the first is lost.
    pub fn start_pair(test: &str) -> Option<(Server, Server)> {
        Server::pair(test, true)
    }

    /// A primary and its standby, streaming asynchronously: a commit returns before the standby has
    /// it, so a failover may lose it (the deployment the README warns against).
    pub fn start_asynchronous_pair(test: &str) -> Option<(Server, Server)> {
        Server::pair(test, false)
    }

    fn pair(test: &str, synchronous: bool) -> Option<(Server, Server)> {
        let mut primary = Server::start(test)?;
        let standby = Server::made(primary.bin.clone());
        // A copy of the running primary, set to follow it (`-R`).
        standby.run(
            standby
                .command("pg_basebackup")
                .arg("-h")
                .arg(&primary.dir)
                .args(["-p", &primary.port.to_string(), "-U", "postgres", "-D"])
                .arg(standby.data())
                .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]),
        );
        standby.start_again();
        // Synchronous from here on. Given at the primary's start, not in its configuration files, so
        // that the copy does not have it: promoted, it would wait for a standby of its own forever.
        if synchronous {
            primary.synchronous = true;
            primary.kill();
            primary.start_again();
        }
        Some((primary, standby))
    }

    /// A standby becomes the primary (`pg_ctl promote`, waiting until it takes writes).
    pub fn promote(&self) {
        self.run(
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-w", "promote"]),
        );
    }

    /// A connection string for the database `postgres` on the first of `servers` that takes writes
    /// (`target_session_attrs=read-write`): a client that connects again after its primary was lost
    /// finds the promoted standby.
    pub fn url_of_primary(servers: &[&Server]) -> String {
        let hosts: Vec<String> = servers
            .iter()
            .map(|s| s.dir.display().to_string())
            .collect();
        let ports: Vec<String> = servers.iter().map(|s| s.port.to_string()).collect();
        format!(
            "host={} port={} user=postgres dbname=postgres target_session_attrs=read-write",
            hosts.join(","),
            ports.join(",")
        )
    }

    /// A server's directory and port, its data not made yet.
    fn made(bin: PathBuf) -> Server {
        let dir =
            std::env::temp_dir().join(format!("acquiro-pg-{}-{}", std::process::id(), sequence()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let server = Server {
            port: free_port(),
            dir,
            bin,
            as_postgres: is_root(),
            synchronous: false,
            listen: "-c listen_addresses=''".into(),
        };
        if server.as_postgres {
            server.run(Command::new("chown").args(["postgres"]).arg(&server.dir));
        }
        server
    }

    /// A connection string for the database `postgres`.
    pub fn url(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.dir.display(),
            self.port
        )
    }

    /// Stops the server at once, as a crash would (`-m immediate`): what was committed survives.
    pub fn kill(&self) {
        self.run(self.command("pg_ctl").arg("-D").arg(self.data()).args([
            "-m",
            "immediate",
            "stop",
        ]));
    }

    /// Starts the server (again, after [`Server::kill`]) and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} {} -c synchronous_commit=on -c fsync=on{}",
            self.port,
            self.dir.display(),
            self.listen,
            match self.synchronous {
                true => " -c synchronous_standby_names='*'",
                false => "",
            }
        );
        self.run(
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.join("log"))
                .args(["-w", "-o", &options, "start"]),
        );
    }

    /// Restarts the server with TLS on 127.0.0.1, at [`Server::port`], beside its socket (and so on
    /// each start after this one): `cert` and `key` (PEM) are its own, and TCP connections must be TLS
    /// (`hostssl`). They are trusted as they are, or with `client_ca` (PEM) only with a certificate it
    /// issued naming the user (`cert` authentication). The socket stays trusted, for the suite's own
    /// clients and a standby's replication.
    pub fn serve_tls(&mut self, cert: &str, key: &str, client_ca: Option<&str>) {
        self.kill();
        let data = self.data();
        let mut files = vec![("server.crt", cert), ("server.key", key)];
        files.extend(client_ca.map(|ca| ("client-ca.crt", ca)));
        for (name, pem) in files {
            let path = data.join(name);
            std::fs::write(&path, pem).expect("a file in the data directory");
            // The server refuses a key others can read.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("its mode");
            if self.as_postgres {
                self.run(Command::new("chown").arg("postgres").arg(&path));
            }
        }
        let method = if client_ca.is_some() { "cert" } else { "trust" };
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\nlocal replication all trust\nhostssl all all 127.0.0.1/32 {method}\n"
            ),
        )
        .expect("pg_hba.conf");
        self.listen = String::from(
            "-c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key",
        );
        if client_ca.is_some() {
            self.listen.push_str(" -c ssl_ca_file=client-ca.crt");
        }
        self.start_again();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs the SQL file `path` in the database (`psql`, stopping at the first error).
    pub fn load(&self, path: &Path) {
        self.run(
            self.client("psql")
                .args(["-q", "-v", "ON_ERROR_STOP=1", "-f"])
                .arg(path),
        );
    }

    /// Returns once this standby has replayed everything `primary` had written when called (asked
    /// again every 10 ms, for at most 30 s: replay has no signal to wait on).
    pub fn until_replayed(&self, primary: &Server) {
        let written = primary.query("SELECT pg_current_wal_lsn()");
        let caught_up = format!("SELECT pg_last_wal_replay_lsn() >= '{written}'");
        for _ in 0..3000 {
            if self.query(&caught_up) == "t" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the standby never replayed {written}");
    }

    /// The one value `sql` selects, as `psql` prints it.
    fn query(&self, sql: &str) -> String {
        let out = self.client("psql").args(["-qAtc", sql]).output();
        let out = out.unwrap_or_else(|e| panic!("psql: {e}"));
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Writes the whole database (schema and rows) to `path` as SQL (`pg_dump`).
    pub fn dump(&self, path: &Path) {
        self.run(
            self.client("pg_dump")
                .args(["--no-owner", "--no-privileges", "-f"])
                .arg(path),
        );
    }

    /// A client program of the server's release, pointed at it.
    fn client(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.arg("-h").arg(&self.dir).args([
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
        ]);
        c
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn run(&self, command: &mut Command) {
        let out = command
            .stdout(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        assert!(
            out.status.success(),
            "{command:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// Tells servers of one process apart.
fn sequence() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
