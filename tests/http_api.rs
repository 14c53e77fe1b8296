//! The server API (`switchboard api`) as a backend uses it: real HTTP to a real API process, in
//! front of a real chat (register, two gateways, two chat workers, a shared store), with chat
//! clients on WebSockets seeing what the backend did.

mod common;

use common::http_api::*;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// A visitor of bot `bid` who has said `hello` (so its conversation is assigned); its
/// conversation id.
async fn visitor(url: &str, bid: &str) -> (Client, String) {
    let mut v = Client::chat(url).await;
    let login = v.request(json!({"method": "visitor_login", "bid": bid, "name": "Vera"}), "visitor_login").await;
    let conv = login["conversation_id"].as_str().expect("conversation id").to_string();
    v.send_json(json!({"method": "say", "content": "hello", "cid": "v1"})).await;
    v.next_where(|m| m["method"] == "say_ack").await;
    (v, conv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_reaches_clients_and_works_conversations_over_http() {
    let s = ApiSystem::start(190, "").await;
    let (mut alice, _) = agent_with(&s.sys.a.ws, AGENT_SECRET, "1", "alice", "Alice").await;
    let (mut bob, _) = agent_with(&s.sys.b.ws, AGENT_SECRET, "1", "bob", "Bob").await;
    let (mut zed, _) = agent_with(&s.sys.a.ws, AGENT_SECRET, "2", "zed", "Zed").await;
    let (mut v, conv) = visitor(&s.sys.b.ws, "1").await;

    // The Gateway API, GatewayClient's semantics, with a key for every bot.
    let ids = s.call(OPS, json!({"method": "get_client_id_by_uid", "uid": "a:1:alice"})).await;
    let alice_id = ids.as_array().filter(|a| a.len() == 1).and_then(|a| a[0].as_str()).expect("alice's one client id").to_string();
    assert_eq!(s.call(OPS, json!({"method": "is_online", "client_id": alice_id})).await, json!(true));
    let session = s.call(OPS, json!({"method": "get_session", "client_id": alice_id})).await;
    assert_eq!((session["role"].as_str(), session["bid"].as_str()), (Some("agent"), Some("1")), "{session}");
    let notice = json!({"method": "notice", "text": "from the backend"}).to_string();
    assert_eq!(s.call(OPS, json!({"method": "send_to_uid", "uids": ["a:1:alice"], "message": notice})).await, Value::Null);
    alice.next_where(|m| m["method"] == "notice" && m["text"] == "from the backend").await;
    bob.expect_none(Duration::from_millis(300), |m| m["method"] == "notice").await;

    // A batch: run in order, answered one by one; one refused does not stop the rest.
    let notice2 = json!({"method": "notice", "text": "to bot 1"}).to_string();
    let (status, batch) = s
        .post(
            OPS,
            "/api/batch",
            json!({"commands": [
                {"method": "send_to_group", "groups": ["bot:1"], "message": notice2},
                {"method": "get_client_count_by_group", "group": "bot:1"},
                {"method": "close_conversation", "bid": "1", "conversation_id": "no-such"},
                {"method": "get_uid_list_by_group", "group": "bot:1"},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    let r = &batch["results"];
    assert_eq!((r[0]["ok"].as_bool(), r[1]["result"].as_u64()), (Some(true), Some(2)), "{batch}");
    assert_eq!((r[2]["ok"].as_bool(), r[2]["status"].as_u64(), r[2]["error"]["code"].as_str()), (Some(false), Some(404), Some("not_found")));
    let mut uids: Vec<String> = serde_json::from_value(r[3]["result"].clone()).expect("uid list");
    uids.sort();
    assert_eq!(uids, ["a:1:alice", "a:1:bob"]);
    alice.next_where(|m| m["method"] == "notice" && m["text"] == "to bot 1").await;
    bob.next_where(|m| m["method"] == "notice" && m["text"] == "to bot 1").await;
    zed.expect_none(Duration::from_millis(300), |m| m["method"] == "notice").await;

    // The chat, with a key for bot 1: the conversation, its history.
    let (status, page) = s.get(BOT1, "/api/bots/1/conversations").await;
    assert_eq!(status, 200, "{page}");
    let listed = page["conversations"].as_array().expect("list");
    assert_eq!(listed.len(), 1, "{page}");
    assert_eq!((listed[0]["conversation_id"].as_str(), listed[0]["channel"].as_str()), (Some(conv.as_str()), Some("web")));
    assert_eq!(listed[0]["last_message"]["content"], "hello");
    let holder = listed[0]["assigned"].as_str().expect("assigned on the first message").to_string();
    let (_, mine) = s.get(BOT1, &format!("/api/bots/1/conversations?assigned={holder}")).await;
    assert_eq!(mine["conversations"].as_array().map(Vec::len), Some(1));
    let (_, waiting) = s.get(BOT1, "/api/bots/1/conversations?assigned=").await;
    assert_eq!(waiting["conversations"], json!([]), "only unassigned ones");
    let (_, line) = s.get(BOT1, "/api/bots/1/conversations?channel=line").await;
    assert_eq!(line["conversations"], json!([]));
    let (status, history) = s.get(BOT1, &format!("/api/bots/1/conversations/{conv}/messages")).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["messages"][0]["content"], "hello");

    // A bot's auto-reply: stored, delivered to the visitor and the bot's agents, marked as the
    // bot's; the same cid again is the same message, delivered to nobody again.
    let path = format!("/api/bots/1/conversations/{conv}/messages");
    let (status, posted) = s.post(BOT1, &path, json!({"content": "Hi, I am the bot", "cid": "auto-1"})).await;
    assert_eq!((status, posted["duplicate"].as_bool()), (200, Some(false)), "{posted}");
    let seen = v.next_where(|m| m["method"] == "say" && m["content"] == "Hi, I am the bot").await;
    assert_eq!((seen["from_uid"].as_str(), seen["from_name"].as_str(), seen["bot"].as_bool()), (Some("bot"), Some("Bot"), Some(true)));
    assert_eq!(seen["id"], posted["id"]);
    alice.next_where(|m| m["method"] == "say" && m["content"] == "Hi, I am the bot").await;
    let (_, again) = s.post(BOT1, &path, json!({"content": "Hi, I am the bot", "cid": "auto-1"})).await;
    assert_eq!((again["duplicate"].as_bool(), &again["id"]), (Some(true), &posted["id"]));
    v.expect_none(Duration::from_millis(500), |m| m["method"] == "say" && m["content"] == "Hi, I am the bot").await;

    // As an agent of the bot; an agent the bot has never seen is refused.
    let (status, _) = s.post(BOT1, &path, json!({"content": "Alice here", "agent": "alice"})).await;
    assert_eq!(status, 200);
    let seen = v.next_where(|m| m["method"] == "say" && m["content"] == "Alice here").await;
    assert_eq!((seen["from_uid"].as_str(), seen["from_name"].as_str()), (Some("alice"), Some("Alice")));
    assert!(seen.get("bot").is_none());
    let (status, body) = s.post(BOT1, &path, json!({"content": "x", "agent": "zed"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "zed is bot 2's: {body}");

    // Transfer to the other agent, only if the holder still holds it; then close.
    let other = if holder == "alice" { "bob" } else { "alice" };
    let assign = format!("/api/bots/1/conversations/{conv}/assign");
    let (_, stale) = s.post(BOT1, &assign, json!({"agent": other, "expected": other})).await;
    assert_eq!((stale["ok"].as_bool(), stale["assigned"].as_str()), (Some(false), Some(holder.as_str())), "{stale}");
    let (status, moved) = s.post(BOT1, &assign, json!({"agent": other, "expected": holder})).await;
    assert_eq!((status, moved["ok"].as_bool(), moved["assigned"].as_str()), (200, Some(true), Some(other)), "{moved}");
    v.next_where(|m| m["method"] == "assign_push" && m["assigned"]["customer_id"] == other).await;
    let (_, online) = s.get(BOT1_READ, "/api/bots/1/agents/online").await;
    let mut names: Vec<&str> = online["agents"].as_array().expect("agents").iter().filter_map(|a| a["customer_id"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["alice", "bob"]);
    let close = format!("/api/bots/1/conversations/{conv}/close");
    let (_, closed) = s.post(BOT1, &close, json!({})).await;
    assert_eq!(closed["ok"], true);
    v.next_where(|m| m["method"] == "close_push").await;
    let (_, twice) = s.post(BOT1, &close, json!({})).await;
    assert_eq!(twice["ok"], false);
    let (status, body) = s.post(BOT1, &path, json!({"content": "too late"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");

    // A room of bot 1: its members hear the bot; bot 2's room of the same name does not.
    alice.request(json!({"method": "join", "room": "lobby"}), "join").await;
    zed.request(json!({"method": "join", "room": "lobby"}), "join").await;
    let (status, _) = s.post(BOT1, "/api/bots/1/rooms/lobby/messages", json!({"content": "standup in 5"})).await;
    assert_eq!(status, 200);
    let heard = alice.next_where(|m| m["method"] == "say" && m["room"] == "lobby").await;
    assert_eq!((heard["content"].as_str(), heard["bot"].as_bool()), (Some("standup in 5"), Some(true)));
    zed.expect_none(Duration::from_millis(500), |m| m["method"] == "say").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_checked_scoped_by_bot_and_rate_limited() {
    let s = ApiSystem::start(191, "").await;
    let (_alice, _) = agent_with(&s.sys.a.ws, AGENT_SECRET, "1", "alice", "Alice").await;
    let (_v, conv1) = visitor(&s.sys.a.ws, "1").await;

    // No key, a wrong key: 401 with a JSON body saying why.
    let r = s.http.get(format!("{}/api/bots/1/conversations", s.base)).send().await.expect("GET");
    let (status, body) = answer(r).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{body}");
    let (status, _) = s.get("not-a-key-not-a-key-not-a-key", "/api/bots/1/conversations").await;
    assert_eq!(status, 401);

    // Another bot's key: refused for bot 1, and bot 1's conversation does not exist for bot 2.
    let (status, body) = s.get(BOT2, "/api/bots/1/conversations").await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    for (status, body) in [
        s.get(BOT2, &format!("/api/bots/2/conversations/{conv1}/messages")).await,
        s.post(BOT2, &format!("/api/bots/2/conversations/{conv1}/messages"), json!({"content": "leak?"})).await,
        s.post(BOT2, &format!("/api/bots/2/conversations/{conv1}/close"), json!({})).await,
    ] {
        assert_eq!(status, 404, "{body}");
    }
    let (_, listed) = s.get(BOT2, "/api/bots/2/conversations").await;
    assert_eq!(listed["conversations"], json!([]));

    // The raw Gateway API needs a key for every bot; a read-only key cannot write.
    let (status, body) = s.post(BOT1, "/api/call", json!({"method": "get_all_uid_count"})).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = s.post(BOT1_READ, &format!("/api/bots/1/conversations/{conv1}/messages"), json!({"content": "x"})).await;
    assert_eq!((status, body["error"]["message"].as_str()), (403, Some("this key is read-only")));
    assert_eq!(s.get(BOT1_READ, &format!("/api/bots/1/conversations/{conv1}/messages")).await.0, 200);
    let (_, batch) =
        s.post(BOT1, "/api/batch", json!({"commands": [{"method": "agents_online", "bid": "1"}, {"method": "agents_online", "bid": "2"}]})).await;
    assert_eq!((batch["results"][0]["ok"].as_bool(), batch["results"][1]["status"].as_u64()), (Some(true), Some(403)), "{batch}");
    // A command that does not match the schema refuses the whole batch, before any runs.
    let commands = json!([{"method": "agents_online", "bid": "1"}, {"method": "send_to_group", "groups": [], "message": "x"}]);
    let (status, body) = s.post(OPS, "/api/batch", json!({ "commands": commands })).await;
    assert_eq!((status, body["error"]["message"].as_str()), (400, Some("command 1: 1 to 1000 groups per command")), "{body}");

    // A client id naming an address the register does not list: no connection is tried.
    let stranger = "7f0000fe1f90000000ff"; // 127.0.0.254:8080
    assert_eq!(s.call(OPS, json!({"method": "is_online", "client_id": stranger})).await, json!(false));
    let (status, _) = s.post(OPS, "/api/call", json!({"method": "send_to_client", "client_id": stranger, "message": "x"})).await;
    assert_eq!(status, 404);

    // Bad input: a clear 4xx with a JSON body, whatever is wrong.
    for (body, want) in [
        (json!({"method": "send_to_uid", "uids": [], "message": "x"}), 400),
        (json!({"method": "send_to_uid", "uids": ["0"], "message": "x"}), 400),
        (json!({"method": "bind_uid", "client_id": "xyz", "uid": "u"}), 400),
        (json!({"method": "history", "bid": "1", "conversation_id": conv1, "limit": 1000}), 400),
        (json!({"method": "send_to_all", "message": "x", "typo": 1}), 400),
        (json!({"method": "no_such_method"}), 400),
    ] {
        let (status, answer) = s.post(OPS, "/api/call", body.clone()).await;
        assert_eq!(status, want, "{body} → {answer}");
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }
    let r = s.http.post(format!("{}/api/call", s.base)).bearer_auth(OPS).body("{not json").header("content-type", "application/json").send().await;
    assert_eq!(answer(r.expect("POST")).await.0, 400);
    let r = s.http.post(format!("{}/api/call", s.base)).bearer_auth(OPS).body("{}").send().await;
    assert_eq!(answer(r.expect("POST")).await.0, 415);
    let big = "x".repeat(300 * 1024);
    let (status, _) = s.post(OPS, "/api/call", json!({"method": "send_to_all", "message": big})).await;
    assert_eq!(status, 413);

    // A key's rate limit: its burst, then 429 with Retry-After.
    for _ in 0..2 {
        assert_eq!(s.get(SLOW, "/api/bots/1/agents/online").await.0, 200);
    }
    let r = s.http.get(format!("{}/api/bots/1/agents/online", s.base)).bearer_auth(SLOW).send().await.expect("GET");
    let wait: u64 = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).expect("Retry-After");
    let (status, body) = answer(r).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_requests")));
    assert!((1..=10).contains(&wait), "Retry-After {wait}");
    assert_eq!(s.get(BOT1, "/api/bots/1/agents/online").await.0, 200, "another key is not held back");

    // Keys made and revoked with the CLI take effect without a restart; only hashes are kept.
    let cfg = s.sys.config.display().to_string();
    let out =
        std::process::Command::new(BIN).args(["--config", &cfg, "api-key", "new", "--bot", "1", "--name", "crm"]).output().expect("api-key new");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).expect("utf8").trim().to_string();
    assert!(key.starts_with("sbk_"), "{key}");
    eventually("the new key works", || async { s.get(&key, "/api/bots/1/conversations").await.0 == 200 }).await;
    assert_eq!(s.post(&key, &format!("/api/bots/1/conversations/{conv1}/close"), json!({})).await.0, 403, "made read-only");
    let file = s.sys.dir.0.join("api-keys.json");
    let stored = std::fs::read_to_string(&file).expect("keys file");
    assert!(!stored.contains(&key[17..]), "the secret is not kept");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).expect("keys file").permissions().mode() & 0o777, 0o600);
    let list = std::process::Command::new(BIN).args(["--config", &cfg, "api-key", "list"]).output().expect("api-key list");
    let list = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(list.contains("crm") && list.contains("active") && !list.contains(&key[17..]), "{list}");
    let out = std::process::Command::new(BIN).args(["--config", &cfg, "api-key", "revoke", &key]).output().expect("api-key revoke");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually("the revoked key is refused", || async { s.get(&key, "/api/bots/1/conversations").await.0 == 401 }).await;
}

/// schemathesis (installed by scripts/test.sh) generates requests from the served OpenAPI
/// document, valid and invalid, against a live chat with a real conversation: no 5xx, every
/// answer matching the document, every schema-valid request taken and every invalid one
/// refused with a 4xx and a body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_fault() {
    let st = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/schemathesis/bin/schemathesis").into());
    let version = std::process::Command::new(&st).arg("--version").output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "schemathesis is needed at {st} (scripts/test.sh installs it, or set SCHEMATHESIS): {version:?}"
    );
    let s = ApiSystem::start(192, "").await;
    let (_alice, _) = agent_with(&s.sys.a.ws, AGENT_SECRET, "1", "alice", "Alice").await;
    let (_bob, _) = agent_with(&s.sys.b.ws, AGENT_SECRET, "1", "bob", "Bob").await;
    let (_v, conv) = visitor(&s.sys.a.ws, "1").await;
    let config = s.sys.dir.0.join("schemathesis.toml");
    // 413 (a body over [api] max_body) is a refusal too; the path parameters name the real bot
    // and conversation, so the generated requests reach the chat rather than a 404.
    std::fs::write(
        &config,
        format!(
            "[checks.negative_data_rejection]\nexpected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]\n\n\
             [parameters]\n\"path.bid\" = \"1\"\n\"path.conversation_id\" = \"{conv}\"\n"
        ),
    )
    .expect("schemathesis config");
    let out = tokio::process::Command::new(&st)
        .args(["--config-file", &config.display().to_string(), "run", &format!("{}/api/openapi.json", s.base)])
        .args(["-H", &format!("Authorization: Bearer {OPS}"), "--max-examples", "40", "--seed", "20261203"])
        .output()
        .await
        .expect("schemathesis runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let tail: String = text.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(out.status.success(), "schemathesis found faults:\n{tail}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("passed"), "schemathesis ran no test:\n{tail}");
    assert!(!s.api.log_text().contains("panicked"), "the API process panicked");
}

/// docs/api.md's examples, every `sh` block, run as written by bash against a live API: each
/// must succeed (`curl -f`) and print JSON (or nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_in_docs_api_md_run_as_written() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md")).expect("docs/api.md");
    let blocks: Vec<&str> = doc.split("```sh\n").skip(1).filter_map(|b| b.split("```").next()).collect();
    assert!(blocks.len() >= 10, "the examples are found ({})", blocks.len());
    let s = ApiSystem::start(193, "").await;
    let (_alice, _) = agent_with(&s.sys.a.ws, AGENT_SECRET, "1", "alice", "Alice").await;
    let (_bob, _) = agent_with(&s.sys.b.ws, AGENT_SECRET, "1", "bob", "Bob").await;
    let (mut v, conv) = visitor(&s.sys.a.ws, "1").await;
    for block in blocks {
        let out = tokio::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", block])
            .env("API", &s.base)
            .env("KEY", OPS)
            .env("CONVERSATION", &conv)
            .output()
            .await
            .expect("bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{block}\nfailed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        if !stdout.trim().is_empty() {
            let v: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{block}\nprinted no JSON ({e}): {stdout}"));
            assert!(v.get("error").is_none(), "{block}\n{v}");
        }
    }
    // What the examples did reached the visitor.
    v.next_where(|m| m["method"] == "say" && m["from_uid"] == "bot").await;
    v.next_where(|m| m["method"] == "say" && m["from_uid"] == "alice").await;
    v.next_where(|m| m["method"] == "close_push").await;
}

const HOOK_SECRET: &str = "whsec-test-0123456789abcdef";

/// Webhooks to a real receiver that fails, times out and recovers, across an API restart and a
/// worker killed and replaced, with a second api process (another server's) following the same
/// webhook: every event arrives, once, signed, and in order within its conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_arrive_once_and_in_order_through_failures_restarts_and_a_worker_kill() {
    let rx = Receiver::start("127.194.0.7", HOOK_SECRET).await;
    rx.set(Mode::Failing);
    let hook = format!(
        "[[api.webhooks]]\nname = \"crm\"\nurl = \"{}\"\nsecret = \"{HOOK_SECRET}\"\ntimeout = 1.0\nretry_base = 0.1\nretry_max = 0.5\n",
        rx.url
    );
    let mut s = ApiSystem::start_with(194, "feed = true", &hook).await;
    let other = format!("127.194.0.8:{}", free_port("127.194.0.8"));
    let cfg = s.sys.config.display().to_string();
    let mut api2 = Proc::start("n194-api-other", &["--config", &cfg, "api", "--register", &s.sys.reg, "--listen", &other]);
    wait_listening(&other).await;
    let (mut alice, _) = agent_with(&s.sys.a.ws, AGENT_SECRET, "1", "alice", "Alice").await;

    // While the receiver fails: a conversation, two visitor messages and an agent's answer.
    let (mut va, conv_a) = visitor(&s.sys.a.ws, "1").await;
    va.send_json(json!({"method": "say", "content": "second", "cid": "v2"})).await;
    va.next_where(|m| m["method"] == "say_ack" && m["cid"] == "v2").await;
    alice.send_json(json!({"method": "say", "conversation_id": conv_a, "content": "how can I help?", "cid": "a1"})).await;
    alice.next_where(|m| m["method"] == "say_ack").await;
    eventually("the receiver refused some", || async { rx.refused.load(std::sync::atomic::Ordering::SeqCst) >= 3 }).await;
    assert!(rx.taken().is_empty());

    // Too slow, then the API process restarted while nothing got through.
    rx.set(Mode::Slow);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    rx.set(Mode::Failing);
    s.restart_api("n194-api-2").await;

    // A worker killed and replaced; a second conversation meanwhile, a bot's post, a close.
    s.sys.workers[0].kill();
    let (mut vb, conv_b) = visitor(&s.sys.b.ws, "1").await;
    vb.send_json(json!({"method": "say", "content": "b2", "cid": "v2"})).await;
    vb.next_where(|m| m["method"] == "say_ack" && m["cid"] == "v2").await;
    let (status, _) = s.post(BOT1, &format!("/api/bots/1/conversations/{conv_b}/messages"), json!({"content": "auto", "cid": "auto"})).await;
    assert_eq!(status, 200);
    let (status, _) = s.post(BOT1, &format!("/api/bots/1/conversations/{conv_a}/close"), json!({})).await;
    assert_eq!(status, 200);
    s.sys.workers[0] = start_chat_workers("n194-again", &cfg, &s.sys.reg, AGENT_SECRET, 1).remove(0);
    rx.set(Mode::Ok);

    let mut want: Vec<String> =
        vec![format!("conversation.created:{conv_a}"), format!("conversation.created:{conv_b}"), format!("conversation.closed:{conv_a}")];
    for (conv, n) in [(&conv_a, 3), (&conv_b, 3)] {
        for id in 1..=n {
            want.push(format!("message.created:c:{conv}:{id}"));
        }
    }
    let taken = rx.all_once(&want).await;
    // Both followed; one at a time delivered (the lease), and nothing twice (above).
    let logs = [s.api.log_text(), api2.log_text()];
    assert!(logs.iter().any(|l| l.contains("standing by")), "a second follower stood by");
    assert!(logs.iter().any(|l| l.contains("delivering")), "a follower delivered");
    assert!(api2.is_running());
    let of = |kind: &str| taken.iter().filter(|d| d.event["type"] == kind).count();
    assert!(of("agent.online") >= 1 && of("conversation.assigned") >= 2, "{:?}", taken.iter().map(|d| &d.id).collect::<Vec<_>>());
    assert!(taken.iter().all(|d| d.event["bid"] == "1"));

    // In order within each conversation: opened, messages by id, closed.
    for conv in [&conv_a, &conv_b] {
        let mine: Vec<&Delivery> = taken.iter().filter(|d| d.event["conversation_id"] == conv.as_str()).collect();
        assert_eq!(mine[0].event["type"], "conversation.created", "{conv}: opened first");
        assert_eq!(message_ids(&taken, conv), [1, 2, 3], "{conv}: messages in order");
        if conv == &conv_a {
            assert_eq!(mine.last().map(|d| d.event["type"].clone()), Some(json!("conversation.closed")));
        }
    }
    let by_id = |id: String| taken.iter().find(|d| d.id == id).map(|d| d.event["data"].clone()).expect("event");
    let first = by_id(format!("message.created:c:{conv_a}:1"));
    assert_eq!(
        (first["sender_type"].as_str(), first["message"]["content"].as_str(), first["channel"].as_str()),
        (Some("visitor"), Some("hello"), Some("web"))
    );
    assert_eq!(by_id(format!("message.created:c:{conv_a}:3"))["sender_type"], "agent");
    assert_eq!(by_id(format!("message.created:c:{conv_b}:3"))["sender_type"], "bot");
}

/// docs/api.md's signature checks (Python, Node, PHP), run as written against signatures
/// Switchboard makes: a fresh one passes; a changed body, another secret or an old timestamp
/// does not.
#[test]
fn the_documented_signature_checks_accept_switchboard_s_signatures_only() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md")).expect("docs/api.md");
    let block = |lang: &str| doc.split(&format!("```{lang}\n")).nth(1).and_then(|b| b.split("```").next()).expect("a snippet").to_string();
    let dir = std::env::temp_dir().join(format!("sb-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let _cleanup = TempDir(dir.clone());
    let runs: [(&str, &str, String); 3] = [
        (
            "python3",
            "check.py",
            format!(
                "{}\nimport os\nbody = open(os.environ['BODY_FILE'], 'rb').read()\nprint('ok' if verify(os.environ['SECRET'], os.environ['HEADER'], body) else 'bad')\n",
                block("python")
            ),
        ),
        (
            "node",
            "check.js",
            format!(
                "{}\nconst fs = require('fs');\nconsole.log(verify(process.env.SECRET, process.env.HEADER, fs.readFileSync(process.env.BODY_FILE)) ? 'ok' : 'bad');\n",
                block("js")
            ),
        ),
        (
            "php",
            "check.php",
            format!(
                "<?php\n{}\necho verify(getenv('SECRET'), getenv('HEADER'), file_get_contents(getenv('BODY_FILE'))) ? \"ok\\n\" : \"bad\\n\";\n",
                block("php")
            ),
        ),
    ];
    let secret = "whsec-docs-0123456789";
    let body = br#"{"id":"message.created:c:x:1","type":"message.created","data":{"text":"caf\u00e9 \u2603"}}"#;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let sign = |s: &str, t: u64| ::http_api::webhooks::sign::signature(s, t, body);
    let cases = [
        ("fresh", sign(secret, now), &body[..], "ok"),
        ("changed body", sign(secret, now), &br#"{"id":"message.created:c:x:2"}"#[..], "bad"),
        ("another secret", sign("another-secret-0123456", now), &body[..], "bad"),
        ("ten minutes old", sign(secret, now - 600), &body[..], "bad"),
    ];
    for (program, file, source) in &runs {
        let path = dir.join(file);
        std::fs::write(&path, source).expect("snippet");
        for (what, header, body, want) in &cases {
            let body_file = dir.join("body");
            std::fs::write(&body_file, body).expect("body");
            let out = std::process::Command::new(program)
                .arg(&path)
                .env("SECRET", secret)
                .env("HEADER", header)
                .env("BODY_FILE", &body_file)
                .output()
                .unwrap_or_else(|e| panic!("{program} is needed for docs/api.md's snippet (scripts/test.sh installs it): {e}"));
            let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert_eq!(&said, want, "{program}, {what}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// An event a receiver refuses for good (a 4xx other than 408/429) is given up at once, one it
/// keeps failing once it is older than `give_up_after`; either way the events after it go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_event_refused_or_too_old_is_given_up_and_the_rest_go_on() {
    let rx = Receiver::start("127.198.0.7", HOOK_SECRET).await;
    let hook = format!(
        "[[api.webhooks]]\nname = \"crm\"\nurl = \"{}\"\nsecret = \"{HOOK_SECRET}\"\nevents = [\"message.created\"]\n\
         timeout = 1.0\nretry_base = 0.1\nretry_max = 0.2\ngive_up_after = 1.0\n",
        rx.url
    );
    let s = ApiSystem::start_with(198, "feed = true", &hook).await;
    let (_alice, _) = agent_with(&s.sys.a.ws, AGENT_SECRET, "1", "alice", "Alice").await;
    rx.set(Mode::Failing);
    let (mut v, conv) = visitor(&s.sys.a.ws, "1").await;
    eventually("the first event is tried", || async { rx.refused.load(std::sync::atomic::Ordering::SeqCst) >= 1 }).await;
    // Past give_up_after: the first message's event is dropped with a log line.
    common::wait_log(&s.api, "older than give_up_after, given up", 1).await;
    rx.set(Mode::Refusing);
    v.send_json(json!({"method": "say", "content": "second", "cid": "v2"})).await;
    v.next_where(|m| m["method"] == "say_ack" && m["cid"] == "v2").await;
    common::wait_log(&s.api, "the receiver refused the event: given up", 1).await;
    rx.set(Mode::Ok);
    v.send_json(json!({"method": "say", "content": "third", "cid": "v3"})).await;
    v.next_where(|m| m["method"] == "say_ack" && m["cid"] == "v3").await;
    let taken = rx.all_once(&[format!("message.created:c:{conv}:3")]).await;
    assert_eq!(message_ids(&taken, &conv), [3], "the first two were given up, the third arrived");
}

/// Two api processes follow one webhook; the one delivering is killed (no goodbye): the other
/// takes the lease once it expires and delivers what came meanwhile, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_delivers_when_the_webhook_s_holder_dies() {
    let rx = Receiver::start("127.199.0.7", HOOK_SECRET).await;
    let hook = format!("[[api.webhooks]]\nname = \"crm\"\nurl = \"{}\"\nsecret = \"{HOOK_SECRET}\"\nevents = [\"message.created\"]\n", rx.url);
    let mut s = ApiSystem::start_with(199, "feed = true", &hook).await;
    let other = format!("127.199.0.8:{}", free_port("127.199.0.8"));
    let cfg = s.sys.config.display().to_string();
    let mut api2 = Proc::start("n199-api-other", &["--config", &cfg, "api", "--register", &s.sys.reg, "--listen", &other]);
    wait_listening(&other).await;
    let (_alice, _) = agent_with(&s.sys.a.ws, AGENT_SECRET, "1", "alice", "Alice").await;
    let (mut v, conv) = visitor(&s.sys.a.ws, "1").await;
    rx.all_once(&[format!("message.created:c:{conv}:1")]).await;
    let first_holder_is_api = s.api.log_text().contains("delivering");
    let (holder, standby) = if first_holder_is_api { (&mut s.api, &mut api2) } else { (&mut api2, &mut s.api) };
    assert!(holder.log_text().contains("delivering") && standby.log_text().contains("standing by"));
    holder.kill();
    for n in 2..=3 {
        let cid = format!("v{n}");
        v.send_json(json!({"method": "say", "content": cid, "cid": cid})).await;
        v.next_where(|m| m["method"] == "say_ack" && m["cid"] == cid.as_str()).await;
    }
    let taken = rx.all_once(&[format!("message.created:c:{conv}:3")]).await;
    assert_eq!(message_ids(&taken, &conv), [1, 2, 3]);
    assert!(standby.log_text().contains("delivering: this process holds the webhook's lease"), "the standby took over");
}
