//! A client connection's socket as every transport's one task drives it: the bytes read and
//! not yet a whole frame, and the bytes framed and not yet written. Both buffers are let go
//! whenever they empty, so an idle connection holds its socket and nothing else.
//!
//! One task reads and writes (no reader/writer pair, no split halves): a connection's task is
//! most of what an idle connection costs (docs/BENCHMARKS.md), so there is one, kept small.

use bytes::{Buf, BytesMut};
use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;

/// Frames are gathered up to this size before a write, so a burst costs few syscalls; past it
/// the connection stops taking from its queue until the socket drains (a slow reader's queue
/// then fills, and the hub drops it).
pub const WRITE_BATCH: usize = 16 * 1024;
/// Room a connection's write buffer starts with when it has something to send (it has none
/// while idle): enough for a few chat frames, so the frames after the first in a burst do not
/// each grow the buffer again (a reallocation and a copy, once per delivery in a room chat).
const FIRST_WRITE: usize = 1024;
/// Bytes taken from the socket per read, on the stack: the connection keeps only what is not
/// yet a whole frame.
const READ_CHUNK: usize = 4096;
/// How long a closing connection may take to write what it owes and hear the client end.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How soon a connection roused from the parking is first looked at (see [`Conn::nap_after`]).
/// A goim heartbeat's answer comes from a worker within milliseconds.
const GRACE: Duration = Duration::from_millis(100);

/// Milliseconds since the process first asked, wrapping after 49.7 days: a connection's last
/// activity and its rate bucket in 4 bytes each, not an `Instant`'s 16. Only differences are
/// used.
pub fn millis() -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u32
}

/// Anything a client can connect over: plain TCP or TLS.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

/// A connection's socket and its two buffers.
pub struct Conn<S> {
    stream: S,
    /// Read and not yet a whole frame.
    pub rbuf: BytesMut,
    /// Framed and not yet written.
    pub wbuf: BytesMut,
    /// The client ended its side.
    pub eof: bool,
    /// A nap's first look comes soon after a rouse (see [`Conn::poll_nap`]).
    grace: bool,
    /// Something was read or written since the rouse: what woke it has been seen to.
    worked: bool,
    /// When the connection last had something to do, in milliseconds on [`millis`]'s clock.
    last: u32,
    /// While the connection may be parked (`listen::parking`): when it next looks at whether
    /// it has been idle long enough. Boxed: one pointer in every task, the timer only in the
    /// tasks that may park, and none in a parked connection.
    nap: Option<Pin<Box<Sleep>>>,
}

/// What framing the hub's messages into the write buffer did to the connection (each
/// transport frames them its own way, and ends the same way).
pub enum Flow {
    Go,
    /// The last message (a close frame, where the framing has one) is written: end after it.
    End,
}

/// What a turn of the socket brought.
pub enum Io {
    Read,
    /// Everything waiting was written.
    Written,
    Eof,
    Failed(io::Error),
}

/// Gives an empty write buffer its first room (`FIRST_WRITE`) before a batch is framed.
pub fn ready_to_write(wbuf: &mut BytesMut) {
    if wbuf.capacity() == 0 {
        wbuf.reserve(FIRST_WRITE);
    }
}

impl<S: Transport> Conn<S> {
    /// A connection whose first bytes (read with its request head, say) are `rbuf`.
    pub fn new(stream: S, rbuf: BytesMut) -> Conn<S> {
        Conn { stream, rbuf, wbuf: BytesMut::new(), eof: false, grace: false, worked: false, last: 0, nap: None }
    }

    /// Lets the connection be parked once idle for `after` (or never, with `None`). A
    /// connection `roused` from the parking is looked at after [`GRACE`] first: one woken for a
    /// short exchange (a heartbeat and its answer) sleeps again then, not `after` later, so
    /// that heartbeats do not keep a share of the connections awake.
    pub fn nap_after(mut self, after: Option<Duration>, roused: bool) -> Conn<S> {
        self.grace = roused;
        self.last = millis();
        self.nap = after.map(|a| Box::pin(tokio::time::sleep(if roused { GRACE.min(a) } else { a })));
        self
    }

    /// Notes that the connection had something to do (bytes, a message), so it is not idle.
    /// Only a connection that may be parked reads the clock.
    pub fn busy(&mut self) {
        if self.nap.is_some() {
            self.last = millis();
            self.worked = true;
        }
    }

    /// Ready when the connection has had nothing to do for `after` (for half of [`GRACE`] at
    /// the first look after a rouse) and nothing waits in either buffer: it may be parked. One
    /// timer per connection, set again only each `after`, not on every message.
    ///
    /// `answered`: the framing knows that nothing the client asked still waits for a worker's
    /// answer (goim pairs each request with its reply). Then a connection roused after a rest
    /// sleeps again as soon as what woke it is done (a heartbeat read and answered, a message
    /// written), without waiting for the grace timer: a rouse costs less, and fewer
    /// connections are awake at any time (docs/BENCHMARKS.md, session 24).
    pub fn poll_nap(&mut self, cx: &mut Context<'_>, after: Duration, answered: bool) -> Poll<()> {
        let Some(nap) = self.nap.as_mut() else { return Poll::Pending };
        if self.grace && self.worked && answered && self.rbuf.is_empty() && self.wbuf.is_empty() && !self.eof {
            return Poll::Ready(());
        }
        loop {
            if nap.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let quiet = if std::mem::take(&mut self.grace) { GRACE / 2 } else { after };
            let idle = millis().wrapping_sub(self.last);
            if u128::from(idle) >= quiet.as_millis() && self.rbuf.is_empty() && self.wbuf.is_empty() && !self.eof {
                return Poll::Ready(());
            }
            nap.as_mut().reset(tokio::time::Instant::now() + after);
        }
    }

    /// The socket, for a connection that is being parked.
    pub fn into_stream(self) -> S {
        self.stream
    }

    /// Lets the read buffer go once every byte in it was decoded.
    pub fn release_read(&mut self) {
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
    }

    /// Writes what waits, then reads; ready when bytes arrived, the client ended its side, or
    /// the socket failed. Writing goes on while it waits to read.
    pub fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Io> {
        let writing = !self.wbuf.is_empty();
        match self.poll_write_out(cx) {
            Poll::Ready(Err(e)) => return Poll::Ready(Io::Failed(e)),
            // Room again: the caller takes from the queue only while the batch is not full, so
            // it must hear that the batch went out (or the queue would wait for a read).
            Poll::Ready(Ok(())) if writing => return Poll::Ready(Io::Written),
            _ => {}
        }
        // Uninitialized: zeroing 4 KiB on every turn cost more than the frames it read.
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut read = ReadBuf::uninit(&mut chunk);
        match Pin::new(&mut self.stream).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(Io::Eof),
            Poll::Ready(Ok(())) => {
                self.rbuf.extend_from_slice(read.filled());
                Poll::Ready(Io::Read)
            }
            Poll::Ready(Err(e)) => Poll::Ready(Io::Failed(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Ready once everything queued is written and flushed.
    pub fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.wbuf.is_empty() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.wbuf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.wbuf.advance(n);
                    if self.wbuf.is_empty() {
                        self.wbuf = BytesMut::new();
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // TLS keeps written bytes until flushed; plain TCP's flush does nothing.
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    /// Takes in what a turn of the socket brought: the client's end is noted (`eof`), a
    /// failure handed back; bytes read or written need nothing more here.
    pub fn note(&mut self, io: Io) -> io::Result<()> {
        match io {
            Io::Read | Io::Written => Ok(()),
            Io::Eof => {
                self.eof = true;
                Ok(())
            }
            Io::Failed(e) => Err(e),
        }
    }

    /// Writes what it can of what waits without waiting for the socket: a burst most often
    /// goes whole, a turn of the caller's loop less (each turn registers its waits again).
    /// What does not go waits for the socket in `poll_io`.
    pub async fn write_now(&mut self) -> io::Result<()> {
        match poll_fn(|cx| Poll::Ready(self.poll_write_out(cx))).await {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Writes what is owed (a close frame last, where the framing has one), ends our side and
    /// waits briefly for the client's, so its last bytes are read rather than answered with a
    /// reset.
    pub async fn finish(&mut self) {
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            if poll_fn(|cx| self.poll_write_out(cx)).await.is_err() {
                return;
            }
            let _ = self.stream.shutdown().await;
            // Read and discard until the client closes.
            while !self.eof {
                self.rbuf = BytesMut::new();
                match poll_fn(|cx| self.poll_io(cx)).await {
                    Io::Read | Io::Written => {}
                    Io::Eof | Io::Failed(_) => self.eof = true,
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    async fn conn(roused: bool) -> (Conn<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let conn = Conn::new(accepted.expect("accept").0, BytesMut::new()).nap_after(Some(Duration::from_secs(30)), roused);
        (conn, client.expect("connect"))
    }

    /// One look at the nap, now.
    async fn look(c: &mut Conn<TcpStream>, answered: bool) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(c.poll_nap(cx, Duration::from_secs(30), answered).is_ready())).await
    }

    /// A connection roused after a rest sleeps again as soon as what woke it is done and
    /// nothing it asked waits for an answer; not before it did anything (what woke it is not
    /// yet seen to), not while an answer is awaited, and never early when it was not roused.
    #[tokio::test]
    async fn a_roused_connection_sleeps_again_once_all_is_answered() {
        let (mut c, _client) = conn(true).await;
        assert!(!look(&mut c, true).await, "nothing done yet since the rouse");
        c.busy();
        assert!(!look(&mut c, false).await, "a request waits for its answer");
        c.wbuf.extend_from_slice(b"reply");
        assert!(!look(&mut c, true).await, "the answer is not written yet");
        c.wbuf.clear();
        assert!(look(&mut c, true).await, "answered and written: parked again at once");

        let (mut c, _client) = conn(false).await;
        c.busy();
        assert!(!look(&mut c, true).await, "new, not roused: it waits out park_after");
    }
}
