//! The rules the TS runtime asks the core for, once per batch: the error codes, the
//! execute plan (derived event ids, the batch of a command) and checkpoint bookkeeping
//! (positions only: the states stay in JS). See `crate::command_plan` and
//! `crate::checkpoints` for the rules themselves.

use js_sys::Float64Array;
use wasm_bindgen::prelude::*;

use super::{js_result, to_json, whole_number};
use crate::checkpoints::{snapshot_trusted, CheckpointMark, CheckpointPlan, SnapshotFacts};
use crate::command::Decision;
use crate::command_plan::{command_event_id, plan_batch, CommandIds};
use crate::contract::{CommandPlanRequest, PlannedEvent};
use crate::error::{Error, Result};
use crate::event::ExpectedVersion;
use crate::json;
use crate::ErrorCode;

/// Every code an `AnnalsError` can carry, as the core defines them (`ErrorCode`): the
/// wrapper's generated `ANNALS_ERROR_CODES` must equal it (a test compares them).
#[wasm_bindgen(js_name = errorCodes)]
pub fn error_codes() -> Vec<String> {
    ErrorCode::client_codes()
        .map(|c| c.as_str().to_owned())
        .collect()
}

/// The crate's version, which is the npm package's (bug bundles record it).
#[wasm_bindgen(js_name = annalsVersion)]
pub fn annals_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// The fingerprint of a state given as JSON (`crate::fingerprint`): 16 hex digits, equal
/// for equal states on every replica.
#[wasm_bindgen]
pub fn fingerprint(state_json: &str) -> std::result::Result<String, JsValue> {
    js_result(crate::fingerprint::fingerprint(state_json))
}

/// The ids of the first `count` events of command `commandId` (`commandEventId` of
/// index 0, 1, ...): UUIDv8 from SHA-256(`annals:command:<commandId>:<index>`).
#[wasm_bindgen(js_name = commandEventIds)]
pub fn command_event_ids(
    command_id: &str,
    count: f64,
) -> std::result::Result<Vec<String>, JsValue> {
    let count = js_result(whole_number("count", count))?;
    Ok((0..count as usize)
        .map(|i| command_event_id(command_id, i).to_string())
        .collect())
}

/// The batch that carries a command's decided events (`CommandPlanRequest` JSON) to its
/// stream, as the JSON array `append` takes (`PlannedEvent[]`): ids derived from the
/// command id, the app's meta with `aggregate`, `commandId`, `correlationId` and
/// `causationId` added, and the first event expecting `expectedVersion`. Check
/// `commandResult` first: a known command id must not be decided again.
#[wasm_bindgen(js_name = planCommand)]
pub fn plan_command(request_json: &str) -> std::result::Result<String, JsValue> {
    js_result(plan_command_json(request_json))
}

fn plan_command_json(request_json: &str) -> Result<String> {
    let request = json::parse(request_json, CommandPlanRequest::read)
        .map_err(|e| Error::InvalidArgument(format!("command plan: {e}")))?;
    if request.stream.is_empty() || request.command_id.is_empty() {
        return Err(Error::InvalidArgument(
            "a command plan needs a non-empty `stream` and `commandId`".into(),
        ));
    }
    let ids = CommandIds::new(
        request.command_id,
        request.correlation_id,
        request.causation_id,
    );
    let mut decisions = Vec::with_capacity(request.events.len());
    for e in request.events {
        let data = match e.data {
            Some(data) => data,
            None => serde_json::value::RawValue::NULL.to_owned(),
        };
        let schema_version = match e.schema_version {
            None => 1,
            Some(v) if v >= 1 => v,
            Some(_) => {
                return Err(Error::InvalidEvent(format!(
                    "event `{}`: `schemaVersion` must be a whole number from 1 to {}",
                    e.event_type,
                    u32::MAX
                )))
            }
        };
        decisions.push(Decision {
            event_type: e.event_type,
            schema_version,
            data,
            meta: e.meta,
        });
    }
    let batch = plan_batch(
        &request.stream,
        request.aggregate.as_deref(),
        &ids,
        request.expected_version,
        decisions,
    )?;
    let mut planned = Vec::with_capacity(batch.len());
    for event in &batch {
        let (Some(id), Some(meta)) = (event.id, event.meta.as_deref()) else {
            return Err(Error::InvalidArgument(
                "a planned event lacks its id".into(),
            ));
        };
        planned.push(PlannedEvent {
            id,
            stream: &event.stream,
            event_type: &event.event_type,
            schema_version: (event.schema_version != 1).then_some(event.schema_version),
            data: &event.data,
            meta,
            expected_version: match event.expected_version {
                ExpectedVersion::Exact(v) => Some(v),
                _ => None,
            },
        });
    }
    to_json(&planned)
}

/// Whether a stored snapshot (`SnapshotReply`'s `version` and `position`) may stand for
/// a projection at `projectionVersion` on a log whose confirmed head is `confirmedHead`.
#[wasm_bindgen(js_name = snapshotTrusted)]
pub fn snapshot_is_trusted(
    version: f64,
    position: f64,
    projection_version: f64,
    confirmed_head: f64,
) -> bool {
    let (Ok(version), Ok(position), Ok(projection_version), Ok(confirmed_head)) = (
        whole_number("version", version),
        whole_number("position", position),
        whole_number("projectionVersion", projection_version),
        whole_number("confirmedHead", confirmed_head),
    ) else {
        return false;
    };
    let (Ok(version), Ok(projection_version)) =
        (u32::try_from(version), u32::try_from(projection_version))
    else {
        return false;
    };
    snapshot_trusted(
        SnapshotFacts { version, position },
        projection_version,
        confirmed_head,
    )
}

/// One projection's checkpoint bookkeeping, positions only (`crate::checkpoints`): the TS
/// runtime keeps the states by position and asks this, once per batch, where to take
/// checkpoints, which to drop and which serves a target.
#[wasm_bindgen(js_name = CheckpointPlan)]
pub struct WasmCheckpointPlan {
    plan: CheckpointPlan,
}

#[wasm_bindgen(js_class = CheckpointPlan)]
impl WasmCheckpointPlan {
    /// `new CheckpointPlan(every, maxCount, maxBytes)`: a checkpoint every `every` events
    /// to start with (it adapts to the measured costs), at most `maxCount` kept, weighing at
    /// most `maxBytes` together (0 for the defaults: 1,024 events, 16,384 checkpoints, 64 MiB).
    #[wasm_bindgen(constructor)]
    pub fn new(
        every: f64,
        max_count: f64,
        max_bytes: f64,
    ) -> std::result::Result<WasmCheckpointPlan, JsValue> {
        let defaults = CheckpointPlan::default();
        let every = js_result(whole_number("every", every))?;
        let max_count = js_result(whole_number("maxCount", max_count))? as usize;
        let max_bytes = js_result(whole_number("maxBytes", max_bytes))? as usize;
        Ok(WasmCheckpointPlan {
            plan: CheckpointPlan::new(
                if every == 0 { defaults.every() } else { every },
                if max_count == 0 {
                    crate::checkpoints::DEFAULT_MAX_MEASURED_CHECKPOINTS
                } else {
                    max_count
                },
                if max_bytes == 0 {
                    crate::checkpoints::DEFAULT_MAX_CHECKPOINT_BYTES
                } else {
                    max_bytes
                },
            ),
        })
    }

    /// The current spacing in events (it doubles as the log grows).
    #[wasm_bindgen(getter)]
    pub fn every(&self) -> f64 {
        self.plan.every() as f64
    }

    /// The positions in `after + 1 ..= to` at which to take a checkpoint of the confirmed
    /// state while folding that range, ascending.
    pub fn due(&self, after: f64, to: f64) -> std::result::Result<Float64Array, JsValue> {
        let after = js_result(whole_number("after", after))?;
        let to = js_result(whole_number("to", to))?;
        Ok(positions(&self.plan.due(after, to)))
    }

    /// Before a replay from `from` to `to` (opening, catching up a long way): widens the
    /// spacing to what the replay will end with.
    #[wasm_bindgen(js_name = prepareReplay)]
    pub fn prepare_replay(&mut self, from: f64, to: f64) -> std::result::Result<(), JsValue> {
        let from = js_result(whole_number("from", from))?;
        let to = js_result(whole_number("to", to))?;
        self.plan.prepare_replay(from, to);
        Ok(())
    }

    /// Records the checkpoints just taken: `positions[i]` weighs `bytes[i]` (e.g. its JSON
    /// length); `costs[i]` is the ms per event of the folding that led to it and
    /// `takeMs[i]` the ms taking it cost (either may be empty: not measured). Returns the
    /// positions whose states to drop now (possibly some just recorded), ascending.
    pub fn record(
        &mut self,
        positions_in: &[f64],
        bytes: &[f64],
        costs: &[f64],
        take_ms: &[f64],
    ) -> std::result::Result<Float64Array, JsValue> {
        let fits = |list: &[f64]| list.is_empty() || list.len() == positions_in.len();
        if bytes.len() != positions_in.len() || !fits(costs) || !fits(take_ms) {
            return Err(super::to_js_error(&Error::InvalidArgument(
                "`positions`, `bytes`, `costs` and `takeMs` must be as long".into(),
            )));
        }
        let measured = |list: &[f64], i: usize| {
            list.get(i)
                .copied()
                .filter(|c| c.is_finite())
                .unwrap_or(0.0)
        };
        let mut marks = Vec::with_capacity(positions_in.len());
        for (i, position) in positions_in.iter().enumerate() {
            marks.push(CheckpointMark {
                position: js_result(whole_number("position", *position))?,
                bytes: js_result(whole_number("bytes", bytes[i]))? as usize,
                cost: measured(costs, i),
                take_ms: measured(take_ms, i),
            });
        }
        Ok(positions(&self.plan.record(&marks)))
    }

    /// The kept checkpoint nearest at or before `target`, or `undefined`.
    #[wasm_bindgen(js_name = baseFor)]
    pub fn base_for(&self, target: f64) -> std::result::Result<Option<f64>, JsValue> {
        let target = js_result(whole_number("target", target))?;
        Ok(self.plan.base_for(target).map(|p| p as f64))
    }

    /// Whether reaching `target` from `base` is far enough (more than one spacing) to read
    /// the stored snapshot first, in case it is nearer.
    #[wasm_bindgen(js_name = wantsSnapshot)]
    pub fn wants_snapshot(&self, target: f64, base: f64) -> std::result::Result<bool, JsValue> {
        let target = js_result(whole_number("target", target))?;
        let base = js_result(whole_number("base", base))?;
        Ok(self.plan.wants_snapshot(target, base))
    }

    /// The kept positions, ascending.
    pub fn positions(&self) -> Float64Array {
        positions(&self.plan.positions())
    }

    /// What the kept checkpoints weigh together.
    #[wasm_bindgen(getter)]
    pub fn bytes(&self) -> f64 {
        self.plan.bytes() as f64
    }

    /// The byte budget of the kept checkpoints.
    #[wasm_bindgen(getter, js_name = maxBytes)]
    pub fn max_bytes(&self) -> f64 {
        self.plan.max_bytes() as f64
    }

    /// The confirmed log was reset: forget every checkpoint, back to the first spacing.
    pub fn reset(&mut self) {
        self.plan.reset();
    }
}

fn positions(list: &[u64]) -> Float64Array {
    let values: Vec<f64> = list.iter().map(|p| *p as f64).collect();
    Float64Array::from(values.as_slice())
}
