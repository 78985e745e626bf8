//! TLS to the database, set in the connection string as libpq sets it, so that the same string works
//! with `psql`: `sslmode`, `sslrootcert` (the CA's certificates, PEM), and `sslcert` with `sslkey`
//! (a client certificate, for servers that require one).
//!
//! acquiro never uses a connection whose certificate it did not verify. With `sslmode` `require`,
//! `verify-ca` or `verify-full` (or `sslrootcert` given alone) the connection must be TLS, and the
//! server's certificate must chain to `sslrootcert` (`system`: the system's trusted CAs, as in libpq
//! 16) and name the host connected to (as libpq's `verify-full` does, whichever of the three is
//! given). With `disable`, `allow`, `prefer` or nothing, the connection is in the clear, as before
//! TLS was supported (libpq's `prefer` would try TLS without verifying it; acquiro does not).
//!
//! tokio-postgres does not know these keys (nor `verify-ca`/`verify-full`): they are taken out of the
//! string here and the rest is parsed by tokio-postgres.

use std::path::PathBuf;
use std::str::FromStr;

use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::Error;

/// What the connection string says of TLS.
#[derive(Debug, Default, PartialEq)]
struct Wanted {
    mode: Option<String>,
    root: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// The connection string's settings, and the TLS connector when the connection must be TLS.
pub(crate) fn settings(
    url: &str,
) -> Result<(tokio_postgres::Config, Option<MakeRustlsConnect>), Error> {
    let (rest, wanted) = split(url).map_err(Error::Settings)?;
    let mut config = tokio_postgres::Config::from_str(&rest)?;
    let tls = connector(wanted)?;
    config.ssl_mode(if tls.is_some() {
        SslMode::Require
    } else {
        SslMode::Disable
    });
    Ok((config, tls))
}

fn connector(wanted: Wanted) -> Result<Option<MakeRustlsConnect>, Error> {
    let tls = match wanted.mode.as_deref() {
        Some("require" | "verify-ca" | "verify-full") => true,
        None => wanted.root.is_some(),
        Some("disable" | "allow" | "prefer") => false,
        Some(other) => {
            return Err(Error::Settings(format!(
                "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            )));
        }
    };
    let mode = match wanted.mode.as_deref() {
        Some(mode) => format!("sslmode={mode}"),
        None => "a connection string without sslmode or sslrootcert".into(),
    };
    if !tls {
        if wanted.root.is_some() || wanted.cert.is_some() || wanted.key.is_some() {
            return Err(Error::Settings(format!(
                "{mode} connects in the clear: sslrootcert, sslcert and sslkey need sslmode=verify-full"
            )));
        }
        return Ok(None);
    }
    let Some(root) = &wanted.root else {
        return Err(Error::Settings(format!(
            "{mode} needs sslrootcert=FILE (the PEM certificates of the CA the database's certificate must chain to): acquiro verifies every TLS connection"
        )));
    };
    let identity = match (&wanted.cert, &wanted.key) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        (None, None) => None,
        _ => return Err(Error::Settings("sslcert and sslkey go together".into())),
    };
    // libpq's `system`: the system's trusted CAs, for a database whose certificate a public CA issued.
    let roots = match root.to_str() {
        Some("system") => tlsfiles::system_roots()?,
        _ => tlsfiles::roots(root)?,
    };
    let config = tlsfiles::client(roots, identity)?;
    Ok(Some(MakeRustlsConnect::new(config)))
}

/// The connection string without its TLS keys, and what they said. Both of libpq's forms: a URL
/// (`postgres://…?sslmode=verify-full&…`, values percent-encoded) or `key=value` pairs (values
/// single-quoted where they hold spaces, `\` escaping).
fn split(url: &str) -> Result<(String, Wanted), String> {
    let mut wanted = Wanted::default();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), wanted));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(&mut wanted, key, || percent_decoded(value))? {
                kept.push(pair);
            }
        }
        let rest = match kept.is_empty() {
            true => base.to_owned(),
            false => format!("{base}?{}", kept.join("&")),
        };
        return Ok((rest, wanted));
    }
    let mut rest = String::new();
    let mut pairs = Pairs { s: url, at: 0 };
    while let Some((start, key, value)) = pairs.next()? {
        if !take(&mut wanted, key, || Ok(value.clone()))? {
            rest.push_str(url[start..pairs.at].trim());
            rest.push(' ');
        }
    }
    Ok((rest.trim_end().to_owned(), wanted))
}

/// Keeps `key`'s value in `wanted` if it is one of the TLS keys (true), else leaves it (false).
fn take(
    wanted: &mut Wanted,
    key: &str,
    value: impl FnOnce() -> Result<String, String>,
) -> Result<bool, String> {
    match key {
        "sslmode" => wanted.mode = Some(value()?),
        "sslrootcert" => wanted.root = Some(value()?.into()),
        "sslcert" => wanted.cert = Some(value()?.into()),
        "sslkey" => wanted.key = Some(value()?.into()),
        _ => return Ok(false),
    }
    Ok(true)
}

fn percent_decoded(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or_else(|| format!("bad escape in {s:?}"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape in {s:?}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// The `key=value` pairs of a connection string, each with where it starts.
struct Pairs<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Pairs<'a> {
    fn next(&mut self) -> Result<Option<(usize, &'a str, String)>, String> {
        self.skip_spaces();
        let start = self.at;
        let key_end = self.s[start..]
            .find(|c: char| c.is_whitespace() || c == '=')
            .map_or(self.s.len(), |i| start + i);
        if key_end == start {
            return Ok(None);
        }
        let key = &self.s[start..key_end];
        self.at = key_end;
        self.skip_spaces();
        if !self.s[self.at..].starts_with('=') {
            return Err(format!("{key}: `=` expected after it"));
        }
        self.at += 1;
        self.skip_spaces();
        let quoted = self.s[self.at..].starts_with('\'');
        if quoted {
            self.at += 1;
        }
        let mut value = String::new();
        let mut chars = self.s[self.at..].char_indices();
        loop {
            match chars.next() {
                Some((_, '\\')) => {
                    if let Some((_, c)) = chars.next() {
                        value.push(c);
                    }
                }
                Some((i, '\'')) if quoted => {
                    self.at += i + 1;
                    break;
                }
                Some((i, c)) if c.is_whitespace() && !quoted => {
                    self.at += i;
                    break;
                }
                Some((_, c)) => value.push(c),
                None if quoted => return Err(format!("{key}: unterminated quoted value")),
                None => {
                    self.at = self.s.len();
                    break;
                }
            }
        }
        Ok(Some((start, key, value)))
    }

    fn skip_spaces(&mut self) {
        self.at = self.s[self.at..]
            .find(|c: char| !c.is_whitespace())
            .map_or(self.s.len(), |i| self.at + i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Why `url` is refused.
    fn refusal(url: &str) -> String {
        settings(url).err().expect("refused").to_string()
    }

    fn wanted(mode: &str, root: &str) -> Wanted {
        Wanted {
            mode: Some(mode.into()),
            root: Some(root.into()),
            ..Wanted::default()
        }
    }

    #[test]
    fn the_tls_keys_are_taken_out_of_a_url_and_the_rest_is_kept() {
        let (rest, got) = split(
            "postgres://acquiro@db:5432/acquiro?connect_timeout=5&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem&application_name=a",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://acquiro@db:5432/acquiro?connect_timeout=5&application_name=a"
        );
        assert_eq!(got, wanted("verify-full", "/etc/ca x.pem"));
        let (rest, got) =
            split("postgresql://db/acquiro?sslmode=require&sslrootcert=ca.pem").unwrap();
        assert_eq!(rest, "postgresql://db/acquiro");
        assert_eq!(got, wanted("require", "ca.pem"));
        let (rest, got) = split("postgres://db/acquiro").unwrap();
        assert_eq!(
            (rest.as_str(), got),
            ("postgres://db/acquiro", Wanted::default())
        );
    }

    #[test]
    fn the_tls_keys_are_taken_out_of_key_value_pairs_and_the_rest_is_kept() {
        let (rest, got) = split(
            "host=db  sslmode = verify-ca user=acquiro sslrootcert='/etc/my ca.pem' password='it\\'s' sslcert=c\\ d.pem sslkey=k.pem",
        )
        .unwrap();
        assert_eq!(rest, "host=db user=acquiro password='it\\'s'");
        assert_eq!(
            got,
            Wanted {
                mode: Some("verify-ca".into()),
                root: Some("/etc/my ca.pem".into()),
                cert: Some("c d.pem".into()),
                key: Some("k.pem".into()),
            }
        );
        // What is left parses as it did.
        let config = tokio_postgres::Config::from_str(&rest).unwrap();
        assert_eq!(config.get_password(), Some(&b"it's"[..]));
        assert!(split("host=db sslrootcert='ca.pem").is_err());
        assert!(split("host=db sslmode").is_err());
    }

    #[test]
    fn a_connection_in_the_clear_stays_as_it_was() {
        for url in [
            "host=db",
            "host=db sslmode=disable",
            "host=db sslmode=prefer",
        ] {
            let (config, tls) = settings(url).unwrap();
            assert!(tls.is_none(), "{url}");
            assert_eq!(config.get_ssl_mode(), SslMode::Disable, "{url}");
        }
    }

    #[test]
    fn tls_without_a_ca_to_verify_against_is_refused_naming_sslrootcert() {
        for url in [
            "host=db sslmode=require",
            "postgres://db/a?sslmode=verify-full",
        ] {
            let error = refusal(url);
            assert!(error.contains("needs sslrootcert"), "{url}: {error}");
        }
    }

    #[test]
    fn tls_files_with_a_mode_in_the_clear_are_refused_rather_than_ignored() {
        let error = refusal("host=db sslmode=prefer sslrootcert=ca.pem");
        assert!(error.contains("connects in the clear"), "{error}");
        let error = refusal("host=db sslcert=c.pem sslkey=k.pem");
        assert!(
            error.contains("without sslmode or sslrootcert connects in the clear"),
            "{error}"
        );
        let error = refusal("host=db sslmode=bogus");
        assert!(error.contains("sslmode=bogus"), "{error}");
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let error = connector(Wanted {
            cert: Some("c.pem".into()),
            ..wanted("verify-full", "ca.pem")
        })
        .err()
        .unwrap();
        assert_eq!(
            error.to_string(),
            "database connection settings: sslcert and sslkey go together"
        );
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let error = refusal("host=db sslmode=verify-full sslrootcert=/nonexistent/ca.pem");
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
    }
}
