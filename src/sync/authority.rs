//! The server's rules for a push, as a pure function: duplicates answer with their
//! original place, a broken expectation rejects that event only, everything else is
//! appended in order. Used by every server backend and by the in-memory server.

use std::collections::HashMap;

use crate::event::EventId;
use crate::sync::protocol::{PushEvent, PushResult};

/// What the server's store knows, as the rules need it.
pub trait AuthorityView {
    fn head(&self) -> u64;
    /// Where an event id is stored: `(position, version)`.
    fn find(&self, id: &EventId) -> Option<(u64, u64)>;
    fn stream_version(&self, stream: &str) -> u64;
}

/// An event to store: the index of its push event, and where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub index: usize,
    pub position: u64,
    pub version: u64,
}

/// Decides every event of a push in order, as if each accepted event were stored before
/// the next is looked at. Returns the answers and the events to store.
pub fn decide_push(
    view: &impl AuthorityView,
    events: &[PushEvent],
) -> (Vec<PushResult>, Vec<Placement>) {
    let mut results = Vec::with_capacity(events.len());
    let mut placements = Vec::with_capacity(events.len());
    let mut placed: HashMap<EventId, (u64, u64)> = HashMap::new();
    let mut versions: HashMap<&str, u64> = HashMap::new();
    let mut head = view.head();
    for (index, event) in events.iter().enumerate() {
        if let Some((position, version)) = view
            .find(&event.id)
            .or_else(|| placed.get(&event.id).copied())
        {
            results.push(PushResult::Duplicate {
                id: event.id,
                position,
                version,
            });
            continue;
        }
        let current = *versions
            .entry(event.stream.as_str())
            .or_insert_with(|| view.stream_version(&event.stream));
        if !event.expected_version.accepts(current) {
            results.push(PushResult::Rejected {
                id: event.id,
                reason: format!(
                    "wrong expected version on stream `{}`: expected {}, actual {current}",
                    event.stream, event.expected_version
                ),
                actual_version: Some(current),
            });
            continue;
        }
        head += 1;
        let version = current + 1;
        versions.insert(event.stream.as_str(), version);
        placed.insert(event.id, (head, version));
        placements.push(Placement {
            index,
            position: head,
            version,
        });
        results.push(PushResult::Ok {
            id: event.id,
            position: head,
            version,
        });
    }
    (results, placements)
}
