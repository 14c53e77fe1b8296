//! The directory's wire format (a Switchboard extension): what a gateway tells the workers that
//! asked for it about the uids and groups it holds, so they send a uid's or a group's messages
//! only to the gateways that have a member (docs/architecture.md, "Routing").
//!
//! A `Delta` travels in the body of a DIRECTORY packet (213, gateway → worker): one flags byte
//! (1 = this replaces everything known of the gateway, 2 = the replacement is complete), the
//! gateway's sequence number (u64, big-endian), then entries `[op u8][len u32][name]`, names as
//! the worker gave them (the receiver keys them as PHP would, `Key::from_bytes`).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// One change of what a gateway holds: a uid or group gained its first member or lost its last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    UidAdded(Bytes),
    UidRemoved(Bytes),
    GroupAdded(Bytes),
    GroupRemoved(Bytes),
}

impl Change {
    fn op(&self) -> (u8, &Bytes) {
        match self {
            Change::UidAdded(n) => (1, n),
            Change::UidRemoved(n) => (2, n),
            Change::GroupAdded(n) => (3, n),
            Change::GroupRemoved(n) => (4, n),
        }
    }

    pub fn is_addition(&self) -> bool {
        matches!(self, Change::UidAdded(_) | Change::GroupAdded(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delta {
    /// Forget what was known of this gateway first (the first packet of a snapshot).
    pub reset: bool,
    /// The snapshot is complete: from now on the receiver may route by it.
    pub complete: bool,
    /// The gateway's sequence number; the receiver acknowledges it (DIRECTORY_ACK).
    pub seq: u64,
    pub changes: Vec<Change>,
}

#[derive(Debug, thiserror::Error)]
#[error("directory packet: {0}")]
pub struct DeltaError(&'static str);

impl Delta {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(9 + self.changes.iter().map(|c| 5 + c.op().1.len()).sum::<usize>());
        b.put_u8(u8::from(self.reset) | (u8::from(self.complete) << 1));
        b.put_u64(self.seq);
        for c in &self.changes {
            let (op, name) = c.op();
            b.put_u8(op);
            b.put_u32(name.len() as u32);
            b.put_slice(name);
        }
        b.freeze()
    }

    pub fn decode(mut b: Bytes) -> Result<Delta, DeltaError> {
        if b.len() < 9 {
            return Err(DeltaError("shorter than its header"));
        }
        let flags = b.get_u8();
        let seq = b.get_u64();
        let mut changes = Vec::new();
        while b.has_remaining() {
            if b.len() < 5 {
                return Err(DeltaError("truncated entry"));
            }
            let op = b.get_u8();
            let len = b.get_u32() as usize;
            if b.len() < len {
                return Err(DeltaError("entry longer than the packet"));
            }
            let name = b.split_to(len);
            changes.push(match op {
                1 => Change::UidAdded(name),
                2 => Change::UidRemoved(name),
                3 => Change::GroupAdded(name),
                4 => Change::GroupRemoved(name),
                _ => return Err(DeltaError("unknown entry")),
            });
        }
        Ok(Delta { reset: flags & 1 != 0, complete: flags & 2 != 0, seq, changes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_round_trips_and_bad_ones_are_refused() {
        let d = Delta {
            reset: true,
            complete: false,
            seq: 7,
            changes: vec![Change::UidAdded("a:1:x".into()), Change::GroupRemoved(Bytes::from_static(b"\xff\x00")), Change::UidRemoved(Bytes::new())],
        };
        assert_eq!(Delta::decode(d.encode()).expect("decodes"), d);
        let bytes = d.encode();
        assert!(Delta::decode(bytes.slice(..bytes.len() - 1)).is_err());
        assert!(Delta::decode(Bytes::from_static(b"\x00")).is_err());
        let mut bad = BytesMut::from(&Delta { seq: 1, ..Delta::default() }.encode()[..]);
        bad.put_slice(&[9, 0, 0, 0, 0]);
        assert!(Delta::decode(bad.freeze()).is_err());
    }
}
