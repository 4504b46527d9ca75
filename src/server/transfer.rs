//! `annals-server export` and `annals-server import`: a server store's events as NDJSON,
//! in the format the TypeScript package's `store.exportEvents()` writes and
//! `store.importEvents()` reads.
//!
//! ```text
//! {"format":"annals-events","formatVersion":1,"store":"todos","count":2,"exportedAt":1700000000000}
//! {"id":"0190…","position":1,"stream":"todo-1","version":1,"type":"TodoAdded","data":{…},"time":…,"origin":"…","pending":false}
//! {"id":"0190…","position":2,…}
//! ```
//!
//! Export writes the store's events in position order, exactly as a pull serves them.
//! Import appends through the push rules every push goes through ([`ServerStore::push`],
//! which applies [`crate::push::rules::plan_push`]): ids are kept, so a known id is a
//! duplicate that writes nothing and importing the same file twice adds nothing the second
//! time; times and origins are kept; positions and stream versions are the target store's.
//! Events are checked as a push checks them ([`event_problem`]) batch by batch before the
//! batch is written: a bad line stops the import with its line number, nothing of its
//! batch written (earlier batches stay, and running the import again after fixing the line
//! skips them as duplicates).

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::event::{EventId, ExpectedVersion};
use crate::protocol::{PushEvent, PushResult};
use crate::server::limits::{check_client_name, event_problem, EventProblem, Limits};
use crate::server::store::{now_ms, ServerStore, StoreError};

/// The first line's `format` of an events export.
pub const EVENTS_FORMAT: &str = "annals-events";
/// The first line's `format` of a bug bundle (the devtools' `exportBundle`): its lines are
/// events as stored too, so import reads it as well.
pub const BUNDLE_FORMAT: &str = "annals-bundle";
/// The newest `formatVersion` this build reads and the one it writes.
pub const EVENTS_FORMAT_VERSION: u32 = 1;
/// Events per pull while exporting and per push while importing.
pub const BATCH: usize = 1_000;
/// The `clientId` (and so the origin) of imported events that name none.
pub const DEFAULT_ORIGIN: &str = "annals-import";

/// `annals-server export`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// The database (default: the server's --database, ANNALS_DATABASE or the config file's).
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// The store to export.
    #[arg(long, value_name = "NAME")]
    pub store: String,
    /// Write here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `annals-server import`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// The database (default: the server's --database, ANNALS_DATABASE or the config file's).
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// The store to import into (created if it does not exist).
    #[arg(long, value_name = "NAME")]
    pub store: String,
    /// Check every line and count what would be imported, writing nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The NDJSON file to read ("-" reads standard input).
    #[arg(value_name = "FILE|-")]
    pub input: String,
}

/// The subcommands of `annals-server` (without one it serves).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Write a store's events as NDJSON (a header line, then one event per line).
    Export(ExportArgs),
    /// Append the events of an NDJSON export (or bug bundle) to a store, keeping their ids.
    Import(ImportArgs),
    /// Erase a stream: its events lose their data and meta, here and, as they sync, on
    /// every replica (a `$StreamErased` event is appended to it).
    Erase(crate::server::erase::EraseArgs),
}

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    pub format: String,
    pub format_version: u32,
    pub store: String,
    /// Events that follow.
    pub count: u64,
    /// Milliseconds since the Unix epoch.
    pub exported_at: u64,
}

/// Why an export or import stopped.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A line of the input is not an event this store can take; nothing of its batch was
    /// written.
    #[error("line {line}: {message}")]
    BadLine { line: u64, message: String },
    /// The input as a whole is wrong (a cut-off file, a format this build cannot read).
    #[error("{0}")]
    BadInput(String),
}

/// Writes `store`'s events as NDJSON: the header, then every event up to the head the
/// store had when the export began (later ones are left for the next export, so that the
/// header's count is what follows). Returns the number of events written.
pub async fn export(
    backend: &dyn ServerStore,
    store: &str,
    out: &mut dyn Write,
) -> Result<u64, TransferError> {
    let info = backend.info(store).await?;
    let count = info.head;
    let header = Header {
        format: EVENTS_FORMAT.to_owned(),
        format_version: EVENTS_FORMAT_VERSION,
        store: store.to_owned(),
        count,
        exported_at: u64::try_from(now_ms()).unwrap_or(0),
    };
    write_json_line(out, &header)?;
    let mut after = 0u64;
    while after < count {
        // A pull holds one page at a time: memory stays bounded whatever the log's size.
        let page = backend.pull(store, after, BATCH).await?;
        if page.events.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "the log of {store:?} ends at position {after}, before its head {count}"
            ))
            .into());
        }
        for event in &page.events {
            if event.position > count {
                after = count;
                break;
            }
            write_json_line(out, event)?;
            after = event.position;
        }
    }
    out.flush()?;
    Ok(count)
}

fn write_json_line<T: Serialize>(out: &mut dyn Write, value: &T) -> Result<(), TransferError> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Check every line as an import would and count what it would add (ids the store
    /// holds and repeats are duplicates), writing nothing.
    pub dry_run: bool,
    /// Events per push transaction.
    pub batch: usize,
    /// What each event must satisfy (the server's push limits).
    pub limits: Limits,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            dry_run: false,
            batch: BATCH,
            limits: Limits::default(),
        }
    }
}

/// What an import did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Event lines read (the header and blank lines not counted).
    pub lines: u64,
    /// Events added to the store.
    pub imported: u64,
    /// Events whose id the store already had (or that came earlier in the input).
    pub duplicates: u64,
    /// Events the push rules refused: an id the store holds as another event (reason
    /// `DUPLICATE_ID`), or an authority's refusal (none from the command line).
    pub rejected: u64,
    /// The refused events' lines, ids and reasons, in order.
    pub rejections: Vec<RejectedLine>,
}

/// An imported event the push rules refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedLine {
    pub line: u64,
    pub id: EventId,
    pub reason: String,
}

/// One event line as read: the fields of an event as stored; `position`, `version` and
/// `pending` are the exporting replica's and are assigned afresh here.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Line {
    id: EventId,
    stream: String,
    #[serde(rename = "type")]
    event_type: String,
    data: Box<RawValue>,
    #[serde(default)]
    meta: Option<Box<RawValue>>,
    /// Absent: the time of the import.
    #[serde(default)]
    time: Option<u64>,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default, rename = "position")]
    _position: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "version")]
    _version: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "pending")]
    _pending: Option<serde::de::IgnoredAny>,
    /// The event's schema version (1 when absent), kept as it was.
    #[serde(default)]
    schema_version: Option<u32>,
    /// An erased event (exports carry erased events as erased, without their data): it
    /// is imported erased, whatever data the line holds.
    #[serde(default)]
    erased: bool,
}

/// The header a first line may be, or `None` when it is an event (a headerless file).
fn read_header(text: &str) -> Result<Option<Option<u64>>, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct AnyHeader {
        format: Option<String>,
        format_version: Option<serde_json::Value>,
        count: Option<u64>,
        /// A bundle's header counts its events here.
        events: Option<u64>,
    }
    let Ok(header) = serde_json::from_str::<AnyHeader>(text) else {
        return Ok(None);
    };
    let Some(format) = header.format else {
        return Ok(None);
    };
    if format != EVENTS_FORMAT && format != BUNDLE_FORMAT {
        return Err(format!(
            "line 1 is a header of format {format:?}; this reads {EVENTS_FORMAT:?} (and \
             {BUNDLE_FORMAT:?})"
        ));
    }
    match header.format_version.as_ref().and_then(|v| v.as_u64()) {
        Some(v) if v >= 1 && v <= u64::from(EVENTS_FORMAT_VERSION) => {}
        Some(v) if v > u64::from(EVENTS_FORMAT_VERSION) => {
            return Err(format!(
                "the file's formatVersion {v} is newer than this annals-server reads \
                 ({EVENTS_FORMAT_VERSION}): import it with a newer release"
            ))
        }
        _ => return Err("line 1 is a header without a valid formatVersion".to_owned()),
    }
    Ok(Some(header.count.or(header.events)))
}

/// Parses and checks one event line into what a push carries.
fn parse_line(text: &str, limits: &Limits) -> Result<(PushEvent, Option<String>), String> {
    let line: Line = serde_json::from_str(text).map_err(|e| format!("not an event: {e}"))?;
    let schema_version = line.schema_version.unwrap_or(1);
    if schema_version == 0 {
        return Err("`schemaVersion` must be at least 1".to_owned());
    }
    let mut event = PushEvent {
        id: line.id,
        stream: line.stream,
        event_type: line.event_type,
        schema_version,
        data: line.data,
        meta: line.meta.filter(|m| m.get() != "null"),
        time: line
            .time
            .unwrap_or_else(|| u64::try_from(now_ms()).unwrap_or(0)),
        expected_version: ExpectedVersion::Any,
        erased: false,
    };
    if line.erased {
        event.erase();
    }
    match event_problem(&event, limits) {
        None => {}
        Some(EventProblem::TooLarge { size, limit }) => {
            return Err(format!(
            "the event is {size} bytes (stream + type + data + meta); the limit is {limit} bytes"
        ))
        }
        Some(EventProblem::Invalid(message)) => return Err(message),
    }
    if let Some(origin) = &line.origin {
        check_client_name("origin", origin, limits)?;
    }
    Ok((event, line.origin))
}

/// Reads one line of at most `max` bytes into `buffer` (without its line end); `false` at
/// the end of the input.
fn next_line(input: &mut dyn BufRead, buffer: &mut String, max: usize) -> std::io::Result<bool> {
    buffer.clear();
    let read = input.take(max as u64 + 1).read_line(buffer)?;
    if read == 0 {
        return Ok(false);
    }
    if buffer.ends_with('\n') {
        buffer.pop();
        if buffer.ends_with('\r') {
            buffer.pop();
        }
    } else if buffer.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a line is longer than {max} bytes"),
        ));
    }
    Ok(true)
}

/// Appends the events of `input` (NDJSON: an optional header line, then one event per
/// line) to `store`, in batches of `options.batch`, each checked whole before it is
/// written. See the module's documentation for the rules.
pub async fn import(
    backend: &dyn ServerStore,
    store: &str,
    input: &mut dyn BufRead,
    options: &ImportOptions,
) -> Result<ImportReport, TransferError> {
    let batch_size = options.batch.max(1);
    // A line holds one event: its payload, plus room for the envelope and JSON escapes.
    let max_line = options.limits.max_event_bytes.saturating_mul(2) + 64 * 1024;
    let mut report = ImportReport::default();
    let mut announced: Option<u64> = None;
    let mut line_number = 0u64;
    let mut text = String::new();
    let mut batch: Vec<(PushEvent, Option<String>, u64)> = Vec::with_capacity(batch_size);
    // A dry run writes nothing, so it remembers the ids it counted as new to count repeats.
    let mut seen = std::collections::HashSet::new();
    loop {
        let more = next_line(input, &mut text, max_line).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                TransferError::BadLine {
                    line: line_number + 1,
                    message: e.to_string(),
                }
            } else {
                TransferError::Io(e)
            }
        })?;
        if more {
            line_number += 1;
            if text.trim().is_empty() {
                continue;
            }
            if line_number == 1 {
                match read_header(&text) {
                    Ok(Some(count)) => {
                        announced = count;
                        continue;
                    }
                    Ok(None) => {}
                    Err(message) => return Err(TransferError::BadLine { line: 1, message }),
                }
            }
            let (event, origin) =
                parse_line(&text, &options.limits).map_err(|message| TransferError::BadLine {
                    line: line_number,
                    message,
                })?;
            report.lines += 1;
            batch.push((event, origin, line_number));
        }
        if batch.len() >= batch_size || (!more && !batch.is_empty()) {
            let events = std::mem::take(&mut batch);
            if options.dry_run {
                count_dry_run(backend, store, events, &mut seen, &mut report).await?;
            } else {
                write_batch(backend, store, events, &mut report).await?;
            }
        }
        if !more {
            break;
        }
    }
    if let Some(count) = announced {
        if count != report.lines {
            return Err(TransferError::BadInput(format!(
                "the header announces {count} events but {} follow (a cut-off file?); the \
                 events read were {}",
                report.lines,
                if options.dry_run {
                    "not written (dry run)"
                } else {
                    "imported"
                }
            )));
        }
    }
    Ok(report)
}

/// Pushes one checked batch, keeping each event's origin: consecutive events of one origin
/// go in one push (the server records a push's client id as its events' origin).
async fn write_batch(
    backend: &dyn ServerStore,
    store: &str,
    events: Vec<(PushEvent, Option<String>, u64)>,
    report: &mut ImportReport,
) -> Result<(), TransferError> {
    let mut run: Vec<PushEvent> = Vec::new();
    let mut lines: Vec<u64> = Vec::new();
    let mut events = events.into_iter().peekable();
    while let Some((event, origin, line)) = events.next() {
        run.push(event);
        lines.push(line);
        let next_differs = events.peek().is_none_or(|(_, next, _)| *next != origin);
        if next_differs {
            let client = origin.as_deref().unwrap_or(DEFAULT_ORIGIN);
            let answer = backend
                .push(store, client, std::mem::take(&mut run))
                .await?;
            // One result per pushed event, in order.
            for (result, line) in answer.results.iter().zip(lines.drain(..)) {
                match result {
                    PushResult::Ok { .. } => report.imported += 1,
                    PushResult::Duplicate { .. } => report.duplicates += 1,
                    PushResult::Rejected { id, reason, .. } => {
                        report.rejected += 1;
                        report.rejections.push(RejectedLine {
                            line,
                            id: *id,
                            reason: reason.clone(),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// Counts what a batch would add, writing nothing: an id the store holds, or one earlier
/// in the input, is a duplicate.
async fn count_dry_run(
    backend: &dyn ServerStore,
    store: &str,
    events: Vec<(PushEvent, Option<String>, u64)>,
    seen: &mut std::collections::HashSet<EventId>,
    report: &mut ImportReport,
) -> Result<(), TransferError> {
    let ids: Vec<EventId> = events.iter().map(|(e, _, _)| e.id).collect();
    let stored = backend.stored_ids(store, &ids).await?;
    for id in ids {
        if stored.contains(&id) || !seen.insert(id) {
            report.duplicates += 1;
        } else {
            report.imported += 1;
        }
    }
    Ok(())
}

/// Opens `input` ("-" = standard input) for [`import`].
pub fn open_input(input: &str) -> std::io::Result<Box<dyn BufRead + Send>> {
    if input == "-" {
        Ok(Box::new(std::io::BufReader::new(std::io::stdin())))
    } else {
        let file = std::fs::File::open(input)?;
        Ok(Box::new(std::io::BufReader::with_capacity(
            256 * 1024,
            file,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_is_recognised_by_its_format() {
        let events =
            r#"{"format":"annals-events","formatVersion":1,"store":"s","count":3,"exportedAt":1}"#;
        assert_eq!(read_header(events), Ok(Some(Some(3))));
        let bundle = r#"{"format":"annals-bundle","formatVersion":1,"store":"s","events":2}"#;
        assert_eq!(read_header(bundle), Ok(Some(Some(2))));
        // An event line: no header (a headerless file).
        assert_eq!(read_header(r#"{"id":"x","stream":"s"}"#), Ok(None));
        assert!(read_header(r#"{"format":"csv","formatVersion":1}"#)
            .unwrap_err()
            .contains("csv"));
        assert!(
            read_header(r#"{"format":"annals-events","formatVersion":2,"count":0}"#)
                .unwrap_err()
                .contains("newer")
        );
    }

    #[test]
    fn an_event_line_is_checked_as_a_push_checks_it() {
        let limits = Limits::default();
        let ok = r#"{"id":"0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f70","position":9,"stream":"s","version":3,"type":"T","data":{"a":1},"time":5,"origin":"c1","pending":true}"#;
        let (event, origin) = parse_line(ok, &limits).expect("valid");
        assert_eq!(event.time, 5);
        assert_eq!(origin.as_deref(), Some("c1"));
        let empty_stream = ok.replace(r#""stream":"s""#, r#""stream":"""#);
        assert!(parse_line(&empty_stream, &limits)
            .unwrap_err()
            .contains("stream"));
        let bad_id = ok.replace("0190a4c1", "nothex!!");
        assert!(parse_line(&bad_id, &limits).unwrap_err().contains("UUID"));
        let unknown = ok.replace(r#""time":5"#, r#""time":5,"colour":"red""#);
        assert!(parse_line(&unknown, &limits)
            .unwrap_err()
            .contains("colour"));
        let v2 = ok.replace(r#""time":5"#, r#""time":5,"schemaVersion":2"#);
        assert_eq!(parse_line(&v2, &limits).expect("v2").0.schema_version, 2);
        let v0 = ok.replace(r#""time":5"#, r#""time":5,"schemaVersion":0"#);
        assert!(parse_line(&v0, &limits)
            .unwrap_err()
            .contains("schemaVersion"));
    }

    #[test]
    fn an_overlong_line_is_refused_without_reading_it_whole() {
        let text = format!("{}\nnext\n", "x".repeat(100));
        let mut input = std::io::Cursor::new(text.into_bytes());
        let mut buffer = String::new();
        let error = next_line(&mut input, &mut buffer, 10).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        assert!(buffer.len() <= 11);
    }
}
