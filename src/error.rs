//! Every way an annals operation can fail. Each variant maps to one stable `code`
//! that the bindings expose to JavaScript (`AnnalsError.code`).

use crate::error_code::ErrorCode;
use crate::version::ExpectedVersion;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The stream was not at the version the caller expected; nothing was written.
    #[error("wrong expected version on stream `{stream}`: expected {expected}, actual {actual}")]
    WrongExpectedVersion {
        stream: String,
        expected: ExpectedVersion,
        actual: u64,
    },

    /// An id already in the log came back as another event (or in a batch that mixes
    /// retries with new events, `ids` naming every known id of it); `event` is the stored
    /// event of the first such id, as JSON (`Error::stored_event` in `event.rs` parses
    /// it: this module sits below the event types). Nothing was written.
    #[error("duplicate id: {message}")]
    DuplicateId {
        message: String,
        event: String,
        ids: Vec<String>,
    },

    /// The stream is closed (its last event is `$StreamClosed`); nothing was written.
    #[error("stream deleted: {0}")]
    StreamDeleted(String),

    /// A batch with more events than one append takes (`max_batch`); nothing was written.
    #[error("too large: {0}")]
    TooLarge(String),

    /// The event (or batch) is malformed: bad `type`/`stream`, bad JSON, too large, ...
    #[error("invalid event: {0}")]
    InvalidEvent(String),

    /// An aggregate's `decide` refused the command; nothing was written.
    #[error("command rejected: {0}")]
    CommandRejected(String),

    /// The caller's arguments (outside an event) are malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The browser refused the write for lack of space; nothing was written.
    #[error("storage quota exceeded: {0}")]
    QuotaExceeded(String),

    /// The store was closed (by the app, or because another tab upgraded the database).
    #[error("the store is closed")]
    Closed,

    /// The stored data was written by a newer version of annals.
    #[error("the store was written in format {found}, but this version of annals reads formats up to {supported}; upgrade annals to open it")]
    FormatTooNew { found: u32, supported: u32 },

    /// Stored bytes could not be decoded (corruption, or a foreign database).
    #[error("corrupt data: {0}")]
    Corrupt(String),

    /// The local store holds a copy of another server store than the one asked for (the
    /// message names both and how to reset); nothing was changed.
    #[error("{0}")]
    StoreMismatch(String),

    /// The storage backend failed for another reason.
    #[error("storage error: {0}")]
    Storage(String),

    /// A read reaches below the events this replica retains (retention dropped positions
    /// up to `dropped`); the message names the retained range. Ask the server instead.
    #[error("not retained: {message}")]
    NotRetained { message: String, dropped: u64 },
}

impl Error {
    /// The stable code JavaScript sees as `AnnalsError.code`.
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }

    /// The variant's [`ErrorCode`].
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Error::WrongExpectedVersion { .. } => ErrorCode::WrongExpectedVersion,
            Error::DuplicateId { .. } => ErrorCode::DuplicateId,
            Error::StreamDeleted(_) => ErrorCode::StreamDeleted,
            Error::TooLarge(_) => ErrorCode::TooLarge,
            Error::InvalidEvent(_) => ErrorCode::InvalidEvent,
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::CommandRejected(_) => ErrorCode::CommandRejected,
            Error::QuotaExceeded(_) => ErrorCode::QuotaExceeded,
            Error::Closed => ErrorCode::Closed,
            Error::FormatTooNew { .. } => ErrorCode::FormatTooNew,
            Error::Corrupt(_) => ErrorCode::Corrupt,
            Error::StoreMismatch(_) => ErrorCode::StoreMismatch,
            Error::Storage(_) => ErrorCode::Storage,
            Error::NotRetained { .. } => ErrorCode::NotRetained,
        }
    }
}
