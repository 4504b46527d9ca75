//! Native micro-benchmarks (criterion): the segment codec and a Rust projection fold.
//! Run with `make bench` (or `cargo bench --profile perf --bench native`); results land in
//! target/criterion and are summarised into target/bench/native.md and .json by
//! bench/native-report.mjs.

// criterion is a native dev-dependency: on wasm32 (`cargo clippy --target wasm32-unknown-unknown
// --all-targets`) this benchmark is an empty program.
#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::collections::HashMap;

    use annals::codec::{encode, EventRef, SegmentReader};
    use annals::event::EventId;
    use annals::projection::{Projection, ProjectionRunner};
    use annals::{Engine, EngineOptions, MemoryStorage, NewEvent};
    use criterion::{criterion_group, BatchSize, Criterion, Throughput};
    use futures::executor::block_on;

    const EVENTS: usize = 100_000;
    const STREAMS: usize = 1_000;

    /// About 200 bytes of JSON, like the browser benchmark's events.
    fn payload(i: usize) -> String {
        format!(
            r#"{{"title":"item {i:08}","note":"lorem ipsum dolor sit amet, consectetur adipiscing elit","amount":{},"tags":["a","b","c"],"done":{}}}"#,
            i % 997,
            i % 2 == 0
        )
    }

    fn sample_events() -> (Vec<String>, Vec<String>) {
        let streams = (0..EVENTS)
            .map(|i| format!("stream-{}", i % STREAMS))
            .collect();
        let payloads = (0..EVENTS).map(payload).collect();
        (streams, payloads)
    }

    fn refs<'a>(
        streams: &'a [String],
        payloads: &'a [String],
    ) -> impl Iterator<Item = EventRef<'a>> {
        streams
            .iter()
            .zip(payloads)
            .enumerate()
            .map(|(i, (stream, data))| EventRef {
                id: EventId((i as u128).to_be_bytes()),
                position: i as u64 + 1,
                version: (i / STREAMS) as u64 + 1,
                time: 1_700_000_000_000 + i as u64,
                stream,
                event_type: "ItemAdded",
                schema_version: 1,
                origin: None,
                meta: None,
                data,
                erased: false,
            })
    }

    fn codec(c: &mut Criterion) {
        let (streams, payloads) = sample_events();
        let bytes = encode(1, refs(&streams, &payloads));
        let mut group = c.benchmark_group("segment codec");
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function("encode 100k events", |b| {
            b.iter(|| encode(1, refs(&streams, &payloads)))
        });
        group.bench_function("decode 100k events", |b| {
            b.iter(|| {
                let mut sum = 0usize;
                for event in SegmentReader::new(&bytes).expect("header") {
                    sum += event.expect("event").data.len();
                }
                sum
            })
        });
        group.finish();
    }

    /// A counter plus a per-stream map: the projection of the browser benchmark, in Rust.
    struct Totals;

    #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    struct TotalsState {
        count: u64,
        per_stream: HashMap<String, u64>,
    }

    impl Projection for Totals {
        type State = TotalsState;
        fn name(&self) -> &str {
            "totals"
        }
        fn initial(&self) -> TotalsState {
            TotalsState::default()
        }
        fn apply(&self, state: &mut TotalsState, event: &EventRef<'_>) {
            state.count += 1;
            match state.per_stream.get_mut(event.stream) {
                Some(n) => *n += 1,
                None => {
                    state.per_stream.insert(event.stream.to_owned(), 1);
                }
            }
        }
    }

    fn fold(c: &mut Criterion) {
        let engine =
            block_on(Engine::open(MemoryStorage::new(), EngineOptions::default())).expect("engine");
        let (streams, payloads) = sample_events();
        for chunk in streams
            .iter()
            .zip(&payloads)
            .collect::<Vec<_>>()
            .chunks(1_000)
        {
            let batch = chunk
                .iter()
                .map(|(stream, data)| {
                    let data =
                        serde_json::value::RawValue::from_string((*data).clone()).expect("json");
                    NewEvent::new(stream.as_str(), "ItemAdded", &data).expect("event")
                })
                .collect();
            block_on(engine.append(batch)).expect("append");
        }
        let mut group = c.benchmark_group("rust projection");
        group.throughput(Throughput::Elements(EVENTS as u64));
        group.bench_function("fold 100k events", |b| {
            b.iter_batched(
                || (),
                |()| {
                    let runner = block_on(ProjectionRunner::open(&engine, Totals)).expect("fold");
                    runner.state().count
                },
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }

    criterion_group! {
        name = benches;
        config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4));
        targets = codec, fold
    }
}

#[cfg(not(target_arch = "wasm32"))]
criterion::criterion_main!(native::benches);

#[cfg(target_arch = "wasm32")]
fn main() {}
