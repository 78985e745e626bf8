//! Cluster mode on PostgreSQL: several switch nodes write ahead to one database, claim idempotency keys
//! there, hold leases, and take over the work of a node whose lease lapsed.
//!
//! The engine's decisions do not change. What changes is where records become durable ([`Store::commit`]:
//! one transaction per batch, fenced by the node's epoch) and one new input: a key another node already
//! holds ([`Store::holder`]).
//!
//! - `evidence`: timelines, export and verification across every node's records;
//! - `retention`: daily partitions made ahead, and whole days dropped;
//! - `schema`: the embedded, versioned migrations;
//! - `connect`: connections to the database, over TLS when the connection string says so;
//! - `status`: the database and every node as `acquiro cluster status` shows them;
//! - `store`: the node's lease, its commits, and the takeover of lapsed nodes' work;
//! - `row`: how a record is laid out in the `records` table;
//! - `throwaway`: a private PostgreSQL server from Debian's binaries, for tests and scripts;
//! - `tls`: TLS to the database, set in the connection string as libpq sets it.

mod connect;
mod error;
pub mod evidence;
pub mod retention;
mod row;
mod schema;
mod status;
mod store;
pub mod throwaway;
mod tls;

pub use connect::{check_connection_string, connect};
pub use engine::{Claim, Holder};
pub use error::Error;
pub use schema::{SCHEMA_VERSION, migrate};
pub use status::{DatabaseStatus, NodeStatus, Standbys, database, status};
pub use store::{Committed, Joined, Purpose, Store, Takeover, card_key_check};
