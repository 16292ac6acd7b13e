//! The MSRP transport driver (RFC 4975 over TCP): a listener, the connections it accepts and
//! the ones the cores ask for, and one bounded event queue per shard.
//!
//! The transport only moves bytes and frames the stream with [`cpm_msrp::Decoder`]; it
//! keeps the connection contract of `cpm-msrp`: it reports [`ConnEvent`]s and executes
//! [`ConnCommand`]s. What to answer, which session a head
//! belongs to and when to close a connection for protocol reasons is the cores' business.
//!
//! Tasks: one accept task; per connection one read task (which also reports the
//! connection's first event, [`ConnEvent::Accepted`] or [`ConnEvent::Connected`], so a slow
//! shard never stalls the accept loop) and one write task; a connect task per
//! [`ConnCommand::Connect`] that becomes the connection's read task. They share [`Shared`].
//!
//! TLS (`msrps`) comes later: the read and write tasks are generic over the stream
//! ([`conn::serve`]), so a TLS stream wrapped around the accepted or connected
//! [`tokio::net::TcpStream`] goes through the same code.

mod conn;

use core::fmt;
use core::net::SocketAddr;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cpm_msrp::{ConnCommand, ConnEvent, ConnId, Head, Limits};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, trace};

use self::conn::ConnEntry;

/// Settings of an [`MsrpTransport`].
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct MsrpTransportConfig {
    /// Address of the TCP listener. Port 0 picks a free port ([`MsrpHandle::local_addr`]).
    pub listen: SocketAddr,
    /// Decoder limits of every connection: they bound what a connection costs in memory.
    pub limits: Limits,
    /// Most connections open at once, accepted and opened together. Beyond it an accepted
    /// connection is closed at once and a [`ConnCommand::Connect`] is answered
    /// [`ConnEvent::ConnectFailed`] (both counted in [`MsrpStats::refused`]).
    pub max_connections: usize,
    /// A connection with nothing read and nothing written for this long is closed
    /// ([`ConnEvent::Closed`]).
    pub idle_timeout: Duration,
    /// Most octets queued for one connection's writer (sent by the core, not yet taken by
    /// the kernel). A send that would pass it closes the connection at once, without
    /// flushing, and [`ConnEvent::Closed`] follows: a peer that does not read cannot make us
    /// buffer without bound. One [`ConnCommand::Send`] larger than this always closes.
    pub max_queued_bytes: usize,
    /// How long a [`ConnCommand::Connect`] may take before [`ConnEvent::ConnectFailed`].
    pub connect_timeout: Duration,
    /// Events queued per shard. When a shard's queue is full, the read tasks with an event
    /// for it wait and stop reading: TCP backpressure reaches the peers.
    pub event_capacity: usize,
    /// IP addresses of this host that reach the listener when it is bound to a wildcard
    /// address (the advertised one). A [`ConnCommand::Connect`] to the listener (its bound
    /// address, or one of these with its port) becomes an in-process pipe
    /// (`tokio::io::duplex`): the node's PF relaying to its own other PF costs no socket, no
    /// kernel copy and no file descriptor.
    pub own_ips: Vec<core::net::IpAddr>,
}

impl MsrpTransportConfig {
    /// Listens on `listen` with the default decoder limits, 10 000 connections, a 30 min
    /// idle timeout, 16 MiB of queued writes per connection, a 5 s connect timeout and 4096
    /// queued events per shard.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            limits: Limits::default(),
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(30 * 60),
            max_queued_bytes: 16 * 1024 * 1024,
            connect_timeout: Duration::from_secs(5),
            event_capacity: 4096,
            own_ips: Vec::new(),
        }
    }
}

impl Default for MsrpTransportConfig {
    /// [`MsrpTransportConfig::new`] on `0.0.0.0:2855`, the MSRP port (RFC 4975 section 15.2).
    fn default() -> Self {
        Self::new(SocketAddr::from(([0, 0, 0, 0], 2855)))
    }
}

/// Which shard gets a head (and the Data/End frames after it on that connection). Called
/// on the read tasks, so it must be quick and must not block; the node's router decides
/// (from the To-Path's session id, typically), the transport only follows. An index past the
/// last shard means the last one.
pub type MsrpDispatcher = Arc<dyn Fn(&Head) -> usize + Send + Sync>;

/// What happened to the connections, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct MsrpStats {
    /// Connections open now (accepted and opened).
    pub open: u64,
    /// Connections accepted so far.
    pub accepted: u64,
    /// Connections opened for a [`ConnCommand::Connect`] so far.
    pub connected: u64,
    /// Connections refused at [`MsrpTransportConfig::max_connections`]: accepted ones
    /// closed at once, and connects answered [`ConnEvent::ConnectFailed`].
    pub refused: u64,
    /// Connections closed because their write queue passed
    /// [`MsrpTransportConfig::max_queued_bytes`].
    pub queue_full: u64,
    /// Connections closed by the idle timeout.
    pub idle_closed: u64,
    /// Octets read from all connections.
    pub bytes_in: u64,
    /// Octets written to all connections.
    pub bytes_out: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    connected: AtomicU64,
    refused: AtomicU64,
    queue_full: AtomicU64,
    idle_closed: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// State shared by the transport, its handles and its tasks.
struct Shared {
    config: MsrpTransportConfig,
    local_addr: SocketAddr,
    /// One bounded queue per shard.
    events: Vec<mpsc::Sender<ConnEvent>>,
    dispatch: MsrpDispatcher,
    shutdown: watch::Sender<bool>,
    conns: Mutex<HashMap<ConnId, ConnEntry>>,
    next_conn: AtomicU64,
    counters: Counters,
    /// Time base for the connections' last-activity stamps.
    epoch: Instant,
    runtime: tokio::runtime::Handle,
}

impl Shared {
    fn conns(&self) -> MutexGuard<'_, HashMap<ConnId, ConnEntry>> {
        // Every change to the table is a single insert or remove: a poisoned lock is usable.
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `addr` names our own listener.
    fn is_self(&self, addr: SocketAddr) -> bool {
        addr == self.local_addr
            || (self.local_addr.ip().is_unspecified()
                && addr.port() == self.local_addr.port()
                && (addr.ip().is_loopback() || self.config.own_ips.contains(&addr.ip())))
    }

    fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// The shard index `i` names, clamped to the last one.
    fn shard(&self, i: usize) -> usize {
        i.min(self.events.len() - 1)
    }

    /// The shard a head goes to.
    fn dispatch(&self, head: &Head) -> usize {
        self.shard((self.dispatch)(head))
    }

    /// Queues an event for a shard, waiting while its queue is full. `false` when the
    /// transport is shut down or dropped: the caller stops.
    async fn emit(&self, shard: usize, event: ConnEvent, stop: &mut watch::Receiver<bool>) -> bool {
        let queue = &self.events[self.shard(shard)];
        tokio::select! {
            biased;
            () = stopped(stop) => false,
            sent = queue.send(event) => sent.is_ok(),
        }
    }
}

pub(super) use crate::stream::stopped;

/// The MSRP transport of one shard: its event source.
///
/// Dropping any shard's transport stops the whole transport (its queue would otherwise fill
/// and stall every connection with an event for it).
pub struct MsrpTransport {
    shared: Arc<Shared>,
    shard: usize,
    events: mpsc::Receiver<ConnEvent>,
    stop: watch::Receiver<bool>,
}

impl MsrpTransport {
    /// Binds the listener on `config.listen` and starts accepting, with one shard. Must be
    /// called within a tokio runtime.
    pub async fn bind(config: MsrpTransportConfig) -> io::Result<(Self, MsrpHandle)> {
        let (mut transports, handle) = Self::bind_sharded(config, 1, Arc::new(|_| 0)).await?;
        let transport = transports
            .pop()
            .ok_or_else(|| io::Error::other("no shard"))?;
        Ok((transport, handle))
    }

    /// [`MsrpTransport::bind`] with `shards` event queues (at least one), each bounded by
    /// [`MsrpTransportConfig::event_capacity`]. Routing, per connection:
    ///
    /// * [`Frame::Head`](cpm_msrp::Frame::Head) goes to `dispatch(&head)`, and the
    ///   [`Frame::Data`](cpm_msrp::Frame::Data) and [`Frame::End`](cpm_msrp::Frame::End)
    ///   after it to the same shard;
    /// * an [`ConnEvent::Error`] with [`Scope::Message`](cpm_msrp::Scope::Message) to the
    ///   shard of the message being read, else (the usual case: its head was refused) to
    ///   shard 0;
    /// * an [`ConnEvent::Error`] with [`Scope::Connection`](cpm_msrp::Scope::Connection) and
    ///   the [`ConnEvent::Closed`] to every shard that had an event of the connection, and to
    ///   the one that opened it, so each can forget it;
    /// * [`ConnEvent::Accepted`] to shard 0 only (a shard learns of an accepted connection
    ///   with its first frame);
    /// * [`ConnEvent::Connected`] and [`ConnEvent::ConnectFailed`] to the shard that asked.
    ///
    /// The events of one connection arrive in order on each shard.
    pub async fn bind_sharded(
        config: MsrpTransportConfig,
        shards: usize,
        dispatch: MsrpDispatcher,
    ) -> io::Result<(Vec<Self>, MsrpHandle)> {
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let capacity = config.event_capacity.max(1);
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..shards.max(1)).map(|_| mpsc::channel(capacity)).unzip();
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            local_addr,
            events: senders,
            dispatch,
            shutdown,
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            counters: Counters::default(),
            epoch: Instant::now(),
            runtime: tokio::runtime::Handle::current(),
        });
        shared
            .runtime
            .spawn(conn::accept_loop(Arc::clone(&shared), listener));
        info!(%local_addr, shards = shared.events.len(), "MSRP transport listening on TCP");
        let handle = MsrpHandle {
            shared: Arc::clone(&shared),
        };
        let transports = receivers
            .into_iter()
            .enumerate()
            .map(|(shard, events)| Self {
                stop: shared.shutdown.subscribe(),
                shared: Arc::clone(&shared),
                shard,
                events,
            })
            .collect();
        Ok((transports, handle))
    }

    /// The next event for this shard; `None` once the transport is shut down (events still
    /// queued then are dropped: nothing they carry has been acknowledged).
    pub async fn recv(&mut self) -> Option<ConnEvent> {
        tokio::select! {
            biased;
            () = stopped(&mut self.stop) => None,
            event = self.events.recv() => event,
        }
    }

    /// The next event if one is already queued, without waiting (`None` after shutdown too):
    /// lets a loop handle a burst of events before it flushes its outputs and sleeps again.
    pub fn try_recv(&mut self) -> Option<ConnEvent> {
        if self.shared.is_shut_down() {
            return None;
        }
        self.events.try_recv().ok()
    }

    /// This transport's shard index.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// How many events wait in this shard's queue now.
    pub fn queued(&self) -> usize {
        self.events.len()
    }
}

impl Drop for MsrpTransport {
    fn drop(&mut self) {
        shutdown(&self.shared);
    }
}

impl fmt::Debug for MsrpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MsrpTransport")
            .field("local_addr", &self.shared.local_addr)
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

/// Executes the cores' [`ConnCommand`]s on an [`MsrpTransport`]. Cheap to clone; usable from
/// any thread.
#[derive(Clone)]
pub struct MsrpHandle {
    shared: Arc<Shared>,
}

impl MsrpHandle {
    /// Executes a command for the core of `shard` (past the last shard: the last one);
    /// never blocks, never waits.
    ///
    /// * [`ConnCommand::Send`] queues the octets on the connection's writer. To an unknown or
    ///   closed connection they are dropped silently (its core gets, or has got,
    ///   [`ConnEvent::Closed`]); past [`MsrpTransportConfig::max_queued_bytes`] the connection
    ///   is closed.
    /// * [`ConnCommand::Connect`] connects in a task; [`ConnEvent::Connected`] or
    ///   [`ConnEvent::ConnectFailed`] with the token goes to `shard`.
    /// * [`ConnCommand::Close`] stops taking sends, flushes what is queued (within 5 s), then
    ///   closes; [`ConnEvent::Closed`] follows. Unknown connections are ignored.
    ///
    /// After [`MsrpHandle::shutdown`] every command is dropped.
    pub fn execute(&self, shard: usize, cmd: ConnCommand) {
        if self.shared.is_shut_down() {
            trace!(?cmd, "MSRP transport shut down, dropping command");
            return;
        }
        match cmd {
            ConnCommand::Send { conn, bytes } => conn::send(&self.shared, conn, bytes),
            ConnCommand::Connect { token, addr } => {
                let shard = self.shared.shard(shard);
                debug!(token, %addr, shard, "MSRP connecting");
                self.shared.runtime.spawn(conn::connect(
                    Arc::clone(&self.shared),
                    shard,
                    token,
                    addr,
                ));
            }
            ConnCommand::Close { conn } => conn::close(&self.shared, conn),
        }
    }

    /// The listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Stops every task (accepting, connecting, reading, writing) and closes every
    /// connection without flushing; [`MsrpTransport::recv`] returns `None` from now on.
    /// Idempotent.
    pub fn shutdown(&self) {
        shutdown(&self.shared);
    }

    /// The counters.
    pub fn stats(&self) -> MsrpStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MsrpStats {
            open: self.shared.conns().len() as u64,
            accepted: get(&c.accepted),
            connected: get(&c.connected),
            refused: get(&c.refused),
            queue_full: get(&c.queue_full),
            idle_closed: get(&c.idle_closed),
            bytes_in: get(&c.bytes_in),
            bytes_out: get(&c.bytes_out),
        }
    }
}

impl fmt::Debug for MsrpHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MsrpHandle")
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

/// Sets the shutdown flag once and empties the connection table (the tasks end on the flag).
fn shutdown(shared: &Shared) {
    if !shared.shutdown.send_replace(true) {
        info!(local_addr = %shared.local_addr, "MSRP transport shutting down");
    }
    let gone = core::mem::take(&mut *shared.conns());
    drop(gone);
}
