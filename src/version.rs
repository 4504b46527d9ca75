//! Core, bottom layer: stream versions as an append expects them ([`ExpectedVersion`]) and
//! the largest number positions and versions may reach. Imports only the JSON reader:
//! `error` names it, so it sits below everything else.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use crate::json;

/// What the caller expects of a stream's version before an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpectedVersion {
    /// No check (the default).
    #[default]
    Any,
    /// The stream must have no events.
    NoStream,
    /// The stream must have at least one event.
    Exists,
    /// The stream's last event must have exactly this version (0 = no events).
    Exact(u64),
}

impl ExpectedVersion {
    pub fn accepts(&self, actual: u64) -> bool {
        match *self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exists => actual > 0,
            ExpectedVersion::Exact(v) => actual == v,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no_stream"),
            ExpectedVersion::Exists => f.write_str("exists"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

impl Serialize for ExpectedVersion {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            ExpectedVersion::Exact(v) => s.serialize_u64(*v),
            other => s.collect_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for ExpectedVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        ExpectedVersion::from_json(&value).map_err(de::Error::custom)
    }
}

/// What an `expectedVersion` may be, for its error messages.
const HINT: &str =
    "`expectedVersion` must be a non-negative integer, \"any\", \"no_stream\" or \"exists\"";

impl ExpectedVersion {
    /// Reads one from its JSON text (a checked value: [`crate::json::Reader::raw`]).
    pub(crate) fn from_json_text(raw: &str) -> std::result::Result<Self, String> {
        match raw.as_bytes().first() {
            Some(b'n') => Ok(ExpectedVersion::Any),
            Some(b'"') => match json::parse(raw, |r| r.string()).as_deref() {
                Ok("any") => Ok(ExpectedVersion::Any),
                Ok("no_stream") => Ok(ExpectedVersion::NoStream),
                Ok("exists") => Ok(ExpectedVersion::Exists),
                Ok(other) => Err(format!("{HINT}, got {other:?}")),
                Err(_) => Err(format!("{HINT}, got {raw}")),
            },
            _ => json::parse(raw, |r| r.u64())
                .ok()
                .filter(|v| *v <= MAX_SAFE_INTEGER)
                .map(ExpectedVersion::Exact)
                .ok_or_else(|| format!("{HINT}, got {raw}")),
        }
    }

    /// Reads one from the next value of `r`.
    pub(crate) fn read(r: &mut json::Reader<'_>) -> json::JsonResult<Self> {
        let raw = r.raw()?;
        ExpectedVersion::from_json_text(raw).map_err(|message| r.error(message))
    }

    pub(crate) fn from_json(value: &serde_json::Value) -> std::result::Result<Self, String> {
        match value {
            serde_json::Value::Null => Ok(ExpectedVersion::Any),
            serde_json::Value::Number(n) => n
                .as_u64()
                .filter(|v| *v <= MAX_SAFE_INTEGER)
                .map(ExpectedVersion::Exact)
                .ok_or_else(|| format!("{HINT}, got {n}")),
            serde_json::Value::String(s) => match s.as_str() {
                "any" => Ok(ExpectedVersion::Any),
                "no_stream" => Ok(ExpectedVersion::NoStream),
                "exists" => Ok(ExpectedVersion::Exists),
                other => Err(format!("{HINT}, got {other:?}")),
            },
            other => Err(format!("{HINT}, got {other}")),
        }
    }
}

/// The largest integer JavaScript represents exactly; positions and versions stay below it.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
