//! The heap one registration costs the location service, counted by a counting global
//! allocator: N users with one binding each, registered as `bench/registrations.sh` does
//! (`Contact: <sip:uN@127.0.0.1:P>`, no parameters). This is the registrar's share of the
//! issue's "2 KB per registration"; the benchmark measures the whole process.
//!
//! ```text
//! cargo test -p cpm-proxy --test registrar_memory -- --nocapture
//! ```
//!
//! Bytes are the sizes asked of the allocator (its per-block overhead comes on top: about
//! 8-16 bytes a block) and include the amortised spare capacity of the tables at this count.
//! The count is exact and the same on every run, so the bound below is a check, not a timing.

// The one clock read is the origin of virtual time.
#![allow(clippy::disallowed_methods)]

use std::alloc::System;
use std::time::Instant;

use cpm_proxy::RegistrarConfig;
use cpm_proxy::registrar::Registrar;
use cpm_sip::{Message, Request};
use cpm_sip_core::{Peer, TransportKind};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Users registered; a power of two's worth of hash buckets is then about 76 % full, near
/// the average a table of any size sees.
const N: usize = 50_000;

fn register(user: usize) -> Request {
    let raw = format!(
        "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{user}\r\nMax-Forwards: 70\r\nFrom: <sip:u{user}@localhost>;tag=4242SIPpTag07{user}\r\nTo: <sip:u{user}@localhost>\r\nCall-ID: {user}-4242@127.0.0.1\r\nCSeq: 1 REGISTER\r\nContact: <sip:u{user}@127.0.0.1:5080>\r\nExpires: 7200\r\nContent-Length: 0\r\n\r\n"
    );
    match Message::parse(raw.into_bytes()) {
        Ok(Message::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_registration_costs_the_location_service_under_a_kilobyte() {
    let now = Instant::now();
    let cfg = RegistrarConfig {
        max_expires: 7200,
        default_expires: 7200,
        max_bindings_per_aor: 1,
        ..RegistrarConfig::default()
    };
    let flow = Peer {
        transport: TransportKind::Udp,
        addr: "127.0.0.1:5070".parse().unwrap(),
        conn: None,
    };
    // The requests exist before the region starts: only what the registrar keeps counts.
    let requests: Vec<(String, Request)> = (0..N)
        .map(|i| (format!("u{i}@localhost"), register(i)))
        .collect();
    let mut registrar = Registrar::default();
    let region = Region::new(GLOBAL);
    for (aor, req) in &requests {
        let current = registrar.apply(now, aor, req, flow, &cfg).unwrap();
        assert_eq!(current.len(), 1);
    }
    let s = region.change();
    let bytes = (s.bytes_allocated as isize - s.bytes_deallocated as isize) / N as isize;
    let blocks = (s.allocations as isize - s.deallocations as isize) as f64 / N as f64;
    assert_eq!(registrar.len(), N);
    println!(
        "registrar: {bytes} bytes and {blocks:.2} heap blocks per binding, {N} bindings \
         (Binding is {} bytes inline)",
        size_of::<cpm_proxy::registrar::Binding>()
    );
    assert!(
        bytes <= 1024,
        "{bytes} bytes per binding: the location service has grown past its budget"
    );
    drop(registrar);
}
