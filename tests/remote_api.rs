//! The Gateway API used from outside a worker (PHP's GatewayClient role), and several gateway
//! processes sharing one client port.

mod common;

use business::{Api, ClientId};
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_rust_service_can_push_to_clients() {
    let reg = "127.31.0.1:".to_string() + &free_port("127.31.0.1").to_string();
    let key = ["--secret-key", "k"];
    let _r = start_register("n31-register", &reg, &key);
    wait_listening(&reg).await;
    let a = start_gateway("n31-gateway-a", "127.31.0.2", &reg, &key);
    let b = start_gateway("n31-gateway-b", "127.31.0.3", &reg, &key);
    let _w = start_worker("n31-worker", &reg, &key);
    wait_ready(&[&a, &b], 1).await;
    let mut ca = Client::connect(&a.ws).await;
    let mut cb = Client::connect(&b.ws).await;
    ca.call("bind_uid", json!([ca.id, "u1"])).await;
    cb.call("join_group", json!([cb.id, "news"])).await;

    let api = Api::remote(vec![reg.clone()], "k".into());
    let mut gws: Vec<String> = api.gateways().await.expect("gateway list").iter().map(ToString::to_string).collect();
    gws.sort();
    assert_eq!(gws, vec![a.inner.clone(), b.inner.clone()]);
    api.send_to_uid(&["u1"], "pushed to uid").await.expect("send_to_uid");
    ca.expect_text("pushed to uid").await;
    api.send_to_group(&["news"], "pushed to group", &[]).await.expect("send_to_group");
    cb.expect_text("pushed to group").await;
    api.send_to_client(&ca.id, "pushed to one").await.expect("send_to_client");
    ca.expect_text("pushed to one").await;
    assert!(api.is_online(&cb.id).await.expect("is_online"));
    // The readiness probe's clients may still be closing: wait for the count to settle.
    let deadline = std::time::Instant::now() + WAIT;
    while api.get_all_client_count().await.expect("count") != 2 {
        assert!(std::time::Instant::now() < deadline, "count never settled at 2");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(api.get_client_id_by_uid("u1").await.expect("by uid")[0].to_string(), ca.id);
    assert!(api.send_to_client("abc", "x").await.is_err(), "a malformed client_id is an error");

    // The members of several groups in one select per gateway (the chat's roster rounds),
    // each with its session and the groups it is in; of one group, by its own listing.
    ca.call("join_group", json!([ca.id, "sports"])).await;
    ca.call("set_session", json!([ca.id, {"who": "ann"}])).await;
    cb.call("set_session", json!([cb.id, {"who": "bob"}])).await;
    let (ida, idb): (ClientId, ClientId) = (ca.id.parse().expect("id"), cb.id.parse().expect("id"));
    // The calls are commands on the worker's link and this is a query on another connection:
    // asked again until the gateway has applied them.
    let deadline = std::time::Instant::now() + WAIT;
    let found = loop {
        let found = api.group_members(&["news".into(), "sports".into(), "nobody".into()]).await.expect("group_members");
        if found.len() == 2 && found.values().all(|m| !m.session.is_empty()) {
            break found;
        }
        assert!(std::time::Instant::now() < deadline, "never listed both with their sessions: {found:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(found.keys().collect::<Vec<_>>(), {
        let mut k = vec![&ida, &idb];
        k.sort();
        k
    });
    assert!(found[&ida].in_group("sports") && !found[&ida].in_group("news"), "{:?}", found[&ida]);
    assert!(found[&idb].in_group("news") && !found[&idb].in_group("sports"), "{:?}", found[&idb]);
    assert_eq!(&found[&ida].session[..], br#"a:1:{s:3:"who";s:3:"ann";}"#);
    assert_eq!(&found[&idb].session[..], br#"a:1:{s:3:"who";s:3:"bob";}"#);
    let news = api.group_members(&["news".into()]).await.expect("one group");
    assert_eq!(news.keys().collect::<Vec<_>>(), vec![&idb]);
    assert!(news[&idb].in_group("news") && !news[&idb].in_group("sports"));
    assert!(api.group_members(&["news".into(), "".into()]).await.is_err(), "an empty group name is refused");

    let wrong = Api::remote(vec![reg.clone()], "wrong".into());
    assert!(wrong.get_all_client_count().await.is_err(), "a wrong key gets nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_share_one_client_port() {
    let reg = "127.32.0.1:".to_string() + &free_port("127.32.0.1").to_string();
    let _r = start_register("n32-register", &reg, &[]);
    wait_listening(&reg).await;
    let ip = "127.32.0.2";
    let port = free_port(ip).to_string();
    let listen = format!("{ip}:{port}");
    let inner1 = free_port(ip).to_string();
    let inner2 = free_port(ip).to_string();
    let common = ["gateway", "--register", reg.as_str(), "--listen", listen.as_str(), "--lan-ip", ip, "--inner-port"];
    let mut g1 = Proc::start("n32-gateway-1", &[&common[..], &[inner1.as_str()]].concat());
    let mut g2 = Proc::start("n32-gateway-2", &[&common[..], &[inner2.as_str()]].concat());
    let _w = start_worker("n32-worker", &reg, &[]);
    wait_listening(&format!("{ip}:{inner1}")).await;
    wait_listening(&format!("{ip}:{inner2}")).await;
    assert!(g1.is_running() && g2.is_running(), "both gateways bound the same client port");
    let url = format!("ws://{listen}");
    let mut clients = Vec::new();
    for _ in 0..24 {
        clients.push(Client::connect(&url).await);
    }
    let mut ports: Vec<String> = clients.iter().map(|c| c.id[8..12].to_string()).collect();
    ports.sort();
    ports.dedup();
    assert!(!ports.is_empty() && ports.len() <= 2);
    let total = clients[0].call("get_all_client_count", json!([])).await;
    assert_eq!(total, 24, "the worker sees the clients of both gateways");
}
