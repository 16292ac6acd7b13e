//! The SIP/IP Core's cost per relayed transaction, without IO: a MESSAGE from a trusted peer
//! to a registered device, and its 200 back, through `Proxy::handle_input`.

#![allow(missing_docs, clippy::disallowed_methods)] // A bench binary; its clock is the origin.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_proxy::{Input, Output, Proxy, ProxyConfig, TrustedPeer, UserRecord};
use cpm_sip::{Message, Request, StatusCode};
use cpm_sip_core::Peer;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// The allocator the node runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn setup() -> (Proxy, Instant) {
    let mut cfg = ProxyConfig::new("localhost", "127.0.0.1:5060".parse().unwrap());
    cfg.trusted_peers
        .push(TrustedPeer::parse("127.0.0.1").unwrap());
    let now = Instant::now();
    let mut p = Proxy::new(cfg, now, 1_800_000_000);
    let reg = "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKr1\r\nFrom: <sip:bob@localhost>;tag=1\r\nTo: <sip:bob@localhost>\r\nCall-ID: r1\r\nCSeq: 1 REGISTER\r\nContact: <sip:bob@127.0.0.1:6000>\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n";
    p.handle_input(
        now,
        Input::Message {
            peer: Peer::udp("127.0.0.1:6000".parse().unwrap()),
            message: Message::parse(reg.as_bytes().to_vec()).unwrap(),
        },
    );
    while let Some(o) = p.poll_output() {
        if let Output::LookupUser { query, .. } = o {
            let user = UserRecord {
                aor: "bob@localhost".into(),
                ha1_md5: String::new(),
                ha1_sha256: String::new(),
            };
            p.handle_input(
                now,
                Input::User {
                    query,
                    user: Some(user),
                },
            );
        }
    }
    (p, now)
}

fn message(n: u64) -> Bytes {
    Bytes::from(format!(
        "MESSAGE sip:bob@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bK-{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@localhost>;tag=a{n}\r\nTo: <sip:bob@localhost>\r\n\
         Call-ID: {n}@bench\r\nCSeq: 1 MESSAGE\r\n\
         P-Preferred-Service: urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg\r\n\
         Content-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world"
    ))
}

fn relay(c: &mut Criterion) {
    let (mut p, t0) = setup();
    let alice = Peer::udp("127.0.0.1:7000".parse().unwrap());
    let bob = Peer::udp("127.0.0.1:6000".parse().unwrap());
    let mut n = 0u64;
    let mut g = c.benchmark_group("proxy");
    g.throughput(Throughput::Elements(1));
    g.bench_function("message-relay-transaction", |b| {
        b.iter(|| {
            n += 1;
            // Virtual time advances 50 us per transaction, so timers fire and state is freed.
            let now = t0 + Duration::from_micros(50 * n);
            p.handle_timeout(now);
            let m = Message::parse(message(n)).unwrap();
            p.handle_input(
                now,
                Input::Message {
                    peer: alice,
                    message: m,
                },
            );
            let mut fwd: Option<Request> = None;
            while let Some(o) = p.poll_output() {
                if let Output::Transmit(t) = o
                    && t.peer.addr == bob.addr
                    && let Ok(Message::Request(r)) = Message::parse(t.payload)
                {
                    fwd = Some(r);
                }
            }
            let fwd = fwd.expect("forwarded");
            let ok = cpm_sip_core::transaction::response_to(&fwd, StatusCode::OK, Some("b"));
            let ok = Message::parse(ok.to_bytes()).unwrap();
            p.handle_input(
                now,
                Input::Message {
                    peer: bob,
                    message: ok,
                },
            );
            while let Some(o) = p.poll_output() {
                black_box(o);
            }
        })
    });
    // The same MESSAGE refused by overload control: a stateless 503 (what an overloaded node
    // pays per request it cannot serve; RFC 5390 wants it far below the cost of serving).
    let (mut p, t0) = setup_overloaded();
    let mut n = 0u64;
    g.bench_function("message-refused-503", |b| {
        b.iter(|| {
            n += 1;
            let now = t0 + Duration::from_micros(50 * n);
            let m = Message::parse(message(n)).unwrap();
            p.handle_received(
                now,
                now - Duration::from_millis(50),
                Input::Message {
                    peer: alice,
                    message: m,
                },
            );
            let mut refused = false;
            while let Some(o) = p.poll_output() {
                refused |=
                    matches!(&o, Output::Transmit(t) if t.payload.starts_with(b"SIP/2.0 503"));
                black_box(o);
            }
            assert!(refused);
        })
    });
    g.finish();
}

/// A core that has had a standing queue for longer than the overload interval.
fn setup_overloaded() -> (Proxy, Instant) {
    let (mut p, t0) = setup();
    let alice = Peer::udp("127.0.0.1:7000".parse().unwrap());
    for i in 0..20u64 {
        let now = t0 + Duration::from_millis(10 * i);
        let m = Message::parse(message(1_000_000_000 + i)).unwrap();
        p.handle_received(
            now,
            now - Duration::from_millis(50),
            Input::Message {
                peer: alice,
                message: m,
            },
        );
        while p.poll_output().is_some() {}
    }
    assert!(p.load_stats().shedding);
    (p, t0 + Duration::from_millis(200))
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(30);
    targets = relay
}
criterion_main!(benches);
