//! The SIP/IP Core of CPM, sans-IO: registrar and location service, digest authentication,
//! transaction-stateful proxy with parallel forking, and routing of CPM requests through the
//! Participating Function (OMA CPM Conversation Functions outline, section 5.2.3.2).
//!
//! # Driver contract
//!
//! 1. Feed every received message, parse error, keep-alive and closed connection to
//!    [`Proxy::handle_input`] with the current time.
//! 2. Drain [`Proxy::poll_output`] until `None`: send each [`Output::Transmit`], close
//!    connections on [`Output::Close`], and answer each [`Output::LookupUser`] with
//!    [`Input::User`] (a user-directory read; the request waits in the core meanwhile).
//! 3. Sleep until [`Proxy::poll_timeout`], then call [`Proxy::handle_timeout`] and drain again.
//!
//! # What it implements
//!
//! - RFC 3261 section 10 registrar: several bindings per address-of-record, one per device
//!   (RFC 5626 `+sip.instance`/`reg-id`), expiry, `*`, Path and Service-Route.
//! - RFC 7616 / RFC 8760 digest (SHA-256 and MD5, qop=auth, stateless nonces with `stale`), on
//!   REGISTER (401) and on requests from local users over unregistered flows (407); trusted
//!   peers are not challenged; P-Asserted-Identity is set by the core and stripped from
//!   untrusted input (RFC 3325).
//! - RFC 3261 section 16 proxy: validation (483, 420, 416, 482), loose and strict routing,
//!   Record-Route, parallel forking with best-response selection and CANCEL.
//! - CPM routing: requests carrying a CPM ICSI go to the originating user's PF, then to the
//!   terminating user's PF, before delivery.

#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

pub mod config;
mod policy;
pub mod proxy;
pub mod registrar;

pub use config::{ApplicationServer, ProxyConfig, RegistrarConfig, Service, Shards, TrustedPeer};
pub use proxy::{Input, Output, Proxy, QueryId, SecurityEvent, Stats, UserRecord, branch_shard};
