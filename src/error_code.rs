//! Every error code any layer of annals reports, defined once.
//!
//! The core's [`crate::Error`], the sync client's transport errors and the server's HTTP
//! errors all name their code through [`ErrorCode`]; the TypeScript list of
//! `AnnalsError.code` values (`pkg/src/generated/error-codes.ts`) is generated from
//! [`ErrorCode::ALL`], and the wasm binding exports the same list at run time
//! (`errorCodes()`), so a test in `pkg/test` fails when the two differ. The README's lists
//! are checked against it by `tests/error_codes.rs`.

use std::fmt;

/// Where a code can be seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorLayer {
    /// Thrown to apps as `AnnalsError.code` (by the core, the sync client or the wrapper).
    Client,
    /// Answered by the sync server as `{ "error": { "code" } }`.
    Server,
    /// Both: the client and the server use the code with the same meaning.
    Both,
}

macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])+ $variant:ident = $code:literal, $layer:ident; )+) => {
        /// A stable, machine-readable error code (`AnnalsError.code`, or the `code` of a
        /// server's JSON error body).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $( $(#[doc = $doc])+ $variant, )+
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The code as JavaScript and HTTP clients see it, e.g. `"WRONG_EXPECTED_VERSION"`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)+
                }
            }

            /// Where the code is reported.
            pub const fn layer(self) -> ErrorLayer {
                match self {
                    $(ErrorCode::$variant => ErrorLayer::$layer,)+
                }
            }

            /// The one-line description (the variant's doc comment).
            pub fn description(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => concat!($($doc),+).trim(),)+
                }
            }
        }
    };
}

error_codes! {
    /// The stream was not at the expected version; nothing was written.
    WrongExpectedVersion = "WRONG_EXPECTED_VERSION", Client;
    /// An event id already in the log came with other content (stream, type, schema version, data or meta), or a batch mixed retries with new events; the error carries the stored event; nothing was written.
    DuplicateId = "DUPLICATE_ID", Client;
    /// The stream was closed (`closeStream`: a `$StreamClosed` event): it takes no more events, on any replica or the server (a push to it is rejected with this reason); nothing was written.
    StreamDeleted = "STREAM_DELETED", Both;
    /// An event is malformed: missing or empty `type`/`stream`, not JSON, too large.
    InvalidEvent = "INVALID_EVENT", Both;
    /// An argument other than an event is malformed (options, a position, a projection name).
    InvalidArgument = "INVALID_ARGUMENT", Client;
    /// The browser refused the write for lack of space; nothing was written.
    QuotaExceeded = "QUOTA_EXCEEDED", Client;
    /// The store was closed (by the app, or because another tab upgraded the database).
    Closed = "CLOSED", Client;
    /// The data was written by a newer version of annals.
    FormatTooNew = "FORMAT_TOO_NEW", Client;
    /// Stored bytes could not be decoded (corruption, or a foreign database).
    Corrupt = "CORRUPT", Client;
    /// The local database holds a copy of another server store (another `sync.store` or server URL) than the one asked for; nothing was changed (open with `sync.onMismatch: "reset"` to drop the local copy).
    StoreMismatch = "STORE_MISMATCH", Client;
    /// The storage backend failed for another reason.
    Storage = "STORAGE", Client;
    /// A read or `stateAt` reaches below the events a store with retention (`retain`) still holds locally, and the server could not be asked (offline, or no sync); the message names the retained range.
    NotRetained = "NOT_RETAINED", Client;
    /// An aggregate's `decide` refused the command (the message is the app's); nothing was written.
    CommandRejected = "COMMAND_REJECTED", Client;
    /// A process manager's handler (or one of its commands) failed; it is retried (TS wrapper only).
    ReactorFailed = "REACTOR_FAILED", Client;
    /// A projection's reducer threw on an event (or its state is not JSON): the event was skipped and the state kept; reported once per projection and event (TS wrapper only).
    ProjectionFailed = "PROJECTION_FAILED", Client;
    /// An event this build cannot read: its type has no schema (`events`), or its `schemaVersion` is above what its upcasters reach; it is kept and synced unchanged, and handled per `unknownEvents` (not folded; reported once per type and version) (TS wrapper only).
    UnknownEvent = "UNKNOWN_EVENT", Client;
    /// The store is frozen at a past position (time travel: `freeze`); appends and commands are refused until `unfreeze` (TS wrapper only).
    Frozen = "FROZEN", Client;
    /// Sync: the server could not be reached (or no tab that syncs this store answered).
    Offline = "OFFLINE", Client;
    /// The token is missing or unknown (HTTP 401).
    Unauthorized = "UNAUTHORIZED", Both;
    /// The token does not grant this store (HTTP 403).
    Forbidden = "FORBIDDEN", Both;
    /// Sync: the server refused the request as malformed or too large (another 4xx).
    Refused = "REFUSED", Client;
    /// Sync: the server failed (5xx) or answered outside the protocol.
    Server = "SERVER", Client;
    /// Sync: the server answered, but the browser hid the answer: it does not allow this page's origin (start annals-server with `--cors-origin`).
    CorsRefused = "CORS_REFUSED", Client;
    /// Sync: `sync.url` answered like something other than an annals server (an HTML page, a 404 without sync routes).
    NotSyncServer = "NOT_SYNC_SERVER", Client;
    /// Sync: the server speaks another version of the sync protocol; upgrade the server and the package together.
    UpgradeRequired = "UPGRADE_REQUIRED", Client;
    /// Server: a malformed request outside the events (bad JSON, store name, query parameter).
    InvalidRequest = "INVALID_REQUEST", Server;
    /// A batch over its limit: more events in one append than `maxBatch` (client), or a body, batch or event over the server's limit (HTTP 413); nothing was written.
    TooLarge = "TOO_LARGE", Both;
    /// Server: no such route (HTTP 404).
    NotFound = "NOT_FOUND", Server;
    /// Server: a path under `/vN/` for a protocol version this server does not speak (HTTP 404).
    UnsupportedVersion = "UNSUPPORTED_VERSION", Server;
    /// Server: the token made too many requests or holds too many long polls (HTTP 429).
    RateLimited = "RATE_LIMITED", Server;
    /// Server: at a capacity limit; nothing was done, retry after `Retry-After` (HTTP 503).
    Busy = "BUSY", Server;
    /// Server: the route exists but not for this method (HTTP 405).
    MethodNotAllowed = "METHOD_NOT_ALLOWED", Server;
    /// Server: the database is unreachable or busy; nothing was written (HTTP 503).
    Unavailable = "UNAVAILABLE", Server;
    /// Server: a bug or a damaged database; details are in the server's log (HTTP 500).
    Internal = "INTERNAL", Server;
}

impl ErrorCode {
    /// The codes an app can see as `AnnalsError.code`.
    pub fn client_codes() -> impl Iterator<Item = ErrorCode> {
        Self::ALL
            .iter()
            .copied()
            .filter(|c| c.layer() != ErrorLayer::Server)
    }

    /// The codes the sync server answers with.
    pub fn server_codes() -> impl Iterator<Item = ErrorCode> {
        Self::ALL
            .iter()
            .copied()
            .filter(|c| c.layer() != ErrorLayer::Client)
    }

    /// The code spelled `code`, if it is one.
    pub fn parse(code: &str) -> Option<ErrorCode> {
        Self::ALL.iter().copied().find(|c| c.as_str() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The TypeScript module `pkg/src/generated/error-codes.ts`: the client codes as a const
/// list and a documented union type `AnnalsErrorCode`, and the server's as
/// `ServerErrorCode`.
pub fn typescript_module() -> String {
    fn list(out: &mut String, name: &str, codes: &[ErrorCode]) {
        out.push_str(&format!("export const {name} = [\n"));
        for code in codes {
            out.push_str(&format!("  \"{}\",\n", code.as_str()));
        }
        out.push_str("] as const;\n\n");
    }
    fn union(out: &mut String, doc: &str, name: &str, codes: &[ErrorCode]) {
        out.push_str(&format!("/** {doc} */\nexport type {name} =\n"));
        for code in codes {
            out.push_str(&format!(
                "  /** {} */\n  | \"{}\"\n",
                code.description(),
                code.as_str()
            ));
        }
        // The last member ends the statement.
        if out.ends_with('\n') {
            out.pop();
        }
        out.push_str(";\n\n");
    }
    let client: Vec<ErrorCode> = ErrorCode::client_codes().collect();
    let server: Vec<ErrorCode> = ErrorCode::server_codes().collect();
    let mut out = String::new();
    out.push_str(
        "/** Every code an `AnnalsError` can carry (`ErrorCode` in src/error_code.rs). */\n",
    );
    list(&mut out, "ANNALS_ERROR_CODES", &client);
    union(
        &mut out,
        "Every code an `AnnalsError` can carry.",
        "AnnalsErrorCode",
        &client,
    );
    out.push_str("/** Every code the sync server answers with in `{ error: { code } }`. */\n");
    list(&mut out, "SERVER_ERROR_CODES", &server);
    union(
        &mut out,
        "A code of the sync server's JSON error body.",
        "ServerErrorCode",
        &server,
    );
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_code_is_spelled_once_in_screaming_snake_case() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} is listed twice");
            assert!(
                s.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{s} is not SCREAMING_SNAKE_CASE"
            );
            assert_eq!(ErrorCode::parse(s), Some(*code));
            assert!(!code.description().is_empty(), "{s} has no description");
        }
    }

    #[test]
    fn the_typescript_module_lists_every_client_code_in_the_union_and_the_const() {
        let ts = typescript_module();
        for code in ErrorCode::client_codes() {
            assert!(
                ts.contains(&format!("  | \"{code}\"")),
                "{code} not in the union"
            );
            assert!(
                ts.contains(&format!("  \"{code}\",")),
                "{code} not in the list"
            );
        }
    }
}
