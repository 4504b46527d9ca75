//! Core: upcasters, which bring events written at an older schema version of their type up
//! to the current one when they are read. The stored bytes never change: upcasting is a
//! view, applied wherever Rust reads events for app logic ([`crate::projection`]'s
//! runner, [`crate::command`]'s aggregates, the server's authorities in [`crate::push`]).
//!
//! An upcaster is registered for a type and a version `v`; it is pure and synchronous and
//! turns that type's data at `v` into data at `v + 1`, optionally under a new type name
//! (declared when it is registered, so that [`Upcasters::check`] sees every path before an
//! event is read). Upcasting repeats until no upcaster matches the event's (type, version);
//! a renamed event continues with the upcasters of its new name.
//!
//! ```
//! use annals::upcast::Upcasters;
//!
//! let upcasters = Upcasters::new()
//!     // v1 -> v2: a field added
//!     .add("TodoAdded", 1, |mut data| {
//!         data["priority"] = 0.into();
//!         Ok(data)
//!     })
//!     // v2 -> v3: renamed to TodoCreated
//!     .rename("TodoAdded", 2, "TodoCreated", Ok)
//!     .build()
//!     .unwrap();
//! assert_eq!(upcasters.current_version("TodoCreated"), Some(3));
//! assert_eq!(upcasters.current_version("TodoAdded"), None); // renamed away
//! ```
//!
//! `tests/fixtures/upcasters.json` holds a chain and its expected output that the TS
//! runtime's upcasters must give too.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::codec::EventRef;
use crate::error::{Error, Result};
use crate::event::Event;

/// A function from one version's data to the next's.
type UpcastFn = dyn Fn(Value) -> Result<Value> + Send + Sync;

struct Step {
    /// The type the event continues under (a rename), if not its own.
    rename: Option<String>,
    upcast: Arc<UpcastFn>,
}

/// A registry of upcasters, per event type and version.
#[derive(Default, Clone)]
pub struct Upcasters {
    steps: HashMap<String, BTreeMap<u32, Arc<Step>>>,
    /// Registrations of a (type, version) that already had an upcaster: refused by
    /// [`Upcasters::check`] (registering cannot fail, to keep the builder chainable).
    duplicates: Vec<(String, u32)>,
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for (event_type, from, step) in self.sorted() {
            match &step.rename {
                Some(to) => list.entry(&format_args!("{event_type} {from}→{} as {to}", from + 1)),
                None => list.entry(&format_args!("{event_type} {from}→{}", from + 1)),
            };
        }
        list.finish()
    }
}

/// An event upcast to its current version: its new type, version and data (the rest of
/// the event is unchanged).
#[derive(Debug, Clone, PartialEq)]
pub struct Upcasted {
    pub event_type: String,
    pub schema_version: u32,
    /// JSON text.
    pub data: String,
}

impl Upcasted {
    /// `event` with this type, version and data.
    pub fn apply_to<'a>(&'a self, event: &EventRef<'a>) -> EventRef<'a> {
        EventRef {
            event_type: &self.event_type,
            schema_version: self.schema_version,
            data: &self.data,
            ..*event
        }
    }
}

impl Upcasters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `upcast`, which turns the data of a `event_type` event at version `from`
    /// into its data at `from + 1`.
    pub fn add(
        self,
        event_type: impl Into<String>,
        from: u32,
        upcast: impl Fn(Value) -> Result<Value> + Send + Sync + 'static,
    ) -> Self {
        self.register(event_type.into(), from, None, Arc::new(upcast))
    }

    /// Registers `upcast` for `event_type` at version `from`, after which the event is a
    /// `to` event at version `from + 1` (and continues with `to`'s upcasters).
    pub fn rename(
        self,
        event_type: impl Into<String>,
        from: u32,
        to: impl Into<String>,
        upcast: impl Fn(Value) -> Result<Value> + Send + Sync + 'static,
    ) -> Self {
        self.register(event_type.into(), from, Some(to.into()), Arc::new(upcast))
    }

    fn register(
        mut self,
        event_type: String,
        from: u32,
        rename: Option<String>,
        upcast: Arc<UpcastFn>,
    ) -> Self {
        let steps = self.steps.entry(event_type.clone()).or_default();
        match steps.entry(from) {
            std::collections::btree_map::Entry::Occupied(_) => {
                self.duplicates.push((event_type, from))
            }
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(Arc::new(Step { rename, upcast }));
            }
        }
        self
    }

    /// Checks the chain ([`Upcasters::check`]) and returns it ready to share.
    pub fn build(self) -> Result<Arc<Self>> {
        self.check()?;
        Ok(Arc::new(self))
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Every registered step, sorted by type and version (for stable messages).
    fn sorted(&self) -> Vec<(&str, u32, &Step)> {
        let mut all: Vec<(&str, u32, &Step)> = self
            .steps
            .iter()
            .flat_map(|(t, steps)| steps.iter().map(move |(v, s)| (t.as_str(), *v, &**s)))
            .collect();
        all.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        all
    }

    /// Refuses a chain that cannot bring every event of a type to one current version:
    /// two upcasters for the same type and version (a duplicate); a type whose upcasters
    /// skip a version or do not start at 1 (or at the version a rename reaches it at), so
    /// that some events have no path (a gap); and a chain whose end is not one version (a
    /// type renamed away that still has upcasters after the rename, a type reached by
    /// renames at different versions with nothing between them, or reached above its
    /// current version). The error is [`Error::InvalidArgument`] naming the types and
    /// versions.
    pub fn check(&self) -> Result<()> {
        let bad = |message: String| Err(Error::InvalidArgument(format!("upcasters: {message}")));
        if let Some((event_type, from)) = self.duplicates.first() {
            return bad(format!(
                "duplicate: {event_type} has two upcasters from version {from} to {}",
                u64::from(*from) + 1
            ));
        }
        let mut types: Vec<&String> = self.steps.keys().collect();
        types.sort();
        // Per type: versions in a row, and nothing after a rename.
        for event_type in &types {
            let steps = &self.steps[*event_type];
            let mut previous: Option<(u32, &Step)> = None;
            for (&from, step) in steps {
                if from == 0 || from == u32::MAX {
                    return bad(format!(
                        "{event_type} has an upcaster from version {from}: versions go from 1 to {}",
                        u32::MAX
                    ));
                }
                if step.rename.as_deref() == Some(event_type.as_str()) {
                    return bad(format!(
                        "ambiguous: {event_type} {from}→{} renames {event_type} to itself",
                        from + 1
                    ));
                }
                if let Some((before, before_step)) = previous {
                    if let Some(to) = &before_step.rename {
                        return bad(format!(
                            "ambiguous: {event_type} {before}→{} renames it to {to}, yet {event_type} \
                             also has an upcaster from version {from}: where a {event_type} event ends is not one version",
                            before + 1
                        ));
                    }
                    if from != before + 1 {
                        return bad(format!(
                            "gap: {event_type} has upcasters {before}→{} and {from}→{} but none from version {} to {from}",
                            before + 1,
                            from + 1,
                            before + 1
                        ));
                    }
                }
                previous = Some((from, step));
            }
        }
        // Where renames land: (target type) -> [(version, from type)].
        let mut landings: BTreeMap<&str, Vec<(u32, &str)>> = BTreeMap::new();
        for (event_type, from, step) in self.sorted() {
            if let Some(to) = &step.rename {
                landings
                    .entry(to.as_str())
                    .or_default()
                    .push((from + 1, event_type));
            }
        }
        let mut targets: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
        targets.extend(landings.keys().copied());
        targets.sort_unstable();
        targets.dedup();
        for target in targets {
            let reached = landings.get(target).map(Vec::as_slice).unwrap_or(&[]);
            let steps = self.steps.get(target);
            let first = steps.and_then(|s| s.keys().next().copied());
            let last = steps.and_then(|s| s.iter().next_back());
            let lowest = reached.iter().min_by_key(|(v, _)| *v);
            if let Some(first) = first {
                match lowest {
                    None if first > 1 => {
                        return bad(format!(
                            "gap: {target} has no upcaster from version 1 to 2 (its upcasters start at version {first})"
                        ));
                    }
                    Some((at, from_type)) if first > *at => {
                        return bad(format!(
                            "gap: {from_type} {}→{at} renames it to {target} at version {at}, but {target}'s upcasters \
                             start at version {first}: nothing takes {target} from version {at} to {first}",
                            at - 1
                        ));
                    }
                    _ => {}
                }
            }
            match last {
                // No upcasters of its own: every rename must land at the same version.
                None => {
                    let highest = reached.iter().max_by_key(|(v, _)| *v);
                    if let (Some((low, low_from)), Some((high, high_from))) = (lowest, highest) {
                        if low != high {
                            return bad(format!(
                                "ambiguous: {target} is reached at version {low} (from {low_from}) and at version \
                                 {high} (from {high_from}), and has no upcasters from {low} to {high}: its current \
                                 version is not one version"
                            ));
                        }
                    }
                }
                Some((&last_from, last_step)) => {
                    for (at, from_type) in reached {
                        match &last_step.rename {
                            Some(away) if *at > last_from => {
                                return bad(format!(
                                    "ambiguous: {from_type} {}→{at} renames it to {target} at version {at}, but \
                                     {target} is renamed to {away} from version {last_from}",
                                    at - 1
                                ));
                            }
                            None if *at > last_from + 1 => {
                                return bad(format!(
                                    "ambiguous: {from_type} {}→{at} renames it to {target} at version {at}, above \
                                     {target}'s current version {}",
                                    at - 1,
                                    last_from + 1
                                ));
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The version a new `event_type` event is written at: 1 for a type without
    /// upcasters (or one only reached by a rename: the version it lands at), `None` for a
    /// type renamed away (its events all end under another name).
    pub fn current_version(&self, event_type: &str) -> Option<u32> {
        if let Some((last, step)) = self
            .steps
            .get(event_type)
            .and_then(|s| s.iter().next_back())
        {
            return match step.rename {
                Some(_) => None,
                None => Some(last.saturating_add(1)),
            };
        }
        let landing = self
            .steps
            .values()
            .flat_map(|steps| steps.iter())
            .filter(|(_, step)| step.rename.as_deref() == Some(event_type))
            .map(|(from, _)| from.saturating_add(1))
            .max();
        Some(landing.unwrap_or(1))
    }

    /// Whether an upcaster applies to an event of `event_type` at `version`.
    pub fn applies(&self, event_type: &str, version: u32) -> bool {
        self.steps
            .get(event_type)
            .is_some_and(|s| s.contains_key(&version))
    }

    /// The (type, version, data) an event of `event_type` at `version` with `data` has
    /// after upcasting, or `None` when no upcaster applies (an unknown type, a current
    /// version, or a version newer than this build knows): the event as it is. An
    /// upcaster's error is [`Error::InvalidEvent`] naming the type and versions.
    pub fn upcast_parts(
        &self,
        event_type: &str,
        version: u32,
        data: &str,
    ) -> Result<Option<Upcasted>> {
        if !self.applies(event_type, version) {
            return Ok(None);
        }
        let mut value = crate::json::value(data).map_err(|e| {
            Error::InvalidEvent(format!(
                "{event_type} at version {version}: the data is not JSON: {e}"
            ))
        })?;
        let mut current_type = event_type.to_owned();
        let mut current = version;
        // Versions only go up, so this ends; the bound guards an unchecked registry.
        while let Some(step) = self.steps.get(&current_type).and_then(|s| s.get(&current)) {
            let next = current.checked_add(1).ok_or_else(|| {
                Error::InvalidEvent(format!(
                    "{current_type} at version {current}: no next version"
                ))
            })?;
            value = (step.upcast)(value).map_err(|e| {
                let reason = match e {
                    Error::InvalidEvent(m) | Error::InvalidArgument(m) => m,
                    other => other.to_string(),
                };
                Error::InvalidEvent(format!(
                    "upcasting {current_type} from version {current} to {next}: {reason}"
                ))
            })?;
            if let Some(to) = &step.rename {
                current_type.clone_from(to);
            }
            current = next;
        }
        let data = serde_json::to_string(&value)
            .map_err(|e| Error::InvalidEvent(format!("upcast data of {current_type}: {e}")))?;
        Ok(Some(Upcasted {
            event_type: current_type,
            schema_version: current,
            data,
        }))
    }

    /// `event` at its current version (a clone when no upcaster applies).
    pub fn upcast(&self, event: &Event) -> Result<Event> {
        let mut out = event.clone();
        if event.erased {
            return Ok(out); // no data left to upcast (see `crate::erasure`)
        }
        if let Some(up) =
            self.upcast_parts(&event.event_type, event.schema_version, event.data.get())?
        {
            out.event_type = up.event_type;
            out.schema_version = up.schema_version;
            out.data = crate::json::raw_value(&up.data)
                .map_err(|e| Error::InvalidEvent(format!("upcast data: {e}")))?;
        }
        Ok(out)
    }

    /// Calls `f` with `event` upcast (or as it is, when no upcaster applies).
    pub fn with_upcast<R>(
        &self,
        event: &EventRef<'_>,
        f: impl FnOnce(&EventRef<'_>) -> R,
    ) -> Result<R> {
        if event.erased {
            return Ok(f(event)); // no data left to upcast
        }
        match self.upcast_parts(event.event_type, event.schema_version, event.data)? {
            None => Ok(f(event)),
            Some(up) => Ok(f(&up.apply_to(event))),
        }
    }
}

/// [`Upcasters::with_upcast`] when there may be no upcasters.
pub fn with_upcast<R>(
    upcasters: Option<&Upcasters>,
    event: &EventRef<'_>,
    f: impl FnOnce(&EventRef<'_>) -> R,
) -> Result<R> {
    match upcasters {
        None => Ok(f(event)),
        Some(u) => u.with_upcast(event, f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(data: Value) -> Result<Value> {
        Ok(data)
    }

    #[test]
    fn a_chain_runs_to_the_current_version_across_a_rename() {
        let u = Upcasters::new()
            .add("A", 1, |mut d| {
                d["n"] = json!(1);
                Ok(d)
            })
            .rename("A", 2, "B", id)
            .add("B", 3, |mut d| {
                d["m"] = json!(2);
                Ok(d)
            })
            .build()
            .unwrap();
        let up = u.upcast_parts("A", 1, "{}").unwrap().unwrap();
        assert_eq!((up.event_type.as_str(), up.schema_version), ("B", 4));
        assert_eq!(
            serde_json::from_str::<Value>(&up.data).unwrap(),
            json!({"n": 1, "m": 2})
        );
        assert_eq!(u.upcast_parts("B", 4, "{}").unwrap(), None);
        assert_eq!(u.upcast_parts("C", 1, "{}").unwrap(), None);
        assert_eq!(u.current_version("B"), Some(4));
        assert_eq!(u.current_version("A"), None);
        assert_eq!(u.current_version("C"), Some(1));
    }

    #[test]
    fn an_upcaster_error_names_the_type_and_versions() {
        let u = Upcasters::new()
            .add("A", 1, |_| Err(Error::InvalidEvent("no title".into())))
            .build()
            .unwrap();
        let err = u.upcast_parts("A", 1, "{}").unwrap_err();
        assert_eq!(err.code(), "INVALID_EVENT");
        assert!(
            err.to_string()
                .contains("upcasting A from version 1 to 2: no title"),
            "{err}"
        );
    }

    #[test]
    fn versions_outside_the_range_are_refused() {
        for from in [0, u32::MAX] {
            let err = Upcasters::new().add("A", from, id).check().unwrap_err();
            assert!(err.to_string().contains("from version"), "{err}");
        }
        let err = Upcasters::new()
            .rename("A", 1, "A", id)
            .check()
            .unwrap_err();
        assert!(err.to_string().contains("to itself"), "{err}");
    }
}
