//! The segment encoding: many events in one byte buffer.
//!
//! ```text
//! header   magic "ANSG" | format u16 LE | flags u16 LE | count u32 LE | first position u64 LE
//! record   id [16] | version varint | schema varint | marks varint | time varint
//!          | stream str | type str | origin str | meta str | data str
//!          (str = varint byte length + UTF-8 bytes; origin and meta: length 0 means absent)
//! ```
//! `schema` is the event's schema version (what upcasters start from). Format 1 has no
//! `schema` varint: its events are all at schema version 1. A segment whose events are all
//! at version 1 is written in format 1, as before schema versions existed, so that such
//! logs stay byte for byte what they were and readable by older builds; a segment holding
//! any other version is written in format 2. Format 3 adds `marks` (bit 0: the event was
//! erased, its data `null` and meta absent; see [`crate::erasure`]); only a segment holding
//! an erased event is written in format 3, so that a build from before erasure refuses it
//! ([`CodecError::UnknownFormat`]) rather than read an erased event as one whose data is
//! `null`. Formats 1 and 2 have no `marks`: nothing in them is erased. All three are read.
//!
//! Positions are implied (`first + index`). Payloads stay raw JSON bytes so that reading
//! never re-encodes them. Records are self-contained, so merging segments of one format is
//! a byte copy (merged with format-2 segments, format-1 records are re-encoded).
//! Decoding checks every length against the bytes left: arbitrary input is an error,
//! never a panic or an unbounded allocation.

use crate::error::Error;
use crate::event::{Event, EventId, MAX_SAFE_INTEGER};

const MAGIC: &[u8; 4] = b"ANSG";
/// The format of segments holding an event at a schema version other than 1.
const SEGMENT_FORMAT: u16 = 2;
/// The format without schema versions: every event at version 1.
const SEGMENT_FORMAT_1: u16 = 1;
/// The format of segments holding an erased event: format 2 with `marks` per record.
const SEGMENT_FORMAT_3: u16 = 3;
/// `marks` bit: the event was erased.
const MARK_ERASED: u64 = 1;
pub const HEADER_LEN: usize = 20;

/// The fewest bytes one record takes, in any format: the id, two one-byte varints
/// (three in format 2, four in format 3) and five empty strings.
pub const MIN_RECORD_LEN: usize = 16 + 2 + 5;

/// The most records `segment_len` bytes can hold, whatever the header claims: what a
/// decoder may reserve room for up front.
pub fn max_records(segment_len: usize) -> usize {
    segment_len.saturating_sub(HEADER_LEN) / MIN_RECORD_LEN
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("segment is {0} bytes, shorter than its header")]
    TooShort(usize),
    #[error("segment does not start with the annals magic bytes")]
    BadMagic,
    #[error("segment format {0} is newer than this build reads")]
    UnknownFormat(u16),
    #[error("segment truncated inside record {record}")]
    Truncated { record: u32 },
    #[error("segment record {record} holds a string that is not UTF-8")]
    NotUtf8 { record: u32 },
    #[error("segment record {record} holds a malformed number")]
    BadVarint { record: u32 },
    #[error("segment has {0} bytes after its last record")]
    TrailingBytes(usize),
    #[error("segments do not follow each other: expected position {expected}, found {found}")]
    NotContiguous { expected: u64, found: u64 },
    #[error("segment of {count} events from position {first} is outside positions 1 to 2^53 - 1")]
    PositionOutOfRange { first: u64, count: u32 },
}

/// Stored bytes that do not decode are corrupt data to the rest of annals.
impl From<CodecError> for Error {
    fn from(e: CodecError) -> Self {
        Error::Corrupt(e.to_string())
    }
}

/// One event as the codec sees it, borrowing its strings from the segment bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    pub id: EventId,
    pub position: u64,
    pub version: u64,
    /// The event's schema version (1 unless the app said otherwise when appending).
    pub schema_version: u32,
    pub time: u64,
    pub stream: &'a str,
    pub event_type: &'a str,
    pub origin: Option<&'a str>,
    pub meta: Option<&'a str>,
    pub data: &'a str,
    /// Erased ([`crate::erasure`]): `data` is `null` and `meta` absent.
    pub erased: bool,
}

impl<'a> EventRef<'a> {
    pub fn from_event(e: &'a Event) -> Self {
        EventRef {
            id: e.id,
            position: e.position,
            version: e.version,
            schema_version: e.schema_version,
            time: e.time,
            stream: &e.stream,
            event_type: &e.event_type,
            origin: e.origin.as_deref(),
            meta: e.meta.as_ref().map(|m| m.get()),
            data: e.data.get(),
            erased: e.erased,
        }
    }

    pub fn to_event(&self, pending: bool) -> Event {
        // The payloads were valid JSON when they were appended; re-check here, since the
        // bytes came from storage.
        let raw = crate::json::raw_value;
        Event {
            id: self.id,
            position: self.position,
            stream: self.stream.to_owned(),
            version: self.version,
            schema_version: self.schema_version,
            event_type: self.event_type.to_owned(),
            data: raw(self.data).unwrap_or_else(|_| null_raw()),
            meta: self.meta.and_then(|m| raw(m).ok()),
            time: self.time,
            origin: self.origin.map(str::to_owned),
            pending,
            erased: self.erased,
        }
    }

    /// Appends the event as a JSON object (the shape apps see) to `out`, copying the
    /// payloads verbatim.
    pub fn write_json(&self, out: &mut Vec<u8>, pending: bool) {
        RawRecord {
            id: self.id.0,
            version: self.version,
            schema_version: u64::from(self.schema_version),
            time: self.time,
            stream: self.stream.as_bytes(),
            event_type: self.event_type.as_bytes(),
            origin: self.origin.map_or(&[][..], str::as_bytes),
            meta: self.meta.map_or(&[][..], str::as_bytes),
            data: self.data.as_bytes(),
            marks: if self.erased { MARK_ERASED } else { 0 },
        }
        .write_json(self.position, out, pending);
    }
}

/// One record's fields as stored: text not checked as UTF-8 yet.
#[derive(Debug, Clone, Copy)]
struct RawRecord<'a> {
    id: [u8; 16],
    version: u64,
    /// As stored: a varint, checked to fit `u32` (and be at least 1) when decoded.
    schema_version: u64,
    time: u64,
    stream: &'a [u8],
    event_type: &'a [u8],
    /// Empty: absent.
    origin: &'a [u8],
    /// Empty: absent.
    meta: &'a [u8],
    data: &'a [u8],
    /// Format 3's `marks` (0 in the older formats).
    marks: u64,
}

impl RawRecord<'_> {
    fn write_json(&self, position: u64, out: &mut Vec<u8>, pending: bool) {
        out.extend_from_slice(b"{\"id\":\"");
        EventId(self.id).write_hyphenated(out);
        out.extend_from_slice(b"\",\"position\":");
        write_u64(out, position);
        out.extend_from_slice(b",\"stream\":");
        write_json_bytes(out, self.stream);
        out.extend_from_slice(b",\"version\":");
        write_u64(out, self.version);
        out.extend_from_slice(b",\"type\":");
        write_json_bytes(out, self.event_type);
        // Omitted at 1, as `meta` and `origin` when absent: the shape of events from
        // before schema versions is unchanged.
        if self.schema_version != 1 {
            out.extend_from_slice(b",\"schemaVersion\":");
            write_u64(out, self.schema_version);
        }
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(self.data);
        if !self.meta.is_empty() {
            out.extend_from_slice(b",\"meta\":");
            out.extend_from_slice(self.meta);
        }
        out.extend_from_slice(b",\"time\":");
        write_u64(out, self.time);
        if !self.origin.is_empty() {
            out.extend_from_slice(b",\"origin\":");
            write_json_bytes(out, self.origin);
        }
        // Named only when erased: the shape of other events is unchanged.
        if self.marks & MARK_ERASED != 0 {
            out.extend_from_slice(b",\"erased\":true");
        }
        out.extend_from_slice(if pending {
            b",\"pending\":true}"
        } else {
            b",\"pending\":false}"
        });
    }
}

/// Writes the records of positions `position ..= to` of segment `bytes`, the first at
/// byte `offset`, as JSON objects (the shape of [`EventRef::write_json`]), each preceded
/// by a comma when `count` is not 0, counting them in `count`. The text is copied without
/// a UTF-8 check: the caller checks the output as a whole, once.
pub fn write_json_records(
    bytes: &[u8],
    offset: usize,
    mut position: u64,
    to: u64,
    pending: bool,
    out: &mut Vec<u8>,
    count: &mut usize,
) -> Result<(), CodecError> {
    let (first, records) = header(bytes)?;
    let end = first + u64::from(records);
    let mut cursor = Cursor {
        bytes,
        offset,
        record: u32::try_from(position.saturating_sub(first)).unwrap_or(u32::MAX),
        format: format_of(bytes)?,
    };
    while position <= to && position < end {
        let record = cursor.raw()?;
        if *count > 0 {
            out.push(b',');
        }
        *count += 1;
        record.write_json(position, out, pending);
        position += 1;
        cursor.record = cursor.record.saturating_add(1);
    }
    Ok(())
}

fn null_raw() -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::NULL.to_owned()
}

fn write_u64(out: &mut Vec<u8>, v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Writes `s` as a JSON string literal.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    write_json_bytes(out, s.as_bytes());
}

/// Writes UTF-8 `bytes` as a JSON string literal (escaping is byte-wise: every byte that
/// needs it is ASCII).
fn write_json_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        match escape {
            Some(e) => out.extend_from_slice(e),
            None => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Builds one segment, event by event.
#[derive(Debug)]
pub struct SegmentBuilder {
    first: u64,
    count: u32,
    /// Format 1 until an event at another schema version than 1 is pushed.
    format: u16,
    bytes: Vec<u8>,
}

impl SegmentBuilder {
    pub fn new(first: u64) -> Self {
        Self::with_capacity(first, 256)
    }

    /// A builder whose buffer starts with room for `bytes` bytes.
    pub fn with_capacity(first: u64, bytes: usize) -> Self {
        let mut bytes = Vec::with_capacity(bytes.max(HEADER_LEN));
        write_header(&mut bytes, first, 0, SEGMENT_FORMAT_1);
        SegmentBuilder {
            first,
            count: 0,
            format: SEGMENT_FORMAT_1,
            bytes,
        }
    }

    pub fn next_position(&self) -> u64 {
        self.first + u64::from(self.count)
    }

    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends `event`; its position must be the next one of this segment.
    pub fn push(&mut self, event: &EventRef<'_>) {
        debug_assert_eq!(event.position, self.next_position());
        if event.erased && self.format != SEGMENT_FORMAT_3 {
            self.switch_to(SEGMENT_FORMAT_3);
        } else if event.schema_version != 1 && self.format == SEGMENT_FORMAT_1 {
            self.switch_to(SEGMENT_FORMAT);
        }
        let b = &mut self.bytes;
        b.extend_from_slice(event.id.as_bytes());
        write_varint(b, event.version);
        if self.format != SEGMENT_FORMAT_1 {
            write_varint(b, u64::from(event.schema_version));
        }
        if self.format == SEGMENT_FORMAT_3 {
            write_varint(b, if event.erased { MARK_ERASED } else { 0 });
        }
        write_varint(b, event.time);
        write_str(b, event.stream);
        write_str(b, event.event_type);
        write_str(b, event.origin.unwrap_or(""));
        write_str(b, event.meta.unwrap_or(""));
        write_str(b, event.data);
        self.count += 1;
    }

    /// Re-encodes the records pushed so far in `format` (2 or 3), which the next event
    /// needs.
    fn switch_to(&mut self, format: u16) {
        self.bytes[8..12].copy_from_slice(&self.count.to_le_bytes());
        let mut bytes = Vec::with_capacity(self.bytes.capacity() + 2 * self.count as usize);
        write_header(&mut bytes, self.first, self.count, format);
        // These records were encoded just now: they decode.
        if reencode(&self.bytes, self.count, &mut bytes, format).is_ok() {
            self.bytes = bytes;
            self.format = format;
        }
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.bytes[8..12].copy_from_slice(&self.count.to_le_bytes());
        self.bytes
    }
}

fn write_header(out: &mut Vec<u8>, first: u64, count: u32, format: u16) {
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&format.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&first.to_le_bytes());
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    write_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Encodes events with consecutive positions starting at `first`.
pub fn encode<'a>(first: u64, events: impl IntoIterator<Item = EventRef<'a>>) -> Vec<u8> {
    let mut builder = SegmentBuilder::new(first);
    for e in events {
        builder.push(&e);
    }
    builder.finish()
}

/// The header of a segment: `(first position, event count)`. Its positions are checked to
/// lie within 1 ..= 2^53 - 1 (what JavaScript represents exactly), so that `first + count`
/// never overflows for whoever uses them.
pub fn header(bytes: &[u8]) -> Result<(u64, u32), CodecError> {
    if bytes.len() < HEADER_LEN {
        return Err(CodecError::TooShort(bytes.len()));
    }
    if &bytes[0..4] != MAGIC {
        return Err(CodecError::BadMagic);
    }
    format_of(bytes)?;
    let mut count = [0u8; 4];
    count.copy_from_slice(&bytes[8..12]);
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[12..20]);
    let (first, count) = (u64::from_le_bytes(first), u32::from_le_bytes(count));
    if first == 0 || first > MAX_SAFE_INTEGER + 1 - u64::from(count) {
        return Err(CodecError::PositionOutOfRange { first, count });
    }
    Ok((first, count))
}

/// Whether segment `bytes` marks erased events (format 3), which builds from before
/// erasure cannot read.
pub fn is_marked(bytes: &[u8]) -> bool {
    format_of(bytes) == Ok(SEGMENT_FORMAT_3)
}

/// The format of a segment (checked to be one this build reads).
fn format_of(bytes: &[u8]) -> Result<u16, CodecError> {
    let format = match bytes.get(4..6) {
        Some(&[a, b]) => u16::from_le_bytes([a, b]),
        _ => return Err(CodecError::TooShort(bytes.len())),
    };
    if !matches!(format, SEGMENT_FORMAT_1 | SEGMENT_FORMAT | SEGMENT_FORMAT_3) {
        return Err(CodecError::UnknownFormat(format));
    }
    Ok(format)
}

/// Iterates over the events of one segment.
#[derive(Debug, Clone)]
pub struct SegmentReader<'a> {
    bytes: &'a [u8],
    format: u16,
    offset: usize,
    first: u64,
    count: u32,
    index: u32,
}

impl<'a> SegmentReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<Self, CodecError> {
        let (first, count) = header(bytes)?;
        Ok(SegmentReader {
            bytes,
            format: format_of(bytes)?,
            offset: HEADER_LEN,
            first,
            count,
            index: 0,
        })
    }

    pub fn first(&self) -> u64 {
        self.first
    }

    pub fn event_count(&self) -> u32 {
        self.count
    }

    /// Byte offset of the next record (for building an index of record offsets).
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// A reader that starts at the record at byte `offset`, which holds `position`.
    pub fn starting_at(bytes: &'a [u8], offset: usize, position: u64) -> Result<Self, CodecError> {
        let (first, count) = header(bytes)?;
        let index = position
            .checked_sub(first)
            .and_then(|i| u32::try_from(i).ok())
            .filter(|i| *i <= count)
            .ok_or(CodecError::NotContiguous {
                expected: first,
                found: position,
            })?;
        Ok(SegmentReader {
            bytes,
            format: format_of(bytes)?,
            offset,
            first,
            count,
            index,
        })
    }

    /// Decodes the record at byte `offset` of segment `bytes`, which holds position
    /// `position`.
    pub fn record_at(
        bytes: &'a [u8],
        offset: usize,
        position: u64,
    ) -> Result<EventRef<'a>, CodecError> {
        let mut cursor = Cursor {
            bytes,
            offset,
            record: 0,
            format: format_of(bytes)?,
        };
        cursor.event(position)
    }

    fn next_event(&mut self) -> Result<EventRef<'a>, CodecError> {
        let mut cursor = Cursor {
            bytes: self.bytes,
            offset: self.offset,
            record: self.index,
            format: self.format,
        };
        let event = cursor.event(self.first + u64::from(self.index))?;
        self.offset = cursor.offset;
        self.index += 1;
        Ok(event)
    }
}

impl<'a> Iterator for SegmentReader<'a> {
    type Item = Result<EventRef<'a>, CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index < self.count {
            let item = self.next_event();
            if item.is_err() {
                self.index = self.count; // stop after the first error
            }
            return Some(item);
        }
        if self.offset != self.bytes.len() {
            let extra = self.bytes.len() - self.offset;
            self.offset = self.bytes.len();
            return Some(Err(CodecError::TrailingBytes(extra)));
        }
        None
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    offset: usize,
    record: u32,
    /// The segment's format: whether records hold a schema version.
    format: u16,
}

impl<'a> Cursor<'a> {
    fn event(&mut self, position: u64) -> Result<EventRef<'a>, CodecError> {
        let raw = self.raw()?;
        let record = self.record;
        let text = |bytes: &'a [u8]| {
            std::str::from_utf8(bytes).map_err(|_| CodecError::NotUtf8 { record })
        };
        Ok(EventRef {
            id: EventId(raw.id),
            position,
            version: raw.version,
            schema_version: u32::try_from(raw.schema_version)
                .ok()
                .filter(|v| *v >= 1)
                .ok_or(CodecError::BadVarint { record })?,
            time: raw.time,
            stream: text(raw.stream)?,
            event_type: text(raw.event_type)?,
            origin: Some(text(raw.origin)?).filter(|s| !s.is_empty()),
            meta: Some(text(raw.meta)?).filter(|s| !s.is_empty()),
            data: text(raw.data)?,
            erased: raw.marks & MARK_ERASED != 0,
        })
    }

    fn raw(&mut self) -> Result<RawRecord<'a>, CodecError> {
        let mut id = [0u8; 16];
        id.copy_from_slice(self.take(16)?);
        let version = self.varint()?;
        let schema_version = if self.format == SEGMENT_FORMAT_1 {
            1
        } else {
            self.varint()?
        };
        let marks = if self.format == SEGMENT_FORMAT_3 {
            self.varint()?
        } else {
            0
        };
        Ok(RawRecord {
            id,
            version,
            schema_version,
            marks,
            time: self.varint()?,
            stream: self.bytes_field()?,
            event_type: self.bytes_field()?,
            origin: self.bytes_field()?,
            meta: self.bytes_field()?,
            data: self.bytes_field()?,
        })
    }

    fn bytes_field(&mut self) -> Result<&'a [u8], CodecError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| CodecError::Truncated {
            record: self.record,
        })?;
        self.take(len)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self
            .offset
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len());
        let end = end.ok_or(CodecError::Truncated {
            record: self.record,
        })?;
        let slice = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(slice)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.offset).ok_or(CodecError::Truncated {
                record: self.record,
            })?;
            self.offset += 1;
            let low = u64::from(byte & 0x7f);
            if shift == 63 && low > 1 {
                return Err(CodecError::BadVarint {
                    record: self.record,
                });
            }
            value |= low << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::BadVarint {
            record: self.record,
        })
    }
}

/// The header of a segment and the byte offset of each of its records, appended to
/// `offsets`. Checks the structure (every length against the bytes left, nothing after
/// the last record) without decoding the text: reads check that when they decode it.
pub fn record_offsets(bytes: &[u8], offsets: &mut Vec<u32>) -> Result<(u64, u32), CodecError> {
    let (first, count) = header(bytes)?;
    if bytes.len() > u32::MAX as usize {
        return Err(CodecError::Truncated { record: 0 });
    }
    let start = offsets.len();
    // The count comes from stored bytes: reserve no more than the bytes can hold.
    offsets.reserve((count as usize).min(max_records(bytes.len())));
    let format = format_of(bytes)?;
    let mut cursor = Cursor {
        bytes,
        offset: HEADER_LEN,
        record: 0,
        format,
    };
    let result = (|| {
        for record in 0..count {
            cursor.record = record;
            offsets.push(cursor.offset as u32);
            cursor.take(16)?;
            cursor.varint()?;
            if format != SEGMENT_FORMAT_1 {
                cursor.varint()?;
            }
            if format == SEGMENT_FORMAT_3 {
                cursor.varint()?;
            }
            cursor.varint()?;
            for _ in 0..5 {
                cursor.bytes_field()?;
            }
        }
        if cursor.offset != bytes.len() {
            return Err(CodecError::TrailingBytes(bytes.len() - cursor.offset));
        }
        Ok(())
    })();
    if let Err(e) = result {
        offsets.truncate(start);
        return Err(e);
    }
    Ok((first, count))
}

/// Merges consecutive segments into one; their positions must follow each other. Segments
/// of one format merge by a byte copy into that format; otherwise the result takes the
/// highest format among them (3 over 2 over 1), and records of the others are re-encoded
/// (format 1 at schema version 1, older formats unmarked; their strings still copied
/// unchecked).
pub fn merge<B: AsRef<[u8]>>(segments: &[B]) -> Result<Vec<u8>, CodecError> {
    let total: usize = segments.iter().map(|s| s.as_ref().len()).sum();
    let mut format = SEGMENT_FORMAT_1;
    for segment in segments {
        format = format.max(format_of(segment.as_ref())?);
    }
    let mut out = Vec::with_capacity(total);
    let mut first = None;
    let mut count: u32 = 0;
    let mut next = 0u64;
    for segment in segments {
        let bytes = segment.as_ref();
        let (seg_first, seg_count) = header(bytes)?;
        match first {
            None => {
                first = Some(seg_first);
                write_header(&mut out, seg_first, 0, format);
            }
            Some(_) if seg_first != next => {
                return Err(CodecError::NotContiguous {
                    expected: next,
                    found: seg_first,
                })
            }
            Some(_) => {}
        }
        next = seg_first
            .checked_add(u64::from(seg_count))
            .ok_or(CodecError::Truncated { record: 0 })?;
        count = count
            .checked_add(seg_count)
            .ok_or(CodecError::Truncated { record: u32::MAX })?;
        if format_of(bytes)? == format {
            out.extend_from_slice(&bytes[HEADER_LEN..]);
        } else {
            reencode(bytes, seg_count, &mut out, format)?;
        }
    }
    if first.is_none() {
        return Ok(Vec::new());
    }
    out[8..12].copy_from_slice(&count.to_le_bytes());
    Ok(out)
}

/// Appends the `count` records of segment `bytes` to `out` in `format` (2 or 3), checking
/// the structure as [`record_offsets`] does.
fn reencode(bytes: &[u8], count: u32, out: &mut Vec<u8>, format: u16) -> Result<(), CodecError> {
    let mut cursor = Cursor {
        bytes,
        offset: HEADER_LEN,
        record: 0,
        format: format_of(bytes)?,
    };
    for record in 0..count {
        cursor.record = record;
        let raw = cursor.raw()?;
        out.extend_from_slice(&raw.id);
        write_varint(out, raw.version);
        write_varint(out, raw.schema_version);
        if format == SEGMENT_FORMAT_3 {
            write_varint(out, raw.marks);
        }
        write_varint(out, raw.time);
        for field in [raw.stream, raw.event_type, raw.origin, raw.meta, raw.data] {
            write_varint(out, field.len() as u64);
            out.extend_from_slice(field);
        }
    }
    if cursor.offset != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - cursor.offset));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(position: u64, stream: &'static str, data: &'static str) -> EventRef<'static> {
        EventRef {
            id: EventId([position as u8; 16]),
            position,
            version: position,
            time: 1_700_000_000_000 + position,
            stream,
            event_type: "Happened",
            // Format 2 stores any schema version; vary it (and keep some at 1).
            schema_version: (position % 3) as u32 + 1,
            origin: if position % 2 == 0 {
                Some("client-a")
            } else {
                None
            },
            meta: if position % 3 == 0 {
                Some(r#"{"k":1}"#)
            } else {
                None
            },
            data,
            erased: false,
        }
    }

    #[test]
    fn a_segment_round_trips_every_field() {
        let events = [
            sample(5, "s-1", r#"{"a":1}"#),
            sample(6, "s-2", "[]"),
            sample(7, "ü-3", "\"x\""),
        ];
        let bytes = encode(5, events.iter().copied());
        let reader = SegmentReader::new(&bytes).unwrap();
        assert_eq!((reader.first(), reader.event_count()), (5, 3));
        let decoded: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
        assert_eq!(decoded, events);
    }

    #[test]
    fn json_output_is_the_public_event_shape() {
        let e = EventRef {
            stream: "a\"b\n",
            ..sample(6, "x", r#"{"n":[1,2]}"#)
        };
        let mut out = Vec::new();
        e.write_json(&mut out, true);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["stream"], "a\"b\n");
        assert_eq!(value["data"]["n"][1], 2);
        assert_eq!(value["position"], 6);
        assert_eq!(value["origin"], "client-a");
        assert_eq!(value["meta"], serde_json::json!({"k": 1}));
        assert_eq!(value["pending"], true);
        assert_eq!(value["id"], EventId([6; 16]).to_string());
    }

    #[test]
    fn json_output_names_the_schema_version_only_when_it_is_not_1() {
        let mut out = Vec::new();
        sample(3, "s", "1").write_json(&mut out, false); // schema version 1
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(value.get("schemaVersion").is_none(), "{value}");
        out.clear();
        sample(4, "s", "1").write_json(&mut out, false); // schema version 2
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["schemaVersion"], 2);
    }

    /// A segment as builds before schema versions wrote it (format 1: no schema varint).
    fn format_1(first: u64, events: &[EventRef<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, first, events.len() as u32, SEGMENT_FORMAT_1);
        for e in events {
            out.extend_from_slice(e.id.as_bytes());
            write_varint(&mut out, e.version);
            write_varint(&mut out, e.time);
            for s in [
                e.stream,
                e.event_type,
                e.origin.unwrap_or(""),
                e.meta.unwrap_or(""),
                e.data,
            ] {
                write_str(&mut out, s);
            }
        }
        out
    }

    #[test]
    fn format_1_segments_read_at_schema_version_1_and_are_what_version_1_events_encode_to() {
        let events = [
            sample(3, "s-1", r#"{"a":1}"#),
            EventRef {
                schema_version: 1,
                ..sample(4, "s-2", "[]")
            },
            sample(6, "x", "2"), // schema version 1
        ];
        let old = format_1(3, &[events[0], events[1]]);
        let decoded: Vec<_> = SegmentReader::new(&old)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(decoded, [events[0], events[1]]);
        // Events all at version 1 are still written in format 1, byte for byte.
        assert_eq!(encode(3, [events[0], events[1]]), old);
        let mut offsets = Vec::new();
        assert_eq!(record_offsets(&old, &mut offsets).unwrap(), (3, 2));
        assert_eq!(
            SegmentReader::record_at(&old, offsets[1] as usize, 4).unwrap(),
            events[1]
        );
        let mut json = Vec::new();
        let mut count = 0;
        write_json_records(
            &old,
            offsets[0] as usize,
            3,
            4,
            false,
            &mut json,
            &mut count,
        )
        .unwrap();
        assert_eq!(count, 2);
        assert!(!String::from_utf8(json).unwrap().contains("schemaVersion"));
    }

    #[test]
    fn a_later_schema_version_switches_the_segment_to_format_2() {
        let events = [
            sample(3, "s", "1"), // 1
            sample(4, "s", "2"), // 2
            sample(5, "s", "3"), // 3
            sample(6, "s", "4"), // 1
        ];
        let bytes = encode(3, events);
        assert_eq!(format_of(&bytes), Ok(SEGMENT_FORMAT));
        let decoded: Vec<_> = SegmentReader::new(&bytes)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(decoded, events);
        assert_eq!(
            decoded.iter().map(|e| e.schema_version).collect::<Vec<_>>(),
            [1, 2, 3, 1]
        );
    }

    #[test]
    fn merging_mixed_formats_re_encodes_format_1_records() {
        let old = format_1(1, &[sample(1, "s", "1"), sample(2, "s", "2")]);
        let new = encode(3, [sample(3, "s", "3"), sample(4, "s", "4")]);
        let older = format_1(5, &[sample(6, "s", "5")]);
        assert_eq!(format_of(&new), Ok(SEGMENT_FORMAT));
        let merged = merge(&[&old, &new, &older]).unwrap();
        assert_eq!(format_of(&merged), Ok(SEGMENT_FORMAT));
        let decoded: Vec<_> = SegmentReader::new(&merged)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let versions: Vec<(u64, u32)> = decoded
            .iter()
            .map(|e| (e.position, e.schema_version))
            .collect();
        assert_eq!(versions, [(1, 1), (2, 1), (3, 1), (4, 2), (5, 1)]);
        assert_eq!(decoded[1].data, "2");
        // Format-1 segments alone stay format 1, a byte copy.
        let both_old = merge(&[&old, &format_1(3, &[sample(3, "s", "3")])]).unwrap();
        assert_eq!(format_of(&both_old), Ok(SEGMENT_FORMAT_1));
        assert_eq!(
            both_old.len(),
            old.len() + format_1(3, &[sample(3, "s", "3")]).len() - HEADER_LEN
        );
        // A damaged format-1 part is an error, not a panic.
        for cut in HEADER_LEN..old.len() {
            assert!(merge(&[&old[..cut], &new[..]]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut out = Vec::new();
        write_json_str(&mut out, "\u{1}\t\\");
        assert_eq!(String::from_utf8(out).unwrap(), r#""\u0001\t\\""#);
    }

    #[test]
    fn merging_concatenates_in_order() {
        let a = encode(1, [sample(1, "s", "1"), sample(2, "s", "2")]);
        let b = encode(3, [sample(3, "s", "3")]);
        let merged = merge(&[&a, &b]).unwrap();
        let positions: Vec<u64> = SegmentReader::new(&merged)
            .unwrap()
            .map(|e| e.unwrap().position)
            .collect();
        assert_eq!(positions, [1, 2, 3]);
        assert_eq!(
            merge(&[&b, &a]).unwrap_err(),
            CodecError::NotContiguous {
                expected: 4,
                found: 1
            }
        );
    }

    #[test]
    fn record_offsets_find_every_record_and_refuse_damage() {
        let events = [
            sample(3, "s-1", r#"{"a":1}"#),
            sample(4, "s-2", "[]"),
            sample(5, "s-3", "\"x\""),
        ];
        let bytes = encode(3, events.iter().copied());
        let mut offsets = vec![7];
        assert_eq!(record_offsets(&bytes, &mut offsets).unwrap(), (3, 3));
        assert_eq!(offsets.len(), 4);
        for (i, offset) in offsets[1..].iter().enumerate() {
            let event = SegmentReader::record_at(&bytes, *offset as usize, 3 + i as u64).unwrap();
            assert_eq!(event, events[i]);
        }
        for cut in 0..bytes.len() {
            let mut offsets = vec![7];
            assert!(
                record_offsets(&bytes[..cut], &mut offsets).is_err(),
                "prefix of {cut}"
            );
            assert_eq!(offsets, [7], "nothing added on error");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            record_offsets(&trailing, &mut Vec::new()),
            Err(CodecError::TrailingBytes(1))
        );
    }

    #[test]
    fn damaged_bytes_are_errors_not_panics() {
        let bytes = encode(
            1,
            [sample(1, "stream", r#"{"a":1}"#), sample(2, "stream", "2")],
        );
        for cut in 0..bytes.len() {
            let result: Result<Vec<_>, _> =
                SegmentReader::new(&bytes[..cut]).and_then(|r| r.collect());
            assert!(result.is_err(), "prefix of {cut} bytes decoded");
        }
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(SegmentReader::new(&bad).unwrap_err(), CodecError::BadMagic);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(SegmentReader::new(&trailing)
            .unwrap()
            .any(|r| r == Err(CodecError::TrailingBytes(1))));
        // Positions past what JavaScript holds exactly (or 0) are refused, so that no one
        // adding the count to the first position can overflow.
        for (first, count) in [(0u64, 0u32), (u64::MAX, 1), ((1 << 53) - 1, 2)] {
            let mut far = encode(1, []);
            far[8..12].copy_from_slice(&count.to_le_bytes());
            far[12..20].copy_from_slice(&first.to_le_bytes());
            assert_eq!(
                header(&far).unwrap_err(),
                CodecError::PositionOutOfRange { first, count }
            );
        }
        let mut last = encode(1, []);
        last[12..20].copy_from_slice(&((1u64 << 53) - 1).to_le_bytes());
        assert!(header(&last).is_ok());
        // A huge length prefix must not allocate or read out of bounds.
        let mut huge = encode(1, []);
        huge[8] = 1;
        huge.extend_from_slice(&[0; 16]);
        huge.extend_from_slice(&[1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(SegmentReader::new(&huge).unwrap().next().unwrap().is_err());
    }
}
