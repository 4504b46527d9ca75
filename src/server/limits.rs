//! Request limits and input validation: everything is checked before anything is written.

use std::time::Duration;

use crate::event::MAX_SAFE_INTEGER;
use crate::protocol::{PushEvent, PushRequest, DEFAULT_PULL_LIMIT};
use crate::server::error::ApiError;

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
    /// Deepest nesting of arrays and objects in an event's `data` or `meta` (400 above),
    /// so that no reader of the log (a Rust `serde_json::Value`, an authority) meets a
    /// document it cannot parse without exhausting its stack.
    pub max_json_depth: usize,
    /// Long polls (pulls with `wait`) one token may hold at once (429 above).
    pub max_long_polls_per_token: usize,
    /// Long polls the server holds at once, over every token (503 above).
    pub max_long_polls: usize,
    /// Bytes of request bodies held in memory at once, over every request (503 above);
    /// at least `max_body_bytes`.
    pub max_buffered_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 * 1024 * 1024,
            // Also the client's default batch limit: any batch an app may append fits one push.
            max_events_per_push: crate::event::DEFAULT_MAX_BATCH,
            max_event_bytes: 1024 * 1024,
            max_name_bytes: crate::event::Limits::default().max_name_bytes,
            default_pull_limit: DEFAULT_PULL_LIMIT,
            max_pull_limit: 10_000,
            max_wait: Duration::from_secs(30),
            max_json_depth: 64,
            max_long_polls_per_token: 100,
            max_long_polls: 10_000,
            max_buffered_bytes: 256 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// Refuses limits the server cannot work with.
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("max_body_bytes", self.max_body_bytes),
            ("max_events_per_push", self.max_events_per_push),
            ("max_event_bytes", self.max_event_bytes),
            ("max_json_depth", self.max_json_depth),
            ("max_long_polls_per_token", self.max_long_polls_per_token),
            ("max_long_polls", self.max_long_polls),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("the limit {name} must be positive"));
        }
        if self.max_buffered_bytes < self.max_body_bytes {
            return Err(format!(
                "max_buffered_bytes ({}) must be at least max_body_bytes ({}), or no body of \
                 the largest allowed size could ever be read",
                self.max_buffered_bytes, self.max_body_bytes
            ));
        }
        Ok(())
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
    // UTF-8 checked once over the whole body: read from a `str`, serde_json checks no
    // string or raw value again (from bytes, it checks each one on its own).
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::BadRequest(format!("malformed push body: not UTF-8: {e}")))?;
    let request: PushRequest = serde_json::from_str(text)
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
        match event_problem(event, limits) {
            None => {}
            Some(EventProblem::TooLarge { size, limit }) => {
                return Err(ApiError::TooLarge(format!(
                    "event {i} is {size} bytes (stream + type + data + meta); the limit is {limit} bytes"
                )))
            }
            Some(EventProblem::Invalid(m)) => {
                return Err(ApiError::InvalidEvent(format!("event {i}: {m}")))
            }
        }
    }
    Ok(request)
}

/// Why one pushed event cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventProblem {
    /// stream + type + data + meta is over `max_event_bytes` (413 in a push).
    TooLarge { size: usize, limit: usize },
    /// A malformed field (400 in a push).
    Invalid(String),
}

/// The checks a push applies to each of its events, shared with `annals-server import`
/// (see [`crate::server::transfer`]) so that an imported event passes exactly what a
/// pushed one must.
pub fn event_problem(event: &PushEvent, limits: &Limits) -> Option<EventProblem> {
    let size = event.encoded_size();
    if size > limits.max_event_bytes {
        return Some(EventProblem::TooLarge {
            size,
            limit: limits.max_event_bytes,
        });
    }
    let check = || -> Result<(), String> {
        // The names an append accepts (crate::event::name_problem), and no more.
        for (field, value) in [("stream", &event.stream), ("type", &event.event_type)] {
            if let Some(problem) = crate::event::name_problem(field, value, limits.max_name_bytes) {
                return Err(problem);
            }
        }
        for (field, raw) in [("data", Some(&event.data)), ("meta", event.meta.as_ref())] {
            if let Some(raw) = raw {
                check_json(raw.get(), limits.max_json_depth)
                    .map_err(|problem| format!("`{field}` holds {problem}"))?;
            }
        }
        if let Some(meta) = &event.meta {
            if !meta.get().starts_with('{') {
                return Err(format!(
                    "`meta` must be an object, got {}",
                    truncate(meta.get(), 64)
                ));
            }
        }
        if event.time > MAX_SAFE_INTEGER {
            return Err(format!(
                "`time` must be at most {MAX_SAFE_INTEGER}, got {}",
                event.time
            ));
        }
        Ok(())
    };
    check().err().map(EventProblem::Invalid)
}

/// Checks a name a client gives (`clientId`, or an imported event's `origin`): non-empty,
/// at most `max_name_bytes`, no NUL.
pub fn check_client_name(field: &str, value: &str, limits: &Limits) -> Result<(), String> {
    check_name(field, value, limits)
}

/// Why the JSON text `json` (already known to be valid JSON) could not be read back by
/// every client: arrays and objects nested more than `max_depth` levels deep, a `\\u`
/// escape of an unpaired UTF-16 surrogate, or a number beyond the range of a double
/// (`serde_json::Value` refuses the last two, and would exhaust a small stack on the
/// first). One pass, no recursion: serde_json captures a `RawValue` without applying its
/// recursion limit, so this is where `data` and `meta` are bounded.
pub fn check_json(json: &str, max_depth: usize) -> Result<(), String> {
    let bytes = json.as_bytes();
    let hex4 = |at: usize| -> Option<u32> {
        let digits = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
        u32::from_str_radix(digits, 16).ok()
    };
    let mut depth = 0usize;
    let mut in_string = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if in_string {
            match b {
                b'"' => {
                    in_string = false;
                    i += 1;
                }
                b'\\' if bytes.get(i + 1) == Some(&b'u') => {
                    let unit = hex4(i + 2).unwrap_or(0);
                    if (0xD800..0xDC00).contains(&unit) {
                        let low = (bytes.get(i + 6..i + 8) == Some(b"\\u"))
                            .then(|| hex4(i + 8))
                            .flatten();
                        if !low.is_some_and(|l| (0xDC00..0xE000).contains(&l)) {
                            return Err(format!("an unpaired surrogate \\u{unit:04x}"));
                        }
                        i += 12;
                    } else if (0xDC00..0xE000).contains(&unit) {
                        return Err(format!("an unpaired surrogate \\u{unit:04x}"));
                    } else {
                        i += 6;
                    }
                }
                b'\\' => i += 2,
                _ => {
                    // Most of a string is plain text: skip to the next quote or escape
                    // in one tight loop rather than one trip through the match a byte.
                    i += 1 + bytes[i + 1..]
                        .iter()
                        .position(|&c| c == b'"' || c == b'\\')
                        .unwrap_or(bytes.len() - i - 1);
                }
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(format!(
                        "arrays and objects nested more than {max_depth} levels deep"
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let end = bytes[i..]
                    .iter()
                    .position(|c| !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                    .map_or(bytes.len(), |n| i + n);
                let number = &json[i..end];
                // Without an exponent, a number of at most 308 characters is below 1e308
                // and so finite: only the rare others are parsed.
                let surely_finite =
                    number.len() <= 308 && !number.bytes().any(|c| c == b'e' || c == b'E');
                if !surely_finite && !number.parse::<f64>().is_ok_and(f64::is_finite) {
                    return Err(format!(
                        "the number {} is beyond the range of a double",
                        truncate(number, 40)
                    ));
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
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
    fn json_is_checked_for_depth_surrogates_and_number_range() {
        let deep = |n: usize| check_json(&format!("{}{}", "[".repeat(n), "]".repeat(n)), 64);
        assert!(deep(64).is_ok());
        assert!(deep(65).is_err());
        assert!(deep(100_000).is_err());
        assert!(check_json("1", 0).is_ok());
        assert!(check_json("[]", 0).is_err());
        assert!(check_json(r#"[[1],{"a":[2]}]"#, 3).is_ok());
        assert!(check_json(r#"[[1],{"a":[[2]]}]"#, 3).is_err());
        // Brackets inside strings do not count, escaped quotes do not end them.
        assert!(check_json(r#"{"a":"[[[[{{{{\"[[["}"#, 1).is_ok());
        assert!(check_json(r#"{"a\\":[{}]}"#, 2).is_err());
        // Surrogates: pairs are fine, halves are not.
        assert!(check_json(r#""\ud83d\ude00 \u00e9 \u0000""#, 1).is_ok());
        for bad in [
            r#""\ud800""#,
            r#""\ud800x""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
        ] {
            assert!(check_json(bad, 1).is_err(), "{bad}");
        }
        assert!(check_json(r#"["\\ud800"]"#, 1).is_ok()); // an escaped backslash
                                                          // Numbers.
        for ok in [
            "0",
            "-0",
            "1.5e300",
            "-2E-400",
            "123456789012345678901234567890",
        ] {
            assert!(check_json(ok, 1).is_ok(), "{ok}");
        }
        // Long numbers without an exponent: parsed past 308 characters.
        assert!(check_json(&"9".repeat(308), 1).is_ok());
        assert!(check_json(&format!("-{}.5", "9".repeat(307)), 1).is_ok());
        assert!(check_json(&format!("[1{}]", "0".repeat(309)), 1).is_err());
        for bad in ["1e999", "[-1e400]", r#"{"a":2E+309}"#] {
            assert!(check_json(bad, 1).is_err(), "{bad}");
        }
        assert!(Limits::default().check().is_ok());
        assert!(Limits {
            max_buffered_bytes: 10,
            ..Limits::default()
        }
        .check()
        .is_err());
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
