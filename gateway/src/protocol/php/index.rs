//! An index of a serialized array's top-level fields, and a string looked for among an
//! array's values: a session read once per event, and a room found in its list, without
//! building anything (`Context::session_fields`, `session_list_has` in the business crate).
//! Both answer as `unserialize` would (php.rs's unit test and the `session` fuzz target).

use super::{walk, Field, FieldKey};

/// A serialized array's top-level entries as offsets into it: read (and checked, as
/// `unserialize` would) once, then each field found again without reading the array. For a
/// caller that looks in one session several times (a chat message: the sender's identity,
/// then its rooms).
#[derive(Debug, Clone, Default)]
pub struct Index {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: KeyAt,
    field: FieldAt,
    /// The value's own bytes.
    raw: (usize, usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum KeyAt {
    Int(i64),
    Str(usize, usize),
}

#[derive(Debug, Clone, Copy)]
enum FieldAt {
    Str(usize, usize),
    Int(i64),
    Other,
}

impl Index {
    /// `None` where `input` is not an array `unserialize` accepts.
    pub fn of(input: &[u8]) -> Option<Index> {
        let base = input.as_ptr() as usize;
        let at = |b: &[u8]| (b.as_ptr() as usize - base, b.as_ptr() as usize - base + b.len());
        // A chat client's session has six to eight fields: one allocation, not three.
        let mut entries = Vec::with_capacity(8);
        walk(input, |key, field, raw| {
            let key = match key {
                FieldKey::Int(i) => KeyAt::Int(i),
                FieldKey::Str(s) => {
                    let (from, to) = at(s);
                    KeyAt::Str(from, to)
                }
            };
            let field = match field {
                Field::Str(s) => {
                    let (from, to) = at(s);
                    FieldAt::Str(from, to)
                }
                Field::Int(i) => FieldAt::Int(i),
                Field::Other => FieldAt::Other,
            };
            entries.push(Entry { key, field, raw: at(raw) });
        })?;
        Some(Index { entries })
    }

    /// The last entry under `key` (PHP keeps the last of repeated keys).
    fn entry(&self, input: &[u8], key: &str) -> Option<Entry> {
        let want = super::wanted_key(key);
        self.entries.iter().rev().copied().find(|e| match (e.key, want) {
            (KeyAt::Int(a), FieldKey::Int(b)) => a == b,
            (KeyAt::Str(from, to), FieldKey::Str(b)) => input.get(from..to) == Some(b),
            _ => false,
        })
    }

    /// As [`super::fields`] reads `input`, the array this index was made of.
    pub fn fields<'a, const N: usize>(&self, input: &'a [u8], keys: [&str; N]) -> [Option<Field<'a>>; N] {
        keys.map(|k| {
            Some(match self.entry(input, k)?.field {
                FieldAt::Str(from, to) => Field::Str(input.get(from..to)?),
                FieldAt::Int(i) => Field::Int(i),
                FieldAt::Other => Field::Other,
            })
        })
    }

    /// The value under `key` of `input` (the array this index was made of) as its own
    /// serialized bytes, which `Value::unserialize` reads: one array of a session read
    /// without unserializing the rest.
    pub fn raw<'a>(&self, input: &'a [u8], key: &str) -> Option<&'a [u8]> {
        let (from, to) = self.entry(input, key)?.raw;
        input.get(from..to)
    }
}

/// Whether the serialized array `input` holds the string `item` among its values, as
/// `unserialize` would have them (the last of repeated keys counting): a room looked for in a
/// session's list of rooms without building the list.
pub fn array_has_str(input: &[u8], item: &[u8]) -> bool {
    // The keys whose latest value so far is `item` (most often none, or one).
    let mut holding: Vec<FieldKey<'_>> = Vec::new();
    let whole = walk(input, |key, value, _| {
        holding.retain(|k| *k != key);
        if value == Field::Str(item) {
            holding.push(key);
        }
    });
    whole.is_some() && !holding.is_empty()
}
