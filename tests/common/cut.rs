//! A TCP relay the test can cut: it stands between the system and a server (a database, say)
//! on an address of its own. `cut` drops every relayed connection and refuses new ones, the
//! way a dead server or a firewall does to its clients; `heal` lets connections through again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Relay {
    /// `ip:port` to give the system instead of the server's.
    pub addr: String,
    open: Arc<AtomicBool>,
    /// Bumped by every cut: relays started before it end.
    generation: watch::Sender<u64>,
    /// Connections relayed so far.
    pub accepted: Arc<AtomicU64>,
}

impl Relay {
    pub async fn start(listen_ip: &str, upstream: &str) -> Relay {
        let listener = TcpListener::bind((listen_ip, 0)).await.expect("bind relay");
        let addr = listener.local_addr().expect("addr").to_string();
        let open = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let accepted = Arc::new(AtomicU64::new(0));
        let (o, g, a, upstream) = (open.clone(), generation.clone(), accepted.clone(), upstream.to_string());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                if !o.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                a.fetch_add(1, Ordering::SeqCst);
                let mut cut = g.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Relay { addr, open, generation, accepted }
    }

    /// Drops every relayed connection and refuses new ones until `heal`.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn heal(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}
