//! The subset of PHP's `serialize()`/`unserialize()` that GatewayWorker puts on the wire.
//!
//! Sessions, query replies and the `onWebSocketConnect` body are PHP-serialized. A PHP array is an
//! *ordered* map whose keys are integers or byte strings, and PHP normalises integer-like string
//! keys (`"1"` becomes `1`); [`Key::from_bytes`] reproduces that rule because group and uid tables
//! and the session merge depend on it (spec §3.2, §16.3).

use indexmap::IndexMap;
use std::fmt::Write as _;

mod index;
pub use index::{array_has_str, Index};

/// A PHP array key after PHP's normalisation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Int(i64),
    Str(Vec<u8>),
}

impl Key {
    /// Normalises like a PHP array write: a canonical decimal integer string becomes an int key.
    pub fn from_bytes(b: &[u8]) -> Key {
        match canonical_int(b) {
            Some(i) => Key::Int(i),
            None => Key::Str(b.to_vec()),
        }
    }

    /// The key's text, as PHP would print it.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Key::Int(i) => i.to_string().into_bytes(),
            Key::Str(s) => s.clone(),
        }
    }
}

/// `Some(i)` when PHP would turn the string key into the integer key `i`.
pub fn canonical_int(b: &[u8]) -> Option<i64> {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return None;
    }
    if b == b"-0" {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse::<i64>().ok()
}

/// An ordered PHP array.
pub type Array = IndexMap<Key, Value>;

/// A PHP value as far as GatewayWorker uses them (no objects).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Vec<u8>),
    Array(Array),
}

impl Value {
    pub fn str(s: impl Into<Vec<u8>>) -> Value {
        Value::Str(s.into())
    }

    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// PHP `serialize()`.
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.extend_from_slice(b"N;"),
            Value::Bool(b) => out.extend_from_slice(if *b { b"b:1;" } else { b"b:0;" }),
            Value::Int(i) => write_int(out, *i),
            Value::Float(f) => {
                out.extend_from_slice(b"d:");
                out.extend_from_slice(format_float(*f).as_bytes());
                out.push(b';');
            }
            Value::Str(s) => write_str(out, s),
            Value::Array(a) => {
                write_array_head(out, a.len());
                for (k, v) in a {
                    match k {
                        Key::Int(i) => write_int(out, *i),
                        Key::Str(s) => write_str(out, s),
                    }
                    v.write(out);
                }
                out.push(b'}');
            }
        }
    }

    /// PHP `unserialize()` of a whole buffer; trailing bytes are an error.
    pub fn unserialize(input: &[u8]) -> Result<Value, UnserializeError> {
        let mut p = Parser { input, pos: 0, depth: 0 };
        let v = p.value()?;
        if p.pos != input.len() {
            return Err(UnserializeError(p.pos));
        }
        Ok(v)
    }
}

// The writers below format numbers with `itoa` into the output itself: `format!` made a
// `String` for every key and length, which was a third of a gateway's work listing a room's
// sessions at each join.

pub(crate) fn write_int(out: &mut Vec<u8>, i: i64) {
    out.extend_from_slice(b"i:");
    out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
    out.push(b';');
}

pub(crate) fn write_array_head(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(b"a:");
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b":{");
}

pub(crate) fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(b"s:");
    out.extend_from_slice(itoa::Buffer::new().format(s.len()).as_bytes());
    out.extend_from_slice(b":\"");
    out.extend_from_slice(s);
    out.extend_from_slice(b"\";");
}

/// An array of strings under integer keys (a gateway's sessions keyed by connection id),
/// serialized as `Value::Array` of `Value::Str` would be, without building one (a copy of every
/// session and a hash of every key): the writing side of [`int_keyed`]. The keys are distinct.
pub fn serialize_int_keyed(entries: &[(i64, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + entries.iter().map(|(_, s)| 32 + s.len()).sum::<usize>());
    write_array_head(&mut out, entries.len());
    for (k, s) in entries {
        write_int(&mut out, *k);
        write_str(&mut out, s);
    }
    out.push(b'}');
    out
}

/// Formats a double as PHP 8 does with `serialize_precision = -1` (spec §16.1): the shortest
/// round-trip digits, plain notation for exponents in (-5, 17), else `d.dddE+x`.
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        return "NAN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "INF".into() } else { "-INF".into() };
    }
    let mut out = String::new();
    if f.is_sign_negative() {
        out.push('-');
    }
    if f == 0.0 {
        out.push('0');
        return out;
    }
    // Rust's `{:e}` prints the shortest digits that round-trip, e.g. "1.2345e17".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if exp > -5 && exp < 17 {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        out.push('.');
        out.push_str(if digits.len() > 1 { &digits[1..] } else { "0" });
        let _ = write!(out, "E{}{}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    out
}

/// Where unserialize gave up (a byte offset).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not PHP-serialized data (stopped at byte {0})")]
pub struct UnserializeError(pub usize);

/// Nesting beyond this is refused so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn err<T>(&self) -> Result<T, UnserializeError> {
        Err(UnserializeError(self.pos))
    }

    fn expect(&mut self, b: u8) -> Result<(), UnserializeError> {
        if self.input.get(self.pos) == Some(&b) {
            self.pos += 1;
            Ok(())
        } else {
            self.err()
        }
    }

    /// Reads up to (not including) `end` and consumes `end`.
    fn until(&mut self, end: u8) -> Result<&[u8], UnserializeError> {
        let rest = &self.input[self.pos..];
        match rest.iter().position(|c| *c == end) {
            Some(i) => {
                self.pos += i + 1;
                Ok(&rest[..i])
            }
            None => self.err(),
        }
    }

    fn int_until(&mut self, end: u8) -> Result<i64, UnserializeError> {
        let start = self.pos;
        let raw = self.until(end)?;
        // Lengths and ids are plain digits: read them without the general parse (a listing
        // reads thousands of sessions). 18 digits cannot overflow.
        if (1..=18).contains(&raw.len()) && raw.iter().all(u8::is_ascii_digit) {
            return Ok(raw.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')));
        }
        std::str::from_utf8(raw).ok().and_then(|s| s.strip_prefix('+').unwrap_or(s).parse::<i64>().ok()).ok_or(UnserializeError(start))
    }

    fn string_body(&mut self) -> Result<Vec<u8>, UnserializeError> {
        Ok(self.string_slice()?.to_vec())
    }

    /// A string's bytes, borrowed from the input (after its `s:`).
    fn string_slice(&mut self) -> Result<&'a [u8], UnserializeError> {
        let len = self.int_until(b':')?;
        let len = usize::try_from(len).map_err(|_| UnserializeError(self.pos))?;
        self.expect(b'"')?;
        let input: &'a [u8] = self.input;
        let end = self.pos.checked_add(len).filter(|e| *e <= input.len());
        let Some(end) = end else { return self.err() };
        let s = &input[self.pos..end];
        self.pos = end;
        self.expect(b'"')?;
        self.expect(b';')?;
        Ok(s)
    }

    /// A value as [`fields`] reports it: strings borrowed, integers read, anything else
    /// checked as `value` would and skipped without being built.
    fn field(&mut self) -> Result<Field<'a>, UnserializeError> {
        match (self.input.get(self.pos), self.input.get(self.pos + 1)) {
            (Some(b's'), Some(b':')) => {
                self.pos += 2;
                Ok(Field::Str(self.string_slice()?))
            }
            (Some(b'i'), Some(b':')) => {
                self.pos += 2;
                Ok(Field::Int(self.int_until(b';')?))
            }
            (Some(b'a'), Some(b':')) => {
                self.pos += 2;
                let n = self.array_head()?;
                for _ in 0..n {
                    self.key()?;
                    self.field()?;
                }
                self.array_tail()?;
                Ok(Field::Other)
            }
            _ => self.value().map(|_| Field::Other),
        }
    }

    /// An array's `n:{` (after its `a:`): the element count, one level deeper.
    fn array_head(&mut self) -> Result<i64, UnserializeError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err();
        }
        let n = self.int_until(b':')?;
        if n < 0 {
            return self.err();
        }
        self.expect(b'{')?;
        Ok(n)
    }

    fn array_tail(&mut self) -> Result<(), UnserializeError> {
        self.expect(b'}')?;
        self.depth -= 1;
        Ok(())
    }

    /// An array key: an int, or a string PHP would keep as a string (a canonical integer
    /// string is the int key, as [`Key::from_bytes`] has it).
    fn key(&mut self) -> Result<FieldKey<'a>, UnserializeError> {
        match self.field()? {
            Field::Int(i) => Ok(FieldKey::Int(i)),
            Field::Str(s) => Ok(canonical_int(s).map_or(FieldKey::Str(s), FieldKey::Int)),
            Field::Other => self.err(),
        }
    }

    fn value(&mut self) -> Result<Value, UnserializeError> {
        let tag = *self.input.get(self.pos).ok_or(UnserializeError(self.pos))?;
        self.pos += 1;
        if tag == b'N' {
            self.expect(b';')?;
            return Ok(Value::Null);
        }
        self.expect(b':')?;
        match tag {
            b'b' => match self.until(b';')? {
                b"0" => Ok(Value::Bool(false)),
                b"1" => Ok(Value::Bool(true)),
                _ => self.err(),
            },
            b'i' => Ok(Value::Int(self.int_until(b';')?)),
            b'd' => {
                let start = self.pos;
                let raw = self.until(b';')?;
                parse_php_float(raw).map(Value::Float).ok_or(UnserializeError(start))
            }
            b's' => Ok(Value::Str(self.string_body()?)),
            b'a' => {
                let n = self.array_head()?;
                // Each element needs at least 4 bytes, so a huge count cannot pre-allocate much.
                let cap = (n as usize).min(self.input.len() / 4);
                let mut arr = Array::with_capacity(cap);
                for _ in 0..n {
                    let key = match self.value()? {
                        Value::Int(i) => Key::Int(i),
                        Value::Str(s) => Key::from_bytes(&s),
                        _ => return self.err(),
                    };
                    let v = self.value()?;
                    arr.insert(key, v);
                }
                self.array_tail()?;
                Ok(Value::Array(arr))
            }
            _ => self.err(),
        }
    }
}

/// A top-level value read by [`fields`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field<'a> {
    Str(&'a [u8]),
    Int(i64),
    /// Null, a bool, a float or an array: there, not read.
    Other,
}

#[derive(Clone, Copy, PartialEq)]
enum FieldKey<'a> {
    Int(i64),
    Str(&'a [u8]),
}

/// The top-level values under `keys` of a serialized array, strings borrowed from the input,
/// nothing built: for a caller that reads a few fields of many sessions (a room's members at
/// every join, a bot's agents at every login), where unserializing each whole session into an
/// [`Array`] was most of a login's cost. It answers as `unserialize` then a lookup would:
/// `None` where `unserialize` fails (the whole input is checked), the last of repeated keys,
/// keys normalised as PHP does.
pub fn fields<'a, const N: usize>(input: &'a [u8], keys: [&str; N]) -> Option<[Option<Field<'a>>; N]> {
    let wanted = keys.map(wanted_key);
    let mut out = [None; N];
    walk(input, |key, value, _| {
        for (slot, want) in out.iter_mut().zip(&wanted) {
            if key == *want {
                *slot = Some(value);
            }
        }
    })?;
    Some(out)
}

/// A key as a caller names it, normalised as PHP normalises array keys.
fn wanted_key(k: &str) -> FieldKey<'_> {
    match canonical_int(k.as_bytes()) {
        Some(i) => FieldKey::Int(i),
        None => FieldKey::Str(k.as_bytes()),
    }
}

/// Every top-level entry of a serialized array in order: its key, its value as [`fields`]
/// reads it, and the value's own bytes. `None` (after some entries, maybe) where the input is
/// not an array `unserialize` accepts.
fn walk<'a>(input: &'a [u8], mut each: impl FnMut(FieldKey<'a>, Field<'a>, &'a [u8])) -> Option<()> {
    let mut p = Parser { input, pos: 0, depth: 0 };
    if input.get(..2) != Some(b"a:") {
        return None;
    }
    p.pos = 2;
    let n = p.array_head().ok()?;
    for _ in 0..n {
        let key = p.key().ok()?;
        let start = p.pos;
        let value = p.field().ok()?;
        each(key, value, &input[start..p.pos]);
    }
    p.array_tail().ok()?;
    (p.pos == input.len()).then_some(())
}

/// The top-level entries of a serialized array under integer keys (a gateway's reply keyed by
/// connection id), in order, values read as [`fields`] reads them; entries under string keys
/// are left out. `None` where the input is not an array `unserialize` accepts.
pub fn int_keyed(input: &[u8]) -> Option<Vec<(i64, Field<'_>)>> {
    // A guess from the length (an entry holds a session, rarely under 64 bytes), which a
    // reply claiming a huge count cannot inflate.
    let mut out = Vec::with_capacity(input.len() / 64);
    walk(input, |key, value, _| {
        if let FieldKey::Int(k) = key {
            out.push((k, value));
        }
    })?;
    Some(out)
}

/// The top-level entries of a serialized array under integer keys, in order, each value as its
/// own serialized bytes (a `select` reply's rows, each an array an [`Index`] reads further);
/// entries under string keys are left out. `None` where the input is not an array
/// `unserialize` accepts.
pub fn int_keyed_raw(input: &[u8]) -> Option<Vec<(i64, &[u8])>> {
    let mut out = Vec::new();
    walk(input, |key, _, raw| {
        if let FieldKey::Int(k) = key {
            out.push((k, raw));
        }
    })?;
    Some(out)
}

fn parse_php_float(raw: &[u8]) -> Option<f64> {
    match raw {
        b"NAN" => Some(f64::NAN),
        b"INF" => Some(f64::INFINITY),
        b"-INF" => Some(f64::NEG_INFINITY),
        _ => std::str::from_utf8(raw).ok()?.parse::<f64>().ok(),
    }
}

/// PHP `array_replace_recursive($old, $new)`: keys of `new` override, nested arrays merge.
pub fn array_replace_recursive(old: &mut Array, new: &Array) {
    for (k, v) in new {
        match (old.get_mut(k), v) {
            (Some(Value::Array(o)), Value::Array(n)) => array_replace_recursive(o, n),
            (Some(slot), _) => *slot = v.clone(),
            (None, _) => {
                old.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Why a session merge was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("the stored session is not a serialized array")]
    StoredNotArray,
    #[error("the update is not a serialized array")]
    UpdateNotArray,
}

/// CMD_UPDATE_SESSION (spec §7, §16.6): an empty stored session takes the update verbatim;
/// otherwise both sides must be arrays, which are merged and re-serialized. PHP crashes the whole
/// gateway process on a non-array; we refuse the update and keep the old session instead.
pub fn merge_session(stored: &[u8], update: &[u8]) -> Result<Vec<u8>, MergeError> {
    if stored.is_empty() {
        return Ok(update.to_vec());
    }
    let Ok(Value::Array(mut old)) = Value::unserialize(stored) else {
        return Err(MergeError::StoredNotArray);
    };
    let Ok(Value::Array(new)) = Value::unserialize(update) else {
        return Err(MergeError::UpdateNotArray);
    };
    array_replace_recursive(&mut old, &new);
    Ok(Value::Array(old).serialize())
}

/// Builds a PHP list (keys 0..n-1).
pub fn list(items: impl IntoIterator<Item = Value>) -> Value {
    Value::Array(items.into_iter().enumerate().map(|(i, v)| (Key::Int(i as i64), v)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sessions' list is the bytes the `Value` it stands for serializes to, and reads back
    /// with `int_keyed`.
    #[test]
    fn sessions_keyed_by_connection_serialize_as_their_value() {
        let cases: [&[(i64, &[u8])]; 3] =
            [&[], &[(7, b"")], &[(1, b"a:1:{s:2:\"id\";s:2:\"a7\";}"), (-3, "é\"x;".as_bytes()), (4_294_967_295, b"N;")]];
        for rows in cases {
            let value = Value::Array(rows.iter().map(|(k, s)| (Key::Int(*k), Value::Str(s.to_vec()))).collect());
            let out = serialize_int_keyed(rows);
            assert_eq!(out, value.serialize());
            let back = int_keyed(&out).expect("reads back");
            assert_eq!(back.iter().map(|(k, f)| (*k, *f)).collect::<Vec<_>>(), rows.iter().map(|(k, s)| (*k, Field::Str(s))).collect::<Vec<_>>());
        }
    }

    #[test]
    fn float_forms() {
        for (f, s) in [
            (1e14, "100000000000000"),
            (1e17, "1.0E+17"),
            (1e-4, "0.0001"),
            (1e-5, "1.0E-5"),
            (1.5e-7, "1.5E-7"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-0.0, "-0"),
            (100.0, "100"),
            (1.5, "1.5"),
            (1e25, "1.0E+25"),
            (5e-324, "5.0E-324"),
            (f64::MAX, "1.7976931348623157E+308"),
        ] {
            assert_eq!(format_float(f), s, "{f}");
        }
    }

    /// `fields` must answer exactly as `unserialize` then a lookup, and so must each slice an
    /// `Index` gives once unserialized: checked on sessions as the chat writes them, on odd but
    /// valid input, and on every truncation and many corruptions of each (where both must
    /// refuse, or agree). An index's fields and `array_has_str` are held to the same.
    #[test]
    fn fields_agree_with_unserialize() {
        let keys = ["role", "id", "exp", "7", "rooms"];
        let looked_up = |input: &[u8]| -> Option<Vec<Option<Value>>> {
            let Ok(Value::Array(a)) = Value::unserialize(input) else { return None };
            Some(keys.iter().map(|k| a.get(&Key::from_bytes(k.as_bytes())).cloned()).collect())
        };
        let read = |input: &[u8]| -> Option<Vec<Option<Value>>> {
            let found = fields(input, keys)?;
            let full = Value::unserialize(input).ok()?;
            let Value::Array(a) = full else { return None };
            Some(
                found
                    .iter()
                    .zip(keys)
                    .map(|(f, k)| match f {
                        Some(Field::Str(b)) => Some(Value::Str(b.to_vec())),
                        Some(Field::Int(i)) => Some(Value::Int(*i)),
                        // Not read: take the value from the full parse, to compare presence.
                        Some(Field::Other) => a.get(&Key::from_bytes(k.as_bytes())).cloned(),
                        None => None,
                    })
                    .collect(),
            )
        };
        let raw = |input: &[u8]| -> Option<Vec<Option<Value>>> {
            let index = Index::of(input)?;
            Some(keys.iter().map(|k| index.raw(input, k).map(|r| Value::unserialize(r).expect("one value"))).collect())
        };
        let samples: Vec<&[u8]> = vec![
            br#"a:5:{s:4:"role";s:5:"agent";s:3:"bid";s:2:"b1";s:2:"id";s:3:"u;1";s:4:"name";s:1:"n";s:5:"rooms";a:2:{i:0;s:2:"r1";i:1;s:2:"r2";}}"#,
            br#"a:3:{s:4:"role";s:1:"x";s:4:"role";s:1:"y";s:3:"exp";i:-17;}"#,
            br#"a:4:{i:7;s:5:"seven";s:1:"7";s:5:"again";s:2:"id";N;s:3:"exp";d:1.5;}"#,
            br#"a:2:{s:2:"id";b:1;s:4:"role";a:1:{s:1:"a";a:0:{}}}"#,
            br#"a:0:{}"#,
            br#"a:4:{i:0;s:1:"x";i:1;s:1:"y";i:0;s:1:"y";s:1:"0";s:1:"x";}"#,
            br#"a:3:{i:0;s:2:"r1";s:2:"id";s:1:"x";s:2:"id";s:1:"y";}"#,
            br#"s:4:"role";"#,
            br#"i:5;"#,
        ];
        // An index answers as `fields` does; `array_has_str` as a search of the
        // unserialized values.
        fn indexed<'a>(input: &'a [u8], keys: [&str; 5]) -> Option<[Option<Field<'a>>; 5]> {
            Some(Index::of(input)?.fields(input, keys))
        }
        let has = |input: &[u8], item: &[u8]| match Value::unserialize(input) {
            Ok(Value::Array(a)) => a.values().any(|v| *v == Value::Str(item.to_vec())),
            _ => false,
        };
        let check = |input: &[u8]| {
            assert_eq!(indexed(input, keys), fields(input, keys), "{}", String::from_utf8_lossy(input));
            for item in [&b"r1"[..], b"x", b"y", b"seven", b"again"] {
                assert_eq!(array_has_str(input, item), has(input, item), "{item:?} in {}", String::from_utf8_lossy(input));
            }
        };
        for sample in samples {
            check(sample);
            if let Some(rooms) = Index::of(sample).and_then(|index| index.raw(sample, "rooms")) {
                check(rooms);
            }
            assert_eq!(read(sample), looked_up(sample), "{}", String::from_utf8_lossy(sample));
            assert_eq!(raw(sample), looked_up(sample), "{}", String::from_utf8_lossy(sample));
            assert!(fields(sample, keys).is_some() == matches!(Value::unserialize(sample), Ok(Value::Array(_))));
            for cut in 0..sample.len() {
                let cut = &sample[..cut];
                check(cut);
                assert_eq!(fields(cut, keys).is_some(), matches!(Value::unserialize(cut), Ok(Value::Array(_))), "{cut:?}");
            }
            for i in 0..sample.len() {
                for b in [b'"', b';', b':', b'{', b'}', b'9', b'a', b's', b'i', b'-'] {
                    let mut bad = sample.to_vec();
                    bad[i] = b;
                    check(&bad);
                    assert_eq!(read(&bad), looked_up(&bad), "{}", String::from_utf8_lossy(&bad));
                    assert_eq!(raw(&bad), looked_up(&bad), "{}", String::from_utf8_lossy(&bad));
                    assert_eq!(fields(&bad, keys).is_some(), matches!(Value::unserialize(&bad), Ok(Value::Array(_))), "{bad:?}");
                }
            }
        }
        let deep = format!("a:1:{{i:0;{}i:1;{}}}", "a:1:{i:0;".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        assert!(fields(deep.as_bytes(), keys).is_none() && Value::unserialize(deep.as_bytes()).is_err());
    }

    /// `int_keyed_raw` gives each value under an integer key as bytes that unserialize to
    /// what `unserialize` has there (the last of a repeated key counting), rows of arrays
    /// included: a `select` reply's rows are read from them.
    #[test]
    fn int_keyed_raw_values_unserialize_as_the_whole_does() {
        let sample: &[u8] =
            br#"a:4:{i:3;a:2:{s:6:"groups";a:1:{s:5:"bot:1";s:5:"bot:1";}s:7:"session";s:12:"a:1:{i:0;N;}";}s:1:"x";i:1;i:3;N;i:9;a:0:{}}"#;
        let Ok(Value::Array(whole)) = Value::unserialize(sample) else { panic!("a valid sample") };
        let mut rows: Vec<(i64, Value)> = Vec::new();
        for (k, raw) in int_keyed_raw(sample).expect("an array") {
            let v = Value::unserialize(raw).expect("each value reads alone");
            match rows.iter_mut().find(|(o, _)| *o == k) {
                Some(slot) => slot.1 = v,
                None => rows.push((k, v)),
            }
        }
        let expected: Vec<(i64, Value)> = whole.into_iter().filter_map(|(k, v)| if let Key::Int(i) = k { Some((i, v)) } else { None }).collect();
        assert_eq!(rows, expected);
        for cut in 0..sample.len() {
            assert!(int_keyed_raw(&sample[..cut]).is_none(), "a cut reply is refused");
        }
    }

    /// `int_keyed` must list what `unserialize` has under integer keys, in order (a repeated
    /// key listed each time, the last one counting): on replies as gateways write them, odd
    /// but valid ones, and every truncation and many corruptions of each.
    #[test]
    fn int_keyed_agrees_with_unserialize() {
        let from_full = |input: &[u8]| -> Option<Vec<(i64, Value)>> {
            let Ok(Value::Array(a)) = Value::unserialize(input) else { return None };
            Some(a.into_iter().filter_map(|(k, v)| if let Key::Int(i) = k { Some((i, v)) } else { None }).collect())
        };
        let read = |input: &[u8]| -> Option<Vec<(i64, Value)>> {
            let rows = int_keyed(input)?;
            // Deduplicated as an ordered map would: the first position, the last value.
            let mut out: Vec<(i64, Value)> = Vec::new();
            for (k, f) in rows {
                let v = match f {
                    Field::Str(b) => Value::Str(b.to_vec()),
                    Field::Int(i) => Value::Int(i),
                    Field::Other => Value::Null,
                };
                match out.iter_mut().find(|(o, _)| *o == k) {
                    Some(slot) => slot.1 = v,
                    None => out.push((k, v)),
                }
            }
            Some(out)
        };
        let others_as_null = |rows: Option<Vec<(i64, Value)>>| {
            rows.map(|r| {
                r.into_iter().map(|(k, v)| (k, if matches!(v, Value::Str(_) | Value::Int(_)) { v } else { Value::Null })).collect::<Vec<_>>()
            })
        };
        let samples: Vec<&[u8]> = vec![
            br#"a:2:{i:7;s:39:"a:2:{s:4:"role";s:5:"agent";s:1:"x";N;}";i:12;s:0:"";}"#,
            br#"a:4:{i:3;s:1:"a";s:1:"5";s:1:"b";s:2:"05";s:1:"c";i:3;s:1:"d";}"#,
            br#"a:3:{i:-1;N;i:4294967296;i:9;i:2;a:1:{i:0;b:1;}}"#,
            br#"a:0:{}"#,
            br#"N;"#,
        ];
        for sample in samples {
            assert_eq!(read(sample), others_as_null(from_full(sample)), "{}", String::from_utf8_lossy(sample));
            assert!(from_full(sample).is_some() || sample == b"N;", "a valid sample: {}", String::from_utf8_lossy(sample));
            for cut in 0..sample.len() {
                let cut = &sample[..cut];
                assert_eq!(int_keyed(cut).is_some(), matches!(Value::unserialize(cut), Ok(Value::Array(_))), "{cut:?}");
            }
            for i in 0..sample.len() {
                for b in [b'"', b';', b':', b'{', b'}', b'9', b'a', b's', b'i', b'-'] {
                    let mut bad = sample.to_vec();
                    bad[i] = b;
                    assert_eq!(read(&bad), others_as_null(from_full(&bad)), "{}", String::from_utf8_lossy(&bad));
                }
            }
        }
    }

    #[test]
    fn key_normalisation() {
        assert_eq!(Key::from_bytes(b"1"), Key::Int(1));
        assert_eq!(Key::from_bytes(b"-5"), Key::Int(-5));
        for s in ["01", "-0", "9223372036854775808", "1.5", " 1", "", "+1"] {
            assert_eq!(Key::from_bytes(s.as_bytes()), Key::Str(s.as_bytes().to_vec()));
        }
    }

    #[test]
    fn rejects_deep_nesting_and_lies() {
        let deep = "a:1:{i:0;".repeat(100);
        assert!(Value::unserialize(deep.as_bytes()).is_err());
        assert!(Value::unserialize(b"s:99:\"x\";").is_err());
        assert!(Value::unserialize(b"a:999999999:{}").is_err());
    }
}
