//! Sync with tokens that expire, and answers that say what to fix: a refused token stops
//! the live loop until new credentials come (no request with the same token in between),
//! then sync resumes by itself; each failure is classified (online or not, which code).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use annals::protocol::{PullResponse, PushRequest, PushResponse};
use annals::sync::client::{
    Credentials, SyncClient, SyncOptions, SyncStatus, Timer, Transport, TransportError,
};
use annals::testing::in_process::InProcessTransport;
use annals::testing::memory_server::MemoryServer;
use annals::{Engine, EngineOptions, MemoryStorage, NewEvent};
use futures::executor::{block_on, LocalPool};
use futures::task::LocalSpawnExt;
use serde_json::json;

/// A server that accepts one token (and requires a header), in process. A live pull with
/// nothing new is held until the loop drops it, as a long poll is.
struct Gate {
    server: InProcessTransport,
    head: Rc<MemoryServer>,
    accepted: RefCell<String>,
    credentials: RefCell<Credentials>,
    requests: Cell<usize>,
    /// The credentials each request carried.
    seen: RefCell<Vec<Credentials>>,
}

impl Gate {
    fn new(server: &Rc<MemoryServer>, accepted: &str, token: &str) -> Self {
        Gate {
            server: InProcessTransport::new(server.clone(), "todos"),
            head: server.clone(),
            accepted: RefCell::new(accepted.to_owned()),
            credentials: RefCell::new(Credentials::bearer(token)),
            requests: Cell::new(0),
            seen: RefCell::new(Vec::new()),
        }
    }

    fn check(&self) -> Result<(), TransportError> {
        self.requests.set(self.requests.get() + 1);
        let credentials = self.credentials.borrow().clone();
        self.seen.borrow_mut().push(credentials.clone());
        if credentials.token == *self.accepted.borrow() {
            Ok(())
        } else {
            Err(TransportError::Unauthorized("the token is unknown".into()))
        }
    }
}

impl Transport for Gate {
    async fn push(&self, request: &PushRequest) -> Result<PushResponse, TransportError> {
        self.check()?;
        self.server.push(request).await
    }

    async fn pull(
        &self,
        after: u64,
        limit: usize,
        wait_seconds: u32,
    ) -> Result<PullResponse, TransportError> {
        self.check()?;
        if wait_seconds > 0 && self.head.head("todos") <= after {
            futures::future::pending::<()>().await;
        }
        self.server.pull(after, limit, wait_seconds).await
    }
}

/// Backoff waits never end in these tests: a retry happens only when something wakes the loop.
struct Never;
impl Timer for Never {
    async fn sleep(&self, _ms: u64) {
        futures::future::pending::<()>().await;
    }
}

fn synced_engine() -> Rc<Engine<MemoryStorage>> {
    let options = EngineOptions {
        synced: true,
        ..EngineOptions::default()
    };
    Rc::new(block_on(Engine::open(MemoryStorage::new(), options)).unwrap())
}

fn append(engine: &Engine<MemoryStorage>, n: usize) {
    let events = (0..n)
        .map(|i| NewEvent::new("todo-1", "Noted", &json!(i)).unwrap())
        .collect();
    block_on(engine.append(events)).unwrap();
}

/// The client, its loop spawned on `pool`, and every status it reported.
fn live(
    pool: &LocalPool,
    engine: &Rc<Engine<MemoryStorage>>,
    transport: Gate,
) -> (Rc<SyncClient<Gate>>, Rc<RefCell<Vec<SyncStatus>>>) {
    let client = Rc::new(SyncClient::new(transport, SyncOptions::default()));
    let statuses = Rc::new(RefCell::new(Vec::new()));
    let heard = statuses.clone();
    client.on_status(move |s| heard.borrow_mut().push(s.clone()));
    let (looping, engine) = (client.clone(), engine.clone());
    pool.spawner()
        .spawn_local(async move { looping.run(&engine, &Never, || 0.5).await })
        .unwrap();
    (client, statuses)
}

#[test]
fn a_refused_token_waits_for_new_credentials_and_sync_resumes_with_them() {
    let server = Rc::new(MemoryServer::new());
    let engine = synced_engine();
    append(&engine, 3);
    let mut pool = LocalPool::new();
    let (client, statuses) = live(&pool, &engine, Gate::new(&server, "good", "expired"));
    pool.run_until_stalled();

    let status = client.status();
    assert_eq!(status.last_error_code.as_deref(), Some("UNAUTHORIZED"));
    assert!(status.online, "the server answered: the network is fine");
    assert_eq!(status.auth_failures, 1);
    assert_eq!(engine.pending_count(), 3);
    assert_eq!(client.transport().requests.get(), 1, "one refused pull");

    // New appends wake the loop, but the same token is not sent again.
    append(&engine, 1);
    client.wake();
    pool.run_until_stalled();
    assert_eq!(
        client.transport().requests.get(),
        1,
        "no retry with the refused token"
    );

    // A token that is refused too: one more request, and one more refusal heard.
    *client.transport().credentials.borrow_mut() = Credentials::bearer("still-wrong");
    client.credentials_changed();
    pool.run_until_stalled();
    assert_eq!(client.transport().requests.get(), 2);
    assert_eq!(client.status().auth_failures, 2);
    let refusals = statuses
        .borrow()
        .iter()
        .filter(|s| s.last_error_code.as_deref() == Some("UNAUTHORIZED"))
        .map(|s| s.auth_failures)
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(
        refusals.into_iter().collect::<Vec<_>>(),
        [1, 2],
        "each refusal is a status change"
    );

    // A good token with a header: everything goes out, the error clears, the loop is live.
    client.transport().set_good(Credentials {
        token: "good".into(),
        headers: vec![("x-tenant".into(), "acme".into())],
    });
    client.credentials_changed();
    pool.run_until_stalled();
    assert_eq!(server.head("todos"), 4);
    assert_eq!(engine.pending_count(), 0);
    let status = client.status();
    assert_eq!(status.last_error_code, None);
    assert_eq!(status.auth_failures, 0);
    assert!(status.online);
    let last = client.transport().seen.borrow().last().cloned().unwrap();
    assert_eq!(last.headers, [("x-tenant".to_owned(), "acme".to_owned())]);

    // The token expires while the loop holds a long poll: the next request is refused, and
    // a new token resumes it again.
    client.transport().accepted.replace("rotated".into());
    append(&engine, 1);
    client.wake();
    pool.run_until_stalled();
    assert_eq!(
        client.status().last_error_code.as_deref(),
        Some("UNAUTHORIZED")
    );
    assert_eq!(engine.pending_count(), 1);
    let before = client.transport().requests.get();
    pool.run_until_stalled();
    assert_eq!(client.transport().requests.get(), before, "no hot loop");
    client.transport().set_good(Credentials::bearer("rotated"));
    client.credentials_changed();
    pool.run_until_stalled();
    assert_eq!(engine.pending_count(), 0);
    assert_eq!(server.head("todos"), 5);
    assert_eq!(client.status().last_error_code, None);

    client.stop();
    pool.run_until_stalled();
}

impl Gate {
    fn set_good(&self, credentials: Credentials) {
        *self.credentials.borrow_mut() = credentials;
    }
}

/// A transport that fails every request with one error.
struct Failing(TransportError);

impl Transport for Failing {
    async fn push(&self, _: &PushRequest) -> Result<PushResponse, TransportError> {
        Err(self.0.clone())
    }
    async fn pull(&self, _: u64, _: usize, _: u32) -> Result<PullResponse, TransportError> {
        Err(self.0.clone())
    }
}

fn status_after(error: TransportError) -> SyncStatus {
    let engine = synced_engine();
    let client = SyncClient::new(Failing(error), SyncOptions::default());
    // A first success would set `online`; start from an unknown state instead.
    let _ = block_on(client.sync(&engine));
    client.status()
}

#[test]
fn the_status_tells_a_refused_token_from_no_network_and_from_setup_mistakes() {
    let unauthorized = status_after(TransportError::Unauthorized("unknown token".into()));
    assert!(unauthorized.online, "an answer means the network is up");
    assert_eq!(
        unauthorized.last_error_code.as_deref(),
        Some("UNAUTHORIZED")
    );
    assert_eq!(unauthorized.auth_failures, 1);

    let forbidden = status_after(TransportError::Forbidden("not this store".into()));
    assert!(forbidden.online);
    assert_eq!(forbidden.last_error_code.as_deref(), Some("FORBIDDEN"));

    let offline = status_after(TransportError::platform_offline());
    assert!(!offline.online);
    assert_eq!(offline.last_error_code.as_deref(), Some("OFFLINE"));
    assert!(offline
        .last_error
        .unwrap()
        .contains("this device is offline (navigator.onLine is false)"));

    let down = status_after(TransportError::server_down(
        "http://127.0.0.1:9",
        "connection refused",
    ));
    assert!(!down.online);
    assert_eq!(down.last_error_code.as_deref(), Some("OFFLINE"));
    assert_eq!(
        down.last_error.unwrap(),
        "the sync server is unreachable: nothing answers at http://127.0.0.1:9 (connection \
         refused) although the network is up: start annals-server (--listen sets its address) \
         or fix sync.url; sync retries by itself"
    );

    let cors = status_after(TransportError::CorsRefused {
        url: "http://127.0.0.1:8080".into(),
        origin: "http://localhost:5173".into(),
    });
    assert!(cors.online);
    assert_eq!(cors.last_error_code.as_deref(), Some("CORS_REFUSED"));
    assert_eq!(cors.auth_failures, 0);
}

#[test]
fn answers_that_are_not_from_an_annals_server_say_what_sync_url_should_be() {
    let base = "http://localhost:5173";
    let html = "<!doctype html><html><script type=\"module\" src=\"/@vite/client\"></script>";
    let err = TransportError::check_answer(base, 200, Some("text/html"), html).unwrap_err();
    assert_eq!(err.code(), "NOT_SYNC_SERVER");
    assert_eq!(
        err.to_string(),
        "http://localhost:5173 is not an annals sync server (it answered HTML); sync.url should \
         be the annals-server address, e.g. http://127.0.0.1:8080"
    );
    // HTML without a content type, and a 404 page.
    let err = TransportError::check_answer(base, 404, None, "\n<html>").unwrap_err();
    assert!(err.to_string().contains("(it answered HTML)"), "{err}");
    // Plain text from something else.
    let err = TransportError::check_answer(base, 200, Some("text/plain"), "ok").unwrap_err();
    assert!(
        err.to_string().contains("(it answered 200 text/plain)"),
        "{err}"
    );
    // The annals server's JSON 404 for a path without sync routes (sync.url has a path).
    let body = r#"{"error":{"code":"NOT_FOUND","message":"no route for GET /api/v1/..."}}"#;
    let err = TransportError::check_answer(base, 404, Some("application/json"), body);
    assert_eq!(err.unwrap_err().code(), "NOT_SYNC_SERVER");

    // A server of another protocol version.
    let body = r#"{"error":{"code":"UNSUPPORTED_VERSION","message":"this server speaks v2 only"}}"#;
    let err = TransportError::check_answer(base, 404, Some("application/json"), body).unwrap_err();
    assert_eq!(err.code(), "UPGRADE_REQUIRED");
    assert_eq!(
        err.to_string(),
        "the sync server at http://localhost:5173 does not speak protocol v1 (this server \
         speaks v2 only): upgrade annals-server and the annals package to the same release"
    );

    // Refusals keep their meaning whatever the body is (a proxy may answer them).
    assert_eq!(
        TransportError::check_answer(base, 401, Some("text/html"), "<h1>401</h1>")
            .unwrap_err()
            .code(),
        "UNAUTHORIZED"
    );
    assert_eq!(
        TransportError::check_answer(base, 502, Some("text/html"), "<h1>Bad gateway</h1>")
            .unwrap_err()
            .code(),
        "SERVER"
    );
    // The protocol's own answers pass.
    let ok = TransportError::check_answer(base, 200, Some("application/json; charset=utf-8"), "{}");
    assert_eq!(ok, Ok("{}"));
    let refused = r#"{"error":{"code":"TOO_LARGE","message":"over 4 MiB"}}"#;
    let err = TransportError::check_answer(base, 413, Some("application/json"), refused);
    assert_eq!(err.unwrap_err().code(), "REFUSED");
}

#[test]
fn going_offline_says_so_in_the_status_until_a_sync_succeeds() {
    let server = Rc::new(MemoryServer::new());
    let engine = synced_engine();
    let client = SyncClient::new(Gate::new(&server, "t", "t"), SyncOptions::default());
    client.set_online(false);
    let status = client.status();
    assert!(!status.online);
    assert_eq!(status.last_error_code.as_deref(), Some("OFFLINE"));
    assert!(status
        .last_error
        .unwrap()
        .contains("this device is offline"));
    client.set_online(true);
    block_on(client.sync(&engine)).unwrap();
    let status = client.status();
    assert!(status.online);
    assert_eq!(status.last_error, None);
}

/// The native transport tells the same cases apart over real sockets.
#[cfg(all(feature = "http-client", not(target_arch = "wasm32")))]
mod native_http {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use annals::sync::client::Transport;
    use annals::sync::http::HttpTransport;

    #[tokio::test(flavor = "current_thread")]
    async fn nothing_listening_and_an_html_answer_are_told_apart() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let down = format!("http://127.0.0.1:{port}");
        let err = HttpTransport::new(&down, "s", "t")
            .pull(0, 10, 0)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "OFFLINE");
        assert!(
            err.to_string()
                .contains(&format!("nothing answers at {down} (connection refused)")),
            "{err}"
        );

        // A dev server: every path is its HTML page.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let html = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            if let Some(Ok(mut stream)) = listener.incoming().next() {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let page = "<!doctype html><html><body>app</body></html>";
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{page}",
                    page.len()
                );
            }
        });
        let err = HttpTransport::new(&html, "s", "t")
            .pull(0, 10, 0)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "NOT_SYNC_SERVER");
        assert!(err.to_string().contains("(it answered HTML)"), "{err}");
    }
}
