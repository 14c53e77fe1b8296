//! The connections of one uid or one group, in the order they were added.
//!
//! A gateway holds one of these for every uid bound and every group joined, so its size is
//! paid per client: nearly every uid has one connection, and a chat room has tens of members.
//! One connection is held inline; up to [`FEW`], a list searched end to end (4 bytes a member,
//! where an `IndexSet` cost ≈ 32 bytes a member of a room of fifty and ≈ 200 bytes for a
//! uid's one connection: docs/BENCHMARKS.md); past that, a [`Crowd`], so that a group of
//! thousands is neither searched end to end on each join nor shifted on each leave, until it
//! is down to half of `FEW` again.

use crate::tables::{ConnId, IdMap};

/// How many connections a list holds before it becomes a crowd.
pub const FEW: usize = 64;

/// Connections in the order added, each once. 24 bytes, whichever it is.
#[derive(Debug)]
pub enum ConnSet {
    /// None, or one: no allocation (a uid's usual case).
    One(Option<ConnId>),
    /// Two to `FEW`, allocated to fit: a set's members are added one at a time, rarely.
    Few(Vec<ConnId>),
    /// Boxed: a crowd is big, and rare.
    Many(Box<Crowd>),
}

/// Where a member left a [`Crowd`]'s list: 0 is never a connection id (`Tables::add`).
const HOLE: ConnId = 0;

/// Many members in the order they came: a list with a hole where each one that left was, and
/// each member's place in it. A leave costs a lookup; keeping the order with an `IndexSet`
/// (`shift_remove`) moved every member after the one leaving, half a group of 100 000 on
/// average, so a crowd emptying took time growing with the square of its size (the hub is one
/// task: every client waited). The list is compacted once it is more holes than members, so a
/// walk (every message to the group) visits at most about twice the members.
#[derive(Debug, Default)]
pub struct Crowd {
    list: Vec<ConnId>,
    place: IdMap<ConnId, u32>,
}

impl Crowd {
    fn insert(&mut self, conn: ConnId) -> bool {
        if conn == HOLE || self.place.contains_key(&conn) {
            return false;
        }
        // More than 4 billion joins to one group without a compaction cannot happen: the list
        // is compacted long before it has that many holes.
        self.place.insert(conn, self.list.len() as u32);
        self.list.push(conn);
        true
    }

    fn remove(&mut self, conn: ConnId) {
        let Some(at) = self.place.remove(&conn) else { return };
        self.list[at as usize] = HOLE;
        if self.list.len() > 2 * self.place.len() + FEW {
            self.list.retain(|c| *c != HOLE);
            for (i, c) in self.list.iter().enumerate() {
                self.place.insert(*c, i as u32);
            }
        }
    }

    fn len(&self) -> usize {
        self.place.len()
    }

    fn iter(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.list.iter().copied().filter(|c| *c != HOLE)
    }
}

impl Default for ConnSet {
    fn default() -> Self {
        ConnSet::One(None)
    }
}

impl ConnSet {
    /// Adds `conn` (never 0, which no connection has); false if it was there.
    pub fn insert(&mut self, conn: ConnId) -> bool {
        debug_assert_ne!(conn, HOLE, "0 is not a connection id");
        match self {
            ConnSet::One(None) => {
                *self = ConnSet::One(Some(conn));
                true
            }
            ConnSet::One(Some(c)) if *c == conn => false,
            ConnSet::One(Some(c)) => {
                *self = ConnSet::Few(vec![*c, conn]);
                true
            }
            ConnSet::Few(v) if v.contains(&conn) => false,
            ConnSet::Few(v) if v.len() < FEW => {
                v.reserve_exact(1);
                v.push(conn);
                true
            }
            ConnSet::Few(v) => {
                let mut crowd = Crowd::default();
                for c in v.drain(..).chain([conn]) {
                    crowd.insert(c);
                }
                *self = ConnSet::Many(Box::new(crowd));
                true
            }
            ConnSet::Many(set) => set.insert(conn),
        }
    }

    /// Removes `conn`, keeping the others' order. A list that shrinks to one goes back inline;
    /// a set stays a set (a big group that lost a few members will likely grow again).
    pub fn remove(&mut self, conn: ConnId) {
        match self {
            ConnSet::One(c) => {
                if *c == Some(conn) {
                    *c = None;
                }
            }
            ConnSet::Few(v) => {
                if let Some(i) = v.iter().position(|c| *c == conn) {
                    v.remove(i);
                }
                match v[..] {
                    [] => *self = ConnSet::One(None),
                    [one] => *self = ConnSet::One(Some(one)),
                    _ => {}
                }
            }
            ConnSet::Many(set) => {
                set.remove(conn);
                // A crowd that has left goes back to a list (half of `FEW`, so that a group
                // around the boundary does not switch at every join and leave): a room of
                // thousands emptied to a few would otherwise keep its set's allocation.
                if set.len() <= FEW / 2 {
                    *self = match set.len() {
                        0 => ConnSet::One(None),
                        1 => ConnSet::One(set.iter().next()),
                        _ => ConnSet::Few(set.iter().collect()),
                    };
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        match self {
            ConnSet::One(c) => usize::from(c.is_some()),
            ConnSet::Few(v) => v.len(),
            ConnSet::Many(set) => set.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The connections, in the order added. A list is walked as a slice: a group's members
    /// are walked for every message sent to it.
    pub fn iter(&self) -> Iter<'_> {
        match self {
            ConnSet::One(c) => Iter::List(c.as_slice().iter()),
            ConnSet::Few(v) => Iter::List(v.iter()),
            ConnSet::Many(set) => Iter::Crowd(set.list.iter()),
        }
    }
}

/// [`ConnSet::iter`].
pub enum Iter<'a> {
    List(std::slice::Iter<'a, ConnId>),
    /// A crowd's list, holes skipped.
    Crowd(std::slice::Iter<'a, ConnId>),
}

impl Iter<'_> {
    /// Nothing: the members of a uid or group not held.
    pub fn empty() -> Self {
        Iter::List([].iter())
    }
}

impl Iterator for Iter<'_> {
    type Item = ConnId;

    #[inline]
    fn next(&mut self) -> Option<ConnId> {
        match self {
            Iter::List(i) => i.next().copied(),
            Iter::Crowd(i) => i.by_ref().copied().find(|c| *c != HOLE),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Iter::List(i) => i.size_hint(),
            Iter::Crowd(i) => (0, i.size_hint().1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexSet;
    use proptest::prelude::*;

    #[test]
    fn it_is_as_small_as_a_list() {
        assert_eq!(std::mem::size_of::<ConnSet>(), 24);
    }

    /// A set that shrinks to half of `FEW` becomes a list again, then one inline, keeping
    /// the order.
    #[test]
    fn a_crowd_that_leaves_goes_back_to_a_list() {
        let mut set = ConnSet::default();
        for c in 1..=200 {
            set.insert(c);
        }
        assert!(matches!(set, ConnSet::Many(_)));
        for c in (1..=200).filter(|c| c % 7 != 0).take(200 - FEW / 2 - 1) {
            set.remove(c);
        }
        assert!(matches!(&set, ConnSet::Many(s) if s.len() == FEW / 2 + 1));
        let left: Vec<ConnId> = set.iter().collect();
        set.remove(left[3]);
        let expected: Vec<ConnId> = left.iter().copied().filter(|c| *c != left[3]).collect();
        assert!(matches!(&set, ConnSet::Few(v) if *v == expected), "{set:?}");
        for c in &expected[1..] {
            set.remove(*c);
        }
        assert!(matches!(set, ConnSet::One(Some(c)) if c == expected[0]));
    }

    /// Thousands leave in a scattered order and some come back: the order stays that of the
    /// joins, each is listed once, and the list is compacted as holes pile up.
    #[test]
    fn a_big_crowd_keeps_its_order_through_leaves_and_returns() {
        let mut set = ConnSet::default();
        let mut model: Vec<ConnId> = (1..=5000).collect();
        for c in &model {
            set.insert(*c);
        }
        for i in 0..4000u32 {
            let c = (i * 7919) % 5000 + 1;
            set.remove(c);
            model.retain(|m| *m != c);
            if i % 10 == 0 {
                set.insert(c);
                model.push(c);
            }
        }
        assert_eq!(set.iter().collect::<Vec<_>>(), model);
        assert_eq!(set.len(), model.len());
        let ConnSet::Many(crowd) = &set else { panic!("still a crowd: {}", set.len()) };
        assert!(crowd.list.len() <= 2 * crowd.len() + FEW, "compacted: {} places for {}", crowd.list.len(), crowd.len());
    }

    proptest! {
        /// Whatever is added and removed, it holds what an ordered set would, in its order.
        #[test]
        fn it_behaves_as_an_ordered_set(ops in proptest::collection::vec((any::<bool>(), 1u32..=(FEW as u32 * 3)), 0..2000)) {
            let mut set = ConnSet::default();
            let mut model: IndexSet<ConnId> = IndexSet::new();
            for (add, conn) in ops {
                if add {
                    prop_assert_eq!(set.insert(conn), model.insert(conn));
                } else {
                    set.remove(conn);
                    model.shift_remove(&conn);
                }
                prop_assert_eq!(set.len(), model.len());
                prop_assert_eq!(set.iter().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
                match &set {
                    ConnSet::Few(v) => prop_assert!(v.len() >= 2, "a list of {} is held inline", v.len()),
                    ConnSet::Many(s) => prop_assert!(s.len() > FEW / 2, "a set of {} is kept", s.len()),
                    ConnSet::One(_) => {}
                }
            }
        }
    }
}
