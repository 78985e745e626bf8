//! Connections to the database: over TLS when the connection string says so (see `tls`), opened within
//! a bound, each driven on a task of its own.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::{Client, Connection, NoTls, Socket};

use crate::Error;

/// How long a connection may take to open, unless the connection string says (`connect_timeout`):
/// without a bound, a database host that went dark holds a connection attempt for minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects, over TLS if `url` says so (see `tls`), with the connection driven on its own task. It
/// shows in `pg_stat_activity` as `acquiro`, unless `url` names an `application_name` (a command's
/// connection, for tools and scripts).
pub async fn connect(url: &str) -> Result<Client, Error> {
    let (mut config, tls) = crate::tls::settings(url)?;
    if config.get_application_name().is_none() {
        config.application_name("acquiro");
    }
    connect_with(config, tls).await
}

/// The `application_name` `url` names, which a node's connections do not take (see [`connect_as`]).
pub(crate) fn named_application(url: &str) -> Result<Option<String>, Error> {
    let (config, _) = crate::tls::settings(url)?;
    Ok(config.get_application_name().map(str::to_owned))
}

/// [`connect`], shown as `name` in `pg_stat_activity` whatever `url` says: a node's connections say
/// whose they are and what each is for, and a joining process finds a live namesake by them.
pub(crate) async fn connect_as(url: &str, name: &str) -> Result<Client, Error> {
    let (mut config, tls) = crate::tls::settings(url)?;
    config.application_name(name);
    connect_with(config, tls).await
}

async fn connect_with(
    mut config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
) -> Result<Client, Error> {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    Ok(match tls {
        Some(tls) => drive(config.connect(tls).await?),
        None => drive(config.connect(NoTls).await?),
    })
}

/// Whether `url` can be connected with (its syntax, and its TLS settings and files), without
/// connecting.
pub fn check_connection_string(url: &str) -> Result<(), Error> {
    crate::tls::settings(url).map(drop)
}

fn drive<T>((client, connection): (Client, Connection<Socket, T>)) -> Client
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "database connection closed");
        }
    });
    client
}
