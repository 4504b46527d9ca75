//! The conformance suite shared with the npm package: the cases in `tests/fixtures/` run
//! here against the core and in `pkg/test/conformance.test.mjs` against the wasm build, so
//! both runtimes provably follow the same rules.

use annals::checkpoints::{snapshot_trusted, CheckpointMark, CheckpointPlan, SnapshotFacts};
use annals::command_plan::command_event_id;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn u64s(value: &Value) -> Vec<u64> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_u64().expect("a whole number"))
        .collect()
}

#[test]
fn command_event_ids_match_the_typescript_vectors() {
    let cases = fixture("command_ids.json");
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let command_id = case["commandId"].as_str().unwrap();
        let index = case["index"].as_u64().unwrap() as usize;
        assert_eq!(
            command_event_id(command_id, index).to_string(),
            case["eventId"].as_str().unwrap(),
            "commandId {command_id:?}, index {index}"
        );
    }
}

#[test]
fn checkpoint_plans_follow_the_shared_cases() {
    let fixture = fixture("checkpoints.json");
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mut plan = CheckpointPlan::new(
            case["every"].as_u64().unwrap(),
            case["maxCount"].as_u64().unwrap() as usize,
            case["maxBytes"].as_u64().unwrap() as usize,
        );
        for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            let at = format!("{name}, step {i}: {step}");
            if let Some(range) = step.get("due") {
                let r = u64s(range);
                assert_eq!(plan.due(r[0], r[1]), u64s(&step["expect"]), "{at}");
            } else if let Some(marks) = step.get("record") {
                let marks: Vec<CheckpointMark> = marks
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| {
                        let m = u64s(m);
                        let measured = |i: usize| m.get(i).map_or(0.0, |v| *v as f64 / 1_000.0);
                        CheckpointMark {
                            position: m[0],
                            bytes: m[1] as usize,
                            // In the fixture: µs, as whole numbers.
                            cost: measured(2),
                            take_ms: measured(3),
                        }
                    })
                    .collect();
                assert_eq!(plan.record(&marks), u64s(&step["dropped"]), "{at}");
            } else if let Some(list) = step.get("positions") {
                assert_eq!(plan.positions(), u64s(list), "{at}");
            } else if let Some(every) = step.get("every") {
                assert_eq!(plan.every(), every.as_u64().unwrap(), "{at}");
            } else if let Some(bytes) = step.get("bytes") {
                assert_eq!(plan.bytes() as u64, bytes.as_u64().unwrap(), "{at}");
            } else if let Some(target) = step.get("baseFor") {
                assert_eq!(
                    plan.base_for(target.as_u64().unwrap()),
                    step["expect"].as_u64(),
                    "{at}"
                );
            } else if let Some(args) = step.get("wantsSnapshot") {
                let a = u64s(args);
                assert_eq!(
                    plan.wants_snapshot(a[0], a[1]),
                    step["expect"].as_bool().unwrap(),
                    "{at}"
                );
            } else if let Some(range) = step.get("prepareReplay") {
                let r = u64s(range);
                plan.prepare_replay(r[0], r[1]);
            } else if step.get("reset").is_some() {
                plan.reset();
            } else {
                panic!("unknown step {at}");
            }
        }
    }
}

#[test]
fn snapshot_trust_follows_the_shared_cases() {
    let fixture = fixture("checkpoints.json");
    for case in fixture["snapshotTrust"].as_array().unwrap() {
        let facts = SnapshotFacts {
            version: case["version"].as_u64().unwrap() as u32,
            position: case["position"].as_u64().unwrap(),
        };
        assert_eq!(
            snapshot_trusted(
                facts,
                case["projectionVersion"].as_u64().unwrap() as u32,
                case["confirmedHead"].as_u64().unwrap()
            ),
            case["trusted"].as_bool().unwrap(),
            "{case}"
        );
    }
}

#[path = "todo_upcasters/mod.rs"]
mod todo_upcasters;

/// A chain of `{ type, from, renameTo? }` declarations, each upcaster passing data on.
fn declared(chain: &Value) -> annals::upcast::Upcasters {
    let mut upcasters = annals::upcast::Upcasters::new();
    for step in chain.as_array().expect("a chain") {
        let event_type = step["type"].as_str().expect("a type");
        let from = step["from"].as_u64().expect("a version") as u32;
        upcasters = match step["renameTo"].as_str() {
            Some(to) => upcasters.rename(event_type, from, to, Ok),
            None => upcasters.add(event_type, from, Ok),
        };
    }
    upcasters
}

fn current_versions(upcasters: &annals::upcast::Upcasters, expected: &Value, at: &str) {
    for (event_type, version) in expected.as_object().expect("currentVersions") {
        assert_eq!(
            upcasters.current_version(event_type).map(u64::from),
            version.as_u64(),
            "{at}: current version of {event_type}"
        );
    }
}

#[test]
fn upcasters_give_the_shared_output() {
    let fixture = fixture("upcasters.json");
    let upcasters = todo_upcasters::registry()
        .build()
        .expect("the fixture's chain is valid");
    current_versions(
        &upcasters,
        &fixture["currentVersions"],
        "the fixture's chain",
    );
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let input = &case["in"];
        let event = annals::Event {
            id: annals::EventId([7; 16]),
            position: 3,
            stream: "todo-1".into(),
            version: 2,
            event_type: input["type"].as_str().unwrap().into(),
            schema_version: input["schemaVersion"].as_u64().unwrap() as u32,
            data: serde_json::value::to_raw_value(&input["data"]).unwrap(),
            meta: Some(serde_json::value::to_raw_value(&serde_json::json!({"by": "me"})).unwrap()),
            time: 1_700_000_000_000,
            origin: Some("client-a".into()),
            pending: false,
            erased: false,
        };
        let out = upcasters
            .upcast(&event)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = &case["out"];
        assert_eq!(out.event_type, expected["type"].as_str().unwrap(), "{name}");
        assert_eq!(
            u64::from(out.schema_version),
            expected["schemaVersion"].as_u64().unwrap(),
            "{name}"
        );
        let data: Value = serde_json::from_str(out.data.get()).unwrap();
        assert_eq!(data, expected["data"], "{name}");
        // Only the type, version and data change.
        assert_eq!(
            (out.id, out.position, &out.stream, out.version, out.time),
            (
                event.id,
                event.position,
                &event.stream,
                event.version,
                event.time
            ),
            "{name}"
        );
        assert_eq!(
            out.meta.as_ref().map(|m| m.get()),
            event.meta.as_ref().map(|m| m.get())
        );
        assert_eq!(out.origin, event.origin, "{name}");
    }
}

#[test]
fn upcaster_chain_checks_follow_the_shared_cases() {
    let fixture = fixture("upcasters.json");
    for case in fixture["checks"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let err = declared(&case["chain"])
            .check()
            .expect_err(name)
            .to_string();
        let kind = case["error"]["kind"].as_str().unwrap();
        assert!(
            err.starts_with(&format!("invalid argument: upcasters: {kind}")),
            "{name}: {err}"
        );
        for mention in case["error"]["mentions"].as_array().unwrap() {
            let mention = mention.as_str().unwrap();
            assert!(
                err.contains(mention),
                "{name}: {err} does not name {mention}"
            );
        }
        assert_eq!(
            declared(&case["chain"]).build().unwrap_err().code(),
            "INVALID_ARGUMENT",
            "{name}"
        );
    }
    for case in fixture["valid"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let upcasters = declared(&case["chain"])
            .build()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        current_versions(&upcasters, &case["currentVersions"], name);
    }
}
