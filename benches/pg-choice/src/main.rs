//! Cluster mode's group commit with each candidate client: one node's writer commits batches of
//! transactions (four journal records and one idempotency claim each) one after the other, each batch
//! in one transaction behind the node's fence, with synchronous commit. Prints batches/s, transactions/s
//! and the CPU per transaction of this process and of PostgreSQL, for batches of 1, 16 and 64.
//!
//! `PG` names the server (`host=... port=... user=...`); `run.sh` starts a throw-away one and sets it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_postgres::types::ToSql;

/// How long each measurement runs.
const RUN: Duration = Duration::from_secs(3);
/// A record's payload: the size of a typical journal record.
const BODY: [u8; 80] = [0x5a; 80];

const RECORDS: &str = "INSERT INTO records (node, seq, txn, at_us, body) \
     SELECT 'a', * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bytea[])";
const CLAIMS: &str = "INSERT INTO claims (ids, stan, day, node, txn, fingerprint) \
     SELECT i, s, 1202, 'a', t, f FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::bigint[]) AS u(i, s, t, f) \
     ON CONFLICT DO NOTHING RETURNING ids, stan";
const FENCE: &str = "SELECT fence('a', 1)";

/// One batch's rows, as the statements bind them.
struct Batch {
    seqs: Vec<i64>,
    txns: Vec<i64>,
    ats: Vec<i64>,
    bodies: Vec<Vec<u8>>,
    ids: Vec<i64>,
    stans: Vec<i32>,
    claim_txns: Vec<i64>,
    fingerprints: Vec<i64>,
}

/// Numbers records and transactions across batches, so that every key is new.
struct Numbers {
    seq: i64,
    txn: i64,
}

impl Numbers {
    fn batch(&mut self, transactions: usize) -> Batch {
        let mut b = Batch {
            seqs: Vec::new(),
            txns: Vec::new(),
            ats: Vec::new(),
            bodies: Vec::new(),
            ids: Vec::new(),
            stans: Vec::new(),
            claim_txns: Vec::new(),
            fingerprints: Vec::new(),
        };
        for _ in 0..transactions {
            self.txn += 1;
            for _ in 0..4 {
                self.seq += 1;
                b.seqs.push(self.seq);
                b.txns.push(self.txn);
                b.ats.push(1_795_253_400_000_000 + self.seq);
                b.bodies.push(BODY.to_vec());
            }
            b.ids.push(self.txn / 999_999);
            b.stans.push((self.txn % 999_999) as i32);
            b.claim_txns.push(self.txn);
            b.fingerprints.push(self.txn.wrapping_mul(0x9e37_79b9));
        }
        b
    }
}

/// CPU seconds (user + system) of each process whose command is `name`, by pid.
fn cpu(name: &str) -> HashMap<u32, f64> {
    let hz = 100.0; // USER_HZ on Linux
    let stat = |pid: u32| -> Option<(String, f64)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (head, rest) = text.rsplit_once(") ")?;
        let comm = head.split_once(" (")?.1.to_string();
        let f: Vec<&str> = rest.split(' ').collect();
        let used = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        Some((comm, used / hz))
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| stat(pid).map(|(comm, used)| (pid, comm, used)))
        .filter(|(pid, comm, _)| comm == name || (name == "self" && *pid == std::process::id()))
        .map(|(pid, _, used)| (pid, used))
        .collect()
}

/// CPU seconds the processes of `before` and those started since used after it (a process that ended
/// meanwhile is not counted: the server's backends here live as long as the run).
fn used(name: &str, before: &HashMap<u32, f64>) -> f64 {
    cpu(name)
        .iter()
        .map(|(pid, now)| now - before.get(pid).copied().unwrap_or(0.0))
        .sum()
}

/// A client and the connection it commits on.
enum Client {
    /// tokio-postgres with every statement of a batch sent at once (it pipelines requests made
    /// concurrently on one connection): one round trip per batch; or awaited one by one.
    TokioPostgres {
        client: tokio_postgres::Client,
        statements: [tokio_postgres::Statement; 3],
        pipelined: bool,
    },
    /// sqlx: a transaction and its statements, each awaited (it sends one query at a time).
    Sqlx(sqlx::PgConnection),
}

impl Client {
    async fn tokio_postgres(url: &str, pipelined: bool) -> Client {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        let mut statements = Vec::new();
        for sql in [FENCE, RECORDS, CLAIMS] {
            statements.push(client.prepare(sql).await.expect("prepare"));
        }
        let statements = statements.try_into().expect("three statements");
        Client::TokioPostgres {
            client,
            statements,
            pipelined,
        }
    }

    async fn sqlx(url: &str) -> Client {
        use sqlx::Connection;
        let conn = sqlx::PgConnection::connect(&sqlx_url(url))
            .await
            .expect("connect");
        Client::Sqlx(conn)
    }

    fn name(&self) -> &'static str {
        match self {
            Client::TokioPostgres { pipelined: true, .. } => "tokio-postgres, pipelined",
            Client::TokioPostgres { .. } => "tokio-postgres, one by one",
            Client::Sqlx(_) => "sqlx",
        }
    }

    /// Commits one batch; returns the claims it won.
    async fn commit(&mut self, b: Batch) -> usize {
        match self {
            Client::TokioPostgres {
                client,
                statements: [fence, records, claims],
                pipelined,
            } => {
                let record_rows: [&(dyn ToSql + Sync); 4] = [&b.seqs, &b.txns, &b.ats, &b.bodies];
                let claim_rows: [&(dyn ToSql + Sync); 4] =
                    [&b.ids, &b.stans, &b.claim_txns, &b.fingerprints];
                let begin = client.execute("BEGIN", &[]);
                let fence = client.query(&*fence, &[]);
                let records = client.execute(&*records, &record_rows);
                let claims = client.query(&*claims, &claim_rows);
                let commit = client.execute("COMMIT", &[]);
                if *pipelined {
                    let (begin, fence, records, claims, commit) =
                        tokio::join!(begin, fence, records, claims, commit);
                    begin.and(fence.map(drop)).and(records).expect("batch");
                    commit.expect("commit");
                    claims.expect("claims").len()
                } else {
                    begin.await.expect("begin");
                    fence.await.expect("fence");
                    records.await.expect("records");
                    let won = claims.await.expect("claims").len();
                    commit.await.expect("commit");
                    won
                }
            }
            Client::Sqlx(conn) => {
                use sqlx::Connection;
                let mut tx = conn.begin().await.expect("begin");
                sqlx::query(FENCE).execute(&mut *tx).await.expect("fence");
                sqlx::query(RECORDS)
                    .bind(&b.seqs)
                    .bind(&b.txns)
                    .bind(&b.ats)
                    .bind(&b.bodies)
                    .execute(&mut *tx)
                    .await
                    .expect("records");
                let won = sqlx::query(CLAIMS)
                    .bind(&b.ids)
                    .bind(&b.stans)
                    .bind(&b.claim_txns)
                    .bind(&b.fingerprints)
                    .fetch_all(&mut *tx)
                    .await
                    .expect("claims")
                    .len();
                tx.commit().await.expect("commit");
                won
            }
        }
    }
}

/// Commits batches of `size` with `client` for [`RUN`] and prints one line.
async fn measure(client: &mut Client, size: usize, numbers: &mut Numbers) {
    let (me, pg, started) = (cpu("self"), cpu("postgres"), Instant::now());
    let (mut batches, mut claimed) = (0u64, 0usize);
    while started.elapsed() < RUN {
        claimed += client.commit(numbers.batch(size)).await;
        batches += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let txs = batches as f64 * size as f64;
    assert_eq!(claimed as f64, txs, "every claim is new, and each is won");
    println!(
        "{:<28} {size:>5} {:>10.0} {:>10.0} {:>9.1} {:>9.1}",
        client.name(),
        batches as f64 / secs,
        txs / secs,
        used("self", &me) * 1e6 / txs,
        used("postgres", &pg) * 1e6 / txs,
    );
}

/// The key-value connection string as a URL, which is what sqlx takes.
fn sqlx_url(kv: &str) -> String {
    let get = |key: &str| {
        kv.split_whitespace()
            .find_map(|p| p.strip_prefix(&format!("{key}=")))
            .unwrap_or_default()
            .to_string()
    };
    format!(
        "postgres://{}@localhost:{}/{}?host={}",
        get("user"),
        get("port"),
        get("dbname"),
        get("host")
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let url = std::env::var("PG").expect("PG: the server's connection string (run.sh sets it)");
    let mut clients = [
        Client::tokio_postgres(&url, true).await,
        Client::tokio_postgres(&url, false).await,
        Client::sqlx(&url).await,
    ];
    let mut numbers = Numbers { seq: 0, txn: 0 };
    // Warm-up: the server's first WAL segments are made during it, not during a measurement.
    for client in &mut clients {
        for _ in 0..200 {
            client.commit(numbers.batch(16)).await;
        }
    }
    println!(
        "{:<28} {:>5} {:>10} {:>10} {:>9} {:>9}",
        "client", "batch", "batches/s", "tx/s", "client µs", "pg µs"
    );
    // The clients take turns, twice, so that a drift of the machine or the server touches each alike.
    for size in [1, 16, 64] {
        for _round in 0..2 {
            for client in &mut clients {
                measure(client, size, &mut numbers).await;
            }
        }
    }
}
