//! The whole CPM network in one thread on virtual time (SYSTEM.md rule 5, STYLE.md 3.7), for
//! tests.
//!
//! A [`Network`] holds domains (each a `cpm_proxy::Proxy` SIP/IP Core, a
//! `cpm_conversation::ParticipatingFunction` and a `cpm_store::MemoryStore`, wired as the
//! node wires them) and clients (`cpm_client::Client` over UDP), joined by datagram links
//! with seeded loss, duplication, reordering and latency ([`LinkConfig`]). Nothing reads a
//! clock: virtual time starts at one `Instant` captured once and jumps from deadline to
//! deadline; the wall clock is [`UNIX_BASE_MS`] plus the same offsets. The same seed gives
//! the same run, and every run is bounded by a step budget.
//!
//! ```no_run
//! use std::time::Duration;
//! use cpm_sim::Network;
//!
//! let mut net = Network::new(1);
//! net.add_domain("a.test");
//! net.add_user("alice@a.test", "alicepw");
//! net.add_user("bob@a.test", "bobpw");
//! let alice = net.add_client("alice@a.test", "phone");
//! let bob = net.add_client("bob@a.test", "phone");
//! net.register_all(&[alice, bob]);
//! let sent = net.send(alice, &["bob@a.test"], "hello");
//! net.wait_for("bob got it", Duration::from_secs(10), |n| n.received(bob).len() == 1);
//! assert_eq!(net.send_status(alice, sent), Some(200));
//! assert_eq!(net.history("bob@a.test").len(), 1);
//! ```
//!
//! When a scenario fails, [`Network::fail`] (and [`Network::wait_for`]) print the
//! transcript: one line per datagram (`time src → dst first-line`), per hop between a core
//! and its PF, and per store commit.

#![forbid(unsafe_code)]

pub mod link;
pub mod msrp;
pub mod network;
mod rng;

pub use link::LinkConfig;
pub use network::{
    Captured, ClientId, DEFAULT_MAX_STEPS, DomainConfig, DomainId, Network, Node, SendOutcome,
    UNIX_BASE_MS, WireStats,
};
