//! A measurement, not a check: the heap a completed non-INVITE transaction holds while RFC 3261
//! Timer J (server, 64*T1 on UDP) or Timer K (client, T4 on UDP) runs, counted by a counting
//! global allocator. Run it alone (the allocator counts every thread of this test binary):
//!
//! ```text
//! cargo test -p cpm-sip-core --test completed_memory -- --ignored --nocapture
//! ```
//!
//! Bytes are the sizes asked of the allocator (its own per-block overhead comes on top: about
//! 8-16 bytes per block for glibc and mimalloc), and include the amortised spare capacity of
//! the layer's tables at this count.

// The one clock read is the origin of virtual time.
#![allow(clippy::disallowed_methods)]

use std::alloc::System;
use std::time::{Duration, Instant};

use cpm_sip::{Message, Request, Response, StatusCode};
use cpm_sip_core::transaction::{
    RequestDisposition, ResponseDisposition, TransactionLayer, response_to,
};
use cpm_sip_core::{Peer, TransportKind};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const N: usize = 100_000;

fn message(branch: &str) -> Request {
    let raw = format!(
        "MESSAGE sip:bob@b.example SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@a.example>;tag=1928301774\r\nTo: <sip:bob@b.example>\r\nCall-ID: a84b4c76e66710@pc33.a.example\r\nCSeq: 314159 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    );
    match Message::parse(raw.into_bytes()) {
        Ok(Message::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn ok_for(req: &Request) -> Response {
    response_to(req, StatusCode::OK, Some("8321234356"))
}

/// Live heap bytes and blocks since the region started.
fn held(region: &Region<'_, System>) -> (isize, isize) {
    let s = region.change();
    // stats_alloc already counts a realloc's growth in `bytes_allocated` (and its shrinking in
    // `bytes_deallocated`); `bytes_reallocated` is the same change again.
    let bytes = s.bytes_allocated as isize - s.bytes_deallocated as isize;
    let blocks = s.allocations as isize - s.deallocations as isize;
    (bytes, blocks)
}

fn report(what: &str, (bytes, blocks): (isize, isize), payload: usize) {
    let n = N as isize;
    println!(
        "{what}: {} bytes and {} blocks per transaction ({} bytes of them the response kept for \
         retransmission), {N} transactions",
        bytes / n,
        blocks as f64 / n as f64,
        payload
    );
}

#[test]
#[ignore = "a measurement: run alone with --ignored --nocapture"]
fn heap_per_completed_non_invite_transaction() {
    let t0 = Instant::now();
    let udp = Peer {
        transport: TransportKind::Udp,
        addr: "192.0.2.1:5060".parse().unwrap(),
        conn: None,
    };

    // Server: a MESSAGE received and answered 200 over UDP, waiting for Timer J.
    let mut server = TransactionLayer::with_seed(Default::default(), 7);
    let mut payload = 0;
    let region = Region::new(GLOBAL);
    for i in 0..N {
        let req = message(&format!("{i:016x}"));
        let now = t0 + Duration::from_micros(i as u64);
        let Ok(RequestDisposition::New(key)) = server.handle_request(now, &req, udp) else {
            panic!("new")
        };
        server.respond(now, &key, &ok_for(&req)).unwrap();
        while let Some(t) = server.poll_transmit() {
            payload = t.payload.len();
        }
    }
    report("server, Completed (Timer J)", held(&region), payload);

    // Client: a MESSAGE sent over UDP and answered 200, waiting for Timer K.
    let mut client = TransactionLayer::with_seed(Default::default(), 7);
    let region = Region::new(GLOBAL);
    for i in 0..N {
        let req = message(&format!("{i:016x}"));
        let ok = ok_for(&req);
        let now = t0 + Duration::from_micros(i as u64);
        client.send_request(now, req, udp).unwrap();
        while client.poll_transmit().is_some() {}
        assert!(matches!(
            client.handle_response(now, &ok),
            ResponseDisposition::Pass(_)
        ));
    }
    report("client, Completed (Timer K)", held(&region), 0);
    drop((server, client));
}
