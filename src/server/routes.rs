//! The HTTP handlers: `POST /v1/stores/{store}/push`, `GET /v1/stores/{store}/pull`,
//! `GET /health`, and the JSON fallbacks.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use futures::StreamExt;
use tokio::sync::watch;

use crate::protocol::{PushResult, PROTOCOL_VERSION};
use crate::server::auth::{Access, Auth};
use crate::server::error::{json_response, ApiError};
use crate::server::limits::{check_store_name, parse_pull_query, parse_push, Limits};
use crate::server::metrics::{DatabaseOperation, Metrics, PushOutcome};
use crate::server::store::ServerStore;
use crate::server::throttle::{Reservation, Throttle};

/// How often a long poll re-reads even without a wake-up: a safety net for a lost
/// notification (another process on the same SQLite file, a LISTEN reconnect race).
const RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn ServerStore>,
    pub auth: Arc<Auth>,
    pub limits: Arc<Limits>,
    /// The rate limit, the long-poll caps and the body budget.
    pub throttle: Arc<Throttle>,
    /// Turns true when the server is shutting down: long polls answer at once.
    pub shutdown: watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
}

fn store_name(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(name) = path.map_err(|e| ApiError::BadRequest(format!("bad store name: {e}")))?;
    check_store_name(&name)?;
    Ok(name)
}

pub async fn push(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Authenticate (and count the request against the token's rate) before reading the
    // body.
    let (token, grant) = state.auth.authenticate(&headers)?;
    state.throttle.admit(token)?;
    let store = store_name(path)?;
    grant.require(&store, Access::Write)?;

    // The body's bytes stay counted against the server's body budget until the push is
    // done (the parsed events are about as large).
    let mut reservation = state.throttle.bodies.reserve();
    let bytes = read_body(
        &headers,
        body,
        state.limits.max_body_bytes,
        &mut reservation,
    )
    .await?;
    let request = parse_push(&bytes, &state.limits)?;
    drop(bytes);
    let count = request.events.len();
    let client_id = request.client_id;

    // Run the transaction in its own task: a client that hangs up mid-push must not cancel
    // a commit halfway through its bookkeeping (nor its counting in the metrics).
    let backend = Arc::clone(&state.store);
    let metrics = Arc::clone(&state.metrics);
    let task_store = store.clone();
    let task_client = client_id.clone();
    let response = tokio::spawn(async move {
        let response = backend
            .push(&task_store, &task_client, request.events)
            .await;
        drop(reservation);
        match &response {
            Ok(answer) => metrics.pushed(answer.results.iter().map(|r| match r {
                PushResult::Ok { .. } => PushOutcome::Ok,
                PushResult::Duplicate { .. } => PushOutcome::Duplicate,
                PushResult::Rejected { .. } => PushOutcome::Rejected,
            })),
            Err(_) => metrics.database_error(DatabaseOperation::Push),
        }
        response
    })
    .await
    .map_err(|e| ApiError::Internal(crate::server::store::StoreError::Task(e.to_string())))??;

    let (mut ok, mut duplicate, mut rejected) = (0usize, 0usize, 0usize);
    for r in &response.results {
        match r {
            PushResult::Ok { .. } => ok += 1,
            PushResult::Duplicate { .. } => duplicate += 1,
            PushResult::Rejected { .. } => rejected += 1,
        }
    }
    tracing::info!(
        store = %store,
        client = %client_id,
        events = count,
        ok,
        duplicate,
        rejected,
        head = response.head,
        "push"
    );
    Ok(json_response(StatusCode::OK, &response))
}

/// Past the limit, up to this many more bytes of a body are read and discarded before
/// the 413 is sent, so that an ordinary client (which writes its whole body before it
/// reads the answer) sees the 413 rather than a reset connection. Beyond it, the
/// connection is simply closed.
const DRAIN_CAP: u64 = 64 * 1024 * 1024;
/// Longest time spent draining a refused body.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the body up to `max` bytes: 413 beyond (checked on `Content-Length` first, then
/// while streaming, so an oversized body is never buffered). Every byte held is first
/// reserved from the server's body budget: 503 when it is spent.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    reservation: &mut Reservation,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || ApiError::TooLarge(format!("the request body is over {max} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    if let Some(len) = declared {
        if len > max as u64 {
            if len <= DRAIN_CAP {
                drain(&mut stream, 0).await;
            }
            return Err(too_large());
        }
    }
    let initial = declared.map_or(8 * 1024, |n| n as usize);
    if let Err(busy) = reservation.grow_to(initial) {
        drain(&mut stream, 0).await;
        return Err(busy);
    }
    let mut out = Vec::with_capacity(initial);
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("could not read the body: {e}")))?;
        let needed = out.len() + chunk.len();
        let refused = if needed > max {
            Some(too_large())
        } else {
            reservation.grow_to(needed).err()
        };
        if let Some(error) = refused {
            drop(out);
            drain(&mut stream, needed as u64).await;
            return Err(error);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Reads and discards the rest of a refused body (bounded by [`DRAIN_CAP`] and
/// [`DRAIN_TIME`]).
async fn drain(stream: &mut axum::body::BodyDataStream, mut seen: u64) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len() as u64;
            if seen > DRAIN_CAP {
                break;
            }
        }
    })
    .await;
}

pub async fn pull(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    // A long poll counts once against the rate limit, however long it waits.
    let (token, grant) = state.auth.authenticate(&headers)?;
    state.throttle.admit(token)?;
    let store = store_name(path)?;
    grant.require(&store, Access::Read)?;
    let params = parse_pull_query(query.as_deref(), &state.limits)?;
    // Held while this pull may wait, released however it ends (also on a hang-up).
    let _slot = if params.wait.is_zero() {
        None
    } else {
        Some(state.throttle.long_polls.enter(token)?)
    };

    // Subscribe before the first read, so that a commit between the read and the wait
    // still wakes us.
    let mut changes = state.store.changes().subscribe(&store);
    let mut shutdown = state.shutdown.clone();
    let deadline = tokio::time::Instant::now() + params.wait;
    loop {
        let response = state
            .store
            .pull(&store, params.after, params.limit)
            .await
            .inspect_err(|_| state.metrics.database_error(DatabaseOperation::Pull))?;
        let now = tokio::time::Instant::now();
        // Answer with events; when not waiting; when the client is past the head (a new
        // epoch: it must notice now); at the deadline; when shutting down.
        if !response.events.is_empty()
            || params.after > response.head
            || now >= deadline
            || *shutdown.borrow()
        {
            state.metrics.pulled(response.events.len());
            return Ok(json_response(StatusCode::OK, &response));
        }
        let wake = deadline.min(now + RECHECK);
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    changes = state.store.changes().subscribe(&store);
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
            _ = shutdown.changed() => {}
        }
    }
}

pub async fn health(State(state): State<AppState>) -> Response {
    let backend = state.store.backend();
    match state.store.health().await {
        Ok(()) => json_response(
            StatusCode::OK,
            &serde_json::json!({
                "status": "ok",
                "backend": backend,
                "version": env!("CARGO_PKG_VERSION"),
            }),
        ),
        Err(e) => {
            state.metrics.database_error(DatabaseOperation::Health);
            tracing::warn!(error = %e, "health check failed");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({ "status": "unavailable", "backend": backend }),
            )
        }
    }
}

/// Outside `/v1`: neither a route nor (without `--www`) a file.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

/// Under `/v1` but not a route of the protocol.
pub async fn not_found_v1(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {method} {}: protocol v{PROTOCOL_VERSION} has POST \
         /v{PROTOCOL_VERSION}/stores/{{store}}/push and GET /v{PROTOCOL_VERSION}/stores/{{store}}/pull",
        uri.path()
    ))
}

/// The protocol version a path asks for, when its first segment is `v<digits>`.
pub fn requested_version(path: &str) -> Option<&str> {
    let first = path.strip_prefix('/')?.split('/').next()?;
    let digits = first.strip_prefix('v')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

/// The sync protocol versions a server answers (see [`crate::server::ServerConfig::protocol_versions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolVersions {
    versions: Vec<u32>,
    /// The `Annals-Protocol` header's value: `1` or `1, 2`.
    header: HeaderValue,
}

/// The header every answer carries: the protocol versions the server speaks.
pub const PROTOCOL_HEADER: &str = "annals-protocol";

impl ProtocolVersions {
    /// Sorted and without repeats; refuses an empty list and version 0.
    pub fn new(versions: &[u32]) -> Result<ProtocolVersions, String> {
        let mut versions = versions.to_vec();
        versions.sort_unstable();
        versions.dedup();
        if versions.is_empty() || versions.contains(&0) {
            return Err(format!(
                "the protocol versions must be whole numbers from 1 (this build speaks v{PROTOCOL_VERSION}); got {versions:?}"
            ));
        }
        let text = versions
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let header = HeaderValue::from_str(&text).map_err(|e| e.to_string())?;
        Ok(ProtocolVersions { versions, header })
    }

    pub fn versions(&self) -> &[u32] {
        &self.versions
    }

    fn speaks(&self, version: &str) -> bool {
        // `v01` is not `v1`: only the canonical spelling names a version.
        version
            .parse::<u32>()
            .is_ok_and(|v| v.to_string() == version && self.versions.contains(&v))
    }

    fn list(&self) -> String {
        self.versions
            .iter()
            .map(|v| format!("v{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `GET /versions`: `{ "protocol": [1], "server": "<crate version>" }`, without a token, so
/// that a client (or an operator) can tell what this server speaks before syncing.
pub async fn versions(State(versions): State<std::sync::Arc<ProtocolVersions>>) -> Response {
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "protocol": versions.versions(),
            "server": env!("CARGO_PKG_VERSION"),
        }),
    )
}

/// Answers paths of protocol versions this server does not speak (`/v2/...`, `/v0`) with a
/// JSON 404 (`UNSUPPORTED_VERSION`, which clients report as `UPGRADE_REQUIRED`) that names
/// the versions it speaks, before any handler or the static files could answer them, so
/// that a client outside them writes nothing; `/v1` itself (no route) lists v1's routes.
/// Every answer that passes here carries the `Annals-Protocol` header.
pub async fn other_versions(
    State(versions): State<std::sync::Arc<ProtocolVersions>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let mut response = match requested_version(path) {
        Some(version) if !versions.speaks(version) => {
            axum::response::IntoResponse::into_response(ApiError::UnsupportedVersion {
                message: format!(
                    "protocol version v{version} is not supported: this server speaks {} \
                     (/v{newest}/stores/{{store}}/push, /v{newest}/stores/{{store}}/pull); \
                     {path} has no route",
                    versions.list(),
                    newest = versions
                        .versions()
                        .last()
                        .copied()
                        .unwrap_or(PROTOCOL_VERSION),
                ),
                supported: versions.versions().to_vec(),
            })
        }
        // `/v1` and `/v1/` themselves are no route either (nor a static file).
        Some(version) if path.trim_end_matches('/') == format!("/v{version}") => {
            let method = request.method().clone();
            let uri = request.uri().clone();
            axum::response::IntoResponse::into_response(not_found_v1(method, uri).await)
        }
        _ => next.run(request).await,
    };
    response
        .headers_mut()
        .insert(PROTOCOL_HEADER, versions.header.clone());
    response
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Used by the request log: the store a path names, if any.
pub fn store_of_path(path: &str) -> &str {
    path.strip_prefix("/v1/stores/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("")
}

/// `GET /metrics` on the API's address (see [`crate::server::metrics`]).
pub async fn metrics(State(state): State<AppState>) -> Response {
    crate::server::metrics::serve_metrics(State(state.metrics)).await
}
