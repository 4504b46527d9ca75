//! `annals-server erase`: an operator erases a stream of a server store (a GDPR erasure
//! request, say) without a client.
//!
//! ```text
//! annals-server erase --database <url> --store <name> --stream <stream>
//! ```
//!
//! It appends a `$StreamErased` event to the stream through the push rules every push goes
//! through, as `store.eraseStream` on a replica does once synced: in the same database
//! transaction the stream's earlier events lose their `data` and `meta` (see
//! [`crate::erasure`]), and every replica erases its copies as it pulls the erasure.
//! Over HTTP, an erasure is the push of such an event by any client the store is granted
//! to; there is no separate route.

use crate::clock::{IdSource, Uuidv7};
use crate::event::{name_problem, ExpectedVersion, Limits, STREAM_ERASED_TYPE};
use crate::protocol::{PushEvent, PushResult};
use crate::server::store::{now_ms, ServerStore, StoreError};

/// The `clientId` (and so the origin) of erasures made by `annals-server erase`.
pub const ERASE_ORIGIN: &str = "annals-admin";

/// `annals-server erase`.
#[derive(Debug, Clone, clap::Args)]
pub struct EraseArgs {
    /// The database (default: the server's --database, ANNALS_DATABASE or the config file's).
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// The store holding the stream.
    #[arg(long, value_name = "NAME")]
    pub store: String,
    /// The stream whose events lose their data and meta.
    #[arg(long, value_name = "STREAM")]
    pub stream: String,
}

/// Why an erasure was not made.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stream name is not one an event can have.
    #[error("{0}")]
    BadStream(String),
    /// The store has no event in that stream: nothing to erase (and no erasure appended).
    #[error("store {store:?} has no stream {stream:?}")]
    NoStream { store: String, stream: String },
    /// The push rules refused the erasure.
    #[error("the erasure was refused: {0}")]
    Refused(String),
}

/// Where the erasure went: the `$StreamErased` event's position and version. The events of
/// the stream below `version` are erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Erased {
    pub position: u64,
    pub version: u64,
}

/// Appends a `$StreamErased` to `stream` of `store` (see the module's documentation).
pub async fn erase_stream(
    backend: &dyn ServerStore,
    store: &str,
    stream: &str,
) -> Result<Erased, EraseError> {
    if let Some(problem) = name_problem("stream", stream, Limits::default().max_name_bytes) {
        return Err(EraseError::BadStream(problem));
    }
    let now = u64::try_from(now_ms()).unwrap_or(0);
    let event = PushEvent {
        id: Uuidv7::new().next_id(now),
        stream: stream.to_owned(),
        event_type: STREAM_ERASED_TYPE.to_owned(),
        schema_version: 1,
        data: serde_json::value::RawValue::from_string("{}".to_owned())
            .map_err(|e| EraseError::BadStream(e.to_string()))?,
        meta: None,
        time: now,
        // A stream that does not exist is not started by its erasure.
        expected_version: ExpectedVersion::Exists,
        erased: false,
    };
    let response = backend.push(store, ERASE_ORIGIN, vec![event]).await?;
    match response.results.into_iter().next() {
        Some(PushResult::Ok {
            position, version, ..
        }) => Ok(Erased { position, version }),
        Some(PushResult::Rejected {
            actual_version: Some(0),
            ..
        }) => Err(EraseError::NoStream {
            store: store.to_owned(),
            stream: stream.to_owned(),
        }),
        Some(PushResult::Rejected { reason, .. }) => Err(EraseError::Refused(reason)),
        Some(PushResult::Duplicate { .. }) | None => Err(EraseError::Refused(
            "the store answered the erasure with no verdict of its own".to_owned(),
        )),
    }
}
