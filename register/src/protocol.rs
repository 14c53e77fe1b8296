//! The register's JSON lines (spec §9), one enum, decoded and encoded side by side.
//!
//! The gateway and worker lines are built by string concatenation exactly as PHP builds them
//! (a space after each comma in `gateway_connect`, the secret not escaped), so a PHP register
//! sees the same bytes from us as from a PHP peer.

use bytes::Bytes;
use tokio_util::codec::AnyDelimiterCodec;

/// Longest line accepted, as workerman's Text protocol (10 MiB).
pub const MAX_LINE: usize = 10 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    GatewayConnect { address: String, secret_key: Option<String> },
    WorkerConnect { secret_key: Option<String> },
    Ping,
    BroadcastAddresses(Vec<String>),
}

/// Why a line was refused; each maps to what the PHP register does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Not JSON, or no usable `event`: answered with the bad-request text, then closed.
    #[error("bad request: not JSON or no event")]
    BadRequest,
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    #[error("gateway_connect without an address")]
    MissingAddress,
    #[error("broadcast_addresses without an address list")]
    MissingAddresses,
}

/// PHP's `empty()` on a decoded JSON value.
fn php_empty(v: &serde_json::Value) -> bool {
    use serde_json::Value::*;
    match v {
        Null => true,
        Bool(b) => !b,
        Number(n) => n.as_f64() == Some(0.0),
        String(s) => s.is_empty() || s == "0",
        Array(a) => a.is_empty(),
        Object(o) => o.is_empty(),
    }
}

impl Line {
    /// Decodes one line (without its terminator; a trailing `\r` is ignored).
    pub fn decode(line: &[u8]) -> Result<Line, LineError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let v: serde_json::Value = serde_json::from_slice(line).map_err(|_| LineError::BadRequest)?;
        let event = match v.get("event") {
            Some(e) if !php_empty(e) => e,
            _ => return Err(LineError::BadRequest),
        };
        let secret = || v.get("secret_key").map(|s| s.as_str().map(str::to_string).unwrap_or_else(|| s.to_string()));
        match event.as_str() {
            Some("gateway_connect") => match v.get("address").and_then(|a| a.as_str()) {
                Some(a) if !a.is_empty() => Ok(Line::GatewayConnect { address: a.to_string(), secret_key: secret() }),
                _ => Err(LineError::MissingAddress),
            },
            Some("worker_connect") => Ok(Line::WorkerConnect { secret_key: secret() }),
            Some("ping") => Ok(Line::Ping),
            Some("broadcast_addresses") => {
                let list: Option<Vec<String>> = match v.get("addresses") {
                    Some(serde_json::Value::Array(a)) => a.iter().map(|x| x.as_str().map(str::to_string)).collect(),
                    // A PHP register sends an object after duplicate registrations (spec §9).
                    Some(serde_json::Value::Object(o)) => o.values().map(|x| x.as_str().map(str::to_string)).collect(),
                    _ => None,
                };
                list.map(Line::BroadcastAddresses).ok_or(LineError::MissingAddresses)
            }
            _ => Err(LineError::UnknownEvent(event.to_string())),
        }
    }

    /// Encodes the line with its `\n`.
    pub fn encode(&self) -> Bytes {
        let mut s = match self {
            Line::GatewayConnect { address, secret_key } => {
                format!("{{\"event\":\"gateway_connect\", \"address\":\"{address}\", \"secret_key\":\"{}\"}}", secret_key.as_deref().unwrap_or(""))
            }
            Line::WorkerConnect { secret_key } => {
                format!("{{\"event\":\"worker_connect\",\"secret_key\":\"{}\"}}", secret_key.as_deref().unwrap_or(""))
            }
            Line::Ping => "{\"event\":\"ping\"}".to_string(),
            Line::BroadcastAddresses(list) => {
                let mut s = String::from("{\"event\":\"broadcast_addresses\",\"addresses\":[");
                for (i, a) in list.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    // Addresses are ip:port text; json_encode only escapes '/' and non-ASCII here.
                    s.push_str(&serde_json::to_string(a).unwrap_or_default().replace('/', "\\/"));
                }
                s.push_str("]}");
                s
            }
        };
        s.push('\n');
        Bytes::from(s)
    }
}

/// The text PHP's register sends before closing on a bad line (spec §16.5).
pub fn bad_request_reply(ip: &str, line: &[u8]) -> Bytes {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut out = format!("Bad request for Register service. Request info(IP:{ip}, Request Buffer:").into_bytes();
    out.extend_from_slice(line);
    out.extend_from_slice(b"). See http://doc2.workerman.net/register-auth-timeout.html\n");
    Bytes::from(out)
}

/// Newline-delimited frames of at most [`MAX_LINE`] bytes, any bytes allowed inside.
pub fn line_codec() -> AnyDelimiterCodec {
    AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), b"\n".to_vec(), MAX_LINE)
}
