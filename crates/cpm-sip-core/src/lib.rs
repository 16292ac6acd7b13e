//! Sans-IO SIP endpoint pieces shared by the SIP/IP Core, the Conversation Server and the
//! client: transport addressing ([`Peer`], [`Transmit`]), RFC 3261 section 17 transactions,
//! RFC 3261 section 12 dialogs ([`dialog::Dialog`]), and
//! HTTP digest authentication (RFC 7616, RFC 8760), guards against abuse ([`guard`]:
//! nonce replay, password guessing, request floods), and overload control by measured delay
//! ([`overload`], RFC 5390).
//!
//! No IO, no clock, no unseeded randomness: time comes in as `now`, outputs are values.

#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

pub mod dialog;
pub mod digest;
pub mod guard;
pub mod overload;
pub mod rng;
pub mod transaction;
pub mod transport;

pub use transport::{ConnId, Function, Handoff, Outgoing, Peer, Transmit, TransportKind};
