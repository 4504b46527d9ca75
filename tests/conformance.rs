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
