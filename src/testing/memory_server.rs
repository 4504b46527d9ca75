//! Test rig: a sync server in memory, with the same push rules as `annals-server`
//! ([`crate::push`]), for the in-process transport (tests, simulations).

use std::cell::RefCell;
use std::collections::HashMap;

use crate::clock::{IdSource, Uuidv7};
use crate::event::{Event, EventId};
use crate::protocol::{PullResponse, PushRequest, PushResponse};
use crate::push::authority::Authorities;
use crate::push::rules::{plan_push, Placed, Refusal, Stored};

#[derive(Debug, Default)]
struct StoreLog {
    epoch: String,
    events: Vec<Event>,
    ids: HashMap<EventId, usize>,
    versions: HashMap<String, u64>,
    /// Streams whose last event is a lifecycle event (deleted, closed).
    ends: HashMap<String, crate::event::StreamEnd>,
    refused: HashMap<EventId, Vec<Refusal>>,
}

/// Stores by name, each with its own positions and epoch.
#[derive(Default)]
pub struct MemoryServer {
    stores: RefCell<HashMap<String, StoreLog>>,
    epochs: RefCell<Uuidv7>,
    authorities: Authorities,
}

impl MemoryServer {
    pub fn new() -> Self {
        Self::default()
    }

    /// A server whose authorities re-check pushed events of the streams they claim.
    pub fn with_authorities(authorities: Authorities) -> Self {
        MemoryServer {
            authorities,
            ..Self::default()
        }
    }

    fn with_store<T>(&self, store: &str, f: impl FnOnce(&mut StoreLog) -> T) -> T {
        let mut stores = self.stores.borrow_mut();
        let log = stores.entry(store.to_owned()).or_insert_with(|| StoreLog {
            epoch: self.epochs.borrow_mut().next_id(0).to_string(),
            ..StoreLog::default()
        });
        f(log)
    }

    pub fn push(&self, store: &str, request: &PushRequest) -> PushResponse {
        self.with_store(store, |log| {
            let existing = request
                .events
                .iter()
                .filter_map(|e| {
                    let stored = &log.events[*log.ids.get(&e.id)?];
                    Some((
                        e.id,
                        Stored::of(
                            Placed {
                                position: stored.position,
                                version: stored.version,
                            },
                            &stored.stream,
                            &stored.event_type,
                            stored.schema_version,
                            stored.data.get(),
                            stored.meta.as_ref().map(|m| m.get()),
                            stored.erased,
                        ),
                    ))
                })
                .collect();
            let histories = self
                .authorities
                .claimed_streams(&request.events)
                .into_iter()
                .map(|stream| {
                    let history = log
                        .events
                        .iter()
                        .filter(|e| e.stream == stream)
                        .cloned()
                        .collect();
                    (stream.to_owned(), history)
                })
                .collect();
            let mut check = self.authorities.checker(histories);
            let refused = request
                .events
                .iter()
                .filter_map(|e| Some((e.id, log.refused.get(&e.id)?.clone())))
                .collect();
            let plan = plan_push(
                log.events.len() as u64,
                &request.events,
                &existing,
                &refused,
                &log.versions,
                &log.ends,
                Some(&mut check),
            );
            for (index, placed) in plan.inserts {
                let e = &request.events[index];
                log.ids.insert(e.id, log.events.len());
                log.events.push(Event {
                    id: e.id,
                    position: placed.position,
                    stream: e.stream.clone(),
                    version: placed.version,
                    event_type: e.event_type.clone(),
                    schema_version: e.schema_version,
                    data: e.data.clone(),
                    meta: e.meta.clone(),
                    time: e.time,
                    origin: Some(request.client_id.clone()),
                    pending: false,
                    erased: e.erased,
                });
            }
            for (stream, before) in &plan.erasures {
                for event in log
                    .events
                    .iter_mut()
                    .filter(|e| e.stream == *stream && e.version < *before && !e.erased)
                {
                    event.data = serde_json::value::RawValue::NULL.to_owned();
                    event.meta = None;
                    event.erased = true;
                }
            }
            log.versions.extend(plan.stream_versions);
            for (stream, end) in plan.stream_ends {
                match end {
                    Some(end) => log.ends.insert(stream, end),
                    None => log.ends.remove(&stream),
                };
            }
            for (index, refusal) in plan.refusals {
                let id = request.events[index].id;
                log.refused.entry(id).or_default().push(refusal);
            }
            PushResponse {
                results: plan.results,
                head: plan.head,
                epoch: log.epoch.clone(),
            }
        })
    }

    pub fn pull(&self, store: &str, after: u64, limit: usize) -> PullResponse {
        self.with_store(store, |log| {
            let start = (after as usize).min(log.events.len());
            let end = start.saturating_add(limit).min(log.events.len());
            PullResponse {
                events: log.events[start..end].to_vec(),
                head: log.events.len() as u64,
                epoch: log.epoch.clone(),
                more: end < log.events.len(),
            }
        })
    }

    pub fn head(&self, store: &str) -> u64 {
        self.with_store(store, |log| log.events.len() as u64)
    }

    /// Forgets a store, as a server whose database was replaced would: it comes back
    /// empty with a new epoch.
    pub fn wipe(&self, store: &str) {
        self.stores.borrow_mut().remove(store);
    }
}
