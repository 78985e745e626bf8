//! The switch's configuration: a TOML file (`file`: every key optional, unknown keys refused; the file
//! format is a contract, kept readable across releases) and the checks that turn it into settings the
//! listeners, links and engine can trust (`settings`).

mod file;
mod settings;

use std::path::Path;

pub use file::{
    CARD_KEY_ENV, ClusterFile, DATABASE_ENV, DEFAULT_DIALECT, DEFAULT_HEADER, File,
    IdempotencyFile, IssuerFile, JournalFile, ListenerFile, NODE_ENV, ReversalsFile, RouteFile,
    Secret,
};
pub use settings::{ClusterSettings, JournalSettings, Link, Listener, Settings};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

pub(crate) fn invalid(key: impl Into<String>, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.to_string(),
    }
}

impl File {
    pub fn read(path: &Path) -> Result<File, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        File::parse(&path.display().to_string(), &text)
    }

    pub fn parse(origin: &str, text: &str) -> Result<File, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const FULL: &str = r#"
        acquirer_id = "12345"
        grace_period = "5s"
        default_issuer = "visa"
        workers = 3
        [[listeners]]
        address = "127.0.0.1:0"
        dialect = "iso87bcd"
        header = "binary2"
        tpdu = true
        [[issuers]]
        name = "visa"
        hosts = ["127.0.0.1:9583", "127.0.0.1:9584"]
        connections_per_host = 2
        response_timeout = "3s"
        [[issuers]]
        name = "mc"
        hosts = ["127.0.0.1:9585"]
        [[routes]]
        prefix = "51"
        issuer = "mc"
        [idempotency]
        window = "1h"
        max_entries = 1000
        [reversals]
        backoff = "2s"
        max_attempts = 10
        expiry = "1d"
    "#;

    #[test]
    fn a_full_file_checks() {
        let s = File::parse("t", FULL).unwrap().check().unwrap();
        assert_eq!(s.links.len(), 5);
        assert_eq!(s.engine.issuers[0].links, 4);
        assert_eq!(s.engine.issuers[0].response_timeout, Duration::from_secs(3));
        assert_eq!(s.engine.routes, [("51".to_string(), 1)]);
        assert_eq!(s.engine.default_route, Some(0));
        assert_eq!(s.listeners[0].spec.name(), "iso87bcd");
        assert_eq!(s.engine.reversal.expiry, Duration::from_secs(86400));
        assert_eq!(s.workers, Some(3));
    }

    fn error(text: &str) -> String {
        match File::parse("t", text).and_then(|f| f.check()) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn errors_name_the_key_and_the_reason() {
        let cases = [
            ("bogus = 1", "unknown field `bogus`"),
            ("[idempotency]\nwindow = \"soon\"", "window"),
            (
                &FULL.replace("iso87bcd", "iso99"),
                "listeners[0].dialect: unknown dialect",
            ),
            (
                &FULL.replace("header = \"binary2\"", "header = \"binary3\""),
                "listeners[0].header: unknown header",
            ),
            (
                &FULL.replace("issuer = \"mc\"", "issuer = \"amex\""),
                "routes[0].issuer: no issuer named \"amex\"",
            ),
            (
                &FULL.replace("prefix = \"51\"", "prefix = \"5x\""),
                "routes[0].prefix: must be digits",
            ),
            (
                &FULL.replace("connections_per_host = 2", "connections_per_host = 0"),
                "issuers[0].connections_per_host: must be at least 1",
            ),
            (
                &FULL.replace("max_attempts = 10", "max_attempts = 0"),
                "reversals.max_attempts",
            ),
            (
                &FULL.replace("workers = 3", "workers = 0"),
                "workers: must be at least 1",
            ),
            (
                &FULL.replace("acquirer_id = \"12345\"", "acquirer_id = \"ACQ\""),
                "acquirer_id: must be",
            ),
            (
                &FULL.replace("name = \"mc\"", "name = \"visa\""),
                "issuers[1].name: must be present and unique",
            ),
            (
                &FULL.replace("[[listeners]]", "[[listener]]"),
                "unknown field `listener`",
            ),
            (
                &FULL.replace(
                    "connections_per_host = 2",
                    "connections_per_host = 2\nretry_codes = [\"96\", \"9\"]",
                ),
                "issuers[0].retry_codes: \"9\" is not a two-character response code",
            ),
            (
                &FULL.replace(
                    "connections_per_host = 2",
                    "connections_per_host = 2\ninquiry_codes = [\"3A\"]",
                ),
                "issuers[0].inquiry_codes: \"3A\" is not the two digits of a processing code",
            ),
        ];
        for (text, expected) in cases {
            let e = error(text);
            assert!(e.contains(expected), "{e:?} should contain {expected:?}");
        }
    }

    #[test]
    fn cluster_mode_needs_a_node_a_database_and_the_shared_card_key_and_keeps_what_recovery_needs()
    {
        let key = "[journal]\ncard_key = \"00112233445566778899aabbccddeeff\"\n";
        let cluster = "[cluster]\nnode = \"a\"\ndatabase = \"host=db\"\n";
        let s = File::parse("t", &format!("{FULL}{key}{cluster}retain = \"3d\""))
            .unwrap()
            .check()
            .unwrap();
        let c = s.cluster.unwrap();
        assert_eq!((c.node.as_str(), c.lease), ("a", Duration::from_secs(5)));
        assert_eq!(c.timeout, Duration::from_secs(2));
        let e = error(&format!("{FULL}{key}{cluster}timeout = \"0s\""));
        assert!(e.contains("cluster.timeout"), "{e}");
        // FULL keeps answers for an hour and reversals for a day: a day more than that, at least.
        let e = error(&format!("{FULL}{key}{cluster}retain = \"1d\""));
        assert!(
            e.contains("cluster.retain: must be at least a day longer"),
            "{e}"
        );
        let e = error(&format!("{FULL}{cluster}"));
        assert!(e.contains("journal.card_key"), "{e}");
        // The pleas file's directory must be there: the first plea is written when it matters.
        let e = error(&format!(
            "{FULL}{key}{cluster}pleas_file = \"/nonexistent/acquiro/pleas\""
        ));
        assert!(
            e.contains("cluster.pleas_file") && e.contains("does not exist"),
            "{e}"
        );
        let dir = std::env::temp_dir().join("pleas");
        let with = format!(
            "{FULL}{key}{cluster}pleas_file = {:?}",
            dir.display().to_string()
        );
        let s = File::parse("t", &with).unwrap().check().unwrap();
        assert_eq!(s.cluster.unwrap().pleas_file, Some(dir));
        // TLS settings that cannot work are found here, not at the first connection.
        let tls = "[cluster]\nnode = \"a\"\ndatabase = \"host=db sslmode=verify-full\"\n";
        let e = error(&format!("{FULL}{key}{tls}"));
        assert!(
            e.contains("cluster.database") && e.contains("needs sslrootcert"),
            "{e}"
        );
    }

    /// The file as read and the settings checked from it, printed for a diagnosis, show neither the
    /// card key (as hex or as bytes) nor the database's password.
    #[test]
    fn the_settings_debug_shows_no_key_and_no_password() {
        let key = "[journal]\ncard_key = \"00112233445566778899aabbccddeeff\"\n";
        let cluster = "[cluster]\nnode = \"a\"\ndatabase = \"host=db password=s3cret\"\n";
        let file = File::parse("t", &format!("{FULL}{key}{cluster}")).unwrap();
        let read = format!("{file:?}");
        let s = file.check().unwrap();
        let checked = format!("{s:?}");
        assert!(read.contains("ClusterFile"), "{read}");
        assert!(checked.contains("ClusterSettings"), "{checked}");
        for shown in [read, checked] {
            for secret in ["s3cret", "00112233", "0, 17, 34, 51", "[0, 17, 34"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
        }
    }
}
