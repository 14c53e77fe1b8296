//! The hex examples of goim packets in docs/protocol.md decode as the packets they say they are.

use bytes::BytesMut;
use gateway::protocol::goim::{op, Packet};

#[test]
fn every_documented_packet_decodes_to_its_row() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md")).expect("docs/protocol.md");
    let table = doc.split("| op | what | header | body |").nth(1).expect("the goim hex table");
    let mut seen = Vec::new();
    for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (op_cell, header, body) = (cells[1], cells[3].trim_matches('`'), cells[4]);
        let op: i32 = op_cell.parse().expect("op number");
        let body: Vec<u8> = if body == "—" {
            Vec::new()
        } else if op == op::HEARTBEAT_REPLY {
            hex::decode(body.trim_matches('`')).expect("hex body")
        } else {
            body.trim_matches('`').as_bytes().to_vec()
        };
        let mut wire = BytesMut::from(&hex::decode(header.replace(' ', "")).expect("hex header")[..]);
        wire.extend_from_slice(&body);
        let p = Packet::decode(&mut wire, 1 << 20).expect("valid").expect("one whole packet");
        assert!(wire.is_empty(), "op {op}: the length covers exactly the header and body");
        assert_eq!((p.op, &p.body[..]), (op, &body[..]), "row {row}");
        if !body.is_empty() && op != op::HEARTBEAT_REPLY {
            serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_else(|e| panic!("op {op}: body is not JSON: {e}"));
        }
        seen.push(op);
    }
    seen.sort();
    assert_eq!(seen, vec![2, 3, 4, 5, 7, 8, 14, 15, 16, 17], "one example of each operation");
}
