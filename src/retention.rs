//! Bounded local storage: a synced replica may drop confirmed events it no longer needs
//! locally, keeping the log's tail, the outbox and every snapshot. Pure rules and the
//! record a cut leaves behind; the engine runs the cut in one storage transaction
//! ([`crate::storage::Commit::drop_through`]).
//!
//! What a cut may drop: confirmed events only (the outbox is never touched), at most up to
//! the position every projection's snapshot covers (so that no projection ever needs them
//! to open), and never the newest [`Retention::events`] confirmed ones. The server keeps
//! every event; reads below the retained range ask it ([`not_retained`] otherwise).
//!
//! What a cut keeps besides the events: each dropped stream's version and lifecycle at the
//! cut ([`Retained`]), so that expected versions, `no_stream` after a delete and closed
//! streams are checked exactly as before. Event ids of dropped events are forgotten: a
//! local append reusing one is taken as new here, and the server, which holds every id,
//! answers the push (`duplicate` for the same event: the copy leaves the outbox;
//! `DUPLICATE_ID` for another one: rejected and reported like a conflict).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::json::{self, JsonResult, Reader};

/// How much of the confirmed log a synced replica keeps (`retain` in TypeScript).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// The newest confirmed events always kept (at least 1). Older ones go once every
    /// projection's snapshot covers them.
    pub events: u64,
}

impl Retention {
    /// Keeps at least `events` confirmed events.
    pub fn events(events: u64) -> Self {
        Retention { events }
    }

    /// Whether the policy is usable: `events` is a whole number of at least 1.
    pub fn check(&self) -> Result<()> {
        if self.events == 0 {
            return Err(Error::InvalidArgument(
                "`retain.events` must be at least 1: the newest confirmed events are always kept"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Where a cut may go: the last position to drop, or `None` when nothing may go.
    /// `confirmed` is the confirmed head, `dropped` what was dropped already, `covered`
    /// the lowest position the projections' snapshots cover (`None`: some projection has
    /// no usable snapshot, so nothing may go).
    pub fn cut(&self, confirmed: u64, dropped: u64, covered: Option<u64>) -> Option<u64> {
        let through = confirmed.saturating_sub(self.events).min(covered?);
        (through > dropped).then_some(through)
    }
}

/// A stream's place at the cut: its version and lifecycle (the versions of its last
/// `$StreamDeleted` and of its `$StreamClosed`, 0 when none) counting the dropped events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<u64>", into = "Vec<u64>")]
pub struct StreamBase {
    pub version: u64,
    pub deleted_at: u64,
    pub closed_at: u64,
}

impl TryFrom<Vec<u64>> for StreamBase {
    type Error = String;
    fn try_from(list: Vec<u64>) -> std::result::Result<Self, String> {
        match list[..] {
            [version] => Ok(StreamBase {
                version,
                ..StreamBase::default()
            }),
            [version, deleted_at, closed_at] => Ok(StreamBase {
                version,
                deleted_at,
                closed_at,
            }),
            _ => Err(format!(
                "a stream's base is [version] or [version, deletedAt, closedAt], not {list:?}"
            )),
        }
    }
}

impl From<StreamBase> for Vec<u64> {
    fn from(base: StreamBase) -> Self {
        if base.deleted_at == 0 && base.closed_at == 0 {
            vec![base.version]
        } else {
            vec![base.version, base.deleted_at, base.closed_at]
        }
    }
}

/// What a cut leaves behind (stored in `meta` under [`crate::storage::META_RETAINED`],
/// written in the cut's transaction): the last dropped position and every stream that had
/// events up to it, at its place there. A tab that opens later, or that learns of the cut
/// from another tab, starts its view of the log from this.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retained {
    pub through: u64,
    pub streams: BTreeMap<String, StreamBase>,
}

impl Retained {
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::Storage(format!("retained record: {e}")))
    }

    pub fn parse(json: &str) -> Result<Self> {
        json::parse(json, Retained::read)
            .map_err(|e| Error::Corrupt(format!("retained record: {e}")))
    }

    /// Reads the record (unknown fields refused).
    fn read(r: &mut Reader<'_>) -> JsonResult<Self> {
        let (mut through, mut streams) = (None, None);
        r.object(&mut |r, key| match key {
            "through" => r.once(&mut through, key, Reader::u64),
            "streams" => r.once(&mut streams, key, |r| {
                let mut streams = BTreeMap::new();
                r.object(&mut |r, name| {
                    let list = r.list(Reader::u64)?;
                    let base = StreamBase::try_from(list).map_err(|e| r.error(e))?;
                    streams.insert(name.to_owned(), base);
                    Ok(())
                })?;
                Ok(streams)
            }),
            _ => Err(r.unknown_field(key)),
        })?;
        Ok(Retained {
            through: json::required(r, through, "through")?,
            streams: json::required(r, streams, "streams")?,
        })
    }
}

/// The error of a read that reaches below the retained range: it names the range the
/// replica holds and what to do.
pub fn not_retained(what: &str, dropped: u64, head: u64) -> Error {
    let kept = if head > dropped {
        format!("positions {} to {head}", dropped + 1)
    } else {
        "no confirmed event".to_owned()
    };
    Error::NotRetained {
        message: format!(
            "{what} reaches below the retained range: this replica keeps {kept} (retention \
             dropped positions 1 to {dropped}, which the sync server still holds); read them \
             from the server while online"
        ),
        dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_keeps_the_newest_events_and_never_passes_what_every_snapshot_covers() {
        let keep_10 = Retention::events(10);
        assert_eq!(keep_10.cut(100, 0, Some(95)), Some(90));
        assert_eq!(keep_10.cut(100, 0, Some(40)), Some(40));
        assert_eq!(
            keep_10.cut(100, 0, None),
            None,
            "a projection without a snapshot"
        );
        assert_eq!(keep_10.cut(100, 90, Some(95)), None, "nothing more to drop");
        assert_eq!(keep_10.cut(8, 0, Some(8)), None, "fewer events than kept");
        assert!(Retention::events(0).check().is_err());
        assert!(keep_10.check().is_ok());
    }

    #[test]
    fn the_record_stores_plain_streams_as_one_number_and_survives_a_round_trip() {
        let mut retained = Retained {
            through: 7,
            ..Retained::default()
        };
        retained
            .streams
            .insert("a".into(), StreamBase::try_from(vec![3]).unwrap());
        retained.streams.insert(
            "b".into(),
            StreamBase {
                version: 4,
                deleted_at: 2,
                closed_at: 0,
            },
        );
        let json = retained.to_json().unwrap();
        assert_eq!(json, r#"{"through":7,"streams":{"a":[3],"b":[4,2,0]}}"#);
        assert_eq!(Retained::parse(&json).unwrap(), retained);
        assert!(matches!(
            Retained::parse(r#"{"through":7,"streams":{"a":[1,2]}}"#),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn the_error_names_the_range_kept() {
        let e = not_retained("a read after position 3", 40, 50);
        assert_eq!(e.code(), "NOT_RETAINED");
        assert!(e.to_string().contains("positions 41 to 50"), "{e}");
        assert!(e.to_string().contains("1 to 40"), "{e}");
    }
}
