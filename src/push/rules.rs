//! Core: the server's rules for a push, as a pure function ([`plan_push`]) shared by every
//! server backend (SQLite, PostgreSQL) and by the in-memory test server, so that each rule
//! is written once. Authorities plug in through [`PushCheck`].

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState as FastHash;

use crate::append::check_stream;
use crate::error::Error;
use crate::error_code::ErrorCode;
use crate::event::{EventId, StreamEnd, STREAM_ERASED_TYPE};
use crate::protocol::{content_digest, shape_digest, PushEvent, PushResult};

/// Judges pushed events one by one, after the version rules passed (rule 4 of
/// [`plan_push`]); `Err(reason)` refuses the event. An authority's check
/// ([`crate::push::authority::AuthorityCheck`]) is the one the server uses.
pub trait PushCheck {
    fn check(&mut self, event: &PushEvent, placed: Placed) -> Result<(), String>;
}

/// A store's events by id, as far as a push needs them: where they already are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub position: u64,
    pub version: u64,
}

/// An event already stored under a pushed id: where it is, and the digest of its content
/// ([`crate::protocol::content_digest`]) that tells a retry from a reused id; once it is
/// erased, the digest of what it keeps ([`crate::protocol::shape_digest`]) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub placed: Placed,
    pub content: u64,
    /// [`crate::protocol::shape_digest`] of its stream, type and schema version.
    pub shape: u64,
    /// It was erased: its data is gone, and so is the content `content` digested.
    pub erased: bool,
}

impl Stored {
    /// What a backend knows of a stored event at `placed`, from its stored fields.
    pub fn of(
        placed: Placed,
        stream: &str,
        event_type: &str,
        schema_version: u32,
        data: &str,
        meta: Option<&str>,
        erased: bool,
    ) -> Self {
        Stored {
            placed,
            content: content_digest(stream, event_type, schema_version, data, meta),
            shape: shape_digest(stream, event_type, schema_version),
            erased,
        }
    }

    /// Whether `event`, pushed under the stored event's id, is the same event: the same
    /// content, or, when either was erased, the same stream, type and schema version (an
    /// erased event pushed again by a replica that missed the erasure is a retry, and its
    /// data is not stored again).
    pub fn is_same(&self, event: &PushEvent) -> bool {
        if self.erased || event.erased {
            self.shape == event.shape_digest()
        } else {
            self.content == event.content_digest()
        }
    }
}

/// The reason a push answers for an id that is stored as another event. It starts with
/// the error code, which clients report as the rejection's reason.
pub fn reused_id_reason(id: &EventId, stored: &Stored) -> String {
    reused_at(id, stored.placed)
}

fn reused_at(id: &EventId, placed: Placed) -> String {
    format!(
        "DUPLICATE_ID: id {id} is already stored as another event (position {}, version {} \
         of its stream): a retry must repeat the event exactly (stream, type, schema version, \
         data and meta); a new event needs a new id",
        placed.position, placed.version
    )
}

/// An event accepted earlier in the same push: compared with a later event under its id
/// field by field, so that no digest is computed for the many events that are never
/// pushed twice in one push.
struct Accepted {
    index: usize,
    placed: Placed,
    /// Erased by an erasure later in the push, or pushed erased.
    erased: bool,
}

impl Accepted {
    /// [`Stored::is_same`], on the accepted event itself.
    fn is_same(&self, accepted: &PushEvent, event: &PushEvent) -> bool {
        let same_shape = accepted.stream == event.stream
            && accepted.event_type == event.event_type
            && accepted.schema_version == event.schema_version;
        if self.erased || event.erased {
            same_shape
        } else {
            same_shape
                && accepted.data.get() == event.data.get()
                && accepted.meta.as_ref().map(|m| m.get()) == event.meta.as_ref().map(|m| m.get())
        }
    }
}

/// A pushed stream as the push leaves it so far.
#[derive(Clone, Copy)]
struct StreamState {
    version: u64,
    end: Option<StreamEnd>,
    /// This push accepted an event of it.
    touched: bool,
}

/// A rejection the server remembers: the verdict on the event with this
/// [`PushEvent::fingerprint`]. Every later push of that same event (a retry after a lost
/// answer, or a late copy of an old push) gets the same answer, so that a rejection the
/// client has reported can never turn into a stored event. An id may have several (one per
/// distinct event rejected under it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub fingerprint: u64,
    pub reason: String,
    pub actual_version: Option<u64>,
}

/// The outcome of [`plan_push`]: what to answer and what to write.
#[derive(Debug, Default)]
pub struct PushPlan {
    pub results: Vec<PushResult>,
    /// Indexes into the pushed events of the ones to insert, with their position and
    /// version, in position order.
    pub inserts: Vec<(usize, Placed)>,
    /// Each touched stream's new version (one entry per stream).
    pub stream_versions: Vec<(String, u64)>,
    /// The streams whose lifecycle end changed (see `ends` of [`plan_push`]): what their
    /// last event now does, `None` when it is an ordinary event again, for the backend
    /// to store.
    pub stream_ends: Vec<(String, Option<StreamEnd>)>,
    /// New rejections to remember, by index into the pushed events, in order.
    pub refusals: Vec<(usize, Refusal)>,
    /// The accepted erasures ([`crate::erasure`]), in order: the stream and the version of
    /// its `$StreamErased`. The backend erases the stream's events below that version
    /// (those stored before and those of this push) after inserting the push's events, in
    /// the same transaction.
    pub erasures: Vec<(String, u64)>,
    /// The store's head after the push.
    pub head: u64,
}

impl PushPlan {
    /// Whether any event is refused. A backend that planned without looking up which ids
    /// are stored must look them up and plan again then: a stored id answers `duplicate`
    /// before any check.
    pub fn rejects_any(&self) -> bool {
        self.results
            .iter()
            .any(|r| matches!(r, PushResult::Rejected { .. }))
    }
}

/// The push rules, applied event by event in order against the store's state at the
/// start of the push (`head`, the already stored events among the pushed ids, the
/// remembered rejections of the pushed ids, and the current versions of the pushed
/// streams), with the earlier events of the same push taken into account:
///
/// 1. an id already stored (or accepted earlier in this push) answers `duplicate` with
///    the original position and version if the event is the same one (the same stream,
///    type, schema version, data and meta: [`PushEvent::content_digest`]), and is
///    `rejected` with a `DUPLICATE_ID` reason ([`reused_id_reason`]) if it is another;
///    either way it writes nothing (and the rejection is not remembered: the stored event
///    under the id never changes, so the answer cannot either);
/// 2. the very event rejected before (same [`PushEvent::fingerprint`], in an earlier push
///    or earlier in this one) answers the same rejection: a verdict, once given, is final;
/// 3. an event the stream lifecycle rule refuses ([`check_stream`]: an expected version
///    the stream's current version does not satisfy, or a closed stream) answers
///    `rejected` with the actual version, for that event only (a closed stream's reason
///    starts with `STREAM_DELETED`);
/// 4. an authority claiming the stream (`check`) may refuse it: `rejected` with its reason;
/// 5. otherwise the event is `ok` at head + 1 with its stream's version + 1.
///
/// Rejections by rules 3 and 4 are returned in [`PushPlan::refusals`] for the backend to
/// store in the same transaction. An id rejected before but pushed again as a different
/// event (appended anew, with another expectation) is judged afresh.
pub fn plan_push<S: BuildHasher>(
    head: u64,
    events: &[PushEvent],
    existing: &HashMap<EventId, Stored>,
    refused: &HashMap<EventId, Vec<Refusal>>,
    versions: &HashMap<String, u64, S>,
    ends: &HashMap<String, StreamEnd>,
    mut check: Option<&mut dyn PushCheck>,
) -> PushPlan {
    let mut plan = PushPlan {
        head,
        results: Vec::with_capacity(events.len()),
        inserts: Vec::with_capacity(events.len()),
        ..PushPlan::default()
    };
    // Both maps are hashed once or twice per event: a seeded fast hasher rather than
    // SipHash (each holds one push's keys, so it is bounded whatever a client sends).
    let mut accepted: HashMap<EventId, Accepted, FastHash> =
        HashMap::with_capacity_and_hasher(events.len(), FastHash::default());
    // One entry per pushed stream, made when the stream is first met: one lookup per event.
    let mut streams: HashMap<&str, StreamState, FastHash> = HashMap::default();
    let mut touched: Vec<&str> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        let earlier = match existing.get(&event.id) {
            Some(stored) => Some((stored.placed, stored.is_same(event))),
            None => accepted
                .get(&event.id)
                .map(|a| (a.placed, a.is_same(&events[a.index], event))),
        };
        if let Some((placed, same)) = earlier {
            plan.results.push(if same {
                PushResult::Duplicate {
                    id: event.id,
                    position: placed.position,
                    version: placed.version,
                }
            } else {
                PushResult::Rejected {
                    id: event.id,
                    reason: reused_at(&event.id, placed),
                    actual_version: None,
                }
            });
            continue;
        }
        // Hashing the whole event is needed only to match a refusal remembered for its id,
        // or to remember a new one: most events have neither.
        let mut candidates = refused
            .get(&event.id)
            .into_iter()
            .flatten()
            .chain(
                plan.refusals
                    .iter()
                    .filter(|(i, _)| events[*i].id == event.id)
                    .map(|(_, r)| r),
            )
            .peekable();
        let mut fingerprint = None;
        let earlier = if candidates.peek().is_some() {
            let f = *fingerprint.get_or_insert_with(|| event.fingerprint());
            candidates.find(|r| r.fingerprint == f)
        } else {
            None
        };
        if let Some(refusal) = earlier {
            plan.results.push(PushResult::Rejected {
                id: event.id,
                reason: refusal.reason.clone(),
                actual_version: refusal.actual_version,
            });
            continue;
        }
        let stream = streams
            .entry(event.stream.as_str())
            .or_insert_with(|| StreamState {
                version: versions.get(&event.stream).copied().unwrap_or(0),
                end: ends.get(&event.stream).copied(),
                touched: false,
            });
        let actual = stream.version;
        let end = stream.end;
        let placed = Placed {
            position: plan.head + 1,
            version: actual + 1,
        };
        let mut fingerprint = || *fingerprint.get_or_insert_with(|| event.fingerprint());
        let verdict = if let Err(refused) = check_stream(
            &event.stream,
            &event.event_type,
            actual,
            end,
            event.expected_version,
        ) {
            let reason = match refused {
                Error::StreamDeleted(message) => {
                    format!("{}: {message}", ErrorCode::StreamDeleted.as_str())
                }
                _ => format!(
                    "wrong expected version on stream `{}`: expected {}, actual {}",
                    event.stream, event.expected_version, actual
                ),
            };
            Err(Refusal {
                fingerprint: fingerprint(),
                reason,
                actual_version: Some(actual),
            })
        } else {
            match check.as_deref_mut().map(|c| c.check(event, placed)) {
                Some(Err(reason)) => Err(Refusal {
                    fingerprint: fingerprint(),
                    reason,
                    actual_version: None,
                }),
                _ => Ok(()),
            }
        };
        if let Err(refusal) = verdict {
            plan.results.push(PushResult::Rejected {
                id: event.id,
                reason: refusal.reason.clone(),
                actual_version: refusal.actual_version,
            });
            plan.refusals.push((index, refusal));
            continue;
        }
        plan.head = placed.position;
        if !stream.touched {
            stream.touched = true;
            touched.push(&event.stream);
        }
        stream.version = placed.version;
        // An erasure ends nothing: a closed stream stays closed (a deleted one is no longer
        // right after its delete, as on every replica).
        stream.end = match StreamEnd::of_type(&event.event_type) {
            None if event.event_type == STREAM_ERASED_TYPE && end == Some(StreamEnd::Closed) => end,
            other => other,
        };
        if event.event_type == STREAM_ERASED_TYPE {
            plan.erasures.push((event.stream.clone(), placed.version));
            // What this push accepted of the stream before is erased with the rest.
            for (earlier, _) in &plan.inserts {
                let earlier = &events[*earlier];
                if earlier.stream == event.stream {
                    if let Some(accepted) = accepted.get_mut(&earlier.id) {
                        accepted.erased = true;
                    }
                }
            }
        }
        accepted.insert(
            event.id,
            Accepted {
                index,
                placed,
                erased: event.erased,
            },
        );
        plan.inserts.push((index, placed));
        plan.results.push(PushResult::Ok {
            id: event.id,
            position: placed.position,
            version: placed.version,
        });
    }
    let state = |s: &str| streams.get(s).copied();
    plan.stream_ends = touched
        .iter()
        .filter_map(|s| {
            let now = state(s).and_then(|st| st.end);
            (now != ends.get(*s).copied()).then(|| (s.to_string(), now))
        })
        .collect();
    plan.stream_versions = touched
        .into_iter()
        .filter_map(|s| state(s).map(|st| (s.to_owned(), st.version)))
        .collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ExpectedVersion;
    use serde_json::value::RawValue;

    #[test]
    fn an_event_erased_earlier_in_the_push_is_a_duplicate_whatever_data_its_copy_carries() {
        let first = ev(1, "a", ExpectedVersion::Any);
        let erase = PushEvent {
            event_type: STREAM_ERASED_TYPE.into(),
            ..ev(2, "a", ExpectedVersion::Any)
        };
        let copy = PushEvent {
            data: RawValue::from_string("\"the old data\"".into()).unwrap(),
            ..first.clone()
        };
        let other_type = PushEvent {
            event_type: "U".into(),
            ..first.clone()
        };
        let plan = plan_push(
            0,
            &[first, erase, copy, other_type],
            &HashMap::new(),
            &HashMap::new(),
            &HashMap::new(),
            &HashMap::new(),
            None,
        );
        assert_eq!(plan.erasures, [("a".to_string(), 2)]);
        assert_eq!(plan.inserts.len(), 2);
        assert!(matches!(
            plan.results[2],
            PushResult::Duplicate { position: 1, .. }
        ));
        assert!(matches!(
            &plan.results[3],
            PushResult::Rejected { reason, .. } if reason.starts_with("DUPLICATE_ID")
        ));
    }

    fn ev(n: u8, stream: &str, expected: ExpectedVersion) -> PushEvent {
        PushEvent {
            id: EventId([n; 16]),
            stream: stream.into(),
            event_type: "T".into(),
            schema_version: 1,
            data: RawValue::from_string("1".into()).unwrap(),
            meta: None,
            time: 0,
            expected_version: expected,
            erased: false,
        }
    }

    #[test]
    fn push_rules_apply_in_order_within_one_batch() {
        let existing = HashMap::from([(
            EventId([9; 16]),
            Stored {
                placed: Placed {
                    position: 4,
                    version: 2,
                },
                content: ev(9, "a", ExpectedVersion::Any).content_digest(),
                shape: ev(9, "a", ExpectedVersion::Any).shape_digest(),
                erased: false,
            },
        )]);
        let versions = HashMap::from([("a".to_string(), 2u64)]);
        let events = [
            ev(1, "a", ExpectedVersion::Exact(2)),
            ev(2, "a", ExpectedVersion::Exact(2)), // stale: event 1 moved it to 3
            ev(9, "a", ExpectedVersion::NoStream), // duplicate wins over the version check
            ev(3, "b", ExpectedVersion::NoStream),
            ev(1, "a", ExpectedVersion::Any), // duplicate of event 1 of this push
            ev(4, "a", ExpectedVersion::Exact(3)),
        ];
        let plan = plan_push(
            10,
            &events,
            &existing,
            &HashMap::new(),
            &versions,
            &HashMap::new(),
            None,
        );
        let statuses: Vec<String> = plan
            .results
            .iter()
            .map(|r| match r {
                PushResult::Ok {
                    position, version, ..
                } => format!("ok {position}/{version}"),
                PushResult::Duplicate {
                    position, version, ..
                } => format!("dup {position}/{version}"),
                PushResult::Rejected { actual_version, .. } => {
                    format!("rejected {}", actual_version.unwrap_or(0))
                }
            })
            .collect();
        assert_eq!(
            statuses,
            [
                "ok 11/3",
                "rejected 3",
                "dup 4/2",
                "ok 12/1",
                "dup 11/3",
                "ok 13/4"
            ]
        );
        assert_eq!(plan.head, 13);
        assert_eq!(
            plan.inserts.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [0, 3, 5]
        );
        assert_eq!(
            plan.stream_versions,
            [("a".to_string(), 4), ("b".to_string(), 1)]
        );
    }

    #[test]
    fn a_stored_id_answers_duplicate_only_for_the_same_event() {
        let stored = ev(9, "a", ExpectedVersion::Any);
        let existing = HashMap::from([(
            stored.id,
            Stored {
                placed: Placed {
                    position: 4,
                    version: 2,
                },
                content: stored.content_digest(),
                shape: stored.shape_digest(),
                erased: false,
            },
        )]);
        let versions = HashMap::from([("a".to_string(), 2u64)]);
        let raw = |s: &str| RawValue::from_string(s.into()).unwrap();
        let events = [
            // The same event: another time and expectation make no difference.
            PushEvent {
                time: 99,
                expected_version: ExpectedVersion::Exact(0),
                ..stored.clone()
            },
            // The same id with other content, each field in turn: rejected, nothing written.
            PushEvent {
                data: raw("2"),
                ..stored.clone()
            },
            PushEvent {
                meta: Some(raw("{}")),
                ..stored.clone()
            },
            PushEvent {
                stream: "b".into(),
                ..stored.clone()
            },
            PushEvent {
                event_type: "U".into(),
                ..stored.clone()
            },
            PushEvent {
                schema_version: 2,
                ..stored.clone()
            },
            // Within one push: a new event, then its id again with other content.
            ev(1, "a", ExpectedVersion::Any),
            PushEvent {
                data: raw("\"other\""),
                ..ev(1, "a", ExpectedVersion::Any)
            },
            ev(1, "a", ExpectedVersion::Any),
        ];
        let plan = plan_push(
            10,
            &events,
            &existing,
            &HashMap::new(),
            &versions,
            &HashMap::new(),
            None,
        );
        let statuses: Vec<String> = plan
            .results
            .iter()
            .map(|r| match r {
                PushResult::Ok { position, .. } => format!("ok {position}"),
                PushResult::Duplicate { position, .. } => format!("dup {position}"),
                PushResult::Rejected {
                    reason,
                    actual_version,
                    ..
                } => {
                    assert!(reason.starts_with("DUPLICATE_ID: "), "{reason}");
                    assert_eq!(*actual_version, None);
                    "reused".into()
                }
            })
            .collect();
        assert_eq!(
            statuses,
            [
                "dup 4", "reused", "reused", "reused", "reused", "reused", "ok 11", "reused",
                "dup 11"
            ]
        );
        assert_eq!(plan.inserts.len(), 1);
        // The stored event never changes, so a reused id needs no remembered verdict.
        assert!(plan.refusals.is_empty());
        assert!(plan.rejects_any());
    }

    #[test]
    fn a_rejection_is_final_for_the_same_event_only() {
        // Rejected once: the stream was at 0, the event expected 2.
        let late = ev(1, "s", ExpectedVersion::Exact(2));
        let first = plan_push(
            0,
            std::slice::from_ref(&late),
            &HashMap::new(),
            &HashMap::new(),
            &HashMap::new(),
            &HashMap::new(),
            None,
        );
        assert!(matches!(
            first.results[0],
            PushResult::Rejected {
                actual_version: Some(0),
                ..
            }
        ));
        assert_eq!(first.refusals.len(), 1);
        let remembered = HashMap::from([(late.id, vec![first.refusals[0].1.clone()])]);
        // Meanwhile the stream reached version 2. A retry (or a late copy) of the same
        // push is not judged again: it gets the same answer and writes nothing.
        let versions = HashMap::from([("s".to_string(), 2u64)]);
        let retry = plan_push(
            5,
            std::slice::from_ref(&late),
            &HashMap::new(),
            &remembered,
            &versions,
            &HashMap::new(),
            None,
        );
        assert_eq!(retry.results, first.results);
        assert!(retry.inserts.is_empty() && retry.refusals.is_empty());
        // The id appended again as a new event (another time) is judged afresh.
        let anew = PushEvent {
            time: 7,
            ..late.clone()
        };
        let fresh = plan_push(
            5,
            &[anew],
            &HashMap::new(),
            &remembered,
            &versions,
            &HashMap::new(),
            None,
        );
        assert!(matches!(
            fresh.results[0],
            PushResult::Ok {
                position: 6,
                version: 3,
                ..
            }
        ));
        // Within one push too: the same event twice is rejected twice, remembered once.
        let twice = plan_push(
            0,
            &[late.clone(), late],
            &HashMap::new(),
            &HashMap::new(),
            &HashMap::new(),
            &HashMap::new(),
            None,
        );
        assert_eq!(twice.results[0], twice.results[1]);
        assert_eq!(twice.refusals.len(), 1);
    }

    #[test]
    fn fingerprints_tell_events_apart() {
        let a = ev(1, "s", ExpectedVersion::Any);
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        for other in [
            PushEvent {
                time: 1,
                ..a.clone()
            },
            PushEvent {
                expected_version: ExpectedVersion::Exact(0),
                ..a.clone()
            },
            PushEvent {
                stream: "t".into(),
                ..a.clone()
            },
            PushEvent {
                data: RawValue::from_string("2".into()).unwrap(),
                ..a.clone()
            },
            PushEvent {
                meta: Some(RawValue::from_string("{}".into()).unwrap()),
                ..a.clone()
            },
            ev(2, "s", ExpectedVersion::Any),
            PushEvent {
                schema_version: 2,
                ..a.clone()
            },
        ] {
            assert_ne!(a.fingerprint(), other.fingerprint(), "{other:?}");
        }
        // Fixed across builds: servers compare fingerprints they stored earlier. This is
        // the value builds from before schema versions gave (an event at version 1 hashes
        // as it did then).
        assert_eq!(a.fingerprint(), 6_460_817_325_541_230_163);
    }
}
