//! `kill -9` of the real `annals-server` binary in the middle of concurrent pushes, on
//! SQLite and on PostgreSQL, several times over one database: after each restart every
//! event the server acknowledged (`ok` or `duplicate`) is there at the position it was
//! acknowledged with, positions are gapless, no id appears twice, stream versions are
//! gapless, the epoch is unchanged, and a push cut off by the kill is there whole or not
//! at all (and retrying it stores it exactly once).
#![cfg(all(feature = "server", feature = "http-client"))]

#[macro_use]
mod server_common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use server_common::{new_id, Api, Backend};

on_every_backend!(acknowledged_events_survive_kill_9);

const TOKEN: &str = "durability";
const STORE: &str = "durable";
/// Concurrent writers.
const WRITERS: usize = 4;
/// Events per push.
const BATCH: usize = 25;
/// The kill comes once this many pushes (over all writers) have been answered in the
/// round, while the other writers' pushes are in flight.
const KILL_AFTER: [usize; 8] = [1, 3, 9, 20, 40, 75, 110, 150];

/// The binary, killed when dropped (however the test ends).
struct Server {
    child: std::process::Child,
    url: String,
}

impl Server {
    async fn spawn(database: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_annals-server"))
            .args(["--listen", "127.0.0.1:0", "--database", database])
            // Writers push as fast as they can: this test is about durability, not the
            // rate limit.
            .args(["--rate-limit-per-second", "0"])
            .env("ANNALS_DEV_TOKEN", TOKEN)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn annals-server");
        let stdout = child.stdout.take().expect("stdout");
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await
        .expect("join")
        .expect("first line");
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("annals-server did not start: {line:?}"))
            .to_owned();
        Server { child, url }
    }

    /// SIGKILL: no shutdown code runs.
    fn kill_9(&mut self) {
        self.child.kill().expect("kill -9");
        let status = self.child.wait().expect("wait");
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(9), "{status}");
        }
        #[cfg(not(unix))]
        let _ = status;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One push and what became of it.
struct Batch {
    events: Vec<Value>,
}

#[derive(Default)]
struct Ledger {
    /// Acknowledged ids and the positions they were acknowledged with.
    acked: HashMap<String, u64>,
    /// Pushes whose answer never came (cut off by the kill): stored whole or not at all.
    unknown: Vec<Batch>,
    epoch: Option<String>,
}

fn batch(writer: usize, round: usize, seq: usize) -> Batch {
    Batch {
        events: (0..BATCH)
            .map(|i| {
                json!({
                    "id": new_id(),
                    "stream": format!("w{writer}-{}", (seq + i) % 3),
                    "type": "Written",
                    "data": {"writer": writer, "round": round, "seq": seq, "i": i},
                    "time": 1_700_000_000_000u64 + seq as u64,
                })
            })
            .collect(),
    }
}

/// Pushes batches until the server stops answering; returns how many it had answered.
async fn writer(
    url: String,
    writer: usize,
    round: usize,
    ledger: Arc<Mutex<Ledger>>,
    answered: Arc<AtomicUsize>,
    killed: Arc<AtomicBool>,
) -> usize {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let mut done = 0;
    for seq in 0.. {
        let batch = batch(writer, round, seq);
        let sent = http
            .post(format!("{url}/v1/stores/{STORE}/push"))
            .bearer_auth(TOKEN)
            .json(&json!({"clientId": format!("writer-{writer}"), "events": batch.events}))
            .send()
            .await;
        let body = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.text().await {
                    Ok(text) => {
                        assert_eq!(status, 200, "{text}");
                        Some(text)
                    }
                    Err(_) => None,
                }
            }
            Err(_) => None,
        };
        let Some(text) = body else {
            assert!(
                killed.load(Ordering::SeqCst),
                "a push failed before the kill"
            );
            ledger.lock().expect("ledger").unknown.push(batch);
            return done;
        };
        let answer: Value = serde_json::from_str(&text).expect("JSON");
        {
            let mut ledger = ledger.lock().expect("ledger");
            let epoch = answer["epoch"].as_str().expect("epoch").to_owned();
            assert_eq!(
                ledger.epoch.get_or_insert_with(|| epoch.clone()),
                &epoch,
                "the epoch changed"
            );
            for r in answer["results"].as_array().expect("results") {
                let status = r["status"].as_str().expect("status");
                assert!(status == "ok" || status == "duplicate", "{r}");
                let id = r["id"].as_str().expect("id").to_owned();
                let position = r["position"].as_u64().expect("position");
                if let Some(before) = ledger.acked.insert(id, position) {
                    assert_eq!(before, position, "an id acknowledged at two positions");
                }
            }
        }
        done += 1;
        answered.fetch_add(1, Ordering::SeqCst);
        if killed.load(Ordering::SeqCst) {
            // The kill came after this answer left the server: nothing more to send.
            return done;
        }
    }
    done
}

/// Checks the whole store against the ledger; returns its events.
async fn check_store(api: &Api, ledger: &Ledger) -> Vec<Value> {
    let answer = api.pull(STORE, "after=0&limit=1").await;
    let body = answer.assert_ok();
    assert_eq!(
        body["epoch"].as_str(),
        ledger.epoch.as_deref(),
        "the epoch survived the restart"
    );
    let head = body["head"].as_u64().expect("head");
    let events = api.pull_all(STORE).await;
    let positions: Vec<u64> = events
        .iter()
        .map(|e| e["position"].as_u64().expect("position"))
        .collect();
    assert_eq!(
        positions,
        (1..=head).collect::<Vec<_>>(),
        "gapless positions"
    );
    let mut ids = HashSet::new();
    let mut at = HashMap::new();
    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in &events {
        let id = e["id"].as_str().expect("id").to_owned();
        assert!(ids.insert(id.clone()), "{id} stored twice");
        at.insert(id, e["position"].as_u64().expect("position"));
        versions
            .entry(e["stream"].as_str().expect("stream").to_owned())
            .or_default()
            .push(e["version"].as_u64().expect("version"));
    }
    for (id, position) in &ledger.acked {
        assert_eq!(
            at.get(id),
            Some(position),
            "acknowledged event {id} is not at position {position}"
        );
    }
    for (stream, v) in versions {
        assert_eq!(v, (1..=v.len() as u64).collect::<Vec<_>>(), "{stream}");
    }
    events
}

async fn acknowledged_events_survive_kill_9(backend: Backend) {
    let database = backend.database_url();
    let mut ledger = Ledger::default();
    let mut totals = (0usize, 0usize, 0usize, 0usize); // acked pushes, cut off, of which stored, retried
    for (round, &kill_after) in KILL_AFTER.iter().enumerate() {
        let mut server = Server::spawn(&database).await;
        let shared = Arc::new(Mutex::new(std::mem::take(&mut ledger)));
        let answered = Arc::new(AtomicUsize::new(0));
        let killed = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                tokio::spawn(writer(
                    server.url.clone(),
                    w,
                    round,
                    Arc::clone(&shared),
                    Arc::clone(&answered),
                    Arc::clone(&killed),
                ))
            })
            .collect();
        // Wait for the kill point (polling a counter, not a clock).
        for _ in 0..60_000 {
            if answered.load(Ordering::SeqCst) >= kill_after {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(answered.load(Ordering::SeqCst) >= kill_after, "no progress");
        killed.store(true, Ordering::SeqCst);
        server.kill_9();
        let mut acked_pushes = 0;
        for w in writers {
            acked_pushes += w.await.expect("writer");
        }
        ledger = Arc::try_unwrap(shared)
            .ok()
            .expect("writers are done")
            .into_inner()
            .expect("ledger");

        // Restart on the same database.
        let server = Server::spawn(&database).await;
        let api = Api::new(&server.url, Some(TOKEN));
        let events = check_store(&api, &ledger).await;
        let stored: HashSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();

        // Each push the kill cut off is there whole or not at all; the client retries it
        // (as a real one does after a lost answer) and it ends up stored exactly once.
        let cut_off = std::mem::take(&mut ledger.unknown);
        let mut found = 0;
        for batch in &cut_off {
            let present = batch
                .events
                .iter()
                .filter(|e| stored.contains(e["id"].as_str().expect("id")))
                .count();
            assert!(
                present == 0 || present == BATCH,
                "a cut-off push is half stored: {present} of {BATCH}"
            );
            if present == BATCH {
                found += 1;
            }
            let answer = api
                .push(STORE, &json!({"clientId": "retry", "events": batch.events}))
                .await;
            let body = answer.assert_ok();
            for r in body["results"].as_array().expect("results") {
                let expected = if present == BATCH { "duplicate" } else { "ok" };
                assert_eq!(r["status"], expected, "{r}");
                ledger.acked.insert(
                    r["id"].as_str().expect("id").to_owned(),
                    r["position"].as_u64().expect("position"),
                );
            }
            assert_eq!(body["epoch"].as_str(), ledger.epoch.as_deref());
        }
        let events = check_store(&api, &ledger).await;
        assert_eq!(events.len(), ledger.acked.len(), "every event exactly once");
        eprintln!(
            "[{}] round {round}: kill after {kill_after} answered pushes; {acked_pushes} \
             pushes ({} events) acknowledged in the round; {} cut off by the kill, {found} of \
             them committed whole, {} absent and retried; {} events in the store, all checked",
            backend.name(),
            acked_pushes * BATCH,
            cut_off.len(),
            cut_off.len() - found,
            events.len()
        );
        totals.0 += acked_pushes;
        totals.1 += cut_off.len();
        totals.2 += found;
        totals.3 += cut_off.len() - found;
        drop(server);
    }
    eprintln!(
        "[{}] {} kill -9 rounds, {WRITERS} writers, {BATCH} events per push: {} acknowledged \
         pushes, {} events in the store; {} pushes cut off ({} committed whole, {} absent), \
         lost 0, duplicated 0, gaps 0, epoch changes 0",
        backend.name(),
        KILL_AFTER.len(),
        totals.0,
        ledger.acked.len(),
        totals.1,
        totals.2,
        totals.3
    );
}
