//! Every golden vector from the GatewayWorker 3.x reference (`tests/data`, copied from the spec)
//! is decoded and re-encoded to the same bytes.

use bytes::BytesMut;
use gateway::protocol::php::{self, Value};
use gateway::protocol::websocket_connect::{self, UpgradeRequest};
use gateway::protocol::{ClientId, Command, Packet, ReplyCodec, DEFAULT_MAX_PACKET};
use serde_json::Value as J;
use tokio_util::codec::Decoder;

fn vectors() -> Vec<J> {
    let raw = include_str!("data/gatewayworker-vectors.json");
    let v: J = serde_json::from_str(raw).expect("vectors parse");
    v["vectors"].as_array().expect("list").clone()
}

fn of_kind(kind: &str) -> Vec<J> {
    let all: Vec<J> = vectors().into_iter().filter(|v| v["kind"] == kind).collect();
    assert!(!all.is_empty(), "no vectors of kind {kind}");
    all
}

fn bytes_of(v: &J, key: &str) -> Vec<u8> {
    hex::decode(v[key].as_str().expect("hex")).expect("valid hex")
}

fn decode_one(wire: &[u8]) -> Packet {
    let mut buf = BytesMut::from(wire);
    let p = Packet::decode(&mut buf, DEFAULT_MAX_PACKET).expect("decodes").expect("complete");
    assert!(buf.is_empty(), "trailing bytes");
    p
}

#[test]
fn every_gateway_packet_round_trips_through_the_typed_command() {
    let mut n = 0;
    for v in of_kind("gateway_protocol") {
        let name = v["name"].as_str().unwrap_or("?");
        let wire = bytes_of(&v, "hex");
        let packet = decode_one(&wire);
        let f = &v["fields"];
        assert_eq!(packet.cmd as u64, f["cmd"].as_u64().unwrap_or(999), "{name}: cmd");
        assert_eq!(packet.connection_id as u64, f["connection_id"].as_u64().unwrap_or(0), "{name}: conn");
        assert_eq!(packet.flag as u64, f["flag"].as_u64().unwrap_or(99), "{name}: flag");
        assert_eq!(packet.to_bytes().as_ref(), &wire[..], "{name}: packet re-encode");
        let command = Command::from_packet(packet).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!matches!(command, Command::Unknown(_)), "{name}: every vector command is known");
        assert_eq!(command.into_packet().to_bytes().as_ref(), &wire[..], "{name}: command re-encode");
        n += 1;
    }
    assert!(n >= 70, "only {n} packet vectors");
}

#[test]
fn several_packets_in_one_read_are_split() {
    let v = of_kind("gateway_protocol_stream").remove(0);
    let wire = bytes_of(&v, "hex");
    let mut buf = BytesMut::from(&wire[..]);
    let mut cmds = vec![];
    while let Some(p) = Packet::decode(&mut buf, DEFAULT_MAX_PACKET).expect("ok") {
        cmds.push(Command::from_packet(p).expect("known"));
    }
    assert!(buf.is_empty());
    assert!(matches!(&cmds[0], Command::GatewayClientConnect { secret_key } if secret_key == "s3cr3t"));
    assert!(matches!(&cmds[1], Command::SendToOne { conn: 1, msg } if &msg.body.data[..] == b"hi"));
}

#[test]
fn query_replies_decode_and_reserialize() {
    for v in of_kind("query_reply") {
        let name = v["name"].as_str().unwrap_or("?");
        let wire = bytes_of(&v, "hex");
        let mut buf = BytesMut::from(&wire[..]);
        let payload = ReplyCodec { max_len: DEFAULT_MAX_PACKET }.decode(&mut buf).expect("ok").expect("complete");
        let value = Value::unserialize(&payload).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(gateway::protocol::encode_reply(&value.serialize()).as_ref(), &wire[..], "{name}");
        if let Some(req) = v.get("request_hex").and_then(|h| h.as_str()) {
            let req = hex::decode(req).expect("hex");
            let cmd = Command::from_packet(decode_one(&req)).expect("request decodes");
            assert!(cmd.is_query(), "{name}: request is a query");
            assert_eq!(cmd.into_packet().to_bytes().as_ref(), &req[..], "{name}: request re-encode");
        }
    }
}

#[test]
fn php_serialize_vectors_round_trip() {
    for v in of_kind("php_serialize") {
        let name = v["name"].as_str().unwrap_or("?");
        let wire = bytes_of(&v, "hex");
        let value = Value::unserialize(&wire).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again = value.serialize();
        if let Some(input) = v["fields"]["input_serialized"].as_str() {
            // Keys normalise on the way in, as PHP's do: "1" comes back as i:1.
            let normalised = Value::unserialize(input.as_bytes()).expect("input").serialize();
            assert_eq!(normalised, wire, "{name}: {}", String::from_utf8_lossy(&normalised));
        }
        assert_eq!(again, wire, "{name}: {}", String::from_utf8_lossy(&again));
    }
}

#[test]
fn session_merges_match_php() {
    for v in of_kind("session_merge") {
        let name = v["name"].as_str().unwrap_or("?");
        let f = &v["fields"];
        let before = f["stored_before"].as_str().map(str::as_bytes).unwrap_or(b"");
        let update = f["update_ext_data"].as_str().expect("update").as_bytes();
        let merged = php::merge_session(before, update);
        match f["stored_after"].as_str() {
            Some(after) => assert_eq!(merged.expect(name), after.as_bytes(), "{name}"),
            // PHP crashed the gateway process; we refuse the update instead.
            None => assert!(merged.is_err(), "{name}: must be refused"),
        }
    }
}

#[test]
fn client_ids_parse_and_print() {
    for v in of_kind("client_id") {
        let text = v["client_id"].as_str().expect("id");
        let id: ClientId = text.parse().expect("parses");
        assert_eq!(id.ip.to_string(), v["fields"]["local_ip"].as_str().expect("ip"));
        assert_eq!(id.port as u64, v["fields"]["local_port"].as_u64().expect("port"));
        assert_eq!(id.conn as u64, v["fields"]["connection_id"].as_u64().expect("conn"));
        assert_eq!(id.to_string(), text);
        assert_eq!(text.to_uppercase().parse::<ClientId>().expect("upper"), id);
    }
    for v in of_kind("client_id_behaviour") {
        let given = String::from_utf8(bytes_of(&v, "hex")).expect("utf8");
        assert!(given.parse::<ClientId>().is_err(), "{given} must be refused");
    }
}

#[test]
fn websocket_connect_bodies_are_built_from_the_request() {
    let mut n = 0;
    for v in of_kind("gateway_protocol") {
        let Some(raw) = v.get("request").and_then(|r| r.as_str()) else { continue };
        let name = v["name"].as_str().unwrap_or("?");
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(raw.as_bytes()).expect("request parses");
        let built = websocket_connect::body(&UpgradeRequest {
            method: req.method.expect("method"),
            uri: req.path.expect("path"),
            protocol: "HTTP/1.1",
            headers: req.headers.iter().map(|h| (h.name, h.value)).collect(),
        });
        let expected = v["fields"]["body"].as_str().expect("body");
        assert_eq!(String::from_utf8_lossy(&built), expected, "{name}");
        n += 1;
    }
    assert_eq!(n, 5);
}

#[test]
fn bad_frames_are_refused() {
    let mut too_short = BytesMut::from(&[0u8, 0, 0, 5][..]);
    assert!(Packet::decode(&mut too_short, DEFAULT_MAX_PACKET).is_err());
    let mut zero = BytesMut::from(&[0u8; 28][..]);
    assert!(Packet::decode(&mut zero, DEFAULT_MAX_PACKET).is_err());
    let mut huge = BytesMut::from(&((DEFAULT_MAX_PACKET as u32) + 1).to_be_bytes()[..]);
    assert!(Packet::decode(&mut huge, DEFAULT_MAX_PACKET).is_err());
    let mut exact = BytesMut::from(&(DEFAULT_MAX_PACKET as u32).to_be_bytes()[..]);
    assert!(Packet::decode(&mut exact, DEFAULT_MAX_PACKET).expect("max is accepted").is_none());
    let mut ext_overflow = BytesMut::from(&Packet { cmd: 5, ..Default::default() }.to_bytes()[..]);
    ext_overflow[27] = 9;
    assert!(Packet::decode(&mut ext_overflow, DEFAULT_MAX_PACKET).is_err());
}
