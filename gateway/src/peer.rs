//! A client's address as the gateway keeps it for the connection's life (in its task, and in
//! its row of the tables): an `IpAddr` and a port, 20 bytes where a `SocketAddr` is 32 (an
//! IPv6 address's flow info and scope id are never used here).

use std::net::{IpAddr, SocketAddr};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    ip: IpAddr,
    port: u16,
}

impl Peer {
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl From<SocketAddr> for Peer {
    fn from(a: SocketAddr) -> Peer {
        Peer { ip: a.ip(), port: a.port() }
    }
}

impl From<Peer> for SocketAddr {
    fn from(p: Peer) -> SocketAddr {
        SocketAddr::new(p.ip, p.port)
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        SocketAddr::from(*self).fmt(f)
    }
}
