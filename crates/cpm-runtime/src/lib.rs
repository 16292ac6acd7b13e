//! Tokio drivers for the CPM cores: UDP and TCP SIP transports, the MSRP transport, the store
//! executor, timers, shutdown.
//!
//! Drivers are thin and dumb (STYLE.md 3.1): they move bytes, frame streams and report what
//! happened. Every SIP decision (what to answer to a bad message, when to close a connection
//! whose framing is lost, how to answer a keep-alive ping) belongs to a core.
//!
//! # The SIP transport
//!
//! [`SipTransport::bind`] opens a UDP socket and a TCP listener on the same address and returns
//! the transport (the event source, owned by the core's loop) and a [`SipTransportHandle`]
//! (cheap to clone, used to send and close). The core's loop runs in this order:
//!
//! 1. `transport.recv().await` gives the next [`NetEvent`] (a parsed message, a parse error
//!    with the raw bytes, a stream keep-alive, a closed connection, a failed send);
//! 2. the core handles it and emits [`Transmit`](cpm_sip_core::Transmit)s;
//! 3. each goes to [`SipTransportHandle::send`], which never blocks: UDP is sent at once, TCP
//!    is queued on the connection's bounded writer (opening a connection if none is open);
//! 4. after a [`Scope::Connection`](cpm_sip::Scope::Connection) parse error the core answers,
//!    then calls [`SipTransportHandle::close`]; queued bytes are flushed before the close.
//!
//! ```no_run
//! use cpm_runtime::{NetEvent, SipTransport, SipTransportConfig};
//!
//! # async fn run() -> std::io::Result<()> {
//! let config = SipTransportConfig::new("0.0.0.0:5060".parse().expect("address"));
//! let (mut transport, handle) = SipTransport::bind(config).await?;
//! loop {
//!     match transport.recv().await {
//!         NetEvent::Message { peer, message } => { /* core.handle_input(now, ...) */ }
//!         NetEvent::ParseError { peer, error, raw_head } => { /* answer per error.verdict() */ }
//!         NetEvent::KeepAlive { peer } => { /* RFC 5626: answer a double CRLF */ }
//!         NetEvent::ConnectionClosed { conn, addr } => { /* forget the flow */ }
//!         NetEvent::SendFailed { transmit_peer, reason } => { /* transport error */ }
//!     }
//!     // drain the core's outputs: handle.send(transmit) ...
//! #   handle.shutdown();
//! #   break;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # The MSRP transport
//!
//! [`MsrpTransport::bind_sharded`] opens a TCP listener and returns one [`MsrpTransport`] per
//! shard (each the event source of one core's loop) and an [`MsrpHandle`] (cheap to clone).
//! It speaks the connection contract of `cpm-msrp`: [`cpm_msrp::ConnEvent`]s out,
//! [`cpm_msrp::ConnCommand`]s in, connections named by [`cpm_msrp::ConnId`]. Each
//! connection's stream is decoded with [`cpm_msrp::Decoder`]; a body crosses as bounded
//! [`Frame::Data`](cpm_msrp::Frame::Data) pieces. A core's loop runs in this order:
//!
//! 1. `transport.recv().await` gives the next event (`None` once shut down): a connection
//!    accepted or opened, a frame, a decode error, a closed connection;
//! 2. the core handles it and emits commands;
//! 3. each goes to [`MsrpHandle::execute`] with the core's shard, which never blocks: a send
//!    is queued on the connection's writer (bounded in octets: past
//!    [`MsrpTransportConfig::max_queued_bytes`] the connection is closed), a connect runs in
//!    a task and its answer comes back to the shard that asked;
//! 4. after a decode error with [`Scope::Connection`](cpm_msrp::Scope::Connection) the
//!    transport reads nothing more on that connection; the core answers, then sends
//!    [`ConnCommand::Close`](cpm_msrp::ConnCommand::Close) (queued octets are flushed
//!    first). Without a close it goes after 1 s.
//!
//! Heads go to the shard the [`MsrpDispatcher`] names, and the body pieces and end-line
//! after a head to the same shard; [`cpm_msrp::ConnEvent::Accepted`] goes to shard 0 only;
//! [`cpm_msrp::ConnEvent::Closed`] to every shard that heard of the connection (the full
//! table is on [`MsrpTransport::bind_sharded`]). Reads wait while a shard's queue is full:
//! a slow core slows its peers down instead of making the transport buffer.
//!
//! ```no_run
//! use cpm_msrp::ConnEvent;
//! use cpm_runtime::{MsrpTransport, MsrpTransportConfig};
//!
//! # async fn run() -> std::io::Result<()> {
//! let config = MsrpTransportConfig::new("0.0.0.0:2855".parse().expect("address"));
//! let (mut transport, handle) = MsrpTransport::bind(config).await?;
//! while let Some(event) = transport.recv().await {
//!     match event {
//!         ConnEvent::Frame { conn, frame } => { /* core.handle_input(now, ...) */ }
//!         ConnEvent::Error { conn, error } => { /* answer error.status(), maybe close */ }
//!         _ => {}
//!     }
//!     // drain the core's commands: handle.execute(0, command) ...
//! #   handle.shutdown();
//! }
//! # Ok(())
//! # }
//! ```
//!
//! TLS (`msrps`) is still to come; the connection tasks are generic over the stream, so it
//! wraps the TCP stream and reuses them.
//!
//! # The store executor
//!
//! [`StoreExecutor`] runs the cores' store operations on a thread of its own, in batches
//! (group commit); see the [`store`] module.

#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

mod msrp;
mod sip;
pub mod store;
mod stream;

pub use msrp::{MsrpDispatcher, MsrpHandle, MsrpStats, MsrpTransport, MsrpTransportConfig};

pub use sip::{
    Dispatcher, NetEvent, SipTransport, SipTransportConfig, SipTransportHandle, TcpStats,
    UdpFloodGuard,
};
pub use store::{StoreCounters, StoreExecutor, StoreResults, StoreStats};
