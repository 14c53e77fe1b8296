//! A client's request: the top-level fields of its JSON object.
//!
//! Every method reads a few fields by name, once each. A `serde_json::Map` (an `IndexMap` here,
//! since the workspace keeps key order for its replies) hashed every name on the way in and
//! again on every read, and allocated its index besides: about 5 900 of the 35 200
//! instructions of a room message's callback (docs/BENCHMARKS.md, session 28). A list read
//! from the end answers the same (the last of a repeated name counts, as in the map), and a
//! request has a handful of fields. Nested values are still `serde_json::Value`s.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::fmt;

#[derive(Debug, Default)]
pub struct Request {
    fields: Vec<(String, Value)>,
}

/// Why a frame is not a request.
#[derive(Debug, PartialEq, Eq)]
pub enum NotARequest {
    /// Not JSON at all.
    NotJson,
    /// JSON, but not an object.
    NotAnObject,
}

impl Request {
    pub fn parse(frame: &[u8]) -> Result<Request, NotARequest> {
        serde_json::from_slice(frame).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => NotARequest::NotAnObject,
            _ => NotARequest::NotJson,
        })
    }

    /// The field's value; of a name given twice, the last.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Request, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Request;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Request, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(4).min(16));
                while let Some(field) = map.next_entry::<String, Value>()? {
                    fields.push(field);
                }
                Ok(Request { fields })
            }
        }
        d.deserialize_map(Fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn what_is_not_a_request() {
        assert_eq!(Request::parse(b"{\"method\":").err(), Some(NotARequest::NotJson));
        assert_eq!(Request::parse(b"{} x").err(), Some(NotARequest::NotJson));
        assert_eq!(Request::parse(b"beat").err(), Some(NotARequest::NotJson));
        for not_an_object in [&b"[1,2]"[..], b"\"say\"", b"7", b"null", b"true"] {
            assert_eq!(Request::parse(not_an_object).err(), Some(NotARequest::NotAnObject));
        }
    }

    proptest! {
        /// Any object reads as serde_json's map reads it, repeated names included.
        #[test]
        fn fields_read_as_the_map_reads_them(
            fields in proptest::collection::vec(("[abm]{1,2}", prop_oneof![
                Just(Value::Null),
                any::<i64>().prop_map(Value::from),
                "[a-z\\\\\"é]{0,4}".prop_map(Value::from),
                Just(serde_json::json!([1, {"a": 2}])),
            ]), 0..8),
            probe in "[abm]{1,2}",
        ) {
            let text = format!("{{{}}}", fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect::<Vec<_>>().join(","));
            let map: serde_json::Map<String, Value> = serde_json::from_str(&text).expect("the map reads it");
            let req = Request::parse(text.as_bytes()).expect("a request");
            prop_assert_eq!(req.get(&probe), map.get(&probe));
            for (k, _) in &fields {
                prop_assert_eq!(req.get(k), map.get(k));
            }
        }
    }
}
