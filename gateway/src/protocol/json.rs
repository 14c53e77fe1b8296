//! JSON as PHP's `json_encode` (default flags) writes it, for the JSON inside inner packets.
//!
//! Decoding uses serde_json, which accepts any spelling; encoding must match PHP byte for byte
//! (`/` as `\/`, non-ASCII as lower-case `\uXXXX`) so that packets built here equal the golden
//! vectors and PHP peers see exactly what a PHP peer would send (spec §16.4).

use std::fmt::Write as _;

/// A uid or group name as it travels in JSON: PHP keeps ints as numbers and strings as strings,
/// and both must survive a decode/encode round trip unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Id {
    Int(i64),
    Str(String),
}

impl Id {
    /// The PHP array key this id lands on: `"1"` and `1` are the same key.
    pub fn key(&self) -> String {
        match self {
            Id::Int(i) => i.to_string(),
            Id::Str(s) => match super::php::canonical_int(s.as_bytes()) {
                Some(i) => i.to_string(),
                None => s.clone(),
            },
        }
    }

    pub fn from_json(v: &serde_json::Value) -> Option<Id> {
        match v {
            serde_json::Value::String(s) => Some(Id::Str(s.clone())),
            serde_json::Value::Number(n) => n.as_i64().map(Id::Int),
            _ => None,
        }
    }

    pub fn write(&self, out: &mut String) {
        match self {
            Id::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
            Id::Str(s) => write_str(out, s),
        }
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Id {
        Id::Str(s.to_string())
    }
}

impl From<String> for Id {
    fn from(s: String) -> Id {
        Id::Str(s)
    }
}

impl From<i64> for Id {
    fn from(i: i64) -> Id {
        Id::Int(i)
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Id::Int(i) => write!(f, "{i}"),
            Id::Str(s) => f.write_str(s),
        }
    }
}

/// Writes a JSON string literal with PHP's escaping.
pub fn write_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    // Runs that need no escape are copied whole: a char at a time (and the ext_data's buffer
    // grown as it went, command.rs) a room message's group send took 5 600 instructions, now
    // 4 100 (docs/BENCHMARKS.md, session 28).
    let mut plain = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '/' => "\\/",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        plain = i + c.len_utf8();
        if escape.is_empty() {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push_str(escape);
        }
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

/// `[a,b,...]` of ids.
pub fn write_id_list(out: &mut String, ids: &[Id]) {
    out.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        id.write(out);
    }
    out.push(']');
}

/// `{"<id>":id,...}`: how PHP writes both exclude maps and connection lists. The digits come
/// from `itoa`: `write!` cost about 650 instructions an id, and the chat excludes its sender
/// from every presence push.
pub fn write_conn_map(out: &mut String, ids: &[u32]) {
    let mut digits = itoa::Buffer::new();
    out.push('{');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let id = digits.format(*id);
        out.push('"');
        out.push_str(id);
        out.push_str("\":");
        out.push_str(id);
    }
    out.push('}');
}

/// Reads a connection-id map or list. `by_key` picks the keys (exclude maps) instead of the
/// values (connection lists), as PHP does (spec §15.4); a plain list is accepted either way.
pub fn read_conn_ids(v: &serde_json::Value, by_key: bool) -> Option<Vec<u32>> {
    let as_u32 = |v: &serde_json::Value| -> Option<u32> {
        match v {
            serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }
    };
    let ids: Option<Vec<u32>> = match v {
        serde_json::Value::Object(m) if by_key => m.keys().map(|k| k.parse().ok()).collect(),
        serde_json::Value::Object(m) => m.values().map(as_u32).collect(),
        serde_json::Value::Array(a) => a.iter().map(as_u32).collect(),
        _ => None,
    };
    ids.map(each_once)
}

/// A connection listed twice is still one connection (found by fuzzing: PHP would send it the
/// message twice, and the list could not be written back as a map): the first of each kept.
fn each_once(mut ids: Vec<u32>) -> Vec<u32> {
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(*id));
    ids
}

/// The common shapes of ext_data, read straight into ids without building a
/// `serde_json::Value` first: that `Value` (a map, its keys hashed, every string copied twice)
/// was most of a room message's decode, 3 100 of its 4 900 instructions (callgrind,
/// docs/BENCHMARKS.md, session 25). `None` for any other shape, spelling or value these do not
/// take: the caller then reads it the general way, so what is accepted and refused, and how, is
/// unchanged (`command::tests::fast_ext_readers_agree_with_the_general_ones`).
pub mod fast {
    use super::Id;
    use serde::de::{self, Deserializer, MapAccess, Visitor};
    use serde::Deserialize;
    use std::fmt;

    /// A string or an integer within i64: what `Id::from_json` takes.
    struct FastId(Id);

    impl<'de> Deserialize<'de> for FastId {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FastId, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = FastId;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string or an integer")
                }
                fn visit_str<E: de::Error>(self, s: &str) -> Result<FastId, E> {
                    Ok(FastId(Id::Str(s.to_string())))
                }
                fn visit_string<E: de::Error>(self, s: String) -> Result<FastId, E> {
                    Ok(FastId(Id::Str(s)))
                }
                fn visit_i64<E: de::Error>(self, i: i64) -> Result<FastId, E> {
                    Ok(FastId(Id::Int(i)))
                }
                fn visit_u64<E: de::Error>(self, u: u64) -> Result<FastId, E> {
                    i64::try_from(u).map(|i| FastId(Id::Int(i))).map_err(|_| E::custom("beyond i64"))
                }
            }
            d.deserialize_any(V)
        }
    }

    fn ids(list: Vec<FastId>) -> Vec<Id> {
        list.into_iter().map(|FastId(id)| id).collect()
    }

    /// An exclude map `{"<conn>":<conn>,..}` (as `write_conn_map` and PHP write it): its keys
    /// as connection ids, in order. A key repeated in the object is read again, where a map
    /// would keep it once in its first place: the same list once `each_once` has run.
    struct ConnKeys(Vec<u32>);

    impl<'de> Deserialize<'de> for ConnKeys {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ConnKeys, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = ConnKeys;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object keyed by connection ids")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<ConnKeys, A::Error> {
                    let mut conns = Vec::new();
                    while let Some((k, de::IgnoredAny)) = m.next_entry::<std::borrow::Cow<'_, str>, de::IgnoredAny>()? {
                        conns.push(k.parse().map_err(|_| de::Error::custom("not a connection id"))?);
                    }
                    Ok(ConnKeys(conns))
                }
            }
            d.deserialize_map(V)
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct GroupExt {
        group: Vec<FastId>,
        exclude: Option<ConnKeys>,
    }

    /// `[id,..]`.
    pub fn id_list(ext: &[u8]) -> Option<Vec<Id>> {
        serde_json::from_slice::<Vec<FastId>>(ext).ok().map(ids)
    }

    /// `{"group":[id,..],"exclude":null|{"<conn>":<conn>,..}}`: the groups, and the excluded
    /// connections (first-seen order, each once) when there is an exclude map and a group.
    pub fn group_ext(ext: &[u8]) -> Option<(Vec<Id>, Option<Vec<u32>>)> {
        let g: GroupExt = serde_json::from_slice(ext).ok()?;
        // Without groups nothing is sent, and the general reading drops the list too (once it
        // was read: a bad one is refused either way).
        let exclude = g.exclude.map(|ConnKeys(conns)| super::each_once(conns)).filter(|_| !g.group.is_empty());
        Some((ids(g.group), exclude))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn php_escaping() {
        let mut s = String::new();
        write_str(&mut s, "p/é\"q😀");
        assert_eq!(s, r#""p\/\u00e9\"q\ud83d\ude00""#);
        s.clear();
        write_str(&mut s, "\\\u{8}\u{c}\n\r\t\u{1}\u{7f}ab");
        assert_eq!(s, r#""\\\b\f\n\r\t\u0001\u007fab""#);
    }

    proptest::proptest! {
        /// Whatever the text, JSON reads back what was written, and every byte written is
        /// printable ASCII, as PHP's json_encode writes it.
        #[test]
        fn a_string_reads_back(text in "\\PC{0,12}|[a-z/\"\\\\\n\u{1}é😀]{0,12}") {
            let mut s = String::from("x");
            write_str(&mut s, &text);
            proptest::prop_assert!(s.bytes().all(|b| (0x20..0x7f).contains(&b)), "{}", s);
            proptest::prop_assert_eq!(serde_json::from_str::<String>(&s[1..]).ok(), Some(text));
        }
    }
}
