//! Two server instances on one PostgreSQL schema: pushes through both interleave into one
//! gapless log, duplicates are recognised across instances, and a long poll on one
//! instance wakes when the other commits (LISTEN/NOTIFY).
#![cfg(feature = "server")]

#[macro_use]
mod server_common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use server_common::{event, Backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_gapless_log() {
    let backend = Backend::postgres();
    let one = backend.start().await;
    let two = backend.start().await;
    let apis = [one.api("tok-a"), two.api("tok-a")];

    let mut tasks = Vec::new();
    for t in 0..6usize {
        let api = apis[t % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for p in 0..8 {
                let events: Vec<Value> = (0..4)
                    .map(|i| event("shared", "Tick", json!({"t": t, "p": p, "i": i})))
                    .collect();
                ids.extend(events.iter().map(|e| e["id"].clone()));
                let answer = api.push_ok("store-a", events).await;
                assert!(answer["results"]
                    .as_array()
                    .is_some_and(|r| r.iter().all(|r| r["status"] == "ok")));
            }
            ids
        }));
    }
    let mut sent = HashSet::new();
    for task in tasks {
        for id in task.await.expect("task") {
            sent.insert(id.as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(sent.len(), 6 * 8 * 4);

    let from_one = apis[0].pull_all("store-a").await;
    let from_two = apis[1].pull_all("store-a").await;
    assert_eq!(from_one, from_two);
    let positions: Vec<u64> = from_one
        .iter()
        .filter_map(|e| e["position"].as_u64())
        .collect();
    assert_eq!(positions, (1..=sent.len() as u64).collect::<Vec<_>>());
    let versions: Vec<u64> = from_one
        .iter()
        .filter_map(|e| e["version"].as_u64())
        .collect();
    assert_eq!(versions, positions, "one stream: versions follow positions");
    let ids: HashSet<String> = from_one
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids, sent);

    // The same event pushed through both instances at once is stored once.
    let contested = event("contested", "E", json!(0));
    let (a, b) = tokio::join!(
        apis[0].push_ok("store-a", vec![contested.clone()]),
        apis[1].push_ok("store-a", vec![contested.clone()]),
    );
    let mut statuses = [
        a["results"][0]["status"].clone(),
        b["results"][0]["status"].clone(),
    ];
    statuses.sort_by_key(|s| s.to_string());
    assert_eq!(statuses, [json!("duplicate"), json!("ok")]);
    assert_eq!(a["results"][0]["position"], b["results"][0]["position"]);
    assert_eq!(a["epoch"], b["epoch"]);

    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_one_instance_wakes_on_a_push_to_the_other() {
    let backend = Backend::postgres();
    let one = backend.start().await;
    let two = backend.start().await;
    let on_one = one.api("tok-a");
    let on_two = two.api("tok-a");
    on_two
        .push_ok("store-a", vec![event("s", "First", json!(1))])
        .await;

    for round in 0..3u64 {
        let poller = {
            let api = on_one.clone();
            let after = round + 1;
            tokio::spawn(async move {
                let answer = api.pull("store-a", &format!("after={after}&wait=20")).await;
                (answer, Instant::now())
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!poller.is_finished());
        let landed = event("s", "Next", json!(round));
        on_two.push_ok("store-a", vec![landed.clone()]).await;
        let pushed_at = Instant::now();
        let (answer, answered_at) = poller.await.expect("poller");
        let body = answer.assert_ok();
        assert_eq!(body["events"][0]["id"], landed["id"]);
        let delay = answered_at.saturating_duration_since(pushed_at);
        assert!(
            delay < Duration::from_secs(2),
            "woke {delay:?} after the push"
        );
    }
    one.stop().await;
    two.stop().await;
}
