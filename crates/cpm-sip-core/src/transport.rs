//! Transport addressing shared by the cores and the drivers: where a message came from and
//! where one must go. Plain values; the driver owns the sockets.

use core::net::SocketAddr;

use bytes::Bytes;

/// The transport protocol of a flow.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum TransportKind {
    /// UDP: one message per datagram, retransmissions by the transaction layer.
    Udp,
    /// TCP: a byte stream, framed by Content-Length; reliable.
    Tcp,
}

impl TransportKind {
    /// Whether the transport is reliable (RFC 3261 section 17: timers that only serve
    /// retransmission are zero on reliable transports).
    pub fn is_reliable(self) -> bool {
        matches!(self, Self::Tcp)
    }

    /// The Via `transport` token.
    pub fn as_via_token(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
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
    /// use any open connection to `addr` or to open one.
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
