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
    /// 20 hex digits written at once: `write!` with three padded fields cost about 1 900
    /// instructions, and the chat prints a client id for every presence change it announces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = [0u8; 10];
        raw[0..4].copy_from_slice(&self.ip.octets());
        raw[4..6].copy_from_slice(&self.port.to_be_bytes());
        raw[6..10].copy_from_slice(&self.conn.to_be_bytes());
        let mut hex = [0u8; 20];
        hex::encode_to_slice(raw, &mut hex).map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The hand-written forms say what the standard library's formatting says.
        #[test]
        fn written_by_hand_as_formatted(ip in any::<u32>(), port in any::<u16>(), conn in any::<u32>()) {
            let id = ClientId { ip: Ipv4Addr::from(ip), port, conn };
            prop_assert_eq!(id.to_string(), format!("{ip:08x}{port:04x}{conn:08x}"));
            prop_assert_eq!(id.to_string().parse::<ClientId>(), Ok(id));
        }
    }

    #[test]
    fn the_extremes() {
        let low = ClientId { ip: Ipv4Addr::UNSPECIFIED, port: 0, conn: 0 };
        assert_eq!(low.to_string(), "00000000000000000000");
        assert_eq!(low.gateway(), "0.0.0.0:0".parse().expect("address"));
        let high = ClientId { ip: Ipv4Addr::BROADCAST, port: u16::MAX, conn: u32::MAX };
        assert_eq!(high.to_string(), "ffffffffffffffffffff");
        assert_eq!(high.gateway(), "255.255.255.255:65535".parse().expect("address"));
    }
}
