//! The binding's retention calls (bounded local storage, [`crate::retention`]): where the
//! replica's log starts, and the policy applied with the projections' snapshots.

use js_sys::Promise;
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use super::{js_result, whole_number, WasmStore};
use crate::error::Error;
use crate::retention::Retention;

/// A projection whose snapshot must cover what a cut drops.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Covering {
    name: String,
    version: u32,
}

#[wasm_bindgen]
impl WasmStore {
    /// Confirmed positions up to this one were dropped by retention (0: none).
    #[wasm_bindgen(getter)]
    pub fn dropped(&self) -> f64 {
        self.engine.dropped() as f64
    }

    /// Applies `retain: { events }`: drops the confirmed events that the snapshots of every
    /// projection in `projections_json` (`[{ name, version }]`) cover, keeping the newest
    /// `events`. Resolves to the last position dropped, or 0 when nothing was.
    pub fn retain(&self, events: f64, projections_json: String) -> Promise {
        let engine = self.engine.clone();
        future_to_promise(async move {
            let out = async {
                let policy = Retention::events(whole_number("retain.events", events)?);
                let covering: Vec<Covering> = serde_json::from_str(&projections_json)
                    .map_err(|e| Error::InvalidArgument(format!("retain projections: {e}")))?;
                let names: Vec<(&str, u32)> = covering
                    .iter()
                    .map(|c| (c.name.as_str(), c.version))
                    .collect();
                engine.retain(policy, &names).await
            }
            .await;
            js_result(out).map(|cut| JsValue::from_f64(cut.unwrap_or(0) as f64))
        })
    }
}
