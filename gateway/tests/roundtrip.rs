//! Property tests: random commands, PHP values and client ids survive encode → decode.

use bytes::{Bytes, BytesMut};
use gateway::protocol::directory::{Change, Delta};
use gateway::protocol::php::{Array, Key, Value};
use gateway::protocol::{AllTarget, Body, ClientId, Command, EventKind, Id, Message, Origin, Packet, SelectWhere};
use proptest::prelude::*;

fn bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn id() -> impl Strategy<Value = Id> {
    prop_oneof![any::<i64>().prop_map(Id::Int), "[a-zA-Z0-9_/é\"\\\\ -]{0,12}".prop_map(Id::Str)]
}

fn message() -> impl Strategy<Value = Message> {
    (bytes(), any::<bool>(), any::<bool>()).prop_map(|(data, serialized, raw)| Message { body: Body { data, serialized }, raw })
}

/// Connection ids travel as JSON object keys, which are unique (as PHP array keys are).
fn conns() -> impl Strategy<Value = Vec<u32>> {
    proptest::collection::vec(any::<u32>(), 0..6).prop_map(|mut v| {
        let mut seen = std::collections::HashSet::new();
        v.retain(|c| seen.insert(*c));
        v
    })
}

/// At least one id: an empty list is written as an empty ext (PHP's failed json_encode).
fn ids() -> impl Strategy<Value = Vec<Id>> {
    proptest::collection::vec(id(), 1..5)
}

fn command() -> impl Strategy<Value = Command> {
    let kind = prop_oneof![Just(EventKind::Connect), Just(EventKind::Message), Just(EventKind::Close), Just(EventKind::WebSocketConnect)];
    let origin = (any::<u32>(), any::<u16>(), any::<u32>(), any::<u16>(), any::<u32>(), any::<u16>()).prop_map(
        |(local_ip, local_port, client_ip, client_port, conn, gateway_port)| Origin {
            local_ip,
            local_port,
            client_ip,
            client_port,
            conn,
            gateway_port,
        },
    );
    prop_oneof![
        (kind, origin, bytes(), bytes(), any::<bool>())
            .prop_map(|(kind, origin, session, data, serialized)| { Command::Event { kind, origin, session, body: Body { data, serialized } } }),
        ("[ -~]{0,20}", "[ -~é]{0,20}", any::<bool>(), any::<Option<u64>>())
            .prop_map(|(worker_key, secret_key, directory, standby)| { Command::WorkerConnect { worker_key, secret_key, directory, standby } }),
        (any::<bool>(), any::<bool>(), any::<u64>(), proptest::collection::vec((0u8..4, bytes()), 0..6)).prop_map(
            |(reset, complete, seq, entries)| {
                let changes = entries
                    .into_iter()
                    .map(|(op, name)| match op {
                        0 => Change::UidAdded(name),
                        1 => Change::UidRemoved(name),
                        2 => Change::GroupAdded(name),
                        _ => Change::GroupRemoved(name),
                    })
                    .collect();
                Command::Directory(Delta { reset, complete, seq, changes })
            }
        ),
        any::<u64>().prop_map(|seq| Command::DirectoryAck { seq }),
        any::<u64>().prop_map(|token| Command::DirectoryBarrier { token }),
        any::<u64>().prop_map(|token| Command::DirectorySettled { token }),
        (any::<u32>(), message()).prop_map(|(conn, msg)| Command::SendToOne { conn, msg }),
        (conns(), message()).prop_map(|(c, msg)| Command::SendToAll { target: AllTarget::Only(c), msg }),
        (conns(), message()).prop_map(|(c, msg)| Command::SendToAll { target: AllTarget::Except(c), msg }),
        (ids(), message()).prop_map(|(uids, msg)| Command::SendToUid { uids, msg }),
        (ids(), proptest::option::of(conns()), message()).prop_map(|(groups, exclude, msg)| Command::SendToGroup { groups, exclude, msg }),
        (any::<u32>(), bytes()).prop_map(|(conn, uid)| Command::BindUid { conn, uid }),
        (any::<u32>(), bytes()).prop_map(|(conn, group)| Command::JoinGroup { conn, group }),
        (any::<u32>(), bytes()).prop_map(|(conn, session)| Command::UpdateSession { conn, session }),
        ids().prop_map(|uids| Command::BatchGetClientIdByUid { uids }),
        (proptest::option::of(ids()), proptest::option::of(ids()), proptest::option::of(conns())).prop_map(|(groups, uids, connection_ids)| {
            Command::Select { fields: vec!["uid".into(), "groups".into()], filter: SelectWhere { groups, uids, connection_ids } }
        }),
    ]
}

fn key() -> impl Strategy<Value = Key> {
    prop_oneof![any::<i64>().prop_map(Key::Int), "[a-z][a-z0-9]{0,8}".prop_map(|s| Key::Str(s.into_bytes()))]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>().prop_filter("NaN never equals itself", |f| !f.is_nan()).prop_map(Value::Float),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Str),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        proptest::collection::vec((key(), inner), 0..6).prop_map(|kv| Value::Array(kv.into_iter().collect::<Array>()))
    })
}

proptest! {
    #[test]
    fn commands_round_trip(cmd in command()) {
        let wire = cmd.clone().into_packet().to_bytes();
        let mut buf = BytesMut::from(&wire[..]);
        let packet = Packet::decode(&mut buf, usize::MAX).expect("frames").expect("complete");
        prop_assert!(buf.is_empty());
        let back = Command::from_packet(packet).expect("decodes");
        prop_assert_eq!(back, cmd);
    }

    #[test]
    fn php_values_round_trip(v in value()) {
        let s = v.serialize();
        prop_assert_eq!(Value::unserialize(&s).expect("parses"), v);
    }

    #[test]
    fn client_ids_round_trip(ip in any::<u32>(), port in any::<u16>(), conn in any::<u32>()) {
        let id = ClientId { ip: ip.into(), port, conn };
        prop_assert_eq!(id.to_string().parse::<ClientId>().expect("parses"), id);
    }

    #[test]
    fn decoding_random_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(p)) = Packet::decode(&mut buf, 1 << 20) {
            let _ = Command::from_packet(p);
        }
        let _ = Value::unserialize(&data);
    }
}
