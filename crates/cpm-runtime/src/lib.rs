//! Tokio drivers for the CPM cores: UDP and TCP SIP transports, the store executor, timers,
//! shutdown.
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
//! # The store executor
//!
//! [`StoreExecutor`] runs the cores' store operations on a thread of its own, in batches
//! (group commit); see the [`store`] module.

#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

mod sip;
pub mod store;

pub use sip::{
    Dispatcher, NetEvent, SipTransport, SipTransportConfig, SipTransportHandle, TcpStats,
    UdpFloodGuard,
};
pub use store::{StoreCounters, StoreExecutor, StoreResults, StoreStats};
