//! The server's metrics, served at `GET /metrics` in the Prometheus text format (0.0.4).
//!
//! Built on `prometheus-client` (the Prometheus project's own Rust client): each server owns
//! its [`Registry`] instead of writing to a process-wide recorder, so that an app embedding
//! several servers, or a test process starting many, reads each one's figures alone.
//!
//! No label carries a store name, token or client id: the series stay few however many
//! stores there are, and nothing here identifies a user.
//!
//! ```text
//! annals_pushes_total                         push requests applied
//! annals_pulls_total                          pull requests answered (long polls included)
//! annals_pushed_events_total{result}          events pushed: ok | duplicate | rejected
//! annals_pulled_events_total                  events sent in pull answers
//! annals_long_polls_held                      long polls waiting now (gauge)
//! annals_request_body_held_bytes              request-body bytes held in memory now (gauge)
//! annals_http_requests_in_flight              requests being answered now (gauge)
//! annals_http_requests_total{route,status}    answered requests by route and status code
//! annals_http_request_duration_seconds{route} time to the answer's headers (histogram)
//! annals_database_errors_total{operation}     failed database calls: push | pull | health
//! annals_build_info{version}                  1, labelled with the server's version
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::server::throttle::Throttle;

/// Upper bounds of the latency buckets, in seconds: from a millisecond (a pull served from
/// the page cache) to a minute (the longest long poll is 30 s by default).
const LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// What a pushed event came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushOutcome {
    Ok,
    Duplicate,
    /// A version conflict, or an authority's refusal.
    Rejected,
}

/// The database call that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatabaseOperation {
    Push,
    Pull,
    Health,
}

/// A request's route, as a label: a fixed, small set (never the path itself, which names
/// stores).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Push,
    /// A pull without `wait`.
    Pull,
    /// A pull with `wait`: its latency is mostly the wait, so it is kept apart from pulls.
    LongPoll,
    Health,
    Metrics,
    /// Any other path: static files, unknown routes, other protocol versions.
    Other,
}

impl Route {
    /// Classifies a request by its path and query.
    pub fn of(path: &str, query: Option<&str>) -> Route {
        if let Some(rest) = path.strip_prefix("/v1/stores/") {
            let mut parts = rest.split('/');
            let (store, action, extra) = (parts.next(), parts.next(), parts.next());
            if store.is_some_and(|s| !s.is_empty()) && extra.is_none() {
                match action {
                    Some("push") => return Route::Push,
                    Some("pull") if waits(query) => return Route::LongPoll,
                    Some("pull") => return Route::Pull,
                    _ => {}
                }
            }
            return Route::Other;
        }
        match path {
            "/health" => Route::Health,
            "/metrics" => Route::Metrics,
            _ => Route::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Route::Push => "push",
            Route::Pull => "pull",
            Route::LongPoll => "long_poll",
            Route::Health => "health",
            Route::Metrics => "metrics",
            Route::Other => "other",
        }
    }
}

/// True when a pull's query asks to wait (`wait=` a positive number of seconds).
fn waits(query: Option<&str>) -> bool {
    query.unwrap_or("").split('&').any(|pair| {
        pair.strip_prefix("wait=")
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|seconds| seconds > 0.0)
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteStatusLabel {
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// One server's metrics.
pub struct Metrics {
    registry: Registry,
    pushes: Counter,
    pulls: Counter,
    pushed_events: Family<ResultLabel, Counter>,
    pulled_events: Counter,
    in_flight: Gauge,
    requests: Family<RouteStatusLabel, Counter>,
    durations: HistogramFamily<RouteLabel>,
    database_errors: Family<OperationLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The metrics of a server whose long polls and body budget `throttle` keeps.
    pub fn new(throttle: Arc<Throttle>) -> Metrics {
        let mut registry = Registry::with_prefix("annals");
        let pushes = Counter::default();
        let pulls = Counter::default();
        let pushed_events = Family::<ResultLabel, Counter>::default();
        let pulled_events = Counter::default();
        let in_flight = Gauge::default();
        let requests = Family::<RouteStatusLabel, Counter>::default();
        let durations: HistogramFamily<RouteLabel> =
            Family::new_with_constructor(latency_histogram);
        let database_errors = Family::<OperationLabel, Counter>::default();
        registry.register(
            "pushes",
            "Push requests applied (each in one database transaction)",
            pushes.clone(),
        );
        registry.register(
            "pulls",
            "Pull requests answered, long polls included",
            pulls.clone(),
        );
        registry.register(
            "pushed_events",
            "Events received in pushes, by result: ok (stored), duplicate (an id already \
             stored), rejected (a version conflict or an authority's refusal)",
            pushed_events.clone(),
        );
        registry.register(
            "pulled_events",
            "Events sent in pull answers",
            pulled_events.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "Requests being answered now",
            in_flight.clone(),
        );
        registry.register(
            "http_requests",
            "Answered requests by route and HTTP status code",
            requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to its answer's headers, by route",
            Unit::Seconds,
            durations.clone(),
        );
        registry.register(
            "database_errors",
            "Database calls that failed, by operation",
            database_errors.clone(),
        );
        registry.register(
            "build",
            "The server's version",
            Info::new(VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        registry.register_collector(Box::new(ThrottleGauges(throttle)));
        Metrics {
            registry,
            pushes,
            pulls,
            pushed_events,
            pulled_events,
            in_flight,
            requests,
            durations,
            database_errors,
        }
    }

    /// A push that reached the database, and what became of each of its events.
    pub fn pushed(&self, outcomes: impl IntoIterator<Item = PushOutcome>) {
        self.pushes.inc();
        let (mut ok, mut duplicate, mut rejected) = (0u64, 0u64, 0u64);
        for outcome in outcomes {
            match outcome {
                PushOutcome::Ok => ok += 1,
                PushOutcome::Duplicate => duplicate += 1,
                PushOutcome::Rejected => rejected += 1,
            }
        }
        for (result, count) in [("ok", ok), ("duplicate", duplicate), ("rejected", rejected)] {
            self.pushed_events
                .get_or_create(&ResultLabel { result })
                .inc_by(count);
        }
    }

    /// A pull answered with `events` events.
    pub fn pulled(&self, events: usize) {
        self.pulls.inc();
        self.pulled_events.inc_by(events as u64);
    }

    pub fn database_error(&self, operation: DatabaseOperation) {
        let operation = match operation {
            DatabaseOperation::Push => "push",
            DatabaseOperation::Pull => "pull",
            DatabaseOperation::Health => "health",
        };
        self.database_errors
            .get_or_create(&OperationLabel { operation })
            .inc();
    }

    /// Requests being answered now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    fn answered(&self, route: Route, status: StatusCode, took: Duration) {
        let route = route.label();
        self.requests
            .get_or_create(&RouteStatusLabel {
                route,
                status: status.as_u16(),
            })
            .inc();
        self.durations
            .get_or_create(&RouteLabel { route })
            .observe(took.as_secs_f64());
    }

    /// Everything, in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The gauges that the throttle already keeps exactly, read at each scrape.
#[derive(Debug)]
struct ThrottleGauges(Arc<Throttle>);

impl Collector for ThrottleGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauges = [
            (
                "long_polls_held",
                "Long polls (pulls with wait) waiting now",
                None,
                self.0.long_polls.running(),
            ),
            (
                "request_body_held",
                "Request-body bytes held in memory now, over every request",
                Some(Unit::Bytes),
                self.0.bodies.used(),
            ),
        ];
        for (name, help, unit, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            let help = format!("{help}.");
            let metric =
                encoder.encode_descriptor(name, &help, unit.as_ref(), gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// Counts a request in flight until it is answered or dropped (a client that hangs up).
struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a Gauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Middleware: counts every request by route and status, and times it.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = Route::of(request.uri().path(), request.uri().query());
    let started = Instant::now();
    let _in_flight = InFlight::enter(&metrics.in_flight);
    let response = next.run(request).await;
    metrics.answered(route, response.status(), started.elapsed());
    response
}

/// `GET /metrics`.
pub async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_a_fixed_set_that_never_names_a_store() {
        assert_eq!(Route::of("/v1/stores/todos/push", None), Route::Push);
        assert_eq!(
            Route::of("/v1/stores/todos/pull", Some("after=3")),
            Route::Pull
        );
        assert_eq!(
            Route::of("/v1/stores/todos/pull", Some("wait=0")),
            Route::Pull
        );
        assert_eq!(
            Route::of("/v1/stores/todos/pull", Some("after=3&wait=25")),
            Route::LongPoll
        );
        assert_eq!(Route::of("/v1/stores/todos/pull/x", None), Route::Other);
        assert_eq!(Route::of("/v1/stores//push", None), Route::Other);
        assert_eq!(Route::of("/v2/stores/todos/push", None), Route::Other);
        assert_eq!(Route::of("/health", None), Route::Health);
        assert_eq!(Route::of("/metrics", None), Route::Metrics);
        assert_eq!(Route::of("/index.html", None), Route::Other);
    }
}
