//! Connections: the accept loop, the connect task, the connection table, and per connection
//! a read task (decoding, routing to shards, idle timeout, the end of the connection) and a
//! write task (a queue bounded in octets, flushed on close).
//!
//! A connection ends in its read task, which therefore sends its [`ConnEvent::Closed`].
//! Everyone else (a close from the core, a full queue, a write error) sets the connection's
//! `closing` flag and lets the read task finish.

use core::net::SocketAddr;
use core::pin::pin;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::time::Duration;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use cpm_msrp::{ConnEvent, ConnId, Decoder, Frame, Scope};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tracing::{debug, trace, warn};

use super::{Counters, Shared};
use crate::stream::{Activity, CLOSE_LINGER, accept_failed, drain_until_eof, stopped};

/// After a decode error that loses the framing, how long the core has to answer (its
/// [`cpm_msrp::ConnCommand::Send`]s, then its Close) before the connection closes anyway.
const ERROR_GRACE: Duration = Duration::from_secs(1);
/// Free space ensured in a connection's buffer before each read.
const READ_CHUNK: usize = 8 * 1024;
/// The smallest read buffer: what an idle connection holds (a session's connections are
/// mostly idle between messages, and a node holds thousands of them).
const READ_MIN: usize = 512;
/// Octets an in-process pipe holds in each direction before its writer waits (what a
/// socket buffer would).
const PIPE_CAPACITY: usize = 256 * 1024;

/// A connection in the table: the way to its writer.
pub(super) struct ConnEntry {
    /// The write task's queue. Only the table holds it: removing the entry lets the write
    /// task finish once the queue is drained. Bounded in octets by `ctl.queued`.
    tx: mpsc::UnboundedSender<Bytes>,
    ctl: Arc<ConnCtl>,
}

/// What the tasks of one connection (and the table) share.
struct ConnCtl {
    /// Set once the connection is to end: by [`close`], [`send`], the read or the write task.
    closing: watch::Sender<bool>,
    /// Last read or write.
    activity: Activity,
    /// Octets queued and not yet written.
    queued: AtomicUsize,
    /// Closed for a full queue: close at once, without flushing or lingering.
    overflow: AtomicBool,
}

impl ConnCtl {
    fn close(&self) {
        self.closing.send_replace(true);
    }

    fn overflowed(&self) -> bool {
        self.overflow.load(Ordering::Relaxed)
    }
}

/// A connection just entered in the table, before its tasks run.
struct NewConn {
    id: ConnId,
    rx: mpsc::UnboundedReceiver<Bytes>,
    ctl: Arc<ConnCtl>,
}

/// Enters a connection in the table, if there is room.
fn register(shared: &Shared) -> Option<NewConn> {
    let mut table = shared.conns();
    if table.len() >= shared.config.max_connections {
        return None;
    }
    let id = ConnId(shared.next_conn.fetch_add(1, Ordering::Relaxed));
    let (tx, rx) = mpsc::unbounded_channel();
    let (closing, _) = watch::channel(false);
    let ctl = Arc::new(ConnCtl {
        closing,
        activity: Activity::default(),
        queued: AtomicUsize::new(0),
        overflow: AtomicBool::new(false),
    });
    ctl.activity.touch(shared.epoch);
    table.insert(
        id,
        ConnEntry {
            tx,
            ctl: Arc::clone(&ctl),
        },
    );
    Some(NewConn { id, rx, ctl })
}

/// Queues octets on a connection's writer (see [`MsrpHandle::execute`](super::MsrpHandle::execute)).
pub(super) fn send(shared: &Shared, conn: ConnId, bytes: Bytes) {
    if bytes.is_empty() {
        return;
    }
    let mut table = shared.conns();
    let Some(entry) = table.get(&conn) else {
        trace!(
            conn = conn.0,
            len = bytes.len(),
            "MSRP send to a closed connection dropped"
        );
        return;
    };
    let len = bytes.len();
    let queued = entry.ctl.queued.fetch_add(len, Ordering::Relaxed) + len;
    if queued > shared.config.max_queued_bytes {
        if let Some(entry) = table.remove(&conn) {
            drop(table);
            entry.ctl.overflow.store(true, Ordering::Relaxed);
            entry.ctl.close();
            Counters::add(&shared.counters.queue_full, 1);
            warn!(conn = conn.0, queued, "MSRP write queue full, closing");
        }
        return;
    }
    if entry.tx.send(bytes).is_err() {
        // The write task has ended; the read task reports Closed.
        trace!(
            conn = conn.0,
            len, "MSRP send to a closing connection dropped"
        );
        return;
    }
    trace!(conn = conn.0, len, "MSRP queued");
}

/// Starts closing a connection: no more sends are taken, what is queued is flushed.
pub(super) fn close(shared: &Shared, conn: ConnId) {
    match shared.conns().remove(&conn) {
        Some(entry) => {
            debug!(conn = conn.0, "MSRP close requested");
            entry.ctl.close();
        }
        None => trace!(conn = conn.0, "MSRP close of an unknown connection ignored"),
    }
}

/// Accepts connections until shutdown; at the connection limit a new one is closed at once.
pub(super) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut stop = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(conn) = register(&shared) else {
                    Counters::add(&shared.counters.refused, 1);
                    warn!(%peer, "MSRP connection limit reached, refusing");
                    continue;
                };
                Counters::add(&shared.counters.accepted, 1);
                debug!(conn = conn.id.0, %peer, "MSRP accepted");
                set_nodelay(&stream, conn.id);
                let first = ConnEvent::Accepted {
                    conn: conn.id,
                    peer,
                };
                shared
                    .runtime
                    .spawn(serve(Arc::clone(&shared), conn, stream, 0, first));
            }
            Err(e) => {
                if !accept_failed(&e, "MSRP", &mut stop).await {
                    return;
                }
            }
        }
    }
}

/// Opens a connection for `shard`'s core and then serves it; answers `token` either way.
pub(super) async fn connect(shared: Arc<Shared>, shard: usize, token: u64, addr: SocketAddr) {
    let mut stop = shared.shutdown.subscribe();
    if shared.is_self(addr) {
        return connect_self(shared, shard, token, addr, &mut stop).await;
    }
    let connected = tokio::select! {
        biased;
        () = stopped(&mut stop) => return,
        r = timeout(shared.config.connect_timeout, TcpStream::connect(addr)) => r,
    };
    let stream = match connected {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            debug!(token, %addr, error = %e, "MSRP connect failed");
            shared
                .emit(shard, ConnEvent::ConnectFailed { token }, &mut stop)
                .await;
            return;
        }
        Err(_) => {
            debug!(token, %addr, "MSRP connect timed out");
            shared
                .emit(shard, ConnEvent::ConnectFailed { token }, &mut stop)
                .await;
            return;
        }
    };
    let Some(conn) = register(&shared) else {
        Counters::add(&shared.counters.refused, 1);
        warn!(token, %addr, "MSRP connection limit reached, dropping the new connection");
        shared
            .emit(shard, ConnEvent::ConnectFailed { token }, &mut stop)
            .await;
        return;
    };
    Counters::add(&shared.counters.connected, 1);
    debug!(conn = conn.id.0, token, %addr, "MSRP connected");
    set_nodelay(&stream, conn.id);
    let first = ConnEvent::Connected {
        token,
        conn: conn.id,
    };
    serve(shared, conn, stream, shard, first).await;
}

/// A connection to our own listener: both ends in process, joined by an in-memory pipe; the
/// listening side is reported as accepted, exactly as a TCP connection would be.
async fn connect_self(
    shared: Arc<Shared>,
    shard: usize,
    token: u64,
    addr: SocketAddr,
    stop: &mut watch::Receiver<bool>,
) {
    let Some(ours) = register(&shared) else {
        Counters::add(&shared.counters.refused, 1);
        shared
            .emit(shard, ConnEvent::ConnectFailed { token }, stop)
            .await;
        return;
    };
    let Some(theirs) = register(&shared) else {
        shared.conns().remove(&ours.id);
        Counters::add(&shared.counters.refused, 1);
        shared
            .emit(shard, ConnEvent::ConnectFailed { token }, stop)
            .await;
        return;
    };
    Counters::add(&shared.counters.connected, 1);
    Counters::add(&shared.counters.accepted, 1);
    debug!(
        conn = ours.id.0,
        peer_conn = theirs.id.0,
        token,
        "MSRP connected in process"
    );
    let (a, b) = tokio::io::duplex(PIPE_CAPACITY);
    let accepted = ConnEvent::Accepted {
        conn: theirs.id,
        peer: addr,
    };
    shared
        .runtime
        .spawn(serve(Arc::clone(&shared), theirs, b, 0, accepted));
    let first = ConnEvent::Connected {
        token,
        conn: ours.id,
    };
    serve(shared, ours, a, shard, first).await;
}

fn set_nodelay(stream: &TcpStream, id: ConnId) {
    if let Err(e) = stream.set_nodelay(true) {
        debug!(conn = id.0, error = %e, "TCP_NODELAY not set");
    }
}

/// Runs a connection: spawns its write task, reports `first` to the shard that `opener`
/// names, then reads until the connection ends. Generic over the stream so that a TLS
/// stream (`msrps`) wrapped around the TCP one goes through the same code.
async fn serve<S>(shared: Arc<Shared>, conn: NewConn, stream: S, opener: usize, first: ConnEvent)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    conn.ctl.activity.touch(shared.epoch);
    let (rd, wr) = tokio::io::split(stream);
    shared.runtime.spawn(write_loop(
        Arc::clone(&shared),
        conn.id,
        wr,
        conn.rx,
        Arc::clone(&conn.ctl),
    ));
    read_loop(shared, conn.id, rd, conn.ctl, opener, first).await;
}

/// Which shards have heard of a connection, and which one the message being read goes to.
struct Route {
    /// By shard index: had an event of this connection (or opened it).
    told: Vec<bool>,
    /// The shard of the current message's head, until its end-line.
    current: Option<usize>,
}

impl Route {
    fn new(shards: usize, opener: usize) -> Self {
        let mut told = vec![false; shards];
        told[opener] = true;
        Self {
            told,
            current: None,
        }
    }

    /// The shard a frame goes to.
    fn frame(&mut self, shared: &Shared, frame: &Frame) -> usize {
        let shard = match frame {
            Frame::Head(head) => {
                let shard = shared.dispatch(head);
                self.current = Some(shard);
                shard
            }
            Frame::Data(_) => self.current.unwrap_or(0),
            Frame::End { .. } => self.current.take().unwrap_or(0),
        };
        self.told[shard] = true;
        shard
    }

    /// The shard a message-scoped error goes to.
    fn message_error(&mut self) -> usize {
        let shard = self.current.unwrap_or(0);
        self.told[shard] = true;
        shard
    }

    /// Every shard that has heard of the connection.
    fn all(&self) -> impl Iterator<Item = usize> + '_ {
        self.told
            .iter()
            .enumerate()
            .filter(|(_, t)| **t)
            .map(|(i, _)| i)
    }
}

/// Why a connection's read task ended.
#[derive(Clone, Copy, Debug)]
enum End {
    /// `closing` was set: the core closed it, its queue overflowed, or writing failed.
    Local,
    /// No traffic either way for the idle timeout.
    Idle,
    /// Framing was lost and the core did not close within [`ERROR_GRACE`].
    FramingLost,
    /// The peer closed its side.
    Peer,
    /// Reading failed.
    Error,
}

/// Reports `first`, then reads, decodes and reports until the connection ends, then reports
/// the end to every shard that heard of it.
async fn read_loop<R: AsyncRead>(
    shared: Arc<Shared>,
    id: ConnId,
    mut rd: ReadHalf<R>,
    ctl: Arc<ConnCtl>,
    opener: usize,
    first: ConnEvent,
) {
    let mut stop = shared.shutdown.subscribe();
    let mut closing = ctl.closing.subscribe();
    let idle = shared.config.idle_timeout;
    let opener = shared.shard(opener);
    let mut route = Route::new(shared.events.len(), opener);
    if !shared.emit(opener, first, &mut stop).await {
        return;
    }
    let mut decoder = Decoder::new(shared.config.limits);
    let mut buf = BytesMut::new();
    // The next read's size: doubled while reads fill it, halved while they do not come
    // near, between READ_MIN and READ_CHUNK.
    let mut want = READ_MIN;
    // After a decode error that loses the framing nothing more is read; the connection
    // waits for the core's close until this deadline.
    let mut framing_lost: Option<Instant> = None;
    let end = loop {
        while framing_lost.is_none() {
            let error = match decoder.decode(&mut buf) {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    let shard = route.frame(&shared, &frame);
                    trace!(conn = id.0, shard, ?frame, "MSRP frame");
                    if !shared
                        .emit(shard, ConnEvent::Frame { conn: id, frame }, &mut stop)
                        .await
                    {
                        return;
                    }
                    continue;
                }
                Err(error) => error,
            };
            debug!(conn = id.0, %error, scope = ?error.scope(), "MSRP decode error");
            if error.scope() == Scope::Message {
                let shard = route.message_error();
                if !shared
                    .emit(shard, ConnEvent::Error { conn: id, error }, &mut stop)
                    .await
                {
                    return;
                }
                continue;
            }
            buf = BytesMut::new();
            framing_lost = Some(Instant::now() + ERROR_GRACE);
            for shard in route.all() {
                let event = ConnEvent::Error {
                    conn: id,
                    error: error.clone(),
                };
                if !shared.emit(shard, event, &mut stop).await {
                    return;
                }
            }
        }
        if framing_lost.is_none() {
            if buf.is_empty() && buf.capacity() > want {
                // Everything read was handed on: give back what a burst grew the buffer to
                // (the frames handed on keep their own octets alive).
                buf = BytesMut::new();
            }
            buf.reserve(want);
        }
        let idle_deadline = ctl.activity.idle_deadline(shared.epoch, idle);
        let deadline = framing_lost.map_or(idle_deadline, |g| g.min(idle_deadline));
        tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            _ = closing.wait_for(|&c| c) => break End::Local,
            read = rd.read_buf(&mut buf), if framing_lost.is_none() => match read {
                Ok(0) => break End::Peer,
                Ok(n) => {
                    if n >= want {
                        want = (want * 2).min(READ_CHUNK);
                    } else if n < want / 4 {
                        want = (want / 2).max(READ_MIN);
                    }
                    ctl.activity.touch(shared.epoch);
                    Counters::add(&shared.counters.bytes_in, n as u64);
                    trace!(conn = id.0, n, "MSRP read");
                }
                Err(e) => {
                    debug!(conn = id.0, error = %e, "MSRP read error");
                    break End::Error;
                }
            },
            () = sleep_until(deadline) => {
                let now = Instant::now();
                if framing_lost.is_some_and(|g| g <= now) {
                    break End::FramingLost;
                }
                // The write task may have moved the idle deadline meanwhile.
                if ctl.activity.idle_deadline(shared.epoch, idle) <= now {
                    break End::Idle;
                }
            }
        }
    };
    if let End::Idle = end {
        Counters::add(&shared.counters.idle_closed, 1);
    }
    ctl.close();
    shared.conns().remove(&id);
    debug!(conn = id.0, reason = ?end, "MSRP connection closed");
    for shard in route.all() {
        if !shared
            .emit(shard, ConnEvent::Closed { conn: id }, &mut stop)
            .await
        {
            return;
        }
    }
    // A connection we closed is drained so our last answer is not lost to a reset; one whose
    // peer did not read gives its descriptor back at once.
    if matches!(end, End::Local | End::Idle | End::FramingLost) && !ctl.overflowed() {
        drain_until_eof(rd, &mut stop).await;
    }
}

/// How one write ended.
enum Written {
    Done,
    /// Shut down, or the queue overflowed: stop without flushing.
    Abort,
    Failed,
}

/// Writes queued octets until the connection closes; then flushes what is queued (within
/// [`CLOSE_LINGER`], unless the queue overflowed) and closes the sending side.
async fn write_loop<W: AsyncWrite>(
    shared: Arc<Shared>,
    id: ConnId,
    mut wr: WriteHalf<W>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    ctl: Arc<ConnCtl>,
) {
    let mut stop = shared.shutdown.subscribe();
    let mut closing = ctl.closing.subscribe();
    // Set once the connection is closing: the flush must end by then.
    let mut linger: Option<Instant> = None;
    loop {
        let next = if linger.is_some() {
            rx.try_recv().ok()
        } else {
            tokio::select! {
                biased;
                () = stopped(&mut stop) => return,
                // `None`: the entry left the table and the queue is empty.
                b = rx.recv() => b,
                _ = closing.wait_for(|&c| c) => {
                    if ctl.overflowed() {
                        return;
                    }
                    linger = Some(Instant::now() + CLOSE_LINGER);
                    continue;
                }
            }
        };
        let Some(bytes) = next else {
            break;
        };
        match write(&mut wr, &bytes, &ctl, &mut stop, &mut closing, &mut linger).await {
            Written::Done => {
                ctl.queued.fetch_sub(bytes.len(), Ordering::Relaxed);
                ctl.activity.touch(shared.epoch);
                Counters::add(&shared.counters.bytes_out, bytes.len() as u64);
                trace!(conn = id.0, len = bytes.len(), "MSRP sent");
            }
            Written::Abort => return,
            Written::Failed => {
                ctl.close();
                return;
            }
        }
    }
    ctl.close();
    let deadline = linger.unwrap_or_else(|| Instant::now() + CLOSE_LINGER);
    tokio::select! {
        biased;
        () = stopped(&mut stop) => {}
        r = timeout_at(deadline, wr.shutdown()) => {
            if !matches!(r, Ok(Ok(()))) {
                debug!(conn = id.0, "MSRP shutdown of the sending side failed");
            }
        }
    }
}

/// Writes one piece; once the connection is closing, only until the linger deadline.
async fn write<W: AsyncWrite>(
    wr: &mut WriteHalf<W>,
    bytes: &[u8],
    ctl: &ConnCtl,
    stop: &mut watch::Receiver<bool>,
    closing: &mut watch::Receiver<bool>,
    linger: &mut Option<Instant>,
) -> Written {
    let mut writing = pin!(wr.write_all(bytes));
    loop {
        let deadline = *linger;
        tokio::select! {
            biased;
            () = stopped(stop) => return Written::Abort,
            r = &mut writing => {
                return match r {
                    Ok(()) => Written::Done,
                    Err(e) => {
                        debug!(error = %e, "MSRP write failed");
                        Written::Failed
                    }
                };
            }
            _ = closing.wait_for(|&c| c), if deadline.is_none() => {
                if ctl.overflowed() {
                    return Written::Abort;
                }
                *linger = Some(Instant::now() + CLOSE_LINGER);
            }
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                debug!("MSRP connection closed before the queue was flushed");
                return Written::Failed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_keeps_a_message_on_its_heads_shard_and_remembers_every_shard() {
        let mut route = Route::new(3, 2);
        assert_eq!(route.message_error(), 0);
        route.current = Some(1);
        assert_eq!(route.message_error(), 1);
        assert_eq!(route.all().collect::<Vec<_>>(), vec![0, 1, 2]);
    }
}
