//! Fuzzing with proptest (native only): arbitrary and mutated bytes for every decoder that
//! reads data from outside — the segment codec and the log's ingestion of stored segments,
//! pending batches, the sync protocol's messages, the bindings' event batches and read
//! queries, and (feature `server`) the server's push bodies and pull queries.
//!
//! Each must return an error or a value, never panic; and none may allocate much more than
//! its input: a counting allocator checks the largest single allocation made while
//! decoding, so that a huge length or count prefix cannot reserve gigabytes.
//! `PROPTEST_CASES` sets the cases per target (default 256; `make soak` runs many more).
#![cfg(not(target_arch = "wasm32"))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use annals::codec::{self, EventRef, SegmentReader};
use annals::log::{LogState, ReadQuery};
use annals::outbox::PendingBatch;
use annals::protocol::{PullResponse, PushRequest, PushResponse};
use annals::storage::{PendingRecord, Segment};
use annals::{EventId, NewEvent};
use proptest::prelude::*;

// ---- a counting allocator ----------------------------------------------------------------

/// Records, per thread, the largest single allocation since the last reset.
struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| {
        if size > l.get() {
            l.set(size);
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and checks that no single allocation it made passed `factor` times the input
/// size plus a fixed allowance.
fn bounded<T>(input_len: usize, what: &str, f: impl FnOnce() -> T) -> T {
    const ALLOWANCE: usize = 64 * 1024;
    LARGEST.with(|l| l.set(0));
    let out = f();
    let largest = LARGEST.with(|l| l.get());
    assert!(
        largest <= 64 * input_len + ALLOWANCE,
        "{what}: one allocation of {largest} bytes for {input_len} bytes of input"
    );
    out
}

// ---- inputs ----------------------------------------------------------------------------------

/// The fields of one event: id, version, time, stream, type, origin, meta, data.
type EventFields = (
    Vec<u8>,
    u64,
    u64,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    u32,
);

fn event_ref_strategy() -> impl Strategy<Value = EventFields> {
    (
        prop::collection::vec(any::<u8>(), 16),
        any::<u64>(),
        any::<u64>(),
        "[a-z0-9-]{1,12}",
        "[A-Z][a-z]{0,10}",
        prop::option::of("[a-f0-9-]{1,36}"),
        prop::option::of(Just("{\"correlationId\":\"c1\"}".to_string())),
        prop_oneof![
            Just("null".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            "[ -~]{0,40}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        ],
        // Schema versions: mostly 1, some later ones, the largest there is.
        prop_oneof![Just(1u32), 2u32..5, Just(u32::MAX)],
    )
}

/// A well-formed segment of 0 to 8 events starting at `first`.
fn segment_strategy() -> impl Strategy<Value = Vec<u8>> {
    (
        1u64..1_000,
        prop::collection::vec(event_ref_strategy(), 0..8),
    )
        .prop_map(|(first, events)| {
            let mut builder = codec::SegmentBuilder::new(first);
            for (i, (id, version, time, stream, kind, origin, meta, data, schema_version)) in
                events.iter().enumerate()
            {
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(id);
                builder.push(&EventRef {
                    id: EventId(bytes),
                    position: first + i as u64,
                    version: *version,
                    schema_version: *schema_version,
                    time: *time,
                    stream,
                    event_type: kind,
                    origin: origin.as_deref(),
                    meta: meta.as_deref(),
                    data,
                    // Some records erased: segments in format 3 (with marks) too.
                    erased: *version % 4 == 0,
                });
            }
            builder.finish()
        })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Set {
        at: usize,
        value: u8,
    },
    Truncate {
        at: usize,
    },
    /// Overwrites bytes at `at` with a huge varint (a length or number prefix).
    HugeVarint {
        at: usize,
    },
    /// Sets the header's event count.
    Count(u32),
    Append(Vec<u8>),
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        any::<usize>().prop_map(|at| Mutation::HugeVarint { at }),
        prop_oneof![Just(u32::MAX), Just(1 << 31), any::<u32>()].prop_map(Mutation::Count),
        prop::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Flip { at, bit } => {
                if let Some(b) = bytes.get_mut(at % len) {
                    *b ^= 1 << bit;
                }
            }
            Mutation::Set { at, value } => {
                if let Some(b) = bytes.get_mut(at % len) {
                    *b = *value;
                }
            }
            Mutation::Truncate { at } => bytes.truncate(at % len),
            Mutation::HugeVarint { at } => {
                let at = at % len;
                for (i, b) in [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]
                    .iter()
                    .enumerate()
                {
                    if let Some(slot) = bytes.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            Mutation::Count(count) => {
                if bytes.len() >= codec::HEADER_LEN {
                    bytes[8..12].copy_from_slice(&count.to_le_bytes());
                }
            }
            Mutation::Append(extra) => bytes.extend_from_slice(extra),
        }
    }
    bytes
}

/// Decodes a segment every way the engine does; errors are fine, panics are not.
fn decode_segment(bytes: &[u8]) {
    let _ = codec::header(bytes);
    if let Ok(reader) = SegmentReader::new(bytes) {
        let first = reader.first();
        let mut offsets = Vec::new();
        let mut reader = reader;
        loop {
            let offset = reader.offset();
            match reader.next() {
                Some(Ok(event)) => {
                    offsets.push((offset, event.position));
                    let _ = event.to_event(false);
                    let mut json = Vec::new();
                    event.write_json(&mut json, false);
                }
                Some(Err(_)) | None => break,
            }
        }
        for (offset, position) in offsets {
            let _ = SegmentReader::record_at(bytes, offset, position);
            let _ = SegmentReader::starting_at(bytes, offset, position).map(|r| r.count());
        }
        let _ = SegmentReader::starting_at(bytes, bytes.len(), first.wrapping_add(3));
    }
    let _ = SegmentReader::record_at(bytes, bytes.len() / 2, 1);
}

/// Takes stored segments into a log, as an engine opening a store does.
fn ingest(segments: &[Vec<u8>]) {
    let mut log = LogState::default();
    let segments: Vec<Segment> = segments
        .iter()
        .map(|bytes| Segment {
            first: codec::header(bytes).map_or(1, |(first, _)| first),
            bytes: bytes.clone(),
        })
        .collect();
    if log.ingest(&segments).is_ok() {
        let _ = log.read(&ReadQuery::default());
        let _ = log.compact_memory(1024);
        let _ = log.read_json(&ReadQuery {
            stream: Some("a".into()),
            ..ReadQuery::default()
        });
    }
}

// ---- JSON-shaped inputs for the protocol decoders ------------------------------------------

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        "[ -~]{0,12}".prop_map(serde_json::Value::String),
        Just(serde_json::json!("0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f70")),
        Just(serde_json::json!("no_stream")),
        Just(serde_json::json!(9_007_199_254_740_993u64)),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_string()),
                    Just("stream".to_string()),
                    Just("type".to_string()),
                    Just("data".to_string()),
                    Just("meta".to_string()),
                    Just("time".to_string()),
                    Just("expectedVersion".to_string()),
                    Just("clientId".to_string()),
                    Just("events".to_string()),
                    Just("results".to_string()),
                    Just("status".to_string()),
                    Just("position".to_string()),
                    Just("version".to_string()),
                    Just("head".to_string()),
                    Just("epoch".to_string()),
                    Just("more".to_string()),
                    Just("after".to_string()),
                    Just("limit".to_string()),
                    "[a-z]{1,8}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A push-shaped body with some fields replaced by arbitrary JSON.
fn push_like() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((json_value(), json_value(), 0u8..8), 0..4),
        json_value(),
    )
        .prop_map(|(events, client)| {
            let events: Vec<serde_json::Value> = events
                .into_iter()
                .map(|(a, b, which)| {
                    let mut e = serde_json::json!({
                        "id": "0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f70",
                        "stream": "s", "type": "T", "data": a, "time": 1
                    });
                    let key = [
                        "id",
                        "stream",
                        "type",
                        "data",
                        "meta",
                        "time",
                        "expectedVersion",
                        "x",
                    ][which as usize];
                    e[key] = b;
                    e
                })
                .collect();
            let client = if client.is_string() {
                client
            } else {
                serde_json::json!("c")
            };
            serde_json::json!({ "clientId": client, "events": events }).to_string()
        })
}

fn decode_protocol(bytes: &[u8]) {
    let _ = serde_json::from_slice::<PushRequest>(bytes);
    let _ = serde_json::from_slice::<PushResponse>(bytes);
    let _ = serde_json::from_slice::<PullResponse>(bytes);
    let _ = PendingBatch::decode(&PendingRecord {
        seq: 1,
        bytes: bytes.to_vec(),
        erased: false,
    });
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = NewEvent::parse_batch(text);
        let _ = ReadQuery::parse(text);
        let _ = EventId::parse(text);
    }
    #[cfg(feature = "server")]
    {
        let limits = annals::server::limits::Limits::default();
        let _ = annals::server::limits::parse_push(bytes, &limits);
        if let Ok(text) = std::str::from_utf8(bytes) {
            let _ = annals::server::limits::parse_pull_query(Some(text), &limits);
        }
    }
}

// ---- the properties ------------------------------------------------------------------------------

proptest! {
    #[test]
    fn segments_round_trip(bytes in segment_strategy()) {
        let reader = SegmentReader::new(&bytes).unwrap();
        let (first, count) = (reader.first(), reader.event_count());
        let events: Vec<EventRef<'_>> = reader.collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(events.len() as u32, count);
        let again = codec::encode(first, events.iter().copied());
        prop_assert_eq!(again, bytes);
    }

    #[test]
    fn arbitrary_bytes_never_break_the_segment_codec(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        bounded(bytes.len(), "segment", || decode_segment(&bytes));
        bounded(bytes.len(), "ingest", || ingest(std::slice::from_ref(&bytes)));
    }

    #[test]
    fn damaged_segments_never_break_the_codec_or_the_log(
        segments in prop::collection::vec(segment_strategy(), 1..4),
        mutations in prop::collection::vec(mutation_strategy(), 0..4),
        which in any::<usize>(),
    ) {
        let mut segments = segments;
        let which = which % segments.len();
        segments[which] = mutate(segments[which].clone(), &mutations);
        let total: usize = segments.iter().map(Vec::len).sum();
        for bytes in &segments {
            bounded(bytes.len(), "segment", || decode_segment(bytes));
        }
        bounded(total, "merge", || { let _ = codec::merge(&segments); });
        bounded(total, "ingest", || ingest(&segments));
    }

    #[test]
    fn arbitrary_bytes_never_break_the_protocol_decoders(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        bounded(bytes.len(), "protocol", || decode_protocol(&bytes));
    }

    #[test]
    fn json_shaped_input_never_breaks_the_protocol_decoders(body in push_like(), other in json_value()) {
        bounded(body.len(), "push-like body", || decode_protocol(body.as_bytes()));
        let other = other.to_string();
        bounded(other.len(), "JSON", || decode_protocol(other.as_bytes()));
        let wrapped = format!("[{other}]");
        bounded(wrapped.len(), "batch", || { let _ = NewEvent::parse_batch(&wrapped); });
    }

    #[test]
    fn query_strings_never_break_the_pull_parser(query in "[a-z=&0-9.eE+-]{0,64}") {
        #[cfg(feature = "server")]
        {
            let limits = annals::server::limits::Limits::default();
            if let Ok(params) = annals::server::limits::parse_pull_query(Some(&query), &limits) {
                prop_assert!(params.limit >= 1 && params.limit <= limits.max_pull_limit);
                prop_assert!(params.wait <= limits.max_wait);
            }
        }
        let _ = ReadQuery::parse(&query);
    }
}

/// The allocation check itself must be able to fail.
#[test]
#[should_panic(expected = "one allocation of")]
fn the_allocation_bound_catches_a_large_reservation() {
    bounded(16, "a deliberate reservation", || {
        Vec::<u8>::with_capacity(16 << 20)
    });
}

/// Regression (found by the long fuzz run of `make soak`): a segment header whose first
/// position was near 2^64 made merging (and reading) overflow `first + count`.
#[test]
fn a_first_position_near_the_end_of_u64_is_refused() {
    let mut bytes = codec::encode(1, []);
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    bytes[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
    bytes.extend_from_slice(&[0; 23]);
    decode_segment(&bytes);
    assert!(codec::merge(&[bytes.clone(), bytes.clone()]).is_err());
    ingest(&[bytes]);
}

/// Regression (found by this fuzzing): a segment whose header claims 4 billion events made
/// the log reserve index space for all of them before reading one.
#[test]
fn a_huge_event_count_reserves_nothing_up_front() {
    // 4 million claimed (enough to see, not enough to exhaust memory), then 4 billion.
    for count in [1u32 << 22, u32::MAX] {
        let mut bytes = codec::encode(1, []);
        bytes[8..12].copy_from_slice(&count.to_le_bytes());
        bytes.extend_from_slice(&[0; 40]);
        bounded(bytes.len(), "ingest", || {
            ingest(std::slice::from_ref(&bytes))
        });
    }
}
