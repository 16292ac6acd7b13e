//! MSRP connections on virtual time: each domain's node has an MSRP listener at its core's
//! address, port 2855 (its Participating Function anchors the sessions there); clients and
//! nodes open connections to it. A connection is reliable and ordered, as TCP is: the bytes
//! one end writes arrive at the other after [`MSRP_LATENCY`], decoded there by a
//! [`Decoder`] of its own, in order. A test can cut a connection
//! ([`crate::Network::cut_msrp`]): both ends learn it is closed.

use core::cmp::Ordering;
use core::net::SocketAddr;
use core::time::Duration;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use cpm_msrp::{ConnCommand, ConnEvent, ConnId, Decoder};

use crate::network::Node;

/// The MSRP port of every simulated node.
pub const MSRP_PORT: u16 = 2855;
/// How long the bytes of a connection take to the other end.
pub const MSRP_LATENCY: Duration = Duration::from_millis(1);

/// One end of a connection: the host and the id that host knows it by.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub(crate) struct End {
    pub(crate) host: Node,
    pub(crate) conn: ConnId,
}

/// What arrives at an end.
#[derive(Debug)]
pub(crate) enum Arrival {
    /// An event as the transport reports it (Accepted, Connected, ConnectFailed, Closed).
    Event(ConnEvent),
    /// Bytes the other end wrote.
    Bytes(Bytes),
}

#[derive(Debug)]
struct Pending {
    at: Instant,
    seq: u64,
    to: Node,
    conn: Option<ConnId>,
    what: Arrival,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    /// Earliest first (the heap is a max-heap).
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Every connection and what is on its way.
#[derive(Default)]
pub(crate) struct MsrpNet {
    /// Each open end: its peer end, and the decoder of the bytes arriving at it.
    ends: HashMap<End, (End, Decoder, BytesMut)>,
    /// The listeners: an MSRP address to its node.
    listeners: HashMap<SocketAddr, Node>,
    pending: BinaryHeap<Pending>,
    next_conn: u64,
    next_seq: u64,
    /// Bytes written (for the tests' figures).
    pub(crate) bytes: u64,
}

impl core::fmt::Debug for MsrpNet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MsrpNet")
            .field("open_ends", &self.ends.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl MsrpNet {
    /// A node listens at `addr`.
    pub(crate) fn listen(&mut self, addr: SocketAddr, host: Node) {
        self.listeners.insert(addr, host);
    }

    fn push(&mut self, at: Instant, to: Node, conn: Option<ConnId>, what: Arrival) {
        self.next_seq += 1;
        self.pending.push(Pending {
            at,
            seq: self.next_seq,
            to,
            conn,
            what,
        });
    }

    /// Carries out a command of `from` (a node or a client) at `now`.
    pub(crate) fn command(&mut self, now: Instant, from: Node, cmd: ConnCommand) {
        let at = now + MSRP_LATENCY;
        match cmd {
            ConnCommand::Connect { token, addr } => {
                let Some(&to) = self.listeners.get(&addr) else {
                    return self.push(
                        at,
                        from,
                        None,
                        Arrival::Event(ConnEvent::ConnectFailed { token }),
                    );
                };
                self.next_conn += 1;
                let a = End {
                    host: from,
                    conn: ConnId(self.next_conn),
                };
                self.next_conn += 1;
                let b = End {
                    host: to,
                    conn: ConnId(self.next_conn),
                };
                self.ends
                    .insert(a, (b, Decoder::default(), BytesMut::new()));
                self.ends
                    .insert(b, (a, Decoder::default(), BytesMut::new()));
                let peer = SocketAddr::from(([10, 255, 0, 1], 40_000));
                self.push(
                    at,
                    to,
                    Some(b.conn),
                    Arrival::Event(ConnEvent::Accepted { conn: b.conn, peer }),
                );
                self.push(
                    at,
                    from,
                    Some(a.conn),
                    Arrival::Event(ConnEvent::Connected {
                        token,
                        conn: a.conn,
                    }),
                );
            }
            ConnCommand::Send { conn, bytes } => {
                let me = End { host: from, conn };
                if let Some(&(peer, _, _)) = self.ends.get(&me) {
                    self.bytes += bytes.len() as u64;
                    self.push(at, peer.host, Some(peer.conn), Arrival::Bytes(bytes));
                }
            }
            ConnCommand::Close { conn } => self.cut(now, End { host: from, conn }),
        }
    }

    /// Closes a connection: both ends are told (the bytes already written still arrive
    /// first: they were sent earlier).
    pub(crate) fn cut(&mut self, now: Instant, end: End) {
        let Some((peer, _, _)) = self.ends.get(&end).map(|(p, d, b)| (*p, d, b)) else {
            return;
        };
        let at = now + MSRP_LATENCY;
        for e in [end, peer] {
            self.push(
                at,
                e.host,
                Some(e.conn),
                Arrival::Event(ConnEvent::Closed { conn: e.conn }),
            );
        }
    }

    /// The open connections of a host.
    pub(crate) fn conns_of(&self, host: Node) -> Vec<ConnId> {
        let mut v: Vec<ConnId> = self
            .ends
            .keys()
            .filter(|e| e.host == host)
            .map(|e| e.conn)
            .collect();
        v.sort();
        v
    }

    /// When the next arrival is due.
    pub(crate) fn next_at(&self) -> Option<Instant> {
        self.pending.peek().map(|p| p.at)
    }

    /// The next arrival due at `now`, as the events its host gets (bytes decoded).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Node, Vec<ConnEvent>)> {
        if self.pending.peek().is_none_or(|p| p.at > now) {
            return None;
        }
        let p = self.pending.pop()?;
        let events = match p.what {
            Arrival::Event(ev) => {
                if let (ConnEvent::Closed { .. }, Some(conn)) = (&ev, p.conn) {
                    self.ends.remove(&End { host: p.to, conn });
                }
                vec![ev]
            }
            Arrival::Bytes(bytes) => {
                let Some(conn) = p.conn else {
                    return Some((p.to, Vec::new()));
                };
                let Some((_, decoder, buf)) = self.ends.get_mut(&End { host: p.to, conn }) else {
                    // Closed meanwhile: the bytes are lost with it.
                    return Some((p.to, Vec::new()));
                };
                buf.extend_from_slice(&bytes);
                let mut events = Vec::new();
                loop {
                    match decoder.decode(buf) {
                        Ok(Some(frame)) => events.push(ConnEvent::Frame { conn, frame }),
                        Ok(None) => break,
                        Err(error) => {
                            let fatal = error.scope() == cpm_msrp::Scope::Connection;
                            events.push(ConnEvent::Error { conn, error });
                            if fatal {
                                break;
                            }
                        }
                    }
                }
                events
            }
        };
        Some((p.to, events))
    }
}
