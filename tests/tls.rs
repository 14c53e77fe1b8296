//! `wss://` and `https://` on the client port with rustls, using a certificate made at test time.

mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

/// A TLS client that trusts the test's certificate only.
fn trusting(cert: &rcgen::CertifiedKey) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("trust the test certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(client))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_port_speaks_tls() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.94.0.2".to_string()]).expect("certificate");
    let dir = std::env::temp_dir().join(format!("sb-tls-{}", std::process::id()));
    let _removed_at_the_end = TempDir(dir.clone());
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).expect("cert");
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).expect("key");
    let cfg = dir.join("tls.toml");
    std::fs::write(&cfg, format!("[gateway]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n", dir.join("cert.pem").display(), dir.join("key.pem").display()))
        .expect("config");

    let reg = format!("127.94.0.1:{}", free_port("127.94.0.1"));
    let _r = start_register("n94-register", &reg, &[]);
    wait_listening(&reg).await;
    let g = start_gateway("n94-gateway", "127.94.0.2", &reg, &["--config", cfg.to_str().expect("path")]);
    let _w = start_worker("n94-worker", &reg, &[]);
    let addr = g.ws.trim_start_matches("ws://").to_string();
    wait_listening(&addr).await;

    let connector = trusting(&cert);
    let name = rustls::pki_types::ServerName::try_from("127.94.0.2").expect("name");

    // A page over https.
    let tcp = tokio::net::TcpStream::connect(&addr).await.expect("tcp");
    let mut tls = connector.connect(name.clone(), tcp).await.expect("TLS handshake");
    tls.write_all(b"GET /demo.html HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("request");
    let mut page = Vec::new();
    let _ = tls.read_to_end(&mut page).await;
    assert!(String::from_utf8_lossy(&page).starts_with("HTTP/1.1 200"), "https page");

    // A WebSocket over TLS, served by a worker: retry until the worker is linked.
    let deadline = std::time::Instant::now() + WAIT;
    let mut ws = loop {
        let tcp = tokio::net::TcpStream::connect(&addr).await.expect("tcp");
        let tls = connector.connect(name.clone(), tcp).await.expect("TLS handshake");
        let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://{addr}/"), tls).await.expect("wss handshake");
        use futures_util::StreamExt;
        match ws.next().await {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) if t.contains("hello") => break ws,
            other => {
                assert!(std::time::Instant::now() < deadline, "no worker over wss: {other:?}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    use futures_util::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::Text(json!({"call": "gateways", "tag": 1}).to_string().into())).await.expect("send");
    let reply = ws.next().await.expect("reply").expect("ok");
    assert!(reply.to_text().expect("text").contains("\"tag\":1"), "{reply:?}");

    // Plain WebSocket on a TLS port is refused.
    let plain = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await;
    assert!(plain.is_err(), "plain ws on the TLS port");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The server API with `[api] tls_cert` / `tls_key`: HTTPS with a key answers; plain HTTP on the
/// same port gets no answer; a connection that never starts its handshake holds nobody up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_api_speaks_tls() {
    use common::http_api::*;
    let cert = rcgen::generate_simple_self_signed(vec!["127.195.0.6".to_string()]).expect("certificate");
    let dir = std::env::temp_dir().join(format!("sb-api-tls-{}", std::process::id()));
    let _removed_at_the_end = TempDir(dir.clone());
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).expect("cert");
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).expect("key");
    let tls_toml = format!("tls_cert = \"{}\"\ntls_key = \"{}\"\n", dir.join("cert.pem").display(), dir.join("key.pem").display());
    let s = ApiSystem::start(195, &tls_toml).await;
    let addr = s.base.trim_start_matches("http://").to_string();

    let connector = trusting(&cert);
    let name = rustls::pki_types::ServerName::try_from("127.195.0.6").expect("name");

    let _silent = tokio::net::TcpStream::connect(&addr).await.expect("a connection that never speaks");
    let tcp = tokio::net::TcpStream::connect(&addr).await.expect("tcp");
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let request = format!("GET /api/bots/1/conversations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {BOT1}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.expect("request");
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("\"conversations\""), "{answer}");

    let mut plain = tokio::net::TcpStream::connect(&addr).await.expect("tcp");
    plain.write_all(b"GET /api/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("request");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), plain.read_to_end(&mut got)).await;
    assert!(!String::from_utf8_lossy(&got).contains("HTTP/1.1 200"), "plain HTTP is not served on the TLS port");
}
