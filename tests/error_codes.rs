//! Error codes are defined once (`ErrorCode`); these tests fail when a layer or the
//! README's lists disagree with it.

use annals::{Error, ErrorCode, ErrorLayer, ExpectedVersion};
use std::collections::BTreeSet;

/// One error of every `Error` variant (the match below makes a new variant a compile
/// error here until it is listed).
fn every_core_error() -> Vec<Error> {
    let all = vec![
        Error::WrongExpectedVersion {
            stream: "s".into(),
            expected: ExpectedVersion::NoStream,
            actual: 1,
        },
        Error::DuplicateId {
            message: String::new(),
            event: String::new(),
            ids: Vec::new(),
        },
        Error::StreamDeleted(String::new()),
        Error::TooLarge(String::new()),
        Error::InvalidEvent(String::new()),
        Error::CommandRejected(String::new()),
        Error::InvalidArgument(String::new()),
        Error::QuotaExceeded(String::new()),
        Error::Closed,
        Error::FormatTooNew {
            found: 2,
            supported: 1,
        },
        Error::Corrupt(String::new()),
        Error::StoreMismatch(String::new()),
        Error::Storage(String::new()),
        Error::NotRetained {
            message: String::new(),
            dropped: 1,
        },
    ];
    for e in &all {
        match e {
            Error::WrongExpectedVersion { .. }
            | Error::DuplicateId { .. }
            | Error::StreamDeleted(_)
            | Error::TooLarge(_)
            | Error::InvalidEvent(_)
            | Error::CommandRejected(_)
            | Error::InvalidArgument(_)
            | Error::QuotaExceeded(_)
            | Error::Closed
            | Error::FormatTooNew { .. }
            | Error::Corrupt(_)
            | Error::StoreMismatch(_)
            | Error::Storage(_)
            | Error::NotRetained { .. } => {}
        }
    }
    all
}

/// The backticked codes of the README paragraph that starts at `marker`.
fn readme_codes(marker: &str) -> BTreeSet<String> {
    let readme = include_str!("../README.md");
    let start = readme
        .find(marker)
        .unwrap_or_else(|| panic!("README has no `{marker}`"));
    let paragraph = &readme[start..];
    let paragraph = &paragraph[..paragraph.find("\n\n").unwrap_or(paragraph.len())];
    paragraph
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| w.len() > 2 && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(str::to_owned)
        .collect()
}

fn names(codes: impl Iterator<Item = ErrorCode>) -> BTreeSet<String> {
    codes.map(|c| c.as_str().to_owned()).collect()
}

#[test]
fn every_core_error_has_a_client_code() {
    for e in every_core_error() {
        let code = e.error_code();
        assert_eq!(e.code(), code.as_str());
        assert_ne!(
            code.layer(),
            ErrorLayer::Server,
            "{e:?} has a server-only code"
        );
    }
}

#[test]
fn the_readme_lists_exactly_the_client_codes() {
    assert_eq!(
        readme_codes("are `AnnalsError` with a `code`:"),
        names(ErrorCode::client_codes()),
        "README's TypeScript error list vs ErrorCode (src/error_code.rs)"
    );
}

#[test]
fn the_readme_lists_exactly_the_server_codes() {
    assert_eq!(
        readme_codes("Their codes:"),
        names(ErrorCode::server_codes()),
        "README's server error list vs ErrorCode (src/error_code.rs)"
    );
}
