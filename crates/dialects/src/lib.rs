//! ISO 8583 dialects as data.
//!
//! A dialect is a TOML file (see `specs/` at the top of the repository): how the MTI and bitmaps are
//! written, the wire encoding of each field type, and one line per field. The files in `specs/` are built
//! into the binary under their names; any other file can be loaded by path, so a new dialect needs no code.

mod file;

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use iso8583::Spec;

/// A dialect that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown dialect {0:?}: not a built-in ({list}) nor a .toml file", list = names().collect::<Vec<_>>().join(", "))]
    Unknown(String),
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {source}")]
    Syntax {
        origin: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("{origin}: key fields.{key}: {reason}")]
    Key {
        origin: String,
        key: String,
        reason: &'static str,
    },
    #[error("{origin}: {source}")]
    Invalid {
        origin: String,
        #[source]
        source: iso8583::Error,
    },
}

/// The dialects in `specs/`, compiled in.
const BUILTIN: &[(&str, &str)] = &[
    ("iso87ascii", include_str!("../../../specs/iso87ascii.toml")),
    (
        "iso87ascii-hexbitmap",
        include_str!("../../../specs/iso87ascii-hexbitmap.toml"),
    ),
    ("iso87bcd", include_str!("../../../specs/iso87bcd.toml")),
    (
        "iso87ebcdic",
        include_str!("../../../specs/iso87ebcdic.toml"),
    ),
];

/// Names of the built-in dialects.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(name, _)| *name)
}

/// A built-in dialect by name, parsed once per process.
pub fn builtin(name: &str) -> Option<&'static Spec> {
    static CACHE: OnceLock<HashMap<&'static str, &'static Spec>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        BUILTIN
            .iter()
            .map(|(name, text)| {
                // The built-in files are checked by this crate's tests; a failure here is a build defect.
                let spec =
                    parse(name, text).unwrap_or_else(|e| panic!("built-in dialect {name}: {e}"));
                (*name, leak(spec))
            })
            .collect()
    });
    cache.get(name).copied()
}

/// A built-in dialect by name, or a dialect file by path (anything ending in `.toml`).
pub fn load(name_or_path: &str) -> Result<&'static Spec, Error> {
    if let Some(spec) = builtin(name_or_path) {
        return Ok(spec);
    }
    if !name_or_path.ends_with(".toml") {
        return Err(Error::Unknown(name_or_path.to_owned()));
    }
    let text = std::fs::read_to_string(Path::new(name_or_path)).map_err(|source| Error::Read {
        path: name_or_path.to_owned(),
        source,
    })?;
    parse(name_or_path, &text).map(leak)
}

/// A dialect for the rest of the process. Messages hold their dialect by `&'static` reference: copying
/// it is free, where an `Arc` would cost every message two atomic operations (16 ns, a tenth of a
/// decode, measured on the 2-core machine the benches run on). Dialects are loaded once, at start.
pub fn leak(spec: Spec) -> &'static Spec {
    Box::leak(Box::new(spec))
}

/// Parses a dialect file's text; `origin` names it in errors.
pub fn parse(origin: &str, text: &str) -> Result<Spec, Error> {
    file::parse(origin, text)
}
