//! The LINE channel against a fake LINE API (`common/fake_line.rs`: real HTTP on loopback,
//! started here). The system is real: register, gateway, chat worker and `switchboard line`,
//! each its own process.

mod common;

use common::fake_line::*;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const AGENT_SECRET: &str = "line-test-agent-secret";

struct System {
    _register: Proc,
    gw: Gw,
    _worker: Proc,
    line: Option<Proc>,
    webhook: String,
    config: String,
    reg: String,
    /// Removed when the system is dropped (after its processes: fields drop in order).
    _dir: TempDir,
}

impl System {
    fn start_line(&self, name: &str) -> Proc {
        Proc::start_env(
            name,
            &["--config", &self.config, "line", "--register", &self.reg],
            &[("SWITCHBOARD_LINE_SECRET_SHOP1", CHANNEL_SECRET), ("SWITCHBOARD_LINE_TOKEN_SHOP1", ACCESS_TOKEN)],
        )
    }
}

async fn system(net: u8, api: &str) -> System {
    system_with(net, api, "").await
}

/// `system`, with `events_toml` added to `[events]`.
async fn system_with(net: u8, api: &str, events_toml: &str) -> System {
    let dir = std::env::temp_dir().join(format!("sb-line-{net}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let ip = format!("127.{net}.0.5");
    let listen = format!("{ip}:{}", free_port(&ip));
    let config = dir.join("switchboard.toml");
    std::fs::write(
        &config,
        format!(
            "[events]\nstore = \"sqlite:{db}\"\n{events_toml}\n[events.line]\nlisten = \"{listen}\"\napi_base = \"{api}\"\ndata_base = \"{api}\"\n\
             media_dir = \"{media}\"\ntimeout = 1.0\nretry_base = 0.2\nretry_max = 1.0\n\
             [[events.line.bots]]\nbid = \"shop1\"\n",
            db = dir.join("chat.db").display(),
            media = dir.join("media").display(),
        ),
    )
    .expect("config");
    let config = config.display().to_string();
    let reg_ip = format!("127.{net}.0.1");
    let reg = format!("{reg_ip}:{}", free_port(&reg_ip));
    let register = start_register(&format!("n{net}-register"), &reg, &[]);
    wait_listening(&reg).await;
    let gw = start_gateway(&format!("n{net}-gateway"), &format!("127.{net}.0.2"), &reg, &[]);
    let worker = Proc::start_env(
        &format!("n{net}-chat-worker"),
        &["--config", &config, "business", "--register", &reg],
        &[("SWITCHBOARD_AGENT_SECRET", AGENT_SECRET)],
    );
    wait_log(&gw.proc, "business worker connected", 1).await;
    let mut s = System {
        _register: register,
        gw,
        _worker: worker,
        line: None,
        webhook: format!("http://{listen}/line/shop1/webhook"),
        config,
        reg,
        _dir: TempDir(dir),
    };
    s.line = Some(s.start_line(&format!("n{net}-line")));
    wait_listening(&listen).await;
    s
}

fn token(bid: &str, agent: &str) -> String {
    mint_token(AGENT_SECRET, bid, agent)
}

async fn agent(url: &str, id: &str) -> Client {
    let mut c = Client::chat(url).await;
    let r = c.request(json!({"method": "login", "bid": "shop1", "customer_id": id, "customer_name": id, "token": token("shop1", id)}), "login").await;
    assert!(r.get("code").is_none(), "login refused: {r}");
    c
}

async fn say(agent: &mut Client, conv: &str, text: &str) -> Value {
    agent.request(json!({"method": "say", "conversation_id": conv, "content": text, "cid": format!("cid-{text}")}), "say_ack").await
}

async fn delivery(agent: &mut Client, id: &str) -> Value {
    agent.next_where(|m| m["method"] == "delivery_push" && m["id"] == id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_users_chat_with_agents_both_ways() {
    let (fake, api) = start_fake_line("127.63.0.9").await;
    let s = system(63, &api).await;
    let mut a1 = agent(&s.gw.ws, "a1").await;

    // LINE's URL check, then forgeries: refused, nothing stored.
    assert_eq!(post_webhook(&s.webhook, &[], Some(CHANNEL_SECRET)).await, 200);
    let forged = text_event(&fake, "f1", "Uforged", "9001", "forged");
    assert_eq!(post_webhook(&s.webhook, std::slice::from_ref(&forged), Some("wrong secret")).await, 401);
    assert_eq!(post_webhook(&s.webhook, &[forged], None).await, 401);
    let line = s.line.as_ref().expect("line process");
    wait_log(line, "bad or missing X-Line-Signature", 2).await;
    assert!(!line.log_text().contains("forged"), "a refused body is not logged");
    assert_eq!(post_webhook(&s.webhook.replace("shop1", "nobot"), &[], Some(CHANNEL_SECRET)).await, 404);

    // A signed text message becomes a conversation the agent sees, with the profile's name.
    let ev = text_event(&fake, "e1", "Uhtml1", "1001", "Hello from LINE");
    assert_eq!(post_webhook(&s.webhook, std::slice::from_ref(&ev), Some(CHANNEL_SECRET)).await, 200);
    let push = a1.next_where(|m| m["method"] == "conversation_push").await;
    assert_eq!(push["visitor_id"], "line:Uhtml1");
    assert_eq!(push["visitor_name"], "Name &lt;Uhtml1&gt;", "display names are escaped");
    let conv = push["conversation_id"].as_str().expect("conversation").to_string();
    let m = a1.next_where(|m| m["method"] == "say" && m["conversation_id"] == conv.as_str()).await;
    assert_eq!((m["content"].as_str(), m["channel"].as_str()), (Some("Hello from LINE"), Some("line")));
    // The forged event never arrived.
    a1.expect_none(Duration::from_millis(300), |m| m["content"] == "forged").await;

    // A redelivery (same webhookEventId) is answered 200 and not processed again.
    let mut again = ev.clone();
    again["deliveryContext"]["isRedelivery"] = true.into();
    assert_eq!(post_webhook(&s.webhook, &[again], Some(CHANNEL_SECRET)).await, 200);
    a1.expect_none(Duration::from_millis(800), |m| m["method"] == "say").await;
    let h = a1.request(json!({"method": "history", "conversation_id": conv}), "history").await;
    assert_eq!(h["messages"].as_array().map(Vec::len), Some(1), "{h}");

    // The conversation is an ordinary one: assigned on its first message (a1 is online), unread.
    let list = a1.request(json!({"method": "conversation_list"}), "conversation_list").await;
    let entry = &list["conversations"][0];
    assert_eq!((entry["assigned"].as_str(), entry["unread"].as_u64()), (Some("a1"), Some(1)), "{list}");
    assert_eq!((entry["channel"].as_str(), entry["followed"].as_bool()), (Some("line"), Some(true)));

    // The first answer uses the fresh reply token (free), with the channel's token.
    let ack = say(&mut a1, &conv, "Hi! How can I help?").await;
    assert_eq!(ack["delivery"], "queued");
    let id1 = ack["id"].as_str().expect("id").to_string();
    let d = delivery(&mut a1, &id1).await;
    assert_eq!(d["delivery"], "sent", "{d}");
    let replies = fake.calls_to("/v2/bot/message/reply");
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].auth, format!("Bearer {ACCESS_TOKEN}"));
    assert_eq!(replies[0].body["replyToken"], "rt-e1");
    assert_eq!(replies[0].retry_key, None, "the reply endpoint takes no retry key");
    // The token is spent: the next answer is a push, with a retry key.
    let ack = say(&mut a1, &conv, "Second answer").await;
    let id2 = ack["id"].as_str().expect("id").to_string();
    assert_eq!(delivery(&mut a1, &id2).await["delivery"], "sent");
    let pushes = fake.calls_to("/v2/bot/message/push");
    assert_eq!((pushes.len(), pushes[0].body["to"].as_str()), (1, Some("Uhtml1")));
    assert!(pushes[0].retry_key.as_deref().is_some_and(|k| k.len() == 36), "a UUID retry key");

    // 429, then 200: delivered once, with the same retry key on both tries.
    fake.forced.lock().unwrap().push_back(Forced::Status(429, "Too Many Requests"));
    let id3 = say(&mut a1, &conv, "After a 429").await["id"].as_str().expect("id").to_string();
    assert_eq!(delivery(&mut a1, &id3).await["delivery"], "sent");
    let tries: Vec<Call> = fake.calls_to("/v2/bot/message/push").into_iter().filter(|c| text_of(&c.body) == "After a 429").collect();
    assert_eq!(tries.len(), 2);
    assert_eq!(tries[0].retry_key, tries[1].retry_key);

    // A 500, then a timeout after LINE took the message: the retry's 409 counts as sent.
    fake.forced.lock().unwrap().extend([Forced::Status(500, "boom"), Forced::AcceptAndHang]);
    let id4 = say(&mut a1, &conv, "Through a timeout").await["id"].as_str().expect("id").to_string();
    assert_eq!(delivery(&mut a1, &id4).await["delivery"], "sent");
    assert_eq!(fake.calls_to("/v2/bot/message/push").iter().filter(|c| text_of(&c.body) == "Through a timeout").count(), 3);

    // Another 4xx is final: the agent sees the failure and why.
    fake.forced.lock().unwrap().push_back(Forced::Status(400, "The user hasn't added the LINE Official Account as a friend."));
    let id5 = say(&mut a1, &conv, "Refused").await["id"].as_str().expect("id").to_string();
    let d = delivery(&mut a1, &id5).await;
    assert_eq!(d["delivery"], "failed");
    assert!(d["delivery_error"].as_str().unwrap_or("").contains("added the LINE Official Account"), "{d}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(fake.calls_to("/v2/bot/message/push").iter().filter(|c| text_of(&c.body) == "Refused").count(), 1, "no retry");

    // Exactly once each, in order.
    assert_eq!(fake.delivered_texts("Uhtml1"), ["Hi! How can I help?", "Second answer", "After a 429", "Through a timeout"]);
    // History shows each message's delivery state.
    let h = a1.request(json!({"method": "history", "conversation_id": conv}), "history").await;
    let states: Vec<(String, String)> = h["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| (m["content"].as_str().unwrap_or("").to_string(), m["delivery"].as_str().unwrap_or("-").to_string()))
        .collect();
    assert_eq!(states[0], ("Hello from LINE".to_string(), "-".to_string()));
    assert_eq!(states[1..].iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(), ["sent", "sent", "sent", "sent", "failed"]);

    // Stickers and images show for the agent; the image's bytes are kept and served.
    let sticker = event(
        "e2",
        "Uhtml1",
        "message",
        json!({"replyToken": "rt-x", "message": {"id": "1002", "type": "sticker",
        "packageId": "446", "stickerId": "1988", "stickerResourceType": "STATIC", "keywords": ["hello"]}}),
    );
    let image = event(
        "e3",
        "Uhtml1",
        "message",
        json!({"replyToken": "rt-y", "message": {"id": "1003", "type": "image",
        "contentProvider": {"type": "line"}}}),
    );
    assert_eq!(post_webhook(&s.webhook, &[sticker, image], Some(CHANNEL_SECRET)).await, 200);
    let m = a1.next_where(|m| m["method"] == "say" && m.get("sticker").is_some()).await;
    assert_eq!((m["sticker"]["package_id"].as_str(), m["sticker"]["sticker_id"].as_str()), (Some("446"), Some("1988")));
    assert!(m["sticker"]["url"].as_str().unwrap_or("").ends_with("/1988/android/sticker.png"));
    assert_eq!(m["content"], "[sticker: hello]");
    let m = a1.next_where(|m| m["method"] == "say" && m.get("image").is_some()).await;
    let url = m["image"].as_str().expect("image url");
    let got = reqwest::get(url).await.expect("fetch image");
    assert_eq!(got.headers()["content-type"], "image/png");
    assert_eq!(got.bytes().await.expect("bytes").as_ref(), PNG);

    // Unfollow marks the conversation.
    assert_eq!(post_webhook(&s.webhook, &[event("e4", "Uhtml1", "unfollow", json!({}))], Some(CHANNEL_SECRET)).await, 200);
    let m = a1.next_where(|m| m["method"] == "say" && m["line_event"] == "unfollow").await;
    assert_eq!(m["conversation_id"], conv.as_str());
    let list = a1.request(json!({"method": "conversation_list"}), "conversation_list").await;
    assert_eq!(list["conversations"][0]["followed"], false, "{list}");

    // Nobody can open a LINE user's conversation from a web page.
    let mut web = Client::chat(&s.gw.ws).await;
    let r = web.request(json!({"method": "visitor_login", "bid": "shop1", "visitor_id": "line:Uhtml1"}), "visitor_login").await;
    assert_eq!(r["code"], "10004", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_killed_mid_queue_delivers_every_reply_exactly_once() {
    let (fake, api) = start_fake_line("127.64.0.9").await;
    // Each accepted call takes a while to answer, so the kill lands between LINE taking a
    // message and the sender hearing so.
    *fake.delay.lock().unwrap() = Duration::from_millis(400);
    let mut s = system(64, &api).await;
    let mut a1 = agent(&s.gw.ws, "a1").await;
    assert_eq!(post_webhook(&s.webhook, &[text_event(&fake, "k1", "Ubbb2", "2001", "help")], Some(CHANNEL_SECRET)).await, 200);
    let push = a1.next_where(|m| m["method"] == "conversation_push").await;
    let conv = push["conversation_id"].as_str().expect("conversation").to_string();
    a1.next_where(|m| m["method"] == "say").await;

    let texts: Vec<String> = (1..=6).map(|i| format!("answer {i}")).collect();
    for t in &texts {
        assert_eq!(say(&mut a1, &conv, t).await["delivery"], "queued");
    }
    // Kill the sender inside its first call (a reply: no retry key), then inside a push.
    for (n, calls) in [(1, 1), (2, 4)] {
        eventually("the sender is inside a call", || async { fake.calls.lock().unwrap().len() >= calls }).await;
        s.line = None;
        assert!(fake.delivered_texts("Ubbb2").len() < texts.len(), "the kill came mid-queue");
        s.line = Some(s.start_line(&format!("n64-line-restarted-{n}")));
    }
    eventually("every reply delivered", || async { fake.delivered_texts("Ubbb2").len() >= texts.len() }).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fake.delivered_texts("Ubbb2"), texts, "each reply exactly once, in order");
    let h = a1.request(json!({"method": "history", "conversation_id": conv}), "history").await;
    let states: Vec<&str> = h["messages"].as_array().expect("messages")[1..].iter().map(|m| m["delivery"].as_str().unwrap_or("-")).collect();
    assert_eq!(states, ["sent"; 6]);
    // The retried call was answered as LINE answers a retry: a used token or a known key.
    let calls = fake.calls.lock().unwrap().len();
    assert!(calls > texts.len(), "the interrupted call was tried again ({calls} calls)");
}

/// A bot's auto-reply posted by a backend through the server API reaches the LINE user through
/// the outgoing queue, as an agent's reply does, and the agents see it as the bot's; the
/// backend's webhook hears of the LINE conversation and of both messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_reply_posted_through_the_server_api_reaches_the_line_user() {
    use common::http_api::{message_ids, Receiver};
    let (fake, line_api) = start_fake_line("127.196.0.9").await;
    let s = system_with(196, &line_api, "feed = true").await;
    let rx = Receiver::start("127.196.0.7", "whsec-line-0123456789").await;
    let mut config = std::fs::read_to_string(&s.config).expect("config");
    config.push_str(&format!("\n[[api.webhooks]]\nname = \"crm\"\nurl = \"{}\"\nsecret = \"whsec-line-0123456789\"\n", rx.url));
    std::fs::write(&s.config, config).expect("config");
    let mut a1 = agent(&s.gw.ws, "a1").await;
    let ev = text_event(&fake, "e1", "Ubot1", "2001", "Are you open today?");
    assert_eq!(post_webhook(&s.webhook, &[ev], Some(CHANNEL_SECRET)).await, 200);
    let push = a1.next_where(|m| m["method"] == "conversation_push").await;
    let conv = push["conversation_id"].as_str().expect("conversation").to_string();

    let listen = format!("127.196.0.6:{}", free_port("127.196.0.6"));
    let key = "shop1-key-0123456789abcdef-write";
    let keys = json!([{"name": "shop1", "key": key, "bots": ["shop1"], "write": true}]).to_string();
    let _api =
        Proc::start_env("n196-api", &["--config", &s.config, "api", "--register", &s.reg, "--listen", &listen], &[("SWITCHBOARD_API_KEYS", &keys)]);
    wait_listening(&listen).await;
    let r = reqwest::Client::new()
        .post(format!("http://{listen}/api/bots/shop1/conversations/{conv}/messages"))
        .bearer_auth(key)
        .json(&json!({"content": "Yes, from 9 to 18.", "cid": "auto-open"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 200);
    let posted: Value = r.json().await.expect("JSON");
    assert_eq!(posted["delivery"], "queued", "{posted}");
    let seen = a1.next_where(|m| m["method"] == "say" && m["content"] == "Yes, from 9 to 18.").await;
    assert_eq!((seen["from_uid"].as_str(), seen["bot"].as_bool()), (Some("bot"), Some(true)));
    let id = posted["id"].as_str().expect("id").to_string();
    assert_eq!(delivery(&mut a1, &id).await["delivery"], "sent");
    assert_eq!(fake.delivered_texts("Ubot1"), ["Yes, from 9 to 18."]);

    let taken = rx.all_once(&[format!("conversation.created:{conv}"), format!("message.created:c:{conv}:2")]).await;
    assert_eq!(message_ids(&taken, &conv), [1, 2]);
    let data = |id: String| taken.iter().find(|d| d.id == id).map(|d| d.event["data"].clone()).expect("event");
    let first = data(format!("message.created:c:{conv}:1"));
    assert_eq!((first["channel"].as_str(), first["sender_type"].as_str()), (Some("line"), Some("visitor")));
    assert_eq!(first["message"]["content"], "Are you open today?");
    assert_eq!(data(format!("message.created:c:{conv}:2"))["sender_type"], "bot");
    assert_eq!(data(format!("conversation.created:{conv}"))["conversation"]["channel"], "line");
}
