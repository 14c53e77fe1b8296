//! The state a gateway owns: its clients with their sessions, and the uid and group indexes.
//!
//! Only the hub actor touches these tables, so they are plain maps without locks. uids and
//! group names are keyed the way PHP keys arrays (`"1"` and `1` are one key, spec §3.2) and
//! remember the bytes they were given, because replies echo them.

use crate::conn_set::{self, ConnSet};
use crate::protocol::directory::Change;
use crate::protocol::php::{self, Key, Value};
use crate::protocol::{Id, SelectWhere};
use bytes::Bytes;
use indexmap::IndexSet;
use smallvec::SmallVec;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

pub type ConnId = u32;

/// A map keyed by an id this gateway counts out itself (a connection, a worker's link), hashed
/// with rustc-hash's one multiply instead of std's SipHash. SipHash's keyed rounds are what
/// keep a map of names that strangers choose (uids, groups, addresses) safe from crafted
/// collisions, and those maps keep it; nobody outside chooses these ids, and SipHash was a
/// tenth of the gateway's instructions per connection (docs/BENCHMARKS.md, session 35).
pub type IdMap<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;

/// What the tables know about one client connection. `T` is the handle used to reach the
/// client's socket (the hub's outbound queue); the tables never look inside it.
#[derive(Debug)]
pub struct Client<T> {
    pub handle: T,
    /// PHP-serialized session bytes, stored verbatim.
    pub session: Box<[u8]>,
    /// The bound uid, as the bytes the worker sent.
    pub uid: Option<Box<[u8]>>,
    pub groups: Groups,
}

/// Bytes the tables keep for a connection's life, as a copy of their own: a session or uid
/// comes from a link as a slice of that link's read buffer, and a slice holds the whole buffer
/// (kept as slices, the sessions of 2 000 idle clients held 1.1 MB of read buffers). A boxed
/// slice and not `Bytes`: half the size in every row, and no shared header allocated the first
/// time it is cloned (an event's session is copied into its packet anyway). Massif;
/// docs/BENCHMARKS.md.
fn own(b: &[u8]) -> Box<[u8]> {
    Box::from(b)
}

/// A group held here: its name, as its members' rows share it, and its members in the order
/// they joined.
#[derive(Debug)]
struct Group {
    name: Arc<[u8]>,
    members: ConnSet,
    announced: Announced,
    /// When it was made, in the gateway's count of groups made: the order a listing of every
    /// group shows, which is PHP's (an array's keys in the order added).
    made: u64,
}

/// A uid held here: its connections in the order bound.
#[derive(Debug, Default)]
struct Uid {
    conns: ConnSet,
    announced: Announced,
}

/// The directory announcement (its sequence number) that told workers a uid or group is held
/// here, 0 when none did (it was already held when they subscribed, or nobody subscribed).
/// Kept beside the index entry: a map of its own in the directory's publisher held a second
/// copy of every uid, ≈ 100 bytes per connection (docs/BENCHMARKS.md).
type Announced = u64;

/// The groups one client is in, by the names the worker sent, in the order joined. A client is
/// in few groups, so they are a list, searched: an `IndexMap` here cost ≈ 290 bytes per client
/// in one group (docs/BENCHMARKS.md). Names compare as bytes, which is the same as comparing
/// their PHP keys: a name becomes an integer key only when it is the one canonical spelling of
/// that integer. Each name is the group's own (`Group::name`), shared: a room's fifty members
/// hold one copy of its name between them, not fifty. The first is held inline: most clients
/// are in one group, and a list of one was a 16-byte allocation of every such client.
#[derive(Debug, Default)]
pub struct Groups(SmallVec<[Arc<[u8]>; 1]>);

impl Groups {
    /// Adds `name` unless the client is in it already.
    fn insert(&mut self, name: &Arc<[u8]>) {
        if !self.0.contains(name) {
            // Exact growth while short: most clients are in one or two groups.
            if self.0.len() < 8 {
                self.0.reserve_exact(1);
            }
            self.0.push(name.clone());
        }
    }

    fn remove(&mut self, name: &[u8]) {
        if let Some(i) = self.0.iter().position(|g| g[..] == *name) {
            self.0.remove(i);
            if self.0.len() <= 1 {
                // Back inline.
                self.0.shrink_to_fit();
            }
        }
    }

    /// The names, in the order joined.
    pub fn names(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(|n| &n[..])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug)]
pub struct Tables<T> {
    /// Every client, by connection id. Boxed rows in a `HashMap`, not rows in an `IndexMap`:
    /// an `IndexMap` keeps its rows in a `Vec` it grows to match its index (up to twice the
    /// clients held: ≈ 260 bytes a connection at 15 000 for a 128-byte row), and removing a row
    /// in order moved every row after it. A box is its row's size, and the map holds 16 bytes
    /// per slot. Connection order, which PHP's arrays keep and some replies show, is the order
    /// of the ids ([`Tables::in_order`]).
    clients: IdMap<ConnId, Box<Client<T>>>,
    uids: HashMap<Key, Uid>,
    /// Not an `IndexMap` for the order: removing a group in order (`shift_remove`) moved every
    /// group made after it, so with a group per client each disconnect cost time in the number
    /// of groups, and a crowd of one-agent bots leaving took the hub seconds (BENCHMARKS.md).
    /// The order is `Group::made`, sorted by the rare listing that shows it.
    groups: HashMap<Key, Group>,
    /// Groups made so far (`Group::made`).
    groups_made: u64,
    next_id: ConnId,
    /// While set (some worker wants the directory): each uid or group that gained its first
    /// member or lost its last, for the hub to announce (`take_changes`).
    changes: Option<Vec<Change>>,
    /// The sequence number the next announcement will carry, while changes are recorded.
    next_announcement: Announced,
}

impl<T> Default for Tables<T> {
    fn default() -> Self {
        Tables {
            clients: IdMap::default(),
            uids: HashMap::new(),
            groups: HashMap::new(),
            groups_made: 0,
            next_id: 0,
            changes: None,
            next_announcement: 0,
        }
    }
}

/// The bytes a key stands for (what a worker would send to name it).
fn key_bytes(k: &Key) -> Bytes {
    match k {
        Key::Int(i) => Bytes::from(i.to_string()),
        Key::Str(s) => Bytes::copy_from_slice(s),
    }
}

/// PHP's `empty()` for a uid or group name: `""` and `"0"` are refused.
pub fn php_empty(name: &[u8]) -> bool {
    name.is_empty() || name == b"0"
}

pub fn id_key(id: &Id) -> Key {
    match id {
        Id::Int(i) => Key::Int(*i),
        Id::Str(s) => Key::from_bytes(s.as_bytes()),
    }
}

fn key_value(k: &Key) -> Value {
    match k {
        Key::Int(i) => Value::Int(*i),
        Key::Str(s) => Value::Str(s.clone()),
    }
}

impl<T> Tables<T> {
    /// Tables whose first connection id follows `seed`.
    pub fn starting_after(seed: ConnId) -> Self {
        Tables { next_id: seed, ..Tables::default() }
    }

    /// Adds a client under a fresh connection id: the one after the last given, skipping ids
    /// still in use, wrapping after u32::MAX (never 0).
    pub fn add(&mut self, handle: T) -> ConnId {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if self.next_id != 0 && !self.clients.contains_key(&self.next_id) {
                break;
            }
        }
        let id = self.next_id;
        self.clients.insert(id, Box::new(Client { handle, session: Box::default(), uid: None, groups: Groups::default() }));
        id
    }

    /// The connections in the order they were made, as GatewayWorker's gateway lists them (a
    /// PHP array keeps insertion order). Ids are given in ascending order, wrapping after
    /// u32::MAX, so the oldest is the first after the last given.
    pub fn in_order(&self) -> Vec<ConnId> {
        let oldest = self.next_id.wrapping_add(1);
        let mut ids: Vec<ConnId> = self.clients.keys().copied().collect();
        ids.sort_unstable_by_key(|id| id.wrapping_sub(oldest));
        ids
    }

    /// Every client, in no particular order (a send to all, a heartbeat tick).
    pub fn clients(&self) -> impl Iterator<Item = (ConnId, &Client<T>)> {
        self.clients.iter().map(|(id, c)| (*id, &**c))
    }

    pub fn clients_mut(&mut self) -> impl Iterator<Item = &mut Client<T>> {
        self.clients.values_mut().map(|c| &mut **c)
    }

    /// Removes a client from every table.
    pub fn remove(&mut self, conn: ConnId) -> Option<Client<T>> {
        let client = *self.clients.remove(&conn)?;
        if let Some(uid) = &client.uid {
            self.unindex_uid(&Key::from_bytes(uid), conn);
        }
        for name in client.groups.names() {
            self.unindex_group(&Key::from_bytes(name), conn);
        }
        Some(client)
    }

    pub fn get(&self, conn: ConnId) -> Option<&Client<T>> {
        self.clients.get(&conn).map(|c| &**c)
    }

    pub fn get_mut(&mut self, conn: ConnId) -> Option<&mut Client<T>> {
        self.clients.get_mut(&conn).map(|c| &mut **c)
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Starts (or stops, `None`) noting changes of the uids and groups held, those noted from
    /// now on to go out in the announcement numbered `next`.
    pub fn record_changes(&mut self, next: Option<Announced>) {
        self.changes = next.map(|_| self.changes.take().unwrap_or_default());
        self.next_announcement = next.unwrap_or(0);
    }

    /// Whether a uid (`true`) or group is held here, and the announcement that said so (as
    /// recorded by `record_changes`; `None` when none did).
    pub fn held(&self, uid: bool, key: &Key) -> (bool, Option<Announced>) {
        let announced = if uid { self.uids.get(key).map(|u| u.announced) } else { self.groups.get(key).map(|g| g.announced) };
        (announced.is_some(), announced.filter(|a| *a != 0))
    }

    /// The changes noted since the last call.
    pub fn take_changes(&mut self) -> Vec<Change> {
        self.changes.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn note(&mut self, change: impl FnOnce() -> Change) {
        if let Some(c) = &mut self.changes {
            c.push(change());
        }
    }

    /// Every uid and group held now, as additions (a directory snapshot).
    pub fn everything(&self) -> impl Iterator<Item = Change> + '_ {
        let uids = self.uids.keys().map(|k| Change::UidAdded(key_bytes(k)));
        uids.chain(self.groups.keys().map(|k| Change::GroupAdded(key_bytes(k))))
    }

    fn unindex_uid(&mut self, key: &Key, conn: ConnId) {
        if let Some(uid) = self.uids.get_mut(key) {
            uid.conns.remove(conn);
            if uid.conns.is_empty() {
                self.uids.remove(key);
                self.note(|| Change::UidRemoved(key_bytes(key)));
            }
        }
    }

    fn unindex_group(&mut self, key: &Key, conn: ConnId) {
        if let Some(group) = self.groups.get_mut(key) {
            group.members.remove(conn);
            if group.members.is_empty() {
                self.groups.remove(key);
                self.note(|| Change::GroupRemoved(key_bytes(key)));
            }
        }
    }

    /// One uid per connection, many connections per uid. Returns false when refused.
    pub fn bind_uid(&mut self, conn: ConnId, uid: Bytes) -> bool {
        if php_empty(&uid) || !self.clients.contains_key(&conn) {
            return false;
        }
        self.unbind_uid(conn);
        let key = Key::from_bytes(&uid);
        let next = self.next_announcement;
        let entry = self.uids.entry(key.clone()).or_default();
        if entry.conns.insert(conn) && entry.conns.len() == 1 {
            entry.announced = next;
            self.note(|| Change::UidAdded(key_bytes(&key)));
        }
        if let Some(c) = self.clients.get_mut(&conn) {
            c.uid = Some(own(&uid));
        }
        true
    }

    /// SET_SESSION: the session's bytes, as the worker sent them.
    pub fn set_session(&mut self, conn: ConnId, session: Bytes) {
        if let Some(c) = self.clients.get_mut(&conn) {
            c.session = own(&session);
        }
    }

    pub fn unbind_uid(&mut self, conn: ConnId) {
        let Some(old) = self.clients.get_mut(&conn).and_then(|c| c.uid.take()) else { return };
        self.unindex_uid(&Key::from_bytes(&old), conn);
    }

    pub fn join_group(&mut self, conn: ConnId, group: Bytes) -> bool {
        if php_empty(&group) {
            return false;
        }
        let Some(c) = self.clients.get_mut(&conn) else { return false };
        let key = Key::from_bytes(&group);
        let next = self.next_announcement;
        let g = match self.groups.entry(key.clone()) {
            Entry::Occupied(g) => g.into_mut(),
            Entry::Vacant(v) => {
                self.groups_made += 1;
                v.insert(Group { name: Arc::from(&group[..]), members: ConnSet::default(), announced: 0, made: self.groups_made })
            }
        };
        c.groups.insert(&g.name);
        if g.members.insert(conn) && g.members.len() == 1 {
            g.announced = next;
            self.note(|| Change::GroupAdded(key_bytes(&key)));
        }
        true
    }

    pub fn leave_group(&mut self, conn: ConnId, group: &[u8]) {
        let key = Key::from_bytes(group);
        if let Some(c) = self.clients.get_mut(&conn) {
            c.groups.remove(group);
        }
        self.unindex_group(&key, conn);
    }

    /// Dissolves a group; its members stay connected.
    pub fn ungroup(&mut self, group: &[u8]) {
        let key = Key::from_bytes(group);
        if let Some(held) = self.groups.remove(&key) {
            self.note(|| Change::GroupRemoved(key_bytes(&key)));
            for conn in held.members.iter() {
                if let Some(c) = self.clients.get_mut(&conn) {
                    c.groups.remove(group);
                }
            }
        }
    }

    pub fn uid_members(&self, key: &Key) -> conn_set::Iter<'_> {
        self.uids.get(key).map_or_else(conn_set::Iter::empty, |u| u.conns.iter())
    }

    /// Walked for every message sent to the group: a slice's walk, not a nested iterator's.
    pub fn group_members(&self, key: &Key) -> conn_set::Iter<'_> {
        self.groups.get(key).map_or_else(conn_set::Iter::empty, |g| g.members.iter())
    }

    pub fn group_len(&self, key: &Key) -> usize {
        self.groups.get(key).map_or(0, |g| g.members.len())
    }

    /// CMD_UPDATE_SESSION. Refused (old session kept) where PHP would crash the process.
    pub fn update_session(&mut self, conn: ConnId, update: &[u8]) -> Result<(), php::MergeError> {
        let Some(c) = self.clients.get_mut(&conn) else { return Ok(()) };
        // Exactly as long as it is: kept for the connection's life, and merging grew it by doubling.
        c.session = php::merge_session(&c.session, update)?.into_boxed_slice();
        Ok(())
    }

    // ---- query replies (the PHP-serialized payload; the caller frames it) ----

    pub fn reply_is_online(&self, conn: ConnId) -> Vec<u8> {
        Value::Int(self.clients.contains_key(&conn) as i64).serialize()
    }

    pub fn reply_session(&self, conn: ConnId) -> Vec<u8> {
        match self.clients.get(&conn) {
            None => b"N;".to_vec(),
            Some(c) if c.session.is_empty() => b"a:0:{}".to_vec(),
            Some(c) => c.session.to_vec(),
        }
    }

    fn sessions_of(&self, conns: impl Iterator<Item = ConnId>) -> Vec<u8> {
        let rows: Vec<(i64, &[u8])> = conns.filter_map(|id| self.clients.get(&id).map(|c| (id as i64, &c.session[..]))).collect();
        php::serialize_int_keyed(&rows)
    }

    pub fn reply_all_sessions(&self) -> Vec<u8> {
        self.sessions_of(self.in_order().into_iter())
    }

    pub fn reply_group_sessions(&self, group: &[u8]) -> Vec<u8> {
        self.sessions_of(self.group_members(&Key::from_bytes(group)))
    }

    pub fn reply_count(&self, group: &[u8]) -> Vec<u8> {
        let n = if group.is_empty() { self.clients.len() } else { self.group_len(&Key::from_bytes(group)) };
        Value::Int(n as i64).serialize()
    }

    fn conn_list(&self, key: &Key) -> Value {
        php::list(self.uid_members(key).map(|c| Value::Int(c as i64)))
    }

    pub fn reply_client_ids_by_uid(&self, uid: &[u8]) -> Vec<u8> {
        self.conn_list(&Key::from_bytes(uid)).serialize()
    }

    pub fn reply_batch_client_ids(&self, uids: &[Id]) -> Vec<u8> {
        let map = uids.iter().map(id_key).map(|k| (k.clone(), self.conn_list(&k))).collect();
        Value::Array(map).serialize()
    }

    pub fn reply_batch_counts(&self, groups: &[Id]) -> Vec<u8> {
        let map = groups.iter().map(id_key).map(|k| (k.clone(), Value::Int(self.group_len(&k) as i64))).collect();
        Value::Array(map).serialize()
    }

    pub fn reply_group_list(&self) -> Vec<u8> {
        let mut held: Vec<(u64, &Key)> = self.groups.iter().map(|(k, g)| (g.made, k)).collect();
        held.sort_unstable_by_key(|(made, _)| *made);
        php::list(held.into_iter().map(|(_, k)| key_value(k))).serialize()
    }

    /// CMD_SELECT (spec §3.1): the union of what each `where` key matches, or everyone.
    pub fn reply_select(&self, fields: &[String], filter: &SelectWhere) -> Vec<u8> {
        let conns: Vec<ConnId> = if filter.is_empty() {
            self.in_order()
        } else {
            let mut set = IndexSet::new();
            for g in filter.groups.iter().flatten() {
                set.extend(self.group_members(&id_key(g)));
            }
            for u in filter.uids.iter().flatten() {
                set.extend(self.uid_members(&id_key(u)));
            }
            for c in filter.connection_ids.iter().flatten() {
                if self.clients.contains_key(c) {
                    set.insert(*c);
                }
            }
            set.into_iter().collect()
        };
        // Written straight out, as `Value::Array(rows).serialize()` would write them, not built
        // as values first (a copy of every session and group name): a roster round selects a
        // thousand agents' rows at each login of a storm. Each field once, where first asked.
        let mut wanted: Vec<&str> = Vec::with_capacity(3);
        for f in fields {
            if matches!(f.as_str(), "uid" | "groups" | "session") && !wanted.contains(&f.as_str()) {
                wanted.push(f);
            }
        }
        let rows: Vec<(ConnId, &Client<T>)> = conns.into_iter().filter_map(|id| Some((id, &**self.clients.get(&id)?))).collect();
        let mut out = Vec::with_capacity(16 + rows.iter().map(|(_, c)| 64 + c.session.len()).sum::<usize>());
        php::write_array_head(&mut out, rows.len());
        for (id, c) in rows {
            php::write_int(&mut out, id as i64);
            php::write_array_head(&mut out, wanted.len());
            for f in &wanted {
                php::write_str(&mut out, f.as_bytes());
                match *f {
                    "uid" => match &c.uid {
                        Some(u) => php::write_str(&mut out, u),
                        None => out.extend_from_slice(b"N;"),
                    },
                    "groups" => {
                        php::write_array_head(&mut out, c.groups.names().count());
                        for g in c.groups.names() {
                            match php::canonical_int(g) {
                                Some(i) => php::write_int(&mut out, i),
                                None => php::write_str(&mut out, g),
                            }
                            php::write_str(&mut out, g);
                        }
                        out.push(b'}');
                    }
                    _ => php::write_str(&mut out, &c.session),
                }
            }
            out.push(b'}');
        }
        out.push(b'}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn_set::FEW;

    /// A select's reply is written straight out: byte for byte what serializing the rows as
    /// values writes (the golden vectors' replies among them), each field once where first
    /// asked, an unknown field left out, a group name that is a number keyed as one.
    #[test]
    fn a_select_reply_is_what_its_rows_serialize_to() {
        let mut t: Tables<()> = Tables::default();
        let (c1, c2) = (t.add(()), t.add(()));
        assert!(t.bind_uid(c1, Bytes::from_static(b"u1")));
        assert!(t.join_group(c1, Bytes::from_static(b"room1")));
        let all = SelectWhere::default();
        let fields = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(t.reply_select(&fields(&["uid"]), &all), br#"a:2:{i:1;a:1:{s:3:"uid";s:2:"u1";}i:2;a:1:{s:3:"uid";N;}}"#);
        let rooms = SelectWhere { groups: Some(vec![Id::from("room1")]), ..SelectWhere::default() };
        assert_eq!(
            t.reply_select(&fields(&["uid", "groups"]), &rooms),
            br#"a:1:{i:1;a:2:{s:3:"uid";s:2:"u1";s:6:"groups";a:1:{s:5:"room1";s:5:"room1";}}}"#
        );
        assert!(t.join_group(c2, Bytes::from_static(b"7")));
        assert!(t.join_group(c2, Bytes::from_static(b"07")));
        t.set_session(c2, Bytes::from_static(br#"a:1:{s:3:"bid";s:1:"5";}"#));
        let asked = fields(&["session", "nope", "groups", "session", "uid"]);
        let mut rows = php::Array::new();
        for id in [c1, c2] {
            let c = t.get(id).expect("row");
            let mut row = php::Array::new();
            row.insert(Key::Str(b"session".to_vec()), Value::Str(c.session.to_vec()));
            row.insert(Key::Str(b"groups".to_vec()), Value::Array(c.groups.names().map(|g| (Key::from_bytes(g), Value::Str(g.to_vec()))).collect()));
            row.insert(Key::Str(b"uid".to_vec()), c.uid.as_ref().map_or(Value::Null, |u| Value::Str(u.to_vec())));
            rows.insert(Key::Int(id as i64), Value::Array(row));
        }
        assert_eq!(t.reply_select(&asked, &all), Value::Array(rows).serialize());
        assert!(String::from_utf8_lossy(&t.reply_select(&asked, &all)).contains(r#"a:2:{i:7;s:1:"7";s:2:"07";s:2:"07";}"#));
    }

    /// A session, uid or group name read from a link is kept as a copy, so the link's read
    /// buffer it came in goes once read.
    #[test]
    fn what_is_kept_does_not_hold_the_buffer_it_came_in() {
        let buffer = Bytes::from(b"u1 room-1 a:1:{s:3:\"bid\";s:1:\"5\";}".repeat(1000));
        let within = |b: &[u8]| buffer.as_ptr_range().contains(&b.as_ptr());
        let mut t: Tables<()> = Tables::default();
        let c = t.add(());
        assert!(t.bind_uid(c, buffer.slice(0..2)));
        assert!(t.join_group(c, buffer.slice(3..9)));
        t.set_session(c, buffer.slice(10..34));
        let row = t.get(c).expect("row");
        let uid = row.uid.as_ref().expect("uid");
        let group = row.groups.names().next().expect("group");
        assert_eq!((&uid[..], group, &row.session[..]), (&b"u1"[..], &b"room-1"[..], &br#"a:1:{s:3:"bid";s:1:"5";}"#[..]));
        assert!(!within(uid) && !within(group) && !within(&row.session), "copies, not slices of the read buffer");
    }

    /// A group's members share its name: one copy for the room, not one per member.
    #[test]
    fn clients_are_listed_in_the_order_they_connected_across_the_ids_wrap() {
        // Ids wrap after u32::MAX (never 0); a connection still open from before the wrap was
        // made first, as PHP's array would list it.
        let mut t: Tables<()> = Tables::starting_after(u32::MAX - 2);
        let made: Vec<ConnId> = (0..5).map(|_| t.add(())).collect();
        assert_eq!(made, [u32::MAX - 1, u32::MAX, 1, 2, 3]);
        t.remove(2);
        let again = t.add(());
        assert_eq!(t.in_order(), [u32::MAX - 1, u32::MAX, 1, 3, again]);
        let listed = Value::unserialize(&t.reply_all_sessions()).expect("a PHP array");
        let keys: Vec<Key> = match listed {
            Value::Array(a) => a.into_iter().map(|(k, _)| k).collect(),
            other => panic!("not an array: {other:?}"),
        };
        let expected: Vec<Key> = t.in_order().into_iter().map(|c| Key::Int(i64::from(c))).collect();
        assert_eq!(keys, expected, "getAllClientSessions answers in connection order");
    }

    #[test]
    fn a_groups_members_share_its_name() {
        let mut t: Tables<()> = Tables::default();
        let (a, b) = (t.add(()), t.add(()));
        assert!(t.join_group(a, Bytes::from(b"room-1".to_vec())));
        assert!(t.join_group(b, Bytes::from(b"room-1".to_vec())));
        let name = |c| t.get(c).expect("row").groups.names().next().expect("in a group").as_ptr();
        assert_eq!(name(a), name(b), "the same bytes");
        // Once the group is gone, a new one under the same name has a name of its own.
        t.ungroup(b"room-1");
        assert!(t.join_group(a, Bytes::from(b"room-1".to_vec())));
        assert_eq!(t.get(a).expect("row").groups.names().collect::<Vec<_>>(), [b"room-1"]);
    }

    /// What is added while changes are recorded carries the announcement it goes out in; a
    /// second member leaves it as it was.
    #[test]
    fn what_is_added_while_recording_is_noted_with_its_announcement() {
        let mut t: Tables<()> = Tables::default();
        let (a, b) = (t.add(()), t.add(()));
        let (u1, u2, g) = (Key::from_bytes(b"u1"), Key::from_bytes(b"u2"), Key::from_bytes(b"g"));
        assert!(t.bind_uid(a, Bytes::from_static(b"u1")));
        assert_eq!(t.held(true, &u1), (true, None), "added while nobody listened");
        t.record_changes(Some(7));
        assert!(t.bind_uid(b, Bytes::from_static(b"u2")));
        assert!(t.join_group(b, Bytes::from_static(b"g")));
        assert_eq!((t.held(true, &u2), t.held(false, &g)), ((true, Some(7)), (true, Some(7))));
        t.record_changes(Some(8));
        assert!(t.bind_uid(a, Bytes::from_static(b"u2")));
        assert!(t.join_group(a, Bytes::from_static(b"g")));
        assert_eq!((t.held(true, &u2), t.held(false, &g)), ((true, Some(7)), (true, Some(7))), "not added again");
        assert_eq!(t.held(true, &u1), (false, None), "a's rebinding let u1 go");
        assert_eq!(t.take_changes().len(), 3, "u2 and g added, u1 removed");
        t.record_changes(None);
        assert!(t.join_group(a, Bytes::from_static(b"h")));
        assert_eq!(t.held(false, &Key::from_bytes(b"h")), (true, None));
    }

    #[test]
    fn php_key_rules_and_cleanup() {
        let mut t: Tables<()> = Tables::default();
        let a = t.add(());
        let b = t.add(());
        assert!(t.join_group(a, Bytes::from_static(b"1")));
        assert!(t.join_group(b, Bytes::from_static(b"1")));
        assert!(!t.join_group(b, Bytes::from_static(b"0")));
        assert_eq!(t.group_len(&id_key(&Id::Int(1))), 2);
        assert!(t.bind_uid(a, Bytes::from_static(b"u1")));
        assert!(t.bind_uid(a, Bytes::from_static(b"u2")));
        assert_eq!(t.uid_members(&Key::from_bytes(b"u1")).count(), 0, "rebinding drops the old uid");
        t.remove(a);
        assert_eq!(t.group_len(&Key::Int(1)), 1);
        assert_eq!(t.uid_members(&Key::from_bytes(b"u2")).count(), 0);
        t.ungroup(b"1");
        assert!(t.get(b).expect("still connected").groups.is_empty());
        assert_eq!(t.reply_group_list(), b"a:0:{}");
    }

    /// Every group is listed in the order made, as PHP's array of groups lists them: one
    /// emptied and made again goes last, and the others keep their places.
    #[test]
    fn groups_are_listed_in_the_order_they_were_made() {
        let mut t: Tables<()> = Tables::default();
        let a = t.add(());
        let b = t.add(());
        // Twenty names in an order of their own, so that no other order passes by chance.
        let made: Vec<String> = (0..20u32).map(|i| format!("g{}", (i * 7) % 20)).collect();
        for g in &made {
            assert!(t.join_group(a, Bytes::copy_from_slice(g.as_bytes())));
        }
        assert!(t.join_group(b, Bytes::from_static(b"g7")));
        let list = |t: &Tables<()>| -> Vec<String> {
            match php::Value::unserialize(&t.reply_group_list()).expect("php") {
                php::Value::Array(m) => m
                    .into_iter()
                    .map(|(_, v)| match v {
                        php::Value::Str(b) => String::from_utf8_lossy(&b).into_owned(),
                        other => panic!("not a name: {other:?}"),
                    })
                    .collect(),
                other => panic!("not a list: {other:?}"),
            }
        };
        assert_eq!(list(&t), made);
        // g0 emptied and made again goes last; g7, still held by b, keeps its place.
        t.leave_group(a, b"g0");
        t.leave_group(a, b"g7");
        assert!(t.join_group(a, Bytes::from_static(b"g0")));
        let mut expected: Vec<String> = made.iter().filter(|g| *g != "g0").cloned().collect();
        expected.push("g0".into());
        assert_eq!(list(&t), expected);
    }

    #[test]
    fn a_uids_connections_keep_their_order_past_the_short_list() {
        let mut t: Tables<()> = Tables::default();
        let conns: Vec<ConnId> = (0..3 * FEW).map(|_| t.add(())).collect();
        let uid = Key::from_bytes(b"u");
        for (n, c) in conns.iter().enumerate() {
            assert!(t.bind_uid(*c, Bytes::from_static(b"u")));
            assert_eq!(t.uid_members(&uid).collect::<Vec<_>>(), conns[..=n], "after {n}");
        }
        // Leaving from the middle, from the front, then all: the order holds, the uid goes.
        t.remove(conns[FEW]);
        t.unbind_uid(conns[0]);
        let left: Vec<ConnId> = conns.iter().copied().filter(|c| *c != conns[FEW] && *c != conns[0]).collect();
        assert_eq!(t.uid_members(&uid).collect::<Vec<_>>(), left);
        for c in &left {
            t.remove(*c);
        }
        assert_eq!(t.uid_members(&uid).count(), 0);
        assert!(t.uids.is_empty());
    }

    #[test]
    fn a_clients_groups_are_its_names_in_order_once_each() {
        let mut t: Tables<()> = Tables::default();
        let a = t.add(());
        for g in ["b", "1", "a", "1", "01"] {
            assert!(t.join_group(a, Bytes::from(g)));
        }
        let names = |t: &Tables<()>| t.get(a).expect("there").groups.names().map(|g| g.to_vec()).collect::<Vec<_>>();
        assert_eq!(names(&t), [b"b".to_vec(), b"1".to_vec(), b"a".to_vec(), b"01".to_vec()]);
        assert_eq!(t.group_len(&Key::Int(1)), 1);
        assert_eq!(t.group_len(&Key::from_bytes(b"01")), 1, "01 is a string key, not 1");
        t.leave_group(a, b"1");
        assert_eq!(names(&t), [b"b".to_vec(), b"a".to_vec(), b"01".to_vec()]);
        t.ungroup(b"b");
        assert_eq!(names(&t), [b"a".to_vec(), b"01".to_vec()]);
        t.leave_group(a, b"01");
        assert_eq!(names(&t), [b"a".to_vec()]);
        assert!(!t.get(a).expect("there").groups.0.spilled(), "one group is held inline again");
        t.remove(a);
        assert_eq!(t.group_len(&Key::from_bytes(b"a")), 0);
    }

    /// Every client's row is paid per connection: a client in one group allocates nothing for
    /// its groups, and the list is a `Vec`'s size.
    #[test]
    fn a_clients_groups_take_no_more_room_than_a_list() {
        assert_eq!(std::mem::size_of::<Groups>(), std::mem::size_of::<Vec<Arc<[u8]>>>());
        let mut t: Tables<()> = Tables::default();
        let a = t.add(());
        assert!(t.join_group(a, Bytes::from_static(b"room")));
        assert!(!t.get(a).expect("there").groups.0.spilled());
    }

    #[test]
    fn ids_skip_those_in_use_and_never_zero() {
        let mut t: Tables<()> = Tables { next_id: u32::MAX - 1, ..Tables::default() };
        let a = t.add(());
        let b = t.add(());
        assert_eq!((a, b), (u32::MAX, 1));
    }
}
