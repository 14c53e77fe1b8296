//! The gateway's side of routing by directory: it tells each worker that asked which uids and
//! groups it holds (a snapshot, then every change), counts their acknowledgements, and answers
//! a worker's barrier once every such worker has applied every change sent before it.
//!
//! Why the barrier: a worker that binds a uid (or joins a group) on this gateway waits for it
//! before it goes on (`Api::bind_uid`), so everything it does afterwards — a login reply, a
//! presence push, a stored row another worker reads — happens after every worker knows where
//! the uid is. A send that follows the bind, however it learnt of it, is routed here. Changes
//! that remove need no barrier: a send routed here for nobody is dropped, as under broadcast.

use crate::protocol::directory::{Change, Delta};
use crate::protocol::Command;
use crate::router::LinkId;
use crate::tables::IdMap;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// A barrier is answered after this even if a worker has not acknowledged (it is stuck or cut
/// off; its link's keepalive will end it): one worker must not stall every login.
pub const BARRIER_WAIT: Duration = Duration::from_secs(1);

/// Names per snapshot packet: a gateway with 100 000 uids sends them in pieces.
const SNAPSHOT_PIECE: usize = 4096;

#[derive(Debug, Default)]
pub struct Publisher {
    seq: u64,
    /// Subscribed links → the last sequence number each acknowledged.
    acked: IdMap<LinkId, u64>,
    barriers: Vec<Barrier>,
    /// The last announcement before the last subscriber left: a uid or group that the tables say
    /// was announced by it or an earlier one was announced to nobody now listening.
    forgotten: u64,
    /// Each link → the latest announcement among the uids and groups its binds and joins have
    /// touched since its last barrier: what that barrier waits for, and nothing else, so a join
    /// of a group held long ago settles at once however busy the other workers are.
    touched: IdMap<LinkId, u64>,
}

#[derive(Debug)]
struct Barrier {
    link: LinkId,
    token: u64,
    seq: u64,
    since: Instant,
}

impl Publisher {
    pub fn has_subscribers(&self) -> bool {
        !self.acked.is_empty()
    }

    pub fn has_barriers(&self) -> bool {
        !self.barriers.is_empty()
    }

    /// While anyone subscribes, the number the next announcement will carry: the tables
    /// record changes for it (`Tables::record_changes`) and note it on what they add.
    pub fn recording(&self) -> Option<u64> {
        self.has_subscribers().then_some(self.seq + 1)
    }

    /// A new subscriber: the packets of its snapshot, to queue on its link before anything else.
    pub fn subscribe(&mut self, link: LinkId, everything: impl Iterator<Item = Change>) -> Vec<Bytes> {
        self.acked.insert(link, 0);
        let mut packets = Vec::new();
        let mut piece = Vec::new();
        let mut reset = true;
        for change in everything {
            piece.push(change);
            if piece.len() == SNAPSHOT_PIECE {
                packets.push(self.packet(reset, false, std::mem::take(&mut piece)));
                reset = false;
            }
        }
        packets.push(self.packet(reset, true, piece));
        packets
    }

    /// The packet announcing `changes` to every subscriber (None: nothing changed).
    pub fn announce(&mut self, changes: Vec<Change>) -> Option<Bytes> {
        if changes.is_empty() {
            return None;
        }
        self.seq += 1;
        Some(self.packet(false, false, changes))
    }

    /// A bind or join from `link` of a uid or group which `held_now` says is held here now,
    /// and which the announcement numbered `announced` told the subscribers of (as the tables
    /// recorded it). Its announcement may still be pending (changes are announced once per
    /// batch of hub messages): then the barrier waits for the next one.
    pub fn touch(&mut self, link: LinkId, announced: Option<u64>, held_now: bool) {
        let seq = match announced.filter(|a| *a > self.forgotten) {
            Some(seq) => seq,
            None if held_now => self.seq + 1,
            None => return,
        };
        let t = self.touched.entry(link).or_default();
        *t = (*t).max(seq);
    }

    fn packet(&self, reset: bool, complete: bool, changes: Vec<Change>) -> Bytes {
        Command::Directory(Delta { reset, complete, seq: self.seq, changes }).into_packet().to_bytes()
    }

    pub fn subscribers(&self) -> impl Iterator<Item = LinkId> + '_ {
        self.acked.keys().copied()
    }

    pub fn ack(&mut self, link: LinkId, seq: u64) {
        if let Some(a) = self.acked.get_mut(&link) {
            *a = (*a).max(seq);
        }
    }

    /// A worker's barrier, after its binds and joins: settled now (Some, the answer) or once
    /// every subscriber has applied the announcements of what they touched.
    pub fn barrier(&mut self, link: LinkId, token: u64) -> Option<Bytes> {
        let seq = self.touched.remove(&link).unwrap_or(0);
        if self.caught_up(seq) {
            return Some(settled(token));
        }
        self.barriers.push(Barrier { link, token, seq, since: Instant::now() });
        None
    }

    pub fn unsubscribe(&mut self, link: LinkId) {
        self.acked.remove(&link);
        self.barriers.retain(|b| b.link != link);
        self.touched.remove(&link);
        if self.acked.is_empty() {
            // Nothing is recorded while nobody subscribes; a new subscriber starts from a snapshot.
            self.forgotten = self.seq;
        }
    }

    fn caught_up(&self, seq: u64) -> bool {
        self.acked.values().all(|a| *a >= seq)
    }

    /// The barriers now settled (every subscriber caught up, or waited for long enough), as
    /// `(link, answer, laggards)`; laggards name the links still behind when time ran out.
    pub fn settle(&mut self) -> Vec<(LinkId, Bytes, Vec<LinkId>)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.barriers.len() {
            let b = &self.barriers[i];
            let late = b.since.elapsed() >= BARRIER_WAIT;
            if self.caught_up(b.seq) || late {
                let laggards = if late { self.acked.iter().filter(|(_, a)| **a < b.seq).map(|(l, _)| *l).collect() } else { Vec::new() };
                let b = self.barriers.swap_remove(i);
                out.push((b.link, settled(b.token), laggards));
            } else {
                i += 1;
            }
        }
        out
    }
}

fn settled(token: u64) -> Bytes {
    Command::DirectorySettled { token }.into_packet().to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_barrier_waits_for_every_subscriber_then_for_no_one_gone() {
        let mut p = Publisher::default();
        p.subscribe(1, std::iter::empty());
        p.subscribe(2, std::iter::empty());
        assert!(p.barrier(1, 10).is_some(), "nothing announced yet: settled at once");
        assert!(p.announce(vec![Change::UidAdded("u".into())]).is_some());
        assert!(p.barrier(1, 11).is_some(), "link 1 touched nothing: settled at once");
        p.touch(1, Some(1), true);
        assert!(p.barrier(1, 11).is_none());
        p.ack(1, 1);
        assert!(p.settle().is_empty(), "link 2 has not applied it");
        p.unsubscribe(2);
        let settled = p.settle();
        assert_eq!(settled.len(), 1);
        assert!(settled[0].2.is_empty());
        assert!(p.announce(Vec::new()).is_none(), "no change, no packet");
    }

    /// A uid announced to workers that have all left counts for nothing: a new subscriber
    /// learnt it from its snapshot, and its barrier waits for the next announcement, as for
    /// one never announced.
    #[test]
    fn an_announcement_to_subscribers_since_gone_counts_for_nothing() {
        let mut p = Publisher::default();
        assert_eq!(p.recording(), None, "nobody subscribes: nothing is recorded");
        p.subscribe(1, std::iter::empty());
        assert_eq!(p.recording(), Some(1));
        assert!(p.announce(vec![Change::UidAdded("u".into())]).is_some());
        p.ack(1, 1);
        p.touch(1, Some(1), true);
        assert!(p.barrier(1, 5).is_some(), "applied already: settled at once");
        p.unsubscribe(1);
        p.subscribe(2, std::iter::empty());
        assert_eq!(p.recording(), Some(2));
        p.touch(2, Some(1), true);
        assert!(p.barrier(2, 6).is_none(), "waits for the next announcement");
        assert!(p.announce(vec![Change::GroupAdded("g".into())]).is_some());
        p.ack(2, 2);
        assert_eq!(p.settle().len(), 1);
    }

    #[test]
    fn a_snapshot_comes_in_pieces_the_last_complete() {
        let mut p = Publisher::default();
        let names = (0..SNAPSHOT_PIECE + 1).map(|i| Change::GroupAdded(Bytes::from(i.to_string())));
        let packets = p.subscribe(7, names);
        assert_eq!(packets.len(), 2);
        let delta = |b: &Bytes| {
            let packet = crate::protocol::Packet::decode(&mut bytes::BytesMut::from(&b[..]), usize::MAX).ok().flatten().expect("one packet");
            match Command::from_packet(packet) {
                Ok(Command::Directory(d)) => d,
                other => panic!("{other:?}"),
            }
        };
        let (first, last) = (delta(&packets[0]), delta(&packets[1]));
        assert!(first.reset && !first.complete && first.changes.len() == SNAPSHOT_PIECE);
        assert!(!last.reset && last.complete && last.changes.len() == 1);
    }
}
