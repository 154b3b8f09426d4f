//! Building response bodies without copying them.
//!
//! `serde_json::json!` serialises every value it is given from a reference, so a large
//! `Value` (a list of events, a map of rooms) put into it is copied whole, then the original
//! dropped. Response bodies that hold such values are put together with [`object`] instead,
//! which moves them in.

use serde_json::{Map, Value};

/// A JSON object of `entries`, each value moved in.
pub(crate) fn object<const N: usize>(entries: [(&str, Value); N]) -> Value {
    let mut map = Map::new();
    for (key, value) in entries {
        map.insert(key.to_owned(), value);
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::object;
    use serde_json::{Value, json};

    #[test]
    fn entries_are_moved_in_as_given() {
        let events = vec![json!({"type": "m.room.message"}), json!({"type": "m.room.name"})];
        let body = object([("events", Value::Array(events)), ("limited", json!(false))]);
        assert_eq!(
            body,
            json!({"events": [{"type": "m.room.message"}, {"type": "m.room.name"}], "limited": false})
        );
        assert_eq!(object([]), json!({}));
    }
}
