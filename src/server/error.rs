//! Every way a request can fail, mapped to a status and a JSON body in one place:
//! `{ "error": { "code": "...", "message": "..." } }`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error_code::ErrorCode;
use crate::protocol::{ErrorBody, ErrorDetail};
use crate::server::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No `Authorization: Bearer <token>` header.
    #[error("missing bearer token: send `Authorization: Bearer <token>`")]
    MissingToken,
    /// A token this server does not know.
    #[error("unknown token")]
    UnknownToken,
    /// A known token that does not grant this store.
    #[error("this token does not grant {access} access to store `{store}`")]
    Forbidden { store: String, access: &'static str },
    /// Malformed request outside the events: bad JSON, store name, query parameter, ...
    #[error("{0}")]
    BadRequest(String),
    /// A malformed event (empty stream or type, meta not an object, ...).
    #[error("{0}")]
    InvalidEvent(String),
    /// A body, batch or event over its limit.
    #[error("{0}")]
    TooLarge(String),
    /// A path this server has no route for (under `/v1`: not a route of the protocol).
    #[error("{0}")]
    NotFound(String),
    /// A path under `/vN/` for a protocol version this server does not speak. The body
    /// also lists the versions it does speak (`error.versions`), so that a client can say
    /// which side to upgrade.
    #[error("{message}")]
    UnsupportedVersion {
        message: String,
        supported: Vec<u32>,
    },
    /// The token made too many requests, or holds too many long polls (429).
    #[error("{message}")]
    RateLimited { message: String, retry_after: u64 },
    /// The server is at one of its capacity limits (long polls, buffered bodies): nothing
    /// was done; retry after `retry_after` seconds (503).
    #[error("{message}")]
    Busy { message: String, retry_after: u64 },
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The database is unreachable or busy; nothing was written.
    #[error("the database is unavailable; retry later")]
    Unavailable(#[source] StoreError),
    /// A server bug or a damaged database; the details go to the log only.
    #[error("internal server error")]
    Internal(#[source] StoreError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingToken | ApiError::UnknownToken => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) | ApiError::InvalidEvent(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) | ApiError::UnsupportedVersion { .. } => StatusCode::NOT_FOUND,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code (matches the client's `AnnalsError.code` where
    /// one exists).
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }

    pub fn error_code(&self) -> ErrorCode {
        match self {
            ApiError::MissingToken | ApiError::UnknownToken => ErrorCode::Unauthorized,
            ApiError::Forbidden { .. } => ErrorCode::Forbidden,
            ApiError::BadRequest(_) => ErrorCode::InvalidRequest,
            ApiError::InvalidEvent(_) => ErrorCode::InvalidEvent,
            ApiError::TooLarge(_) => ErrorCode::TooLarge,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
            ApiError::Busy { .. } => ErrorCode::Busy,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            ApiError::Unavailable(e)
        } else {
            ApiError::Internal(e)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(e) => tracing::error!(error = %e, "request failed"),
            ApiError::Unavailable(e) => tracing::warn!(error = %e, "database unavailable"),
            _ => {}
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
            },
        };
        let mut response = match &self {
            // `{ error: { code, message, versions } }`: the extra field is ignored by
            // clients that do not know it.
            ApiError::UnsupportedVersion { supported, .. } => json_response(
                status,
                &serde_json::json!({ "error": {
                    "code": body.error.code,
                    "message": body.error.message,
                    "versions": supported,
                } }),
            ),
            _ => json_response(status, &body),
        };
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"annals\""),
            );
        }
        if let ApiError::RateLimited { retry_after, .. } | ApiError::Busy { retry_after, .. } =
            &self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        response
    }
}

/// A JSON answer with `status`.
pub fn json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not serialise a response");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                r#"{"error":{"code":"INTERNAL","message":"internal server error"}}"#,
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_code::ErrorLayer;

    #[test]
    fn every_api_error_answers_with_a_server_code() {
        let unavailable = || StoreError::Unavailable("down".into());
        let all = [
            ApiError::MissingToken,
            ApiError::UnknownToken,
            ApiError::Forbidden {
                store: "s".into(),
                access: "read",
            },
            ApiError::BadRequest(String::new()),
            ApiError::InvalidEvent(String::new()),
            ApiError::TooLarge(String::new()),
            ApiError::NotFound(String::new()),
            ApiError::UnsupportedVersion {
                message: String::new(),
                supported: vec![1],
            },
            ApiError::RateLimited {
                message: String::new(),
                retry_after: 1,
            },
            ApiError::Busy {
                message: String::new(),
                retry_after: 1,
            },
            ApiError::MethodNotAllowed,
            ApiError::Unavailable(unavailable()),
            ApiError::Internal(unavailable()),
        ];
        for e in &all {
            assert_ne!(e.error_code().layer(), ErrorLayer::Client, "{e:?}");
            assert_eq!(e.code(), e.error_code().as_str());
        }
    }
}
