//! One simulated user: a [`cpm_client::Client`] core, its UDP socket for SIP and a tokio
//! task per MSRP connection (as `cpm client` drives them, `crates/cpm/src/client/msrp.rs`).
//!
//! A sender registers, opens its sessions (at most [`MAX_INVITING`] INVITEs at once) and,
//! while the [`Control`] gives it a rate, sends chat messages paced by that rate and bounded
//! by a window of messages in flight per session; each message's latency is the time from
//! [`Client::send_chat`] to its [`Event::SendResult`] (the MSRP 200, which the PF sends only
//! after both users' histories committed). A receiver registers and takes every session
//! (auto-accept); the client core answers each SEND and sends the delivery notification.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use cpm_client::{Client, ClientConfig, ConnCommand, ConnEvent, ConnId, Event, SendId, SessionId};
use cpm_msrp::{Decoder, Scope};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};

/// INVITEs a sender has outstanding at once while it opens its sessions.
const MAX_INVITING: usize = 8;
/// How often a sender looks whether messages are due (and flushes its statistics).
const TICK: Duration = Duration::from_millis(2);
/// How often a user hands its latency samples to the shared statistics.
const FLUSH: Duration = Duration::from_millis(20);

/// What the ramp tells the senders.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Control {
    /// The step messages sent now are counted in.
    pub(crate) step: usize,
    /// Messages per second for each sender (0: send nothing).
    pub(crate) rate: f64,
    /// When this rate started.
    pub(crate) since: Instant,
    /// End every session (BYE).
    pub(crate) end: bool,
    /// Senders may open their sessions (they register first either way).
    pub(crate) open: bool,
}

/// One step's figures.
#[derive(Clone, Debug, Default)]
pub(crate) struct StepStats {
    pub(crate) sent: u64,
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    /// Non-200 outcomes (408 timeout, 503 session gone, MSRP errors; 0: refused locally).
    pub(crate) statuses: BTreeMap<u16, u64>,
    /// Latency of each 200, microseconds.
    pub(crate) lat_us: Vec<u32>,
}

impl StepStats {
    fn merge(&mut self, o: Self) {
        self.sent += o.sent;
        self.ok += o.ok;
        self.failed += o.failed;
        for (k, v) in o.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        self.lat_us.extend(o.lat_us);
    }
}

/// Counters every user adds to.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) registered: AtomicUsize,
    pub(crate) reg_failed: AtomicUsize,
    pub(crate) sessions_up: AtomicUsize,
    pub(crate) sessions_failed: AtomicUsize,
    /// Sessions that ended after they were up (BYE, lost connection).
    pub(crate) sessions_ended: AtomicUsize,
    pub(crate) incoming_up: AtomicUsize,
    /// Messages sent and not answered yet.
    pub(crate) outstanding: AtomicI64,
    /// Chat messages the receivers got.
    pub(crate) received: AtomicU64,
    /// Delivery notifications the senders got.
    pub(crate) imdns: AtomicU64,
    /// Octets and count of the senders' chat SENDs written (on-wire size of a message).
    pub(crate) send_bytes: AtomicU64,
    pub(crate) send_count: AtomicU64,
    pub(crate) steps: Mutex<Vec<StepStats>>,
}

impl Stats {
    fn add_steps(&self, local: &mut HashMap<usize, StepStats>) {
        if local.is_empty() {
            return;
        }
        let mut steps = self
            .steps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (k, v) in local.drain() {
            if steps.len() <= k {
                steps.resize_with(k + 1, StepStats::default);
            }
            steps[k].merge(v);
        }
    }

    /// The figures of `step` so far.
    pub(crate) fn take_step(&self, step: usize) -> StepStats {
        let mut steps = self
            .steps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        steps.get_mut(step).map(std::mem::take).unwrap_or_default()
    }
}

/// Who a user is and what it does.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub(crate) aor: String,
    pub(crate) password: String,
    pub(crate) server: SocketAddr,
    /// Sender: the peers of its sessions, one session each; receiver: empty.
    pub(crate) peers: Vec<String>,
    /// Messages in flight per session.
    pub(crate) window: usize,
    /// The chat text of every message.
    pub(crate) text: Arc<str>,
}

/// What a connection task is told.
enum Write {
    Bytes(Bytes),
    Close,
}

struct Session {
    id: SessionId,
    up: bool,
    in_flight: usize,
}

/// Runs one user until the process exits.
pub(crate) async fn run(spec: Spec, mut control: watch::Receiver<Control>, stats: Arc<Stats>) {
    if let Err(e) = run_inner(&spec, &mut control, &stats).await {
        eprintln!("{}: {e}", spec.aor);
        stats.reg_failed.fetch_add(1, Ordering::Relaxed);
    }
}

fn seed_of(s: &str) -> u64 {
    // FNV-1a: a distinct, reproducible seed per user.
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether `b` is an MSRP SEND request (its first line ends in ` SEND`).
fn is_send(b: &[u8]) -> bool {
    let head = &b[..b.len().min(80)];
    head.windows(2)
        .position(|w| w == b"\r\n")
        .is_some_and(|end| head[..end].ends_with(b" SEND"))
}

async fn run_inner(
    spec: &Spec,
    control: &mut watch::Receiver<Control>,
    stats: &Stats,
) -> Result<(), String> {
    let sender = !spec.peers.is_empty();
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let local = sock.local_addr().map_err(|e| e.to_string())?;
    let mut cfg = ClientConfig::new(spec.aor.clone(), spec.password.clone(), spec.server, local);
    cfg.device = "bench".to_owned();
    cfg.seed = seed_of(&spec.aor);
    cfg.deferred = false;
    cfg.expires = 3600;
    let mut client = Client::new(cfg, Instant::now(), unix_ms()).map_err(|e| e.to_string())?;
    client.register(Instant::now());

    let (ev_tx, mut ev_rx) = mpsc::channel::<ConnEvent>(1024);
    let mut conns: HashMap<ConnId, mpsc::UnboundedSender<Write>> = HashMap::new();
    let mut next_conn = 1u64;
    let mut buf = vec![0u8; 65_536];

    let mut registered = false;
    let mut sessions: Vec<Session> = Vec::new();
    let mut by_id: HashMap<SessionId, usize> = HashMap::new();
    let mut to_start = spec.peers.iter();
    let mut inviting = 0usize;
    let mut sent: HashMap<SendId, (Instant, usize, usize)> = HashMap::new();
    let mut local: HashMap<usize, StepStats> = HashMap::new();
    let mut ctl = *control.borrow();
    let mut step_sent = 0u64;
    let mut rr = 0usize;
    let mut ended = false;
    let mut last_flush = Instant::now();

    loop {
        // Drain the core: commands, datagrams, events (events may give it more work).
        loop {
            let mut busy = false;
            while let Some(cmd) = client.poll_conn_command() {
                busy = true;
                match cmd {
                    ConnCommand::Connect { token, addr } => {
                        let conn = ConnId(next_conn);
                        next_conn += 1;
                        let (tx, rx) = mpsc::unbounded_channel();
                        conns.insert(conn, tx);
                        tokio::spawn(conn_task(conn, token, addr, rx, ev_tx.clone()));
                    }
                    ConnCommand::Send { conn, bytes } => {
                        if sender && is_send(&bytes) {
                            stats
                                .send_bytes
                                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                            stats.send_count.fetch_add(1, Ordering::Relaxed);
                        }
                        if let Some(tx) = conns.get(&conn) {
                            let _ = tx.send(Write::Bytes(bytes));
                        }
                    }
                    ConnCommand::Close { conn } => {
                        if let Some(tx) = conns.remove(&conn) {
                            let _ = tx.send(Write::Close);
                        }
                    }
                }
            }
            while let Some(t) = client.poll_transmit() {
                busy = true;
                let _ = sock.send_to(&t.payload, t.peer.addr).await;
            }
            while let Some(ev) = client.poll_event() {
                busy = true;
                let now = Instant::now();
                match ev {
                    Event::Registered { .. } if !registered => {
                        registered = true;
                        stats.registered.fetch_add(1, Ordering::Relaxed);
                    }
                    Event::RegistrationFailed {
                        status,
                        will_retry: false,
                        ..
                    } => return Err(format!("registration failed: {status}")),
                    Event::SessionStarted {
                        session, incoming, ..
                    } => {
                        if incoming {
                            stats.incoming_up.fetch_add(1, Ordering::Relaxed);
                        } else if let Some(&i) = by_id.get(&session) {
                            sessions[i].up = true;
                            inviting -= 1;
                            stats.sessions_up.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Event::SessionEnded {
                        session, status, ..
                    } => {
                        if let Some(&i) = by_id.get(&session) {
                            if sessions[i].up {
                                stats.sessions_ended.fetch_add(1, Ordering::Relaxed);
                                sessions[i].up = false;
                            } else {
                                inviting = inviting.saturating_sub(1);
                                eprintln!("{}: session refused: {status}", spec.aor);
                                stats.sessions_failed.fetch_add(1, Ordering::Relaxed);
                            }
                            sessions[i].in_flight = usize::MAX / 2; // never used again
                        }
                    }
                    Event::SendResult { id, status, .. } => {
                        if let Some((t0, step, i)) = sent.remove(&id) {
                            stats.outstanding.fetch_sub(1, Ordering::Relaxed);
                            if let Some(s) = sessions.get_mut(i) {
                                s.in_flight = s.in_flight.saturating_sub(1);
                            }
                            let st = local.entry(step).or_default();
                            if status == 200 {
                                st.ok += 1;
                                let us = now.duration_since(t0).as_micros();
                                st.lat_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                            } else {
                                st.failed += 1;
                                *st.statuses.entry(status).or_default() += 1;
                            }
                        }
                    }
                    Event::Message(_) => {
                        stats.received.fetch_add(1, Ordering::Relaxed);
                    }
                    Event::Imdn(_) => {
                        stats.imdns.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            let now = Instant::now();
            // Open sessions, a few at a time.
            while registered && ctl.open && !ctl.end && inviting < MAX_INVITING {
                let Some(peer) = to_start.next() else { break };
                busy = true;
                match client.start_session(now, peer) {
                    Ok(id) => {
                        by_id.insert(id, sessions.len());
                        sessions.push(Session {
                            id,
                            up: false,
                            in_flight: 0,
                        });
                        inviting += 1;
                    }
                    Err(e) => {
                        eprintln!("{}: start_session {peer}: {e}", spec.aor);
                        stats.sessions_failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            // Send what the rate makes due, within the window.
            if ctl.rate > 0.0 && !ctl.end && !sessions.is_empty() {
                let due_total = (now.duration_since(ctl.since).as_secs_f64() * ctl.rate) as u64;
                let mut tried = 0;
                while step_sent < due_total && tried < sessions.len() {
                    let i = rr % sessions.len();
                    rr += 1;
                    let s = &mut sessions[i];
                    if !s.up || s.in_flight >= spec.window {
                        tried += 1;
                        continue;
                    }
                    tried = 0;
                    busy = true;
                    step_sent += 1;
                    let st = local.entry(ctl.step).or_default();
                    st.sent += 1;
                    match client.send_chat(now, s.id, &spec.text) {
                        Ok(id) => {
                            s.in_flight += 1;
                            sent.insert(id, (now, ctl.step, i));
                            stats.outstanding.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            st.failed += 1;
                            *st.statuses.entry(0).or_default() += 1;
                        }
                    }
                }
            }
            if ctl.end && !ended {
                ended = true;
                busy = true;
                for s in &sessions {
                    client.end_session(now, s.id);
                }
            }
            if client.poll_timeout().is_some_and(|t| t <= now) {
                client.handle_timeout(now);
                busy = true;
            }
            if !busy {
                break;
            }
        }
        if last_flush.elapsed() >= FLUSH {
            stats.add_steps(&mut local);
            last_flush = Instant::now();
        }

        let now = Instant::now();
        let mut wake = client
            .poll_timeout()
            .unwrap_or(now + Duration::from_secs(1));
        if sender && (ctl.rate > 0.0 || !local.is_empty()) {
            wake = wake.min(now + TICK);
        }
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    client.handle_datagram(Instant::now(), from, Bytes::copy_from_slice(&buf[..n]));
                }
            }
            ev = ev_rx.recv() => {
                if let Some(ev) = ev {
                    if let ConnEvent::Closed { conn } = &ev {
                        conns.remove(conn);
                    }
                    client.handle_conn_event(Instant::now(), ev);
                }
            }
            r = control.changed() => {
                if r.is_ok() {
                    let c = *control.borrow_and_update();
                    if c.step != ctl.step || c.since != ctl.since {
                        step_sent = 0;
                    }
                    ctl = c;
                    stats.add_steps(&mut local);
                } else {
                    std::future::pending::<()>().await;
                }
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
        }
    }
}

/// One MSRP connection: connect, then read and write until either side closes.
async fn conn_task(
    conn: ConnId,
    token: u64,
    addr: SocketAddr,
    mut writes: mpsc::UnboundedReceiver<Write>,
    events: mpsc::Sender<ConnEvent>,
) {
    let Ok(Ok(stream)) =
        tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr)).await
    else {
        let _ = events.send(ConnEvent::ConnectFailed { token }).await;
        return;
    };
    let _ = stream.set_nodelay(true);
    if events
        .send(ConnEvent::Connected { token, conn })
        .await
        .is_err()
    {
        return;
    }
    let (mut r, mut w) = stream.into_split();
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::with_capacity(8 * 1024);
    'conn: loop {
        tokio::select! {
            read = r.read_buf(&mut buf) => {
                match read {
                    Ok(0) | Err(_) => break 'conn,
                    Ok(_) => {}
                }
                loop {
                    match decoder.decode(&mut buf) {
                        Ok(Some(frame)) => {
                            if events.send(ConnEvent::Frame { conn, frame }).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            let fatal = error.scope() == Scope::Connection;
                            if events.send(ConnEvent::Error { conn, error }).await.is_err() {
                                return;
                            }
                            if fatal {
                                break 'conn;
                            }
                        }
                    }
                }
            }
            cmd = writes.recv() => match cmd {
                Some(Write::Bytes(b)) => {
                    if w.write_all(&b).await.is_err() {
                        break 'conn;
                    }
                }
                Some(Write::Close) | None => {
                    let _ = w.shutdown().await;
                    break 'conn;
                }
            },
        }
    }
    let _ = events.send(ConnEvent::Closed { conn }).await;
}
