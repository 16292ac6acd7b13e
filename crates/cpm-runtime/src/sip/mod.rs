//! The SIP transport driver: one UDP socket and one TCP listener on the same address, the TCP
//! connections they lead to, and the event queue towards the core.
//!
//! Tasks: one UDP receive task, one TCP accept task, and per TCP connection one read task and
//! one write task (plus a connect task for connections we open). They share [`Shared`]: the
//! sockets, the connection table, the event sender and the shutdown flag.

mod tcp;
mod udp;

use core::fmt;
use core::net::{IpAddr, SocketAddr};
use core::sync::atomic::{AtomicU64, AtomicUsize};
use core::time::Duration;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use cpm_sip::{Limits, Message, ParseError};
use cpm_sip_core::{ConnId, Peer, Transmit, TransportKind};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use self::tcp::ConnTable;

/// Events waiting for [`SipTransport::recv`]; when full, receive tasks wait (backpressure).
const EVENT_QUEUE: usize = 8192;
/// Batches of datagrams waiting for the send task; when full, a batch fails
/// ([`NetEvent::SendFailed`] per datagram).
const SEND_BATCHES: usize = 4096;
/// How many times to look for a port free for both TCP and UDP when binding port 0.
const BIND_ATTEMPTS: usize = 16;

/// A budget of UDP datagrams per source address, checked before a datagram is parsed: a
/// flood from one address is dropped for the price of a hash lookup, so the receive task keeps
/// up and other sources' datagrams are not lost in the kernel's buffer. The cores' own limits
/// (per-source request rates, transactions) come after, on what passes.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct UdpFloodGuard {
    /// Datagrams per second one source address may send on average.
    pub packets_per_sec: u32,
    /// Datagrams one source may send at once.
    pub burst: u32,
    /// Address ranges `(addr, prefix)` with no budget (trusted peers, peer cores).
    pub exempt: Vec<(IpAddr, u8)>,
}

impl UdpFloodGuard {
    fn is_exempt(&self, ip: IpAddr) -> bool {
        self.exempt
            .iter()
            .any(|&(net, prefix)| in_range(net, prefix, ip))
    }
}

/// Whether `ip` is in `net/prefix`.
fn in_range(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// Settings of a [`SipTransport`].
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct SipTransportConfig {
    /// Address for both the UDP socket and the TCP listener. Port 0 picks a port free for both.
    pub listen: SocketAddr,
    /// Parser limits; they also bound what a TCP connection can make us buffer.
    pub limits: Limits,
    /// A TCP connection with no traffic either way for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Most TCP connections open at once, accepted and opened together. When an accepted
    /// connection would pass it, room is made by closing first an accepted connection that
    /// never delivered a complete message (the oldest), else the one idle longest (if idle
    /// for a second at least); with none to close, the new connection is closed at once.
    /// Sends that need a new connection beyond it fail.
    pub max_connections: usize,
    /// Most accepted TCP connections from one IP address at once; more are closed at once.
    pub max_connections_per_source: usize,
    /// How long a TCP message may take to arrive once its first byte has: the header section
    /// and the body must be complete by then, and an accepted connection must deliver its
    /// first message within this of being accepted (slow-loris defence).
    pub tcp_message_timeout: Duration,
    /// Most messages queued for one TCP connection (and UDP sends waiting for the socket);
    /// beyond it a send fails with [`NetEvent::SendFailed`].
    pub send_queue_per_conn: usize,
    /// UDP socket receive and send buffer size asked of the kernel (capped there by
    /// `net.core.rmem_max`/`wmem_max`). A burst the receive task cannot take at once waits
    /// here instead of being dropped: 212 KiB (Linux's default) is 40 ms of 5 MB/s traffic.
    pub udp_buffer_bytes: usize,
    /// Per-source datagram budget before parsing; `None`: none.
    pub udp_flood_guard: Option<UdpFloodGuard>,
}

impl SipTransportConfig {
    /// Listens on `listen`, with the default limits, a 300 s idle timeout, 10 000 connections
    /// and 1024 queued messages per connection.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            limits: Limits::default(),
            tcp_idle_timeout: Duration::from_secs(300),
            max_connections: 10_000,
            max_connections_per_source: 256,
            tcp_message_timeout: Duration::from_secs(10),
            send_queue_per_conn: 1024,
            udp_buffer_bytes: 4 * 1024 * 1024,
            udp_flood_guard: None,
        }
    }
}

impl Default for SipTransportConfig {
    /// [`SipTransportConfig::new`] on `0.0.0.0:5060`, the SIP port (RFC 3261 section 19.1.2).
    fn default() -> Self {
        Self::new(SocketAddr::from(([0, 0, 0, 0], 5060)))
    }
}

/// What happened on the network, for the core to handle.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum NetEvent {
    /// A message arrived. On TCP `peer.conn` names the connection.
    Message {
        /// Where it came from.
        peer: Peer,
        /// The parsed message.
        message: Message,
    },
    /// Bytes that did not parse. The core decides what to answer ([`ParseError::verdict`]).
    ///
    /// After a [`Scope::Connection`](cpm_sip::Scope::Connection) error on TCP the connection
    /// reads nothing more; it stays open so the core can answer, until the core calls
    /// [`SipTransportHandle::close`] or the idle timeout passes.
    ParseError {
        /// Where it came from.
        peer: Peer,
        /// What is wrong.
        error: ParseError,
        /// The bad bytes, for copying Via, From, To, Call-ID and CSeq into the answer: the
        /// whole datagram on UDP; on TCP the header section of the bad message, or for a
        /// framing error what was buffered, at most `limits.max_head_len` octets.
        raw_head: Bytes,
    },
    /// One CRLF between messages on a stream. Two in a row are a ping to answer with one CRLF
    /// (RFC 5626 section 3.5.1); the core decides.
    KeepAlive {
        /// The connection it came on.
        peer: Peer,
    },
    /// A TCP connection closed, by the peer, by an error, by the idle timeout or by
    /// [`SipTransportHandle::close`]. Sent once per connection that opened.
    ConnectionClosed {
        /// The connection.
        conn: ConnId,
        /// Its remote address.
        addr: SocketAddr,
    },
    /// A [`Transmit`] could not be sent (socket error, full queue, connection limit, connect
    /// failure or timeout, connection closed before the bytes went out).
    SendFailed {
        /// The peer of the failed transmit, as the core gave it.
        transmit_peer: Peer,
        /// Why, for logs.
        reason: String,
    },
}

/// Which receiver of a sharded transport ([`SipTransport::bind_sharded`]) an event goes to:
/// `Some(i)` for the `i`-th, `None` for all of them. Called on the receive tasks, so it
/// must be quick and must not block; the node's router decides ([`NetEvent`] in, an index
/// out), the transport only follows.
pub type Dispatcher = Arc<dyn Fn(&NetEvent) -> Option<usize> + Send + Sync>;

/// What happened to TCP connections, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct TcpStats {
    /// Connections open now (accepted and opened).
    pub open: u64,
    /// Accepted connections closed at once: their address had
    /// [`SipTransportConfig::max_connections_per_source`] open.
    pub refused_per_source: u64,
    /// Accepted connections closed at once: the total limit was reached and none could be
    /// evicted.
    pub refused_full: u64,
    /// Connections closed to make room for a new one.
    pub evicted: u64,
    /// Connections closed because a message (or the first one) did not arrive in time.
    pub message_timeouts: u64,
    /// Connections closed by the idle timeout.
    pub idle_closed: u64,
}

#[derive(Debug, Default)]
struct TcpCounters {
    refused_per_source: AtomicU64,
    refused_full: AtomicU64,
    evicted: AtomicU64,
    message_timeouts: AtomicU64,
    idle_closed: AtomicU64,
}

/// State shared by the transport, its handles and its tasks.
struct Shared {
    config: SipTransportConfig,
    local_addr: SocketAddr,
    udp: Arc<UdpSocket>,
    /// Each event with when it was queued: the core measures how long it waited. One
    /// queue per receiver (shard), each bounded.
    events: Vec<mpsc::Sender<(std::time::Instant, NetEvent)>>,
    /// Which queue an event goes to, with more than one.
    dispatch: Option<Dispatcher>,
    shutdown: watch::Sender<bool>,
    conns: Mutex<ConnTable>,
    next_conn: AtomicU64,
    /// UDP sends waiting for the socket to become writable.
    udp_pending: AtomicUsize,
    /// Batches of datagrams for the send task ([`SipTransportHandle::send_batch`]).
    udp_batches: mpsc::Sender<Vec<Transmit>>,
    /// Datagrams dropped by the flood guard.
    udp_flood_dropped: AtomicU64,
    /// TCP counters.
    tcp: TcpCounters,
    /// Time base for the connections' last-activity stamps.
    epoch: Instant,
    runtime: tokio::runtime::Handle,
}

impl Shared {
    fn conns(&self) -> MutexGuard<'_, ConnTable> {
        // The table stays consistent under every early return, so a poisoned lock is usable.
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Queues an event for the core, waiting while the queue is full. `false` when the
    /// transport is shut down or dropped: the caller stops.
    async fn emit(&self, event: NetEvent, stop: &mut watch::Receiver<bool>) -> bool {
        self.emit_at(event, std::time::Instant::now(), stop).await
    }

    /// [`Shared::emit`] for an event that has been waiting since `since` (in the kernel's
    /// socket buffer): the core's queue delay counts that wait too.
    async fn emit_at(
        &self,
        event: NetEvent,
        since: std::time::Instant,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let queue = match (&self.dispatch, self.events.len()) {
            (_, 1) | (None, _) => Some(0),
            (Some(d), n) => d(&event).map(|i| i.min(n - 1)),
        };
        let Some(queue) = queue else {
            // To every receiver: a copy each, the last one moved.
            let last = self.events.len() - 1;
            for q in &self.events[..last] {
                if !Self::send_to(q, event.clone(), since, stop).await {
                    return false;
                }
            }
            return Self::send_to(&self.events[last], event, since, stop).await;
        };
        Self::send_to(&self.events[queue], event, since, stop).await
    }

    async fn send_to(
        queue: &mpsc::Sender<(std::time::Instant, NetEvent)>,
        event: NetEvent,
        since: std::time::Instant,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        tokio::select! {
            biased;
            () = stopped(stop) => false,
            sent = queue.send((since, event)) => sent.is_ok(),
        }
    }

    /// Reports a failed send from a context that cannot wait. A full event queue drops the
    /// report (the core's transaction timers still fire).
    fn report_send_failed(&self, transmit_peer: Peer, reason: String) {
        debug!(peer = ?transmit_peer, %reason, "send failed");
        let event = NetEvent::SendFailed {
            transmit_peer,
            reason,
        };
        // The failure of a send goes back to the shard that sent it: the first, when it
        // cannot be told (the report is only counted).
        if let Err(mpsc::error::TrySendError::Full((_, event))) =
            self.events[0].try_send((std::time::Instant::now(), event))
        {
            warn!(?event, "event queue full, dropping the send failure report");
        }
    }
}

pub(super) use crate::stream::stopped;

/// The SIP transport driver: UDP and TCP on one address, delivering [`NetEvent`]s.
///
/// Dropping it stops every task and closes the TCP listener and connections (the UDP socket
/// is released with the last [`SipTransportHandle`]).
pub struct SipTransport {
    shared: Arc<Shared>,
    events: mpsc::Receiver<(std::time::Instant, NetEvent)>,
}

impl SipTransport {
    /// Binds the TCP listener and the UDP socket on `config.listen` (port 0: one port free for
    /// both) and starts the receive tasks. Must be called within a tokio runtime.
    pub async fn bind(config: SipTransportConfig) -> io::Result<(Self, SipTransportHandle)> {
        let (mut transports, handle) = Self::bind_sharded(config, 1, None).await?;
        let transport = transports
            .pop()
            .ok_or_else(|| io::Error::other("no receiver"))?;
        Ok((transport, handle))
    }

    /// [`SipTransport::bind`] with `receivers` event queues (one per node shard, each
    /// bounded like the one of an unsharded transport): `dispatch` says which queue each
    /// event goes to. Dropping any of them stops the transport.
    pub async fn bind_sharded(
        config: SipTransportConfig,
        receivers: usize,
        dispatch: Option<Dispatcher>,
    ) -> io::Result<(Vec<Self>, SipTransportHandle)> {
        let (listener, udp) = bind_pair(config.listen, config.udp_buffer_bytes).await?;
        let local_addr = listener.local_addr()?;
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..receivers.max(1))
            .map(|_| mpsc::channel(EVENT_QUEUE))
            .unzip();
        let (batches_tx, batches) = mpsc::channel(SEND_BATCHES);
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            local_addr,
            udp: Arc::new(udp),
            events: senders,
            dispatch,
            shutdown,
            conns: Mutex::new(ConnTable::default()),
            next_conn: AtomicU64::new(1),
            udp_pending: AtomicUsize::new(0),
            udp_batches: batches_tx,
            udp_flood_dropped: AtomicU64::new(0),
            tcp: TcpCounters::default(),
            epoch: Instant::now(),
            runtime: tokio::runtime::Handle::current(),
        });
        shared.runtime.spawn(udp::recv_loop(Arc::clone(&shared)));
        shared
            .runtime
            .spawn(udp::send_loop(Arc::clone(&shared), batches));
        shared
            .runtime
            .spawn(tcp::accept_loop(Arc::clone(&shared), listener));
        info!(%local_addr, "SIP transport listening on UDP and TCP");
        let handle = SipTransportHandle {
            shared: Arc::clone(&shared),
        };
        let transports = receivers
            .into_iter()
            .map(|events| Self {
                shared: Arc::clone(&shared),
                events,
            })
            .collect();
        Ok((transports, handle))
    }

    /// The bound address, shared by UDP and TCP.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The next event from any transport.
    ///
    /// After shutdown the events already queued are still returned; then this never resolves,
    /// so a loop that can be shut down also waits on its own shutdown signal.
    pub async fn recv(&mut self) -> NetEvent {
        self.recv_stamped().await.1
    }

    /// [`SipTransport::recv`] with the time the event was queued (after the receive task
    /// parsed it): the difference to now is the queue delay, an overload signal.
    pub async fn recv_stamped(&mut self) -> (std::time::Instant, NetEvent) {
        match self.events.recv().await {
            Some(stamped) => stamped,
            // Cannot happen: `self.shared` holds a sender.
            None => core::future::pending().await,
        }
    }
}

impl SipTransport {
    /// The next event if one is already queued, without waiting: lets a loop handle a burst
    /// of events before it flushes its outputs and sleeps again.
    pub fn try_recv(&mut self) -> Option<NetEvent> {
        self.try_recv_stamped().map(|(_, e)| e)
    }

    /// How many events wait in this receiver's queue now.
    pub fn queued(&self) -> usize {
        self.events.len()
    }

    /// [`SipTransport::try_recv`] with the time the event was queued.
    pub fn try_recv_stamped(&mut self) -> Option<(std::time::Instant, NetEvent)> {
        self.events.try_recv().ok()
    }
}

impl Drop for SipTransport {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

impl fmt::Debug for SipTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipTransport")
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

/// Sends and closes on a [`SipTransport`]. Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct SipTransportHandle {
    shared: Arc<Shared>,
}

impl SipTransportHandle {
    /// Sends without blocking; a failure comes back as [`NetEvent::SendFailed`].
    ///
    /// UDP goes out at once (or from a task when the socket is busy). TCP goes to
    /// `peer.conn` if that connection is open, else to an open connection to `peer.addr`,
    /// else to a new connection (connected in a task, 5 s timeout) whose replies then arrive
    /// as events with its [`ConnId`].
    pub fn send(&self, transmit: Transmit) {
        if self.shared.is_shut_down() {
            debug!(peer = ?transmit.peer, "transport shut down, dropping transmit");
            return;
        }
        match transmit.peer.transport {
            TransportKind::Udp => udp::send(&self.shared, transmit),
            TransportKind::Tcp => tcp::send(&self.shared, transmit),
            // In-node hops are values between cores (`Handoff`); one here is a driver bug.
            TransportKind::Local(f) => {
                error!(
                    function = f.name(),
                    "an in-node hop reached the SIP transport"
                );
            }
        }
    }

    /// Sends many transmits without blocking, as [`SipTransportHandle::send`] would, but the
    /// UDP ones go to the transport's send task in one batch: the caller (the node's loop)
    /// wakes one task per batch and makes no system call per datagram, so the sockets' cost
    /// is paid on the runtime's threads instead of the core's.
    pub fn send_batch(&self, batch: Vec<Transmit>) {
        if batch.is_empty() {
            return;
        }
        if self.shared.is_shut_down() {
            debug!(n = batch.len(), "transport shut down, dropping transmits");
            return;
        }
        let (udp, other): (Vec<Transmit>, Vec<Transmit>) = batch
            .into_iter()
            .partition(|t| t.peer.transport == TransportKind::Udp);
        for t in other {
            self.send(t);
        }
        if udp.is_empty() {
            return;
        }
        if let Err(e) = self.shared.udp_batches.try_send(udp) {
            let (mpsc::error::TrySendError::Full(batch) | mpsc::error::TrySendError::Closed(batch)) =
                e;
            for t in batch {
                self.shared
                    .report_send_failed(t.peer, "UDP send queue full".to_owned());
            }
        }
    }

    /// Closes a TCP connection: no more sends go to it, what is queued is flushed (for up to
    /// 5 s), then it closes and [`NetEvent::ConnectionClosed`] follows. Unknown ids are ignored.
    pub fn close(&self, conn: ConnId) {
        tcp::close(&self.shared, conn);
    }

    /// Stops every task: receiving, accepting, connecting and writing. Idempotent.
    pub fn shutdown(&self) {
        if !self.shared.shutdown.send_replace(true) {
            info!(local_addr = %self.shared.local_addr, "SIP transport shutting down");
        }
    }

    /// The bound address, shared by UDP and TCP.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The TCP connections' counters.
    pub fn tcp_stats(&self) -> TcpStats {
        let c = &self.shared.tcp;
        let get = |a: &AtomicU64| a.load(core::sync::atomic::Ordering::Relaxed);
        TcpStats {
            open: self.shared.conns().len() as u64,
            refused_per_source: get(&c.refused_per_source),
            refused_full: get(&c.refused_full),
            evicted: get(&c.evicted),
            message_timeouts: get(&c.message_timeouts),
            idle_closed: get(&c.idle_closed),
        }
    }

    /// UDP datagrams dropped so far by the flood guard ([`UdpFloodGuard`]).
    pub fn udp_flood_dropped(&self) -> u64 {
        self.shared
            .udp_flood_dropped
            .load(core::sync::atomic::Ordering::Relaxed)
    }
}

impl fmt::Debug for SipTransportHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipTransportHandle")
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

/// Binds a TCP listener and a UDP socket on the same address. For port 0 the TCP listener
/// picks the port and UDP follows; if UDP finds it taken, try another.
async fn bind_pair(listen: SocketAddr, udp_buffer: usize) -> io::Result<(TcpListener, UdpSocket)> {
    if listen.port() != 0 {
        let listener = TcpListener::bind(listen).await?;
        let udp = bind_udp(listen, udp_buffer)?;
        return Ok((listener, udp));
    }
    let mut last_err = None;
    for _ in 0..BIND_ATTEMPTS {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        match bind_udp(addr, udp_buffer) {
            Ok(udp) => return Ok((listener, udp)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                debug!(%addr, "UDP port taken, trying another");
                last_err = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

/// A non-blocking UDP socket with the buffer sizes asked for (the kernel caps them; a refusal
/// is not an error: the default buffers still work).
fn bind_udp(addr: SocketAddr, buffer: usize) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(buffer) {
        debug!(error = %e, "UDP receive buffer size refused");
    }
    if let Err(e) = socket.set_send_buffer_size(buffer) {
        debug!(error = %e, "UDP send buffer size refused");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}
