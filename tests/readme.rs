//! The README's chat example is what the program does today: its frames are sent over real
//! connections to a running chat, and what each connection receives must be exactly what the
//! README shows, no frame more or less (`"…"` in a string stands for any string, `"<token>"` is
//! replaced by a real agent token, `timestamp` fields are any number).

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const SECRET: &str = "readme-secret";

/// One line of the example: who, whether it is sent (`>`) or received (`<`), the frame.
struct Line {
    who: String,
    sent: bool,
    frame: Value,
}

fn example() -> Vec<Line> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let block = readme.split("what it receives, in full):\n\n```text\n").nth(1).and_then(|b| b.split("```").next()).expect("the chat example");
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (who, rest) = l.split_once(' ').expect("`who> frame`");
            let (who, sent) = match who.strip_suffix('>') {
                Some(w) => (w, true),
                None => (who.strip_suffix('<').expect("> or <"), false),
            };
            // A frame may be followed by a note in parentheses.
            let json = rest.trim().split("   ").next().unwrap_or("").trim();
            let frame = serde_json::from_str(json).unwrap_or_else(|e| panic!("{l}: not JSON: {e}"));
            Line { who: who.to_string(), sent, frame }
        })
        .collect()
}

/// Whether `got` has the documented shape and values.
fn matches(doc: &Value, got: &Value, key: &str) -> bool {
    match (doc, got) {
        (Value::String(d), Value::String(_)) if d.contains('…') => true,
        (Value::Number(_), Value::Number(_)) if key == "timestamp" => true,
        (Value::Object(d), Value::Object(g)) => d.len() == g.len() && d.iter().all(|(k, dv)| g.get(k).is_some_and(|gv| matches(dv, gv, k))),
        (Value::Array(d), Value::Array(g)) => d.len() == g.len() && d.iter().zip(g).all(|(a, b)| matches(a, b, key)),
        _ => doc == got,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_chat_example_is_what_happens() {
    let lines = example();
    assert!(lines.len() >= 6, "the example was found");
    let c = chat_system_with(165, &format!("agent_secret = \"{SECRET}\""), SECRET).await;
    let mut clients: BTreeMap<String, Client> = BTreeMap::new();
    let mut expected: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in &lines {
        if !line.sent {
            expected.entry(line.who.clone()).or_default().push(line.frame.clone());
            continue;
        }
        // Before each send, everything documented so far has arrived.
        settle(&mut clients, &mut expected).await;
        let client = match clients.get_mut(&line.who) {
            Some(cl) => cl,
            None => clients.entry(line.who.clone()).or_insert(Client::chat(&c.a.ws).await),
        };
        let mut frame = line.frame.clone();
        if frame["token"] == "<token>" {
            frame["token"] = mint_token(SECRET, frame["bid"].as_str().unwrap_or(""), frame["customer_id"].as_str().unwrap_or("")).into();
        }
        client.send_json(frame).await;
    }
    settle(&mut clients, &mut expected).await;
}

/// Receives what each connection is owed, in any order across frames of different kinds,
/// then checks nothing else comes.
async fn settle(clients: &mut BTreeMap<String, Client>, expected: &mut BTreeMap<String, Vec<Value>>) {
    for (who, client) in clients.iter_mut() {
        let mut owed = expected.remove(who).unwrap_or_default();
        let mut got = Vec::new();
        while !owed.is_empty() {
            let frame = client.next_where(|_| true).await;
            match owed.iter().position(|d| matches(d, &frame, "")) {
                Some(i) => {
                    owed.remove(i);
                    got.push(frame);
                }
                None => panic!("{who} received a frame the README does not show: {frame}\nstill owed: {owed:?}\nreceived so far: {got:?}"),
            }
        }
        let mut more = Vec::new();
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(400), futures_util::StreamExt::next(&mut client.ws)).await {
            if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
                more.push(t.to_string());
            }
        }
        assert!(more.is_empty(), "{who} received frames the README does not show:\n{}", more.join("\n"));
    }
}
