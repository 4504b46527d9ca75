//! The chain of `tests/fixtures/upcasters.json`, in Rust: the TS runtime's test defines the
//! same upcasters from the fixture's words, and both must give the fixture's output.

use annals::upcast::Upcasters;
use annals::Error;
use serde_json::{Map, Value};

fn object(data: Value, what: &str) -> Result<Map<String, Value>, Error> {
    match data {
        Value::Object(map) => Ok(map),
        other => Err(Error::InvalidEvent(format!(
            "{what} data must be an object, got {other}"
        ))),
    }
}

/// The fixture's `chain` (unchecked, so a test can add to it).
pub fn registry() -> Upcasters {
    Upcasters::new()
        // TodoAdded 1 -> 2: `priority` added, 0.
        .add("TodoAdded", 1, |data| {
            let mut data = object(data, "TodoAdded")?;
            data.insert("priority".into(), Value::from(0));
            Ok(Value::Object(data))
        })
        // TodoAdded 2 -> TodoCreated 3: `title` moved to `text`.
        .rename("TodoAdded", 2, "TodoCreated", |data| {
            let mut data = object(data, "TodoAdded")?;
            if let Some(title) = data.remove("title") {
                data.insert("text".into(), title);
            }
            Ok(Value::Object(data))
        })
        // TodoCompleted 1 -> 2: boolean `done` becomes `status`.
        .add("TodoCompleted", 1, |data| {
            let mut data = object(data, "TodoCompleted")?;
            let done = data.remove("done") == Some(Value::Bool(true));
            data.insert(
                "status".into(),
                Value::from(if done { "done" } else { "open" }),
            );
            Ok(Value::Object(data))
        })
}
