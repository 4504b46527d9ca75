//! Erasure: how a stream's events lose their data and meta while the log stays whole.
//!
//! `eraseStream` appends a `$StreamErased` event ([`STREAM_ERASED_TYPE`]) to the stream.
//! The rule, the same on every replica and on the server: **an event is erased when a
//! `$StreamErased` of its stream comes after it in the log** (a higher version of the same
//! stream). An erased event keeps its position, id, stream, version, type, schema version,
//! time and origin; its `data` becomes `null`, its `meta` is dropped, and it is marked
//! `erased` (format 3 of [`crate::codec`]; `"erased": true` in JSON). Whoever stores the
//! erasure (a local append, a pull, the server accepting a push) rewrites the earlier
//! events in the same transaction; whoever reads it from another writer (another tab)
//! applies the same rule to what it holds in memory.
//!
//! This module holds the segment rewrites; [`crate::log::LogState`] applies them to the
//! log in memory, the storage backends to stored segments, the engine to the outbox.

use crate::codec::{CodecError, EventRef, SegmentBuilder, SegmentReader};
use crate::event::STREAM_ERASED_TYPE;

/// The `data` an erased event carries.
pub const ERASED_DATA: &str = "null";

/// One erasure: the events of `stream` below version `before` are erased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    pub stream: String,
    /// The version of the `$StreamErased` event.
    pub before: u64,
}

impl Erasure {
    /// The erasure `event` records, if it is a `$StreamErased`.
    pub fn of(event: &EventRef<'_>) -> Option<Self> {
        (event.event_type == STREAM_ERASED_TYPE).then(|| Erasure {
            stream: event.stream.to_owned(),
            before: event.version,
        })
    }

    /// Whether it erases `event` (which may be erased already).
    pub fn covers(&self, event: &EventRef<'_>) -> bool {
        event.stream == self.stream && event.version < self.before
    }
}

/// `event` as erased: no data (`null`), no meta, marked.
pub fn erased<'a>(event: &EventRef<'a>) -> EventRef<'a> {
    EventRef {
        data: ERASED_DATA,
        meta: None,
        erased: true,
        ..*event
    }
}

/// The erasures recorded in segment `bytes`, in log order.
pub fn erasures_in(bytes: &[u8]) -> Result<Vec<Erasure>, CodecError> {
    let mut found = Vec::new();
    // Every append and pull asks: most segments hold no erasure, and the type's bytes,
    // stored as they are, tell so without decoding.
    if !may_hold_erasure(bytes) {
        return Ok(found);
    }
    for event in SegmentReader::new(bytes)? {
        if let Some(erasure) = Erasure::of(&event?) {
            found.push(erasure);
        }
    }
    Ok(found)
}

/// Whether segment `bytes` may record an erasure: `$StreamErased` appears in them (as the
/// type of one of its events, or inside some text).
fn may_hold_erasure(bytes: &[u8]) -> bool {
    let needle = STREAM_ERASED_TYPE.as_bytes();
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|b| *b == needle[0]) {
        if rest[at..].starts_with(needle) {
            return true;
        }
        rest = &rest[at + 1..];
    }
    false
}

/// Segment `bytes` with every record that `erase` picks (and that is not erased yet)
/// erased, or `None` when there is no such record (nothing to rewrite). Positions and
/// every other field stay.
pub fn rewrite(
    bytes: &[u8],
    mut erase: impl FnMut(&EventRef<'_>) -> bool,
) -> Result<Option<Vec<u8>>, CodecError> {
    let reader = SegmentReader::new(bytes)?;
    let first = reader.first();
    let events: Vec<EventRef<'_>> = reader.collect::<Result<_, _>>()?;
    if !events.iter().any(|e| !e.erased && erase(e)) {
        return Ok(None);
    }
    let mut builder = SegmentBuilder::with_capacity(first, bytes.len());
    for event in &events {
        if !event.erased && erase(event) {
            builder.push(&erased(event));
        } else {
            builder.push(event);
        }
    }
    Ok(Some(builder.finish()))
}

/// Segment `bytes` with the erasures it records applied to its own earlier events (a
/// batch or a pulled page that holds both an event and the erasure of its stream), or
/// `None` when that changes nothing.
pub fn within(bytes: &[u8]) -> Result<Option<Vec<u8>>, CodecError> {
    let erasures = erasures_in(bytes)?;
    if erasures.is_empty() {
        return Ok(None);
    }
    rewrite(bytes, |event| erasures.iter().any(|e| e.covers(event)))
}

/// Segment `bytes` with the records at `positions` (sorted ascending) erased, or `None`
/// when it holds none of them that is not erased yet: how a backend rewrites its stored
/// segments.
pub fn at_positions(bytes: &[u8], positions: &[u64]) -> Result<Option<Vec<u8>>, CodecError> {
    rewrite(bytes, |event| {
        positions.binary_search(&event.position).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode;
    use crate::event::EventId;

    fn event(
        position: u64,
        stream: &'static str,
        version: u64,
        event_type: &'static str,
    ) -> EventRef<'static> {
        EventRef {
            id: EventId([position as u8; 16]),
            position,
            version,
            schema_version: 1,
            time: 1_700_000_000_000,
            stream,
            event_type,
            origin: Some("tab"),
            meta: Some(r#"{"who":"ada"}"#),
            data: r#"{"email":"ada@example.com"}"#,
            erased: false,
        }
    }

    fn decode(bytes: &[u8]) -> Vec<EventRef<'_>> {
        SegmentReader::new(bytes)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn an_erasure_in_a_segment_erases_the_earlier_events_of_its_stream_only() {
        let events = [
            event(1, "user-1", 1, "Registered"),
            event(2, "user-2", 1, "Registered"),
            event(3, "user-1", 2, "Renamed"),
            event(4, "user-1", 3, STREAM_ERASED_TYPE),
            event(5, "user-1", 4, "Registered"),
        ];
        let bytes = encode(1, events);
        assert_eq!(erasures_in(&bytes).unwrap().len(), 1);
        // Without the type's bytes there is nothing to decode; with them only in data, the
        // decode finds no erasure.
        let plain = encode(1, [events[0], events[1]]);
        assert!(!may_hold_erasure(&plain));
        let mentioned = EventRef {
            data: r#"{"note":"$StreamErased"}"#,
            ..events[0]
        };
        let mentioned = encode(1, [mentioned]);
        assert!(may_hold_erasure(&mentioned));
        assert_eq!(erasures_in(&mentioned).unwrap(), []);
        let rewritten = within(&bytes).unwrap().expect("two events to erase");
        let after = decode(&rewritten);
        let erased: Vec<u64> = after
            .iter()
            .filter(|e| e.erased)
            .map(|e| e.position)
            .collect();
        assert_eq!(erased, [1, 3]);
        for (before, after) in events.iter().zip(&after) {
            // Everything but the payloads stays.
            assert_eq!(
                (
                    before.id,
                    before.position,
                    before.version,
                    before.event_type
                ),
                (after.id, after.position, after.version, after.event_type)
            );
            assert_eq!((before.stream, before.time), (after.stream, after.time));
            assert_eq!(before.origin, after.origin);
        }
        assert_eq!((after[0].data, after[0].meta), ("null", None));
        assert_eq!(after[1], events[1]);
        assert_eq!(
            after[4], events[4],
            "an event after the erasure keeps its data"
        );
        // Of the five copies of the address (every sample carries it), the erased two go.
        let copies = |bytes: &[u8]| String::from_utf8_lossy(bytes).matches("ada@").count();
        assert_eq!((copies(&bytes), copies(&rewritten)), (5, 3));
        // Erasing again changes nothing.
        assert_eq!(within(&rewritten).unwrap(), None);
    }

    #[test]
    fn erased_events_read_as_erased_in_json_and_survive_merges() {
        let plain = encode(1, [event(1, "s", 1, "A"), event(2, "s", 2, "B")]);
        let erased = at_positions(&plain, &[2]).unwrap().unwrap();
        assert_eq!(at_positions(&plain, &[3]).unwrap(), None);
        let mut json = Vec::new();
        decode(&erased)[1].write_json(&mut json, false);
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["erased"], true);
        assert_eq!(value["data"], serde_json::Value::Null);
        assert!(value.get("meta").is_none());
        json.clear();
        decode(&erased)[0].write_json(&mut json, false);
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert!(value.get("erased").is_none(), "{value}");
        // Merged with an unmarked segment, the marks stay where they were.
        let later = encode(3, [event(3, "t", 1, "C")]);
        let merged = crate::codec::merge(&[&erased, &later]).unwrap();
        let marks: Vec<bool> = decode(&merged).iter().map(|e| e.erased).collect();
        assert_eq!(marks, [false, true, false]);
        let mut offsets = Vec::new();
        assert_eq!(
            crate::codec::record_offsets(&merged, &mut offsets).unwrap(),
            (1, 3)
        );
    }

    #[test]
    fn only_segments_with_an_erased_event_take_the_new_format() {
        let plain = encode(1, [event(1, "s", 1, "A")]);
        assert_eq!(u16::from_le_bytes([plain[4], plain[5]]), 1);
        let erased = at_positions(&plain, &[1]).unwrap().unwrap();
        assert_eq!(u16::from_le_bytes([erased[4], erased[5]]), 3);
        // A damaged format-3 segment is an error, never a panic.
        for cut in 0..erased.len() {
            let result: Result<Vec<_>, _> =
                SegmentReader::new(&erased[..cut]).and_then(|r| r.collect());
            assert!(result.is_err(), "prefix of {cut} bytes decoded");
        }
    }
}
