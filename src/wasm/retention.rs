//! The binding's retention calls (bounded local storage, [`crate::retention`]): where the
//! replica's log starts, and the policy applied with the projections' snapshots.

use js_sys::Promise;
use wasm_bindgen::prelude::*;

use super::{js_result, promise, whole_number, WasmStore};
use crate::error::{Error, Result};
use crate::retention::Retention;

#[wasm_bindgen]
impl WasmStore {
    /// Confirmed positions up to this one were dropped by retention (0: none).
    #[wasm_bindgen(getter)]
    pub fn dropped(&self) -> f64 {
        self.engine.dropped() as f64
    }

    /// Applies `retain: { events }`: drops the confirmed events that the snapshots of every
    /// projection (`names[i]` at version `versions[i]`) cover, keeping the newest `events`.
    /// Resolves to the last position dropped, or 0 when nothing was.
    pub fn retain(&self, events: f64, names: Vec<String>, versions: &[f64]) -> Promise {
        let engine = self.engine.clone();
        let covering = covering(names, versions);
        promise(async move {
            let out = async {
                let policy = Retention::events(whole_number("retain.events", events)?);
                let covering = covering?;
                let names: Vec<(&str, u32)> =
                    covering.iter().map(|(n, v)| (n.as_str(), *v)).collect();
                engine.retain(policy, &names).await
            }
            .await;
            js_result(out).map(|cut| JsValue::from_f64(cut.unwrap_or(0) as f64))
        })
    }
}

/// The projections whose snapshots must cover a cut: names beside their versions.
fn covering(names: Vec<String>, versions: &[f64]) -> Result<Vec<(String, u32)>> {
    if names.len() != versions.len() {
        return Err(Error::InvalidArgument(
            "retain: `names` and `versions` must be as long".into(),
        ));
    }
    names
        .into_iter()
        .zip(versions)
        .map(|(name, &version)| {
            let version = u32::try_from(whole_number("version", version)?).map_err(|_| {
                Error::InvalidArgument(format!("projection `{name}`: the version is too large"))
            })?;
            Ok((name, version))
        })
        .collect()
}
