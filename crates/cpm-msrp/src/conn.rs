//! What a driver's MSRP transport and a core say to each other about connections (the
//! driver contract of every core that speaks MSRP over TCP or TLS: the Participating
//! Function's media anchor, the client).
//!
//! The transport owns the sockets and the [`crate::Decoder`] of each connection; a core sees
//! [`ConnEvent`]s (decoded frames, in order per connection) and answers with
//! [`ConnCommand`]s (bytes to write, connections to open or close). Nothing here does IO.

use core::net::SocketAddr;

use bytes::Bytes;

use crate::framing::Frame;
use crate::status::Error;

/// A connection of the driver's MSRP transport (never reused while the transport runs).
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct ConnId(pub u64);

/// What the transport reports to a core.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Built and consumed at once, never stored in bulk.
pub enum ConnEvent {
    /// A peer connected to our listener.
    Accepted {
        /// The new connection.
        conn: ConnId,
        /// The peer's address.
        peer: SocketAddr,
    },
    /// A connection the core asked for ([`ConnCommand::Connect`]) is open.
    Connected {
        /// The core's token from the command.
        token: u64,
        /// The new connection.
        conn: ConnId,
    },
    /// A connection the core asked for could not be opened.
    ConnectFailed {
        /// The core's token from the command.
        token: u64,
    },
    /// The next frame read on a connection (heads, body pieces and end-lines, in order).
    Frame {
        /// The connection.
        conn: ConnId,
        /// What the decoder yielded.
        frame: Frame,
    },
    /// The decoder refused what it read. With [`crate::Scope::Message`] the next message
    /// can still be read (answer this one if it was a request); with
    /// [`crate::Scope::Connection`] the transport closes the connection after flushing what
    /// the core writes in answer.
    Error {
        /// The connection.
        conn: ConnId,
        /// Why.
        error: Error,
    },
    /// The connection is gone (closed by the peer, by an IO error, by the idle timeout, by a
    /// full write queue, or by [`ConnCommand::Close`]).
    Closed {
        /// The connection.
        conn: ConnId,
    },
}

/// What a core asks the transport to do.
#[derive(Debug)]
pub enum ConnCommand {
    /// Write these octets (whole encoded messages or chunks, in order) on a connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// The octets.
        bytes: Bytes,
    },
    /// Open a connection to a peer's listener; answered by [`ConnEvent::Connected`] or
    /// [`ConnEvent::ConnectFailed`] with the same token.
    Connect {
        /// Echoed in the answer.
        token: u64,
        /// Where to connect.
        addr: SocketAddr,
    },
    /// Close a connection once what was queued for it is written.
    Close {
        /// The connection.
        conn: ConnId,
    },
}
