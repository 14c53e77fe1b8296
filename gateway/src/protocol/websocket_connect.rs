//! The CMD_ON_WEBSOCKET_CONNECT body: `{get, server, cookie}` built from the upgrade request the
//! way workerman 4.2 builds `$_GET`, `$_SERVER` and `$_COOKIE` (spec §16.8), so a PHP worker's
//! `onWebSocketConnect` sees what it always saw.

use super::php::{self, Array, Key, Value};
use std::borrow::Cow;

/// The parts of an upgrade request the body is built from.
pub struct UpgradeRequest<'a> {
    pub method: &'a str,
    /// The raw request target, e.g. `/chat?token=abc`.
    pub uri: &'a str,
    /// e.g. `HTTP/1.1`.
    pub protocol: &'a str,
    /// Header lines in arrival order (duplicates included).
    pub headers: Vec<(&'a str, &'a [u8])>,
}

/// The body, serialized: `{get, server, cookie}`.
///
/// `$_SERVER` is written as it is gathered, not built as a PHP array first: a handful of
/// headers in a list, a repeated one found by a look along it, where an array hashed every key
/// and the body was then written from it (about 24 000 of the 32 700 instructions of judging
/// an upgrade, docs/BENCHMARKS.md session 28). `$_GET` and `$_COOKIE`, nested by their
/// names' brackets, are built as arrays (`parse_str`); a request mostly has neither.
pub fn body(req: &UpgradeRequest<'_>) -> Vec<u8> {
    // Name, value: a repeated header keeps its first place and takes the last value, as a PHP
    // array write does.
    let mut server: Vec<(Cow<'static, [u8]>, &[u8])> = Vec::with_capacity(req.headers.len() + 6);
    set(&mut server, Cow::Borrowed(b"REQUEST_METHOD"), req.method.as_bytes());
    set(&mut server, Cow::Borrowed(b"REQUEST_URI"), req.uri.as_bytes());
    set(&mut server, Cow::Borrowed(b"SERVER_PROTOCOL"), req.protocol.as_bytes());
    let mut cookie_header: Option<&[u8]> = None;
    for (name, value) in &req.headers {
        let mut key = Vec::with_capacity(5 + name.len());
        key.extend_from_slice(b"HTTP_");
        key.extend(name.bytes().map(|c| if c == b'-' { b'_' } else { c.to_ascii_uppercase() }));
        let value = value.trim_ascii();
        let (is_cookie, is_host) = (key == b"HTTP_COOKIE", key == b"HTTP_HOST");
        if is_cookie {
            cookie_header = Some(value);
        }
        set(&mut server, Cow::Owned(key), value);
        if is_host {
            let (name, port) = match value.iter().position(|c| *c == b':') {
                Some(i) => (&value[..i], Some(&value[i + 1..])),
                None => (value, None),
            };
            set(&mut server, Cow::Borrowed(b"SERVER_NAME"), name);
            if let Some(port) = port {
                set(&mut server, Cow::Borrowed(b"SERVER_PORT"), port);
            }
        }
    }
    let query = req.uri.split_once('?').map(|(_, q)| q).unwrap_or("");
    // PHP tests the query for truthiness: "" and "0" both count as no query at all.
    let query = if query == "0" { "" } else { query };
    set(&mut server, Cow::Borrowed(b"QUERY_STRING"), query.as_bytes());

    let get = parse_str(query.as_bytes());
    let cookie = match cookie_header {
        Some(c) => {
            let joined = String::from_utf8_lossy(c).replace("; ", "&");
            parse_str(joined.as_bytes())
        }
        None => Array::new(),
    };
    let mut out = Vec::with_capacity(128 + server.iter().map(|(n, v)| 16 + n.len() + v.len()).sum::<usize>());
    php::write_array_head(&mut out, 3);
    php::write_str(&mut out, b"get");
    Value::Array(get).write(&mut out);
    php::write_str(&mut out, b"server");
    php::write_array_head(&mut out, server.len());
    for (name, value) in &server {
        php::write_str(&mut out, name);
        php::write_str(&mut out, value);
    }
    out.push(b'}');
    php::write_str(&mut out, b"cookie");
    Value::Array(cookie).write(&mut out);
    out.push(b'}');
    out
}

/// Sets `$_SERVER[name]`: a name set before keeps its place and takes the new value.
fn set<'a>(server: &mut Vec<(Cow<'static, [u8]>, &'a [u8])>, name: Cow<'static, [u8]>, value: &'a [u8]) {
    match server.iter_mut().find(|(n, _)| *n == name) {
        Some(row) => row.1 = value,
        None => server.push((name, value)),
    }
}

/// PHP `urldecode`: `+` is a space, `%xx` a byte; a malformed escape stays as it is.
pub fn urldecode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => {
                let hex = std::str::from_utf8(&s[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// PHP `parse_str`: `a=1&b[]=2&c[k]=3`, with `.` and space in the base name turned into `_`.
pub fn parse_str(input: &[u8]) -> Array {
    let mut out = Array::new();
    for pair in input.split(|c| *c == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = match pair.iter().position(|c| *c == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let name = urldecode(name);
        let value = urldecode(value);
        let name: Vec<u8> = {
            let start = name.iter().position(|c| *c != b' ').unwrap_or(name.len());
            name[start..].to_vec()
        };
        if name.is_empty() {
            continue;
        }
        let (base, subkeys) = split_name(&name);
        if base.is_empty() {
            continue;
        }
        insert_path(&mut out, Key::from_bytes(&base), &subkeys, Value::Str(value));
    }
    out
}

/// `a[x][]` → (`a`, [Some("x"), None]). An unbalanced `[` makes the rest part of the base name
/// with the `[` replaced by `_`, as PHP does.
fn split_name(name: &[u8]) -> (Vec<u8>, Vec<Option<Vec<u8>>>) {
    let open = name.iter().position(|c| *c == b'[');
    let mangle = |b: &[u8]| -> Vec<u8> { b.iter().map(|c| if *c == b'.' || *c == b' ' { b'_' } else { *c }).collect() };
    let Some(open) = open else { return (mangle(name), Vec::new()) };
    let mut subkeys = Vec::new();
    let mut rest = &name[open..];
    while rest.first() == Some(&b'[') {
        match rest.iter().position(|c| *c == b']') {
            Some(close) => {
                let k = &rest[1..close];
                subkeys.push(if k.is_empty() { None } else { Some(k.to_vec()) });
                rest = &rest[close + 1..];
            }
            None => break,
        }
    }
    if subkeys.is_empty() {
        let mut base = mangle(&name[..open]);
        base.push(b'_');
        base.extend_from_slice(&name[open + 1..]);
        return (base, Vec::new());
    }
    (mangle(&name[..open]), subkeys)
}

fn next_index(arr: &Array) -> i64 {
    arr.keys().filter_map(|k| if let Key::Int(i) = k { Some(*i + 1) } else { None }).max().unwrap_or(0).max(0)
}

fn insert_path(arr: &mut Array, key: Key, path: &[Option<Vec<u8>>], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        arr.insert(key, value);
        return;
    };
    let slot = arr.entry(key).or_insert_with(|| Value::Array(Array::new()));
    if !matches!(slot, Value::Array(_)) {
        *slot = Value::Array(Array::new());
    }
    if let Value::Array(inner) = slot {
        let k = match first {
            Some(k) => Key::from_bytes(k),
            None => Key::Int(next_index(inner)),
        };
        insert_path(inner, k, rest, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The body as a PHP array built the plain way, then serialized: what `body` must write.
    fn built(req: &UpgradeRequest<'_>) -> Vec<u8> {
        let mut server = Array::new();
        let s = |v: &[u8]| Value::Str(v.to_vec());
        server.insert(Key::Str(b"REQUEST_METHOD".to_vec()), s(req.method.as_bytes()));
        server.insert(Key::Str(b"REQUEST_URI".to_vec()), s(req.uri.as_bytes()));
        server.insert(Key::Str(b"SERVER_PROTOCOL".to_vec()), s(req.protocol.as_bytes()));
        let mut cookie_header: Option<Vec<u8>> = None;
        for (name, value) in &req.headers {
            let key = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
            let value = value.trim_ascii().to_vec();
            if key == "HTTP_COOKIE" {
                cookie_header = Some(value.clone());
            }
            let is_host = key == "HTTP_HOST";
            server.insert(Key::Str(key.into_bytes()), Value::Str(value.clone()));
            if is_host {
                let (name, port) = match value.iter().position(|c| *c == b':') {
                    Some(i) => (value[..i].to_vec(), Some(value[i + 1..].to_vec())),
                    None => (value.clone(), None),
                };
                server.insert(Key::Str(b"SERVER_NAME".to_vec()), Value::Str(name));
                if let Some(port) = port {
                    server.insert(Key::Str(b"SERVER_PORT".to_vec()), Value::Str(port));
                }
            }
        }
        let query = req.uri.split_once('?').map(|(_, q)| q).unwrap_or("");
        let query = if query == "0" { "" } else { query };
        server.insert(Key::Str(b"QUERY_STRING".to_vec()), Value::Str(query.as_bytes().to_vec()));
        let cookie = cookie_header.map(|c| parse_str(String::from_utf8_lossy(&c).replace("; ", "&").as_bytes())).unwrap_or_default();
        let mut top = Array::new();
        top.insert(Key::Str(b"get".to_vec()), Value::Array(parse_str(query.as_bytes())));
        top.insert(Key::Str(b"server".to_vec()), Value::Array(server));
        top.insert(Key::Str(b"cookie".to_vec()), Value::Array(cookie));
        Value::Array(top).serialize()
    }

    proptest! {
        /// Repeated headers (Host and Cookie among them), hosts with and without a port,
        /// queries and cookies: written directly, the body is the array's serialization.
        #[test]
        fn the_body_is_the_arrays_serialization(
            uri in "/[a-z]{0,3}(\\?([a-z.\\[\\]]{1,3}(=[a-z0-9%+]{0,3})?&?){0,3})?",
            headers in proptest::collection::vec(
                (prop::sample::select(vec!["Host", "host", "Cookie", "X-Thing", "x-thing", "Origin", "Sec-WebSocket-Key"]), "[ a-z0-9:;=.%\\[\\]]{0,12}"),
                0..10,
            ),
        ) {
            let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
            let req = UpgradeRequest { method: "GET", uri: &uri, protocol: "HTTP/1.1", headers };
            let (direct, plain) = (body(&req), built(&req));
            prop_assert_eq!(String::from_utf8_lossy(&direct), String::from_utf8_lossy(&plain));
        }
    }

    #[test]
    fn urldecode_edges() {
        assert_eq!(urldecode(b"x+y%21"), b"x y!");
        assert_eq!(urldecode(b"%zz%"), b"%zz%");
        assert_eq!(urldecode(b"%4"), b"%4");
    }
}
