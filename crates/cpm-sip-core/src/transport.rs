//! Transport addressing shared by the cores and the drivers: where a message came from and
//! where one must go. Plain values; the driver owns the sockets.

use core::net::SocketAddr;

use bytes::Bytes;
use cpm_sip::Message;

/// A functional entity of one CPM node (OMA CPM, SYSTEM.md): the SIP/IP Core and the
/// Conversation Server functions it routes through. Functions of the same node hand messages
/// to each other in memory, as values (see [`TransportKind::Local`] and [`Handoff`]).
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum Function {
    /// The SIP/IP Core: registrar, authentication, routing (the S-CSCF's role).
    Core,
    /// The Participating Function: the served user's application server.
    Participating,
    /// The Controlling Function: the focus of group sessions.
    Controlling,
}

impl Function {
    /// A short name for traces and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Core => "core",
            Self::Participating => "pf",
            Self::Controlling => "cf",
        }
    }
}

/// The transport protocol of a flow.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum TransportKind {
    /// UDP: one message per datagram, retransmissions by the transaction layer.
    Udp,
    /// TCP: a byte stream, framed by Content-Length; reliable.
    Tcp,
    /// A hop inside this node to the named function: the message is handed over as a value
    /// ([`Handoff`]), never serialised or put on a socket. Reliable and ordered. A peer of
    /// this kind cannot come from the network ([`TransportKind::from_via_token`] never
    /// returns it), so it also proves the sender is one of the node's own functions.
    Local(Function),
}

impl TransportKind {
    /// Whether the transport is reliable (RFC 3261 section 17: timers that only serve
    /// retransmission are zero on reliable transports).
    pub fn is_reliable(self) -> bool {
        matches!(self, Self::Tcp | Self::Local(_))
    }

    /// The Via `transport` token.
    pub fn as_via_token(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            // An in-node hop is a reliable stream as far as RFC 3261 goes; its Via is never
            // used to route (a response follows its transaction's peer).
            Self::Tcp | Self::Local(_) => "TCP",
        }
    }

    /// Parses a Via transport token (case-insensitive); `None` for transports we do not run.
    pub fn from_via_token(token: &str) -> Option<Self> {
        if token.eq_ignore_ascii_case("UDP") {
            Some(Self::Udp)
        } else if token.eq_ignore_ascii_case("TCP") {
            Some(Self::Tcp)
        } else {
            None
        }
    }
}

/// A stream connection, named by the driver. Unique for the lifetime of a driver.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct ConnId(pub u64);

/// The other end of a flow: transport, remote address, and for streams the connection
/// (RFC 5626 flow). A response goes back on the connection its request came on; a request to a
/// registered device goes over the connection the device registered on.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Peer {
    /// Transport protocol.
    pub transport: TransportKind,
    /// Remote address.
    pub addr: SocketAddr,
    /// The stream connection, if one is known. `None` on a stream transport asks the driver to
    /// use any open connection to `addr` or to open one. For a [`TransportKind::Local`] peer,
    /// the node shard (thread) that runs the function, when it is another than the sender's
    /// (see [`Peer::local_on`]): the link between two shards is a connection of its own.
    pub conn: Option<ConnId>,
}

impl Peer {
    /// A UDP peer.
    pub fn udp(addr: SocketAddr) -> Self {
        Self {
            transport: TransportKind::Udp,
            addr,
            conn: None,
        }
    }

    /// The function `to` of this node, at the node's SIP address `addr` (its Via sent-by).
    pub fn local(to: Function, addr: SocketAddr) -> Self {
        Self {
            transport: TransportKind::Local(to),
            addr,
            conn: None,
        }
    }

    /// The function `to` of this node running on another shard of it (`cpm serve
    /// --threads`): a hop to it crosses to that shard's thread as a value
    /// ([`Handoff::shard`]).
    pub fn local_on(to: Function, addr: SocketAddr, shard: u16) -> Self {
        Self {
            transport: TransportKind::Local(to),
            addr,
            conn: Some(ConnId(u64::from(shard))),
        }
    }

    /// For a local peer on another shard, that shard ([`Peer::local_on`]).
    pub fn shard(&self) -> Option<u16> {
        match (self.transport, self.conn) {
            (TransportKind::Local(_), Some(ConnId(s))) => u16::try_from(s).ok(),
            _ => None,
        }
    }

    /// The function this peer names, if it is one of this node's.
    pub fn function(&self) -> Option<Function> {
        match self.transport {
            TransportKind::Local(f) => Some(f),
            _ => None,
        }
    }

    /// A TCP peer, over a known connection or any.
    pub fn tcp(addr: SocketAddr, conn: Option<ConnId>) -> Self {
        Self {
            transport: TransportKind::Tcp,
            addr,
            conn,
        }
    }
}

/// Bytes to send to a peer: the output of a core, the input of a driver.
#[derive(Clone, Debug, Eq, PartialEq)]
#[must_use = "a Transmit that is not sent is a lost message"]
pub struct Transmit {
    /// Where to send.
    pub peer: Peer,
    /// The serialized message (or a keep-alive CRLF).
    pub payload: Bytes,
}

/// A message for another function of the same node, handed over as a value: the in-node
/// counterpart of [`Transmit`]. The receiver sees it as coming from
/// `Peer::local(<sending function>, …)`.
#[derive(Clone, Debug)]
#[must_use = "a Handoff that is not delivered is a lost message"]
pub struct Handoff {
    /// The receiving function.
    pub to: Function,
    /// The shard it runs on, when it is not the sender's ([`Peer::shard`]).
    pub shard: Option<u16>,
    /// The message.
    pub message: Message,
}

/// What a SIP element sends: bytes for a socket, or a value for a function of its node.
#[derive(Clone, Debug)]
#[must_use = "an Outgoing that is not sent is a lost message"]
pub enum Outgoing {
    /// To the network.
    Transmit(Transmit),
    /// To another function of this node.
    Handoff(Handoff),
}

impl Outgoing {
    /// `message` for `peer`: serialised for a network peer, as a value for a local one.
    pub fn new(peer: Peer, message: Message) -> Self {
        match peer.transport {
            TransportKind::Local(to) => Self::Handoff(Handoff {
                to,
                shard: peer.shard(),
                message,
            }),
            TransportKind::Udp | TransportKind::Tcp => Self::Transmit(Transmit {
                peer,
                payload: message.to_bytes(),
            }),
        }
    }
}
