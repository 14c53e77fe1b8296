//! Idle client connections, parked: no task and no tokio registration, only what the
//! connection's task held and its socket, watched in one epoll set of the parking's own.
//!
//! Why: an idle connection's task (a 384-byte cell) and tokio's readiness record for its
//! socket (256 bytes, cache-padded) were two thirds of what it cost the gateway
//! (docs/BENCHMARKS.md), and most of a chat's connections are idle most of the time. A
//! connection that has had nothing to do for `park_after` hands its state to the parking and
//! its task ends; the socket goes into the parking's epoll set (a `mio::Poll`, itself one fd in
//! tokio's), and the connection's queue gets a waker that rouses it. Bytes from the client, its
//! end, or a message from the hub spawn its task again with the same state.
//!
//! One parking task serves every parked connection of a gateway. A rouse is a spawn and a
//! registration: parking pays off for connections quiet for seconds, not between messages.

use super::conn::millis;
use crate::hub::Out;
use crate::outbox::OutboxRx;
use crate::stats::Stats;
use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use slab::Slab;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Wake, Waker};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::{debug, warn};

/// What a parked connection's task left: enough to spawn it again around its socket.
pub trait Sleeper: Send + 'static {
    /// The connection's queue, watched while it sleeps.
    fn outbox(&self) -> &OutboxRx<Out>;
    /// Spawns the connection's task again around its socket, or ends the connection (the hub
    /// told) when the socket could not be taken back. `rested`: it slept at least
    /// `park_after`, so a short exchange may put it back to sleep soon (`Conn::nap_after`).
    fn wake(self: Box<Self>, stream: io::Result<TcpStream>, rested: bool);
}

/// Where idle connections sleep; clones share it.
#[derive(Clone)]
pub struct Parking {
    inner: Arc<Inner>,
}

struct Inner {
    /// How long a connection must have had nothing to do before it is parked.
    after: Duration,
    stats: Arc<Stats>,
    /// The parking's epoll set, to add and remove sockets from any thread.
    registry: mio::Registry,
    /// Every parked connection, by its token in the epoll set.
    beds: Mutex<Slab<Arc<Bed>>>,
    /// Connections whose queue got something, for the parking's task.
    woken: Mutex<Vec<Arc<Bed>>>,
    notify: Notify,
}

/// One parked connection. Its queue's waker is the bed itself: no allocation of its own.
struct Bed {
    key: u32,
    /// When it was parked, in milliseconds on `conn::millis`'s clock.
    since: u32,
    inner: Weak<Inner>,
    /// Taken by whichever rouses it first (bytes on the socket, or the queue).
    sleeper: Mutex<Option<(std::net::TcpStream, Box<dyn Sleeper>)>>,
}

/// Nothing that can panic runs under these locks, so a poisoned one holds consistent data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Wake for Bed {
    fn wake(self: Arc<Self>) {
        if let Some(inner) = self.inner.upgrade() {
            lock(&inner.woken).push(self);
            inner.notify.notify_one();
        }
    }
}

impl Parking {
    /// A parking for connections idle for `after`, and its task (spawned here: call within the
    /// runtime).
    pub fn start(after: Duration, stats: Arc<Stats>) -> io::Result<Parking> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        // SAFETY: the epoll fd is the `Poll`'s own, open until the `Poll` drops, and the
        // `AsyncFd` owns the `Poll`.
        let poll = unsafe { AsyncFd::register_with_interest(poll, tokio::io::Interest::READABLE) }.map_err(io::Error::from)?;
        let inner = Arc::new(Inner { after, stats, registry, beds: Mutex::new(Slab::new()), woken: Mutex::new(Vec::new()), notify: Notify::new() });
        tokio::spawn(run(inner.clone(), poll));
        Ok(Parking { inner })
    }

    /// How long a connection must have had nothing to do before it is parked.
    pub fn after(&self) -> Duration {
        self.inner.after
    }

    /// Connections parked now.
    pub fn len(&self) -> usize {
        lock(&self.inner.beds).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parks a connection whose task is ending: nothing must be waiting to be read or written.
    /// Something already in its queue, or arriving meanwhile, rouses it at once.
    pub fn park(&self, stream: TcpStream, sleeper: Box<dyn Sleeper>) {
        // Deregistered from tokio; the socket stays non-blocking.
        let std = match stream.into_std() {
            Ok(s) => s,
            Err(e) => return sleeper.wake(Err(e), false),
        };
        let fd = std.as_raw_fd();
        let bed = {
            let mut beds = lock(&self.inner.beds);
            let entry = beds.vacant_entry();
            let Ok(key) = u32::try_from(entry.key()) else {
                drop(beds);
                warn!("over 4 billion connections parked: keeping this one awake");
                return sleeper.wake(TcpStream::from_std(std), false);
            };
            let bed = Arc::new(Bed { key, since: millis(), inner: Arc::downgrade(&self.inner), sleeper: Mutex::new(None) });
            // Readable also reports the client's end and errors (mio adds EPOLLRDHUP).
            if let Err(e) = self.inner.registry.register(&mut SourceFd(&fd), Token(entry.key()), Interest::READABLE) {
                drop(beds);
                warn!("could not park a connection, keeping it awake: {e}");
                return sleeper.wake(TcpStream::from_std(std), false);
            }
            // Counted before anything can rouse it.
            self.inner.stats.parked.fetch_add(1, Ordering::Relaxed);
            *lock(&bed.sleeper) = Some((std, sleeper));
            entry.insert(bed.clone());
            bed
        };
        // The queue is watched last: whatever came before is seen here, whatever comes after
        // wakes the bed. Under the bed's lock, so the parking's task cannot take the sleeper
        // away meanwhile.
        let asleep = match &*lock(&bed.sleeper) {
            Some((_, s)) => s.outbox().sleep_on(Waker::from(bed.clone())),
            None => true, // roused already by its socket
        };
        if !asleep {
            bed.wake();
        }
    }
}

impl Inner {
    /// Takes a bed's connection out of the parking and spawns its task; nothing if another
    /// rouse got there first.
    fn rouse(&self, bed: &Bed) {
        let Some((std, sleeper)) = lock(&bed.sleeper).take() else { return };
        self.stats.parked.fetch_sub(1, Ordering::Relaxed);
        {
            let mut beds = lock(&self.beds);
            let key = bed.key as usize;
            if beds.get(key).is_some_and(|b| std::ptr::eq(Arc::as_ptr(b), bed)) {
                beds.remove(key);
            }
        }
        if let Err(e) = self.registry.deregister(&mut SourceFd(&std.as_raw_fd())) {
            debug!("parked socket already gone from the set: {e}");
        }
        // Only a connection that really rested gets the short look after waking: one woken
        // again and again (a client dripping heartbeats) is parked no more often than every
        // `park_after`, so it cannot make the gateway spawn and register for it at will.
        let rested = u128::from(millis().wrapping_sub(bed.since)) >= self.after.as_millis();
        sleeper.wake(TcpStream::from_std(std), rested);
    }
}

/// The parking's task: rouses connections whose socket is readable or whose queue got
/// something. It lives as long as the gateway's runtime.
async fn run(inner: Arc<Inner>, mut poll: AsyncFd<mio::Poll>) {
    let mut events = Events::with_capacity(1024);
    loop {
        tokio::select! {
            ready = poll.readable_mut() => {
                let mut guard = match ready {
                    Ok(g) => g,
                    Err(e) => {
                        warn!("parking's epoll set failed, parked connections will not wake: {e}");
                        return;
                    }
                };
                loop {
                    events.clear();
                    match guard.get_inner_mut().poll(&mut events, Some(Duration::ZERO)) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        // Only a broken epoll fd fails otherwise: waiting on it again would spin.
                        Err(e) => {
                            warn!("parking's epoll wait failed, parked connections will not wake: {e}");
                            return;
                        }
                    }
                    if events.is_empty() {
                        guard.clear_ready();
                        break;
                    }
                    for ev in events.iter() {
                        let bed = lock(&inner.beds).get(ev.token().0).cloned();
                        if let Some(bed) = bed {
                            inner.rouse(&bed);
                        }
                    }
                }
            }
            () = inner.notify.notified() => {
                let woken = std::mem::take(&mut *lock(&inner.woken));
                for bed in woken {
                    inner.rouse(&bed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{outbox, Outbox};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;
    use tokio_tungstenite::tungstenite::Message;

    /// A connection's leftovers that, woken, hand their socket back to the test.
    struct Test {
        rx: OutboxRx<Out>,
        woke: mpsc::UnboundedSender<(io::Result<TcpStream>, OutboxRx<Out>)>,
    }

    impl Sleeper for Test {
        fn outbox(&self) -> &OutboxRx<Out> {
            &self.rx
        }
        fn wake(self: Box<Self>, stream: io::Result<TcpStream>, _rested: bool) {
            let _ = self.woke.send((stream, self.rx));
        }
    }

    /// A server-side socket, its client's end, and a queue.
    async fn pair() -> (TcpStream, TcpStream, Outbox<Out>, OutboxRx<Out>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (out, rx) = outbox::<Out>(8);
        (accepted.expect("accept").0, client.expect("connect"), out, rx)
    }

    async fn woken(rx: &mut mpsc::UnboundedReceiver<(io::Result<TcpStream>, OutboxRx<Out>)>) -> (TcpStream, OutboxRx<Out>) {
        let (stream, queue) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("woken in time").expect("open");
        (stream.expect("the socket back"), queue)
    }

    async fn no_wake(rx: &mut mpsc::UnboundedReceiver<(io::Result<TcpStream>, OutboxRx<Out>)>) {
        assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv()).await.is_err(), "woken for nothing");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_parked_connection_wakes_for_its_socket_its_queue_and_its_end() {
        let parking = Parking::start(Duration::from_secs(1), Arc::new(Stats::default())).expect("parking");
        let (tx, mut woke) = mpsc::unbounded_channel();
        let (server, mut client, out, rx) = pair().await;

        // Bytes from the client: the socket comes back with them unread.
        parking.park(server, Box::new(Test { rx, woke: tx.clone() }));
        assert_eq!(parking.len(), 1);
        no_wake(&mut woke).await;
        client.write_all(b"hello\n").await.expect("write");
        let (mut server, rx) = woken(&mut woke).await;
        assert!(parking.is_empty());
        let mut buf = [0u8; 6];
        server.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"hello\n");

        // A message from the hub: woken, the message still queued for the task.
        parking.park(server, Box::new(Test { rx, woke: tx.clone() }));
        no_wake(&mut woke).await;
        out.try_send(Out::Send(Message::Text("hi".into()))).expect("room");
        let (server, mut rx) = woken(&mut woke).await;
        assert!(matches!(rx.try_recv(), Some(Out::Send(_))), "the message waits for the task");

        // Something already queued when it parks: woken at once.
        out.try_send(Out::Send(Message::Text("early".into()))).expect("room");
        parking.park(server, Box::new(Test { rx, woke: tx.clone() }));
        let (server, mut rx) = woken(&mut woke).await;
        assert!(rx.try_recv().is_some());

        // The hub drops the connection (CMD_DESTROY, a slow reader): woken to end.
        parking.park(server, Box::new(Test { rx, woke: tx.clone() }));
        no_wake(&mut woke).await;
        out.shut();
        let (server, rx) = woken(&mut woke).await;
        assert!(rx.is_shut());

        // The client leaves while parked: woken, and the socket reads its end.
        let (server2, client2, _out2, rx2) = pair().await;
        parking.park(server2, Box::new(Test { rx: rx2, woke: tx.clone() }));
        drop(client2);
        let (mut server2, _rx2) = woken(&mut woke).await;
        assert_eq!(server2.read(&mut [0u8; 8]).await.expect("read"), 0, "the client's end");
        drop((server, client));
        assert_eq!(parking.len(), 0, "nothing left in the parking");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_connections_park_and_each_wakes_alone() {
        let parking = Parking::start(Duration::from_secs(1), Arc::new(Stats::default())).expect("parking");
        let (tx, mut woke) = mpsc::unbounded_channel();
        let mut clients = Vec::new();
        let mut queues = Vec::new();
        for _ in 0..200 {
            let (server, client, out, rx) = pair().await;
            parking.park(server, Box::new(Test { rx, woke: tx.clone() }));
            clients.push(client);
            queues.push(out);
        }
        assert_eq!(parking.len(), 200);
        no_wake(&mut woke).await;
        // Every seventh gets bytes, every eleventh a message: exactly those wake.
        let mut expected = 0;
        for (i, (c, q)) in clients.iter_mut().zip(&queues).enumerate() {
            if i % 7 == 0 {
                c.write_all(b"x").await.expect("write");
                expected += 1;
            } else if i % 11 == 0 {
                q.try_send(Out::Send(Message::Text("m".into()))).expect("room");
                expected += 1;
            }
        }
        for _ in 0..expected {
            woken(&mut woke).await;
        }
        no_wake(&mut woke).await;
        assert_eq!(parking.len(), 200 - expected);
    }
}
