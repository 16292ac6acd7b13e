//! TCP: the accept loop, the connection table, and per connection a read task (framing,
//! idle timeout, end of the connection) and a write task (a bounded queue, flushed on close).
//! Connections we open get a connect task first.
//!
//! A connection ends in its read task, which therefore sends the one
//! [`NetEvent::ConnectionClosed`]. Everyone else (a close from the core, a write error) sets
//! the connection's `closing` flag and lets the read task finish.

use core::net::{IpAddr, SocketAddr};
use core::pin::pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use cpm_sip::{Frame, Limits, Scope, StreamFramer};
use cpm_sip_core::guard::source_key;
use cpm_sip_core::{ConnId, Peer, Transmit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tracing::{debug, trace, warn};

use super::{NetEvent, Shared};
use crate::stream::{
    Activity, CLOSE_LINGER, accept_failed, drain_until_eof, millis_since, stopped,
};

/// How long an outbound connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Free space ensured in a connection's buffer before each read.
const READ_CHUNK: usize = 8 * 1024;
/// A connection active more recently than this is never evicted to make room.
const EVICT_MIN_IDLE_MS: u64 = 1000;

/// The open (and opening) connections, by id and by remote address.
#[derive(Default)]
pub(super) struct ConnTable {
    by_id: HashMap<ConnId, ConnEntry>,
    /// Oldest first; sends without a connection id take the newest.
    by_addr: HashMap<SocketAddr, Vec<ConnId>>,
    /// Accepted connections open per source (host, or IPv6 /64: `guard::source_key`).
    inbound_by_ip: HashMap<IpAddr, usize>,
}

struct ConnEntry {
    addr: SocketAddr,
    /// The write task's queue. Only the table holds it: removing the entry lets the write task
    /// finish once the queue is drained.
    tx: mpsc::Sender<Transmit>,
    ctl: Arc<ConnCtl>,
    /// Accepted (not opened by us).
    inbound: bool,
    /// When it entered the table, in milliseconds since [`Shared::epoch`].
    opened_ms: u64,
}

impl ConnTable {
    /// Connections open (and opening).
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    fn remove(&mut self, id: ConnId) -> Option<ConnEntry> {
        let entry = self.by_id.remove(&id)?;
        if let Some(ids) = self.by_addr.get_mut(&entry.addr) {
            ids.retain(|&c| c != id);
            if ids.is_empty() {
                self.by_addr.remove(&entry.addr);
            }
        }
        let key = source_key(entry.addr.ip());
        if entry.inbound
            && let Some(n) = self.inbound_by_ip.get_mut(&key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.inbound_by_ip.remove(&key);
            }
        }
        Some(entry)
    }

    /// Accepted connections open from `ip` (its host, or its IPv6 /64).
    fn inbound_from(&self, ip: IpAddr) -> usize {
        self.inbound_by_ip
            .get(&source_key(ip))
            .copied()
            .unwrap_or(0)
    }

    /// The accepted connection to close to make room for a new one: the oldest that never
    /// delivered a complete message, else the one idle longest if it has been idle for
    /// [`EVICT_MIN_IDLE_MS`]. (A walk over the table: it only runs when the table is full.)
    fn eviction_candidate(&self, now_ms: u64) -> Option<ConnId> {
        let inbound = || self.by_id.iter().filter(|(_, e)| e.inbound);
        let unproven = inbound()
            .filter(|(_, e)| !e.ctl.proven.load(Ordering::Relaxed))
            .min_by_key(|(_, e)| e.opened_ms)
            .map(|(id, _)| *id);
        unproven.or_else(|| {
            inbound()
                .map(|(id, e)| (*id, e.ctl.activity.millis()))
                .filter(|(_, last)| now_ms.saturating_sub(*last) >= EVICT_MIN_IDLE_MS)
                .min_by_key(|(_, last)| *last)
                .map(|(id, _)| id)
        })
    }

    /// The connection a transmit goes to: its own if open, else the newest to its address.
    fn route(&self, peer: &Peer) -> Option<(ConnId, &ConnEntry)> {
        let id = peer
            .conn
            .filter(|c| self.by_id.contains_key(c))
            .or_else(|| self.by_addr.get(&peer.addr)?.last().copied())?;
        Some((id, self.by_id.get(&id)?))
    }
}

/// What the tasks of one connection share.
struct ConnCtl {
    /// Set once the connection is to end: by [`close`], the read task or the write task.
    closing: watch::Sender<bool>,
    /// Last read or write.
    activity: Activity,
    /// A complete message has arrived on it (it is a SIP peer, not an idle socket).
    proven: AtomicBool,
    /// Closed to make room: its descriptor is freed at once, without the linger.
    evicted: AtomicBool,
}

impl ConnCtl {
    fn close(&self) {
        self.closing.send_replace(true);
    }
}

/// A connection just entered in the table, before its tasks run.
struct NewConn {
    id: ConnId,
    addr: SocketAddr,
    rx: mpsc::Receiver<Transmit>,
    ctl: Arc<ConnCtl>,
    inbound: bool,
}

/// Enters a connection in the table, with `first` already queued.
fn register(
    shared: &Shared,
    table: &mut ConnTable,
    addr: SocketAddr,
    first: Option<Transmit>,
    inbound: bool,
) -> NewConn {
    let id = ConnId(shared.next_conn.fetch_add(1, Ordering::Relaxed));
    let (tx, rx) = mpsc::channel(shared.config.send_queue_per_conn.max(1));
    if let Some(transmit) = first
        && let Err(e) = tx.try_send(transmit)
    {
        // Unreachable: the queue is new, open, and holds at least one message.
        let transmit = e.into_inner();
        shared.report_send_failed(transmit.peer, "TCP send queue refused".to_owned());
    }
    let (closing, _) = watch::channel(false);
    let ctl = Arc::new(ConnCtl {
        closing,
        activity: Activity::default(),
        proven: AtomicBool::new(false),
        evicted: AtomicBool::new(false),
    });
    ctl.activity.touch(shared.epoch);
    table.by_id.insert(
        id,
        ConnEntry {
            addr,
            tx,
            ctl: Arc::clone(&ctl),
            inbound,
            opened_ms: millis_since(shared.epoch),
        },
    );
    table.by_addr.entry(addr).or_default().push(id);
    if inbound {
        *table
            .inbound_by_ip
            .entry(source_key(addr.ip()))
            .or_default() += 1;
    }
    NewConn {
        id,
        addr,
        rx,
        ctl,
        inbound,
    }
}

/// Queues a transmit on its connection, or opens one.
pub(super) fn send(shared: &Arc<Shared>, transmit: Transmit) {
    let mut table = shared.conns();
    if let Some((id, entry)) = table.route(&transmit.peer) {
        let len = transmit.payload.len();
        let refused = match entry.tx.try_send(transmit) {
            Ok(()) => {
                trace!(conn = id.0, len, "TCP queued");
                return;
            }
            Err(mpsc::error::TrySendError::Full(t)) => (t, "TCP send queue full"),
            Err(mpsc::error::TrySendError::Closed(t)) => (t, "TCP connection closing"),
        };
        drop(table);
        let (transmit, reason) = refused;
        shared.report_send_failed(transmit.peer, format!("{reason} (conn {})", id.0));
        return;
    }
    if table.by_id.len() >= shared.config.max_connections {
        drop(table);
        shared.report_send_failed(transmit.peer, "TCP connection limit reached".to_owned());
        return;
    }
    let addr = transmit.peer.addr;
    let conn = register(shared, &mut table, addr, Some(transmit), false);
    drop(table);
    debug!(conn = conn.id.0, %addr, "TCP connecting");
    shared.runtime.spawn(connect(Arc::clone(shared), conn));
}

/// Starts closing a connection (see [`SipTransportHandle::close`](super::SipTransportHandle::close)).
pub(super) fn close(shared: &Shared, conn: ConnId) {
    match shared.conns().remove(conn) {
        Some(entry) => {
            debug!(conn = conn.0, addr = %entry.addr, "TCP close requested");
            entry.ctl.close();
        }
        None => debug!(conn = conn.0, "TCP close of an unknown connection ignored"),
    }
}

/// Accepts connections until shutdown. Beyond the per-address limit a new connection is
/// closed at once; at the total limit an idle or silent one is evicted to make room (see
/// [`ConnTable::eviction_candidate`]), or the new one is closed when none can go.
pub(super) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut stop = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, addr)) => {
                let mut table = shared.conns();
                if table.inbound_from(addr.ip()) >= shared.config.max_connections_per_source {
                    drop(table);
                    shared
                        .tcp
                        .refused_per_source
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(%addr, "TCP connection limit of the address reached, refusing");
                    continue;
                }
                if table.by_id.len() >= shared.config.max_connections {
                    match table.eviction_candidate(millis_since(shared.epoch)) {
                        Some(victim) => {
                            if let Some(entry) = table.remove(victim) {
                                entry.ctl.evicted.store(true, Ordering::Relaxed);
                                entry.ctl.close();
                                shared.tcp.evicted.fetch_add(1, Ordering::Relaxed);
                                debug!(conn = victim.0, addr = %entry.addr, "TCP evicted for room");
                            }
                        }
                        None => {
                            drop(table);
                            shared.tcp.refused_full.fetch_add(1, Ordering::Relaxed);
                            warn!(%addr, "TCP connection limit reached, refusing");
                            continue;
                        }
                    }
                }
                let conn = register(&shared, &mut table, addr, None, true);
                drop(table);
                debug!(conn = conn.id.0, %addr, "TCP accepted");
                start(&shared, conn, stream);
            }
            Err(e) => {
                if !accept_failed(&e, "TCP", &mut stop).await {
                    return;
                }
            }
        }
    }
}

/// Opens an outbound connection; on failure every queued transmit is reported failed.
async fn connect(shared: Arc<Shared>, conn: NewConn) {
    let mut stop = shared.shutdown.subscribe();
    let addr = conn.addr;
    let connected = tokio::select! {
        biased;
        () = stopped(&mut stop) => return,
        r = timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)) => r,
    };
    let reason = match connected {
        Ok(Ok(stream)) => {
            debug!(conn = conn.id.0, %addr, "TCP connected");
            start(&shared, conn, stream);
            return;
        }
        Ok(Err(e)) => format!("TCP connect to {addr}: {e}"),
        Err(_) => format!("TCP connect to {addr}: timed out"),
    };
    debug!(conn = conn.id.0, %reason, "TCP connect failed");
    shared.conns().remove(conn.id);
    conn.ctl.close();
    let mut rx = conn.rx;
    fail_queued(&shared, &mut rx, &reason, &mut stop).await;
}

/// Spawns the read and write tasks of a connection.
fn start(shared: &Arc<Shared>, conn: NewConn, stream: TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        debug!(conn = conn.id.0, error = %e, "TCP_NODELAY not set");
    }
    conn.ctl.activity.touch(shared.epoch);
    let (rd, wr) = stream.into_split();
    shared.runtime.spawn(read_loop(
        Arc::clone(shared),
        conn.id,
        conn.addr,
        rd,
        Arc::clone(&conn.ctl),
        conn.inbound,
    ));
    shared.runtime.spawn(write_loop(
        Arc::clone(shared),
        conn.id,
        wr,
        conn.rx,
        conn.ctl,
    ));
}

/// Why a connection's read task ended.
#[derive(Clone, Copy, Debug)]
enum End {
    /// `closing` was set: the core closed it, or writing failed.
    Local,
    /// No traffic for the idle timeout.
    Idle,
    /// A message (or an accepted connection's first one) did not arrive in time.
    MessageTimeout,
    /// The peer closed its side.
    Peer,
    /// Reading failed.
    Error,
}

/// Reads, frames and reports until the connection ends, then reports the end.
async fn read_loop(
    shared: Arc<Shared>,
    id: ConnId,
    addr: SocketAddr,
    mut rd: OwnedReadHalf,
    ctl: Arc<ConnCtl>,
    inbound: bool,
) {
    let mut stop = shared.shutdown.subscribe();
    let mut closing = ctl.closing.subscribe();
    let limits = shared.config.limits;
    let idle = shared.config.tcp_idle_timeout;
    let message_timeout = shared.config.tcp_message_timeout;
    // An accepted connection must prove itself with a first message; after that each
    // message, once started, must complete in time (slow-loris defence).
    let mut first_deadline = inbound.then(|| Instant::now() + message_timeout);
    let mut partial_since: Option<Instant> = None;
    let peer = Peer::tcp(addr, Some(id));
    let mut framer = StreamFramer::new(limits);
    let mut buf = BytesMut::new();
    // After a framing error nothing more is read; the connection waits for the core's close.
    let mut framing_lost = false;
    let end = loop {
        while !framing_lost {
            let Some(event) = next_event(&mut framer, &mut buf, &mut framing_lost, peer, &limits)
            else {
                break;
            };
            // Whatever is still buffered now belongs to a message that started later.
            partial_since = None;
            if matches!(event, NetEvent::Message { .. }) {
                first_deadline = None;
                ctl.proven.store(true, Ordering::Relaxed);
            }
            if !shared.emit(event, &mut stop).await {
                return;
            }
        }
        if buf.is_empty() || framing_lost {
            partial_since = None;
        } else if partial_since.is_none() {
            partial_since = Some(Instant::now());
        }
        if !framing_lost {
            buf.reserve(READ_CHUNK);
        }
        let message_deadline = [first_deadline, partial_since.map(|t| t + message_timeout)]
            .into_iter()
            .flatten()
            .min();
        let idle_deadline = ctl.activity.idle_deadline(shared.epoch, idle);
        let deadline = message_deadline.map_or(idle_deadline, |m| m.min(idle_deadline));
        tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            _ = closing.wait_for(|&c| c) => break End::Local,
            read = rd.read_buf(&mut buf), if !framing_lost => match read {
                Ok(0) => break End::Peer,
                Ok(n) => {
                    ctl.activity.touch(shared.epoch);
                    trace!(conn = id.0, n, "TCP read");
                }
                Err(e) => {
                    debug!(conn = id.0, error = %e, "TCP read error");
                    break End::Error;
                }
            },
            () = sleep_until(deadline) => {
                let now = Instant::now();
                if message_deadline.is_some_and(|m| m <= now) {
                    break End::MessageTimeout;
                }
                // The write task may have moved the idle deadline meanwhile.
                if ctl.activity.idle_deadline(shared.epoch, idle) <= now {
                    break End::Idle;
                }
            }
        }
    };
    match end {
        End::MessageTimeout => {
            shared.tcp.message_timeouts.fetch_add(1, Ordering::Relaxed);
        }
        End::Idle => {
            shared.tcp.idle_closed.fetch_add(1, Ordering::Relaxed);
        }
        End::Local | End::Peer | End::Error => {}
    }
    ctl.close();
    shared.conns().remove(id);
    debug!(conn = id.0, %addr, reason = ?end, "TCP connection closed");
    let closed = NetEvent::ConnectionClosed { conn: id, addr };
    if !shared.emit(closed, &mut stop).await {
        return;
    }
    // A connection we closed is drained so our last answer is not lost to a reset; one that
    // was evicted or timed out (an attacker's, most likely) gives its descriptor back at once.
    if matches!(end, End::Local | End::Idle) && !ctl.evicted.load(Ordering::Relaxed) {
        drain_until_eof(rd, &mut stop).await;
    }
}

/// The next event in a connection's buffer, if a whole frame (or an error) is there.
fn next_event(
    framer: &mut StreamFramer,
    buf: &mut BytesMut,
    framing_lost: &mut bool,
    peer: Peer,
    limits: &Limits,
) -> Option<NetEvent> {
    // The framer consumes a message before parsing it, so a copy of its header section is
    // taken first, for the error report.
    let head = head_copy(buf, limits.max_head_len);
    let error = match framer.decode(buf) {
        Ok(None) => return None,
        Ok(Some(Frame::Message(message))) => {
            debug!(conn = ?peer.conn, addr = %peer.addr, "TCP message");
            return Some(NetEvent::Message { peer, message });
        }
        Ok(Some(Frame::KeepAlive)) => {
            trace!(conn = ?peer.conn, "TCP keep-alive");
            return Some(NetEvent::KeepAlive { peer });
        }
        Err(error) => error,
    };
    let raw_head = match error.scope() {
        Scope::Message => head.unwrap_or_default(),
        Scope::Connection => {
            let raw = Bytes::copy_from_slice(&buf[..buf.len().min(limits.max_head_len)]);
            *buf = BytesMut::new();
            *framing_lost = true;
            raw
        }
    };
    debug!(conn = ?peer.conn, addr = %peer.addr, %error, scope = ?error.scope(), "TCP parse error");
    Some(NetEvent::ParseError {
        peer,
        error,
        raw_head,
    })
}

/// A copy of the complete header section at the front of `buf` (with its empty line), if
/// there is one within the limit.
fn head_copy(buf: &[u8], max_head_len: usize) -> Option<Bytes> {
    if buf.starts_with(b"\r\n") {
        return None;
    }
    // The framer allows the header section (through the last header's CRLF) up to the
    // limit; the empty line's CRLF comes after.
    let window = &buf[..buf.len().min(max_head_len.saturating_add(2))];
    let end = memchr::memmem::find(window, b"\r\n\r\n")? + 4;
    Some(Bytes::copy_from_slice(&buf[..end]))
}

/// How one write ended.
enum Written {
    Done,
    Stopped,
    Failed(String),
}

/// Writes queued transmits until the connection closes; then flushes what is queued (within
/// [`CLOSE_LINGER`]) and closes the sending side.
async fn write_loop(
    shared: Arc<Shared>,
    id: ConnId,
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Transmit>,
    ctl: Arc<ConnCtl>,
) {
    let mut stop = shared.shutdown.subscribe();
    let mut closing = ctl.closing.subscribe();
    // Set once the connection is closing: the flush must end by then.
    let mut linger: Option<Instant> = None;
    let failure = loop {
        let next = if linger.is_some() {
            rx.try_recv().ok()
        } else {
            tokio::select! {
                biased;
                () = stopped(&mut stop) => return,
                // `None`: the entry left the table, so the connection is closing.
                t = rx.recv() => t,
                _ = closing.wait_for(|&c| c) => {
                    linger = Some(Instant::now() + CLOSE_LINGER);
                    continue;
                }
            }
        };
        let Some(transmit) = next else {
            break None;
        };
        let len = transmit.payload.len();
        match write(
            &mut wr,
            &transmit.payload,
            &mut stop,
            &mut closing,
            &mut linger,
        )
        .await
        {
            Written::Done => {
                ctl.activity.touch(shared.epoch);
                debug!(conn = id.0, len, "TCP sent");
            }
            Written::Stopped => return,
            Written::Failed(reason) => {
                debug!(conn = id.0, %reason, "TCP write failed");
                let failed = NetEvent::SendFailed {
                    transmit_peer: transmit.peer,
                    reason: reason.clone(),
                };
                if !shared.emit(failed, &mut stop).await {
                    return;
                }
                break Some(reason);
            }
        }
    };
    ctl.close();
    let reason = failure
        .as_deref()
        .unwrap_or("TCP connection closed before sending")
        .to_owned();
    fail_queued(&shared, &mut rx, &reason, &mut stop).await;
    if failure.is_none() {
        let deadline = linger.unwrap_or_else(|| Instant::now() + CLOSE_LINGER);
        tokio::select! {
            biased;
            () = stopped(&mut stop) => {}
            r = timeout_at(deadline, wr.shutdown()) => {
                if !matches!(r, Ok(Ok(()))) {
                    debug!(conn = id.0, "TCP shutdown of the sending side failed");
                }
            }
        }
    }
}

/// Writes one payload; once the connection is closing, only until the linger deadline.
async fn write(
    wr: &mut OwnedWriteHalf,
    payload: &[u8],
    stop: &mut watch::Receiver<bool>,
    closing: &mut watch::Receiver<bool>,
    linger: &mut Option<Instant>,
) -> Written {
    let mut writing = pin!(wr.write_all(payload));
    loop {
        let deadline = *linger;
        tokio::select! {
            biased;
            () = stopped(stop) => return Written::Stopped,
            r = &mut writing => {
                return match r {
                    Ok(()) => Written::Done,
                    Err(e) => Written::Failed(format!("TCP write: {e}")),
                };
            }
            _ = closing.wait_for(|&c| c), if deadline.is_none() => {
                *linger = Some(Instant::now() + CLOSE_LINGER);
            }
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                return Written::Failed("TCP connection closed before the message was sent".to_owned());
            }
        }
    }
}

/// Stops a queue and reports every transmit still in it as failed.
async fn fail_queued(
    shared: &Shared,
    rx: &mut mpsc::Receiver<Transmit>,
    reason: &str,
    stop: &mut watch::Receiver<bool>,
) {
    rx.close();
    while let Ok(transmit) = rx.try_recv() {
        let failed = NetEvent::SendFailed {
            transmit_peer: transmit.peer,
            reason: reason.to_owned(),
        };
        if !shared.emit(failed, stop).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_copy_takes_the_header_section() {
        let buf = b"OPTIONS sip:a@b SIP/2.0\r\nl: 2\r\n\r\nhiNEXT";
        let head = head_copy(buf, 1024).expect("complete head");
        assert_eq!(&head[..], &b"OPTIONS sip:a@b SIP/2.0\r\nl: 2\r\n\r\n"[..]);
        assert_eq!(head_copy(b"\r\nOPTIONS", 1024), None);
        assert_eq!(head_copy(b"OPTIONS sip:a@b SIP/2.0\r\n", 1024), None);
        // Over the limit: the framer rejects it as a framing error, no copy needed.
        assert_eq!(head_copy(buf, 8), None);
    }
}
