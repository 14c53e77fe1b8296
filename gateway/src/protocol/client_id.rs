//! The 20-hex-digit client id: gateway inner IPv4 ‖ inner port ‖ connection number (spec §5).
//!
//! It is how any worker, on any server, addresses one connection on one gateway without asking
//! anybody: the id itself says where to send.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub conn: u32,
}

impl ClientId {
    pub fn new(gateway: SocketAddrV4, conn: u32) -> ClientId {
        ClientId { ip: *gateway.ip(), port: gateway.port(), conn }
    }

    /// The gateway inner address this client lives on.
    pub fn gateway(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip, self.port)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}{:04x}{:08x}", u32::from(self.ip), self.port, self.conn)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("client_id {0:?} is invalid: expected 20 hex digits")]
pub struct InvalidClientId(pub String);

/// Accepts upper- or lower-case hex (as PHP does). PHP reads a non-hex digit as 0 and sends to
/// a gateway that does not exist; here it is an error instead (spec §16.7).
impl FromStr for ClientId {
    type Err = InvalidClientId;

    fn from_str(s: &str) -> Result<ClientId, InvalidClientId> {
        let bad = || InvalidClientId(s.chars().take(64).collect());
        if s.len() != 20 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let ip = u32::from_str_radix(&s[0..8], 16).map_err(|_| bad())?;
        let port = u16::from_str_radix(&s[8..12], 16).map_err(|_| bad())?;
        let conn = u32::from_str_radix(&s[12..20], 16).map_err(|_| bad())?;
        Ok(ClientId { ip: Ipv4Addr::from(ip), port, conn })
    }
}

impl serde::Serialize for ClientId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
