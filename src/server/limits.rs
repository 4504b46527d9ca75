//! Request limits and input validation: everything is checked before anything is written.

use std::time::Duration;

use crate::event::MAX_SAFE_INTEGER;
use crate::server::error::ApiError;
use crate::sync::protocol::{PushRequest, DEFAULT_PULL_LIMIT};

/// Bounds on what one request may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Request body, in bytes (413 above).
    pub max_body_bytes: usize,
    /// Events in one push (413 above).
    pub max_events_per_push: usize,
    /// One event's stream + type + data + meta, in bytes (413 above).
    pub max_event_bytes: usize,
    /// Length of `stream`, `type` and `clientId`, in bytes (400 above).
    pub max_name_bytes: usize,
    /// Events one pull returns when `limit` is absent.
    pub default_pull_limit: usize,
    /// Largest `limit` honoured; larger ones are clamped (the answer says `more`).
    pub max_pull_limit: usize,
    /// Longest long poll; larger `wait`s are clamped.
    pub max_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 * 1024 * 1024,
            max_events_per_push: 1_000,
            max_event_bytes: 1024 * 1024,
            max_name_bytes: crate::event::Limits::default().max_name_bytes,
            default_pull_limit: DEFAULT_PULL_LIMIT,
            max_pull_limit: 10_000,
            max_wait: Duration::from_secs(30),
        }
    }
}

/// Longest store name.
pub const MAX_STORE_NAME: usize = 128;

/// Store names are 1 to 128 of `A-Z a-z 0-9 . _ -`, and not `.` or `..`.
pub fn is_valid_store_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_STORE_NAME
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub fn check_store_name(name: &str) -> Result<(), ApiError> {
    if is_valid_store_name(name) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "store names are 1 to {MAX_STORE_NAME} of A-Z a-z 0-9 . _ -; got {:?}",
            truncate(name, 140)
        )))
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Parses and validates a push body. Never writes anything; every error is 400 or 413.
pub fn parse_push(body: &[u8], limits: &Limits) -> Result<PushRequest, ApiError> {
    let request: PushRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("malformed push body: {e}")))?;
    check_name("clientId", &request.client_id, limits)
        .map_err(|m| ApiError::BadRequest(m.to_string()))?;
    if request.events.len() > limits.max_events_per_push {
        return Err(ApiError::TooLarge(format!(
            "a push carries at most {} events; this one has {}",
            limits.max_events_per_push,
            request.events.len()
        )));
    }
    for (i, event) in request.events.iter().enumerate() {
        let size = event.encoded_size();
        if size > limits.max_event_bytes {
            return Err(ApiError::TooLarge(format!(
                "event {i} is {size} bytes (stream + type + data + meta); the limit is {} bytes",
                limits.max_event_bytes
            )));
        }
        let invalid = |m: String| ApiError::InvalidEvent(format!("event {i}: {m}"));
        check_name("stream", &event.stream, limits).map_err(invalid)?;
        check_name("type", &event.event_type, limits).map_err(invalid)?;
        if let Some(meta) = &event.meta {
            if !meta.get().starts_with('{') {
                return Err(invalid(format!(
                    "`meta` must be an object, got {}",
                    truncate(meta.get(), 64)
                )));
            }
        }
        if event.time > MAX_SAFE_INTEGER {
            return Err(invalid(format!(
                "`time` must be at most {MAX_SAFE_INTEGER}, got {}",
                event.time
            )));
        }
    }
    Ok(request)
}

fn check_name(field: &str, value: &str, limits: &Limits) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("`{field}` must be a non-empty string"));
    }
    if value.len() > limits.max_name_bytes {
        return Err(format!(
            "`{field}` is {} bytes long; the limit is {} bytes",
            value.len(),
            limits.max_name_bytes
        ));
    }
    if value.contains('\0') {
        return Err(format!("`{field}` must not contain NUL characters"));
    }
    Ok(())
}

/// The query of a pull: `after` (default 0), `limit`, `wait` (seconds, decimals allowed).
#[derive(Debug, Clone, PartialEq)]
pub struct PullParams {
    pub after: u64,
    pub limit: usize,
    pub wait: Duration,
}

pub fn parse_pull_query(query: Option<&str>, limits: &Limits) -> Result<PullParams, ApiError> {
    let mut params = PullParams {
        after: 0,
        limit: limits.default_pull_limit,
        wait: Duration::ZERO,
    };
    let bad = |name: &str, value: &str, what: &str| {
        ApiError::BadRequest(format!(
            "query parameter `{name}` must be {what}, got {:?}",
            truncate(value, 64)
        ))
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "after" => {
                params.after = value
                    .parse::<u64>()
                    .ok()
                    .filter(|v| *v <= MAX_SAFE_INTEGER)
                    .ok_or_else(|| bad(name, value, "a non-negative integer"))?;
            }
            "limit" => {
                let limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|v| *v >= 1)
                    .ok_or_else(|| bad(name, value, "a positive integer"))?;
                params.limit = limit.min(limits.max_pull_limit);
            }
            "wait" => {
                let seconds = value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| bad(name, value, "a non-negative number of seconds"))?;
                params.wait = Duration::from_secs_f64(seconds.min(limits.max_wait.as_secs_f64()));
            }
            // Unknown parameters (cache busters and the like) are ignored.
            _ => {}
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_limits() {
        let l = Limits::default();
        assert_eq!(l.max_body_bytes, 4_194_304);
        assert_eq!(l.max_events_per_push, 1_000);
        assert_eq!(l.max_event_bytes, 1_048_576);
    }

    #[test]
    fn store_names() {
        for ok in ["a", "store-a", "Todos_1.v2", &"x".repeat(128)] {
            assert!(is_valid_store_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(129), "a%2Fb"] {
            assert!(!is_valid_store_name(bad), "{bad}");
        }
    }

    #[test]
    fn pull_queries() {
        let l = Limits::default();
        let p = parse_pull_query(Some("after=5&limit=20000&wait=99&_=1"), &l).unwrap();
        assert_eq!(p.after, 5);
        assert_eq!(p.limit, 10_000);
        assert_eq!(p.wait, Duration::from_secs(30));
        let p = parse_pull_query(None, &l).unwrap();
        assert_eq!((p.after, p.limit, p.wait), (0, 1000, Duration::ZERO));
        assert_eq!(
            parse_pull_query(Some("wait=0.25"), &l).unwrap().wait,
            Duration::from_millis(250)
        );
        for bad in [
            "after=-1",
            "after=x",
            "after=",
            "limit=0",
            "limit=-3",
            "wait=-1",
            "wait=NaN",
            "wait=inf",
            "after=1e3",
        ] {
            assert!(parse_pull_query(Some(bad), &l).is_err(), "{bad}");
        }
    }

    #[test]
    fn push_bodies() {
        let l = Limits {
            max_events_per_push: 2,
            max_event_bytes: 40,
            ..Limits::default()
        };
        let ev = |stream: &str, extra: &str| {
            format!(
                r#"{{"id":"0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f70","stream":"{stream}","type":"T","data":1,"time":1{extra}}}"#
            )
        };
        let body =
            |events: &[String]| format!(r#"{{"clientId":"c","events":[{}]}}"#, events.join(","));
        assert!(parse_push(body(&[ev("s", "")]).as_bytes(), &l).is_ok());
        let status = |b: String| parse_push(b.as_bytes(), &l).unwrap_err().status().as_u16();
        assert_eq!(status(body(&[ev("s", ""), ev("s", ""), ev("s", "")])), 413);
        assert_eq!(status(body(&[ev(&"s".repeat(40), "")])), 413);
        assert_eq!(status(body(&[ev(" ", "")])), 400);
        assert_eq!(status(body(&[ev("s", r#","meta":[1]"#)])), 400);
        assert_eq!(status(body(&[ev("s", r#","time":-1"#)])), 400);
        assert_eq!(
            status(body(&[ev("s", r#","expectedVersion":"soon""#)])),
            400
        );
        assert_eq!(status(r#"{"clientId":"","events":[]}"#.into()), 400);
        assert_eq!(status(r#"{"clientId":"c"}"#.into()), 400);
        assert_eq!(status("not json".into()), 400);
    }
}
