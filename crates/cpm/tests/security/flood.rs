//! Hole 7: UDP floods. One source sending out-of-dialog requests as fast as it can must not
//! starve everyone else: past its rate (500/s, bursts of 1000, by default) its requests are
//! dropped before any transaction or store work, and another source's probes are answered.
//! Over TCP the flooding source is told `503` with `Retry-After`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cpm_sip::HeaderName;

use crate::common::Node;
use crate::ua::{self, Tcp, Udp};

/// How long the flood runs while the probes go.
const FLOOD: Duration = Duration::from_secs(4);
/// Probes sent during the flood, one every 200 ms, each waiting up to a second.
const PROBES: usize = 16;

fn options(to: std::net::SocketAddr, from: std::net::SocketAddr, tr: &str, id: &str) -> String {
    format!(
        "OPTIONS sip:{to} SIP/2.0\nVia: SIP/2.0/{tr} {from};branch=z9hG4bK{id}\nMax-Forwards: 70\n\
         From: <sip:probe@{from}>;tag={id}\nTo: <sip:{to}>\nCall-ID: {id}\nCSeq: 1 OPTIONS\n\
         Content-Length: 0\n\n"
    )
}

#[test]
fn a_register_flood_from_one_source_does_not_starve_the_others() {
    let _g = ua::exclusive();
    let node = Node::start(&[("bob@localhost", "bobpw")], &[]);
    let target = node.sip;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flooder = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let sock = std::net::UdpSocket::bind("127.0.0.5:0").expect("bind");
            let from = sock.local_addr().expect("addr");
            // A thousand different REGISTERs (new transactions), sent round and round.
            let packets: Vec<Vec<u8>> = (0..1000)
                .map(|i| {
                    let text = ua::register("bob", from, "UDP", i, None)
                        .replace("branch=z9hG4bKsec", &format!("branch=z9hG4bKflood{i}x"))
                        .replace("Call-ID: sec-reg", &format!("Call-ID: flood{i}"));
                    ua::crlf(&text)
                })
                .collect();
            let deadline = Instant::now() + FLOOD;
            let mut n = 0u64;
            for p in packets.iter().cycle() {
                // Look at the clock only every hundred datagrams.
                if n.is_multiple_of(100)
                    && (stop.load(Ordering::Relaxed) || Instant::now() >= deadline)
                {
                    break;
                }
                let _ = sock.send_to(p, target);
                n += 1;
            }
            sent.store(n, Ordering::Relaxed);
        })
    };
    // Probes from another source, while the flood runs.
    std::thread::sleep(Duration::from_millis(300));
    let probe = Udp::new();
    let mut answered = 0;
    let started = Instant::now();
    for i in 0..PROBES {
        let at = started + Duration::from_millis(200 * i as u64);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        probe.send(
            target,
            &options(target, probe.addr(), "UDP", &format!("probe{i}")),
        );
        if let Some(r) = probe.final_response(Duration::from_secs(1)) {
            answered += usize::from(r.status.as_u16() == 200);
        }
    }
    stop.store(true, Ordering::Relaxed);
    flooder.join().expect("flooder");
    let secs = FLOOD.as_secs_f64();
    let rate = sent.load(Ordering::Relaxed) as f64 / secs;
    let limited = node.metric("cpm_sip_rate_limited_total").unwrap_or(0)
        + node.metric("cpm_udp_flood_dropped_total").unwrap_or(0);
    eprintln!(
        "flood: {rate:.0} REGISTER/s offered; {answered}/{PROBES} probes answered; {limited} dropped"
    );
    assert!(
        answered >= PROBES - 1,
        "{answered} of {PROBES} probes answered"
    );
    assert!(limited > 0, "the flood was rate-limited");
    assert!(node.http_get("/health").is_some_and(|b| b.contains("ok")));
}

#[test]
fn a_tcp_burst_gets_503_with_retry_after_and_other_clients_still_get_in() {
    let _g = ua::exclusive();
    let node = Node::start(&[], &[]);
    let mut flood = Tcp::connect_from("127.0.0.6", node.sip);
    let from = flood.addr();
    let mut burst = String::new();
    for i in 0..1500 {
        burst.push_str(&options(node.sip, from, "TCP", &format!("tcpflood{i}")));
    }
    flood.send(&burst);
    let (mut ok, mut refused, mut retry_after) = (0, 0, true);
    while let Some(r) = flood.final_response(Duration::from_secs(3)) {
        match r.status.as_u16() {
            200 => ok += 1,
            503 => {
                refused += 1;
                retry_after &= r.headers.contains(&HeaderName::RetryAfter);
            }
            other => panic!("unexpected {other}"),
        }
        if ok + refused == 1500 {
            break;
        }
    }
    assert!(ok >= 1000, "the burst allowance is served: {ok}");
    assert!(
        refused > 0,
        "the rest is refused: {ok} ok, {refused} refused"
    );
    assert!(retry_after, "every 503 says when to come back");
    // Another client is served at once.
    let mut other = Tcp::connect(node.sip);
    let text = options(node.sip, other.addr(), "TCP", "other");
    assert_eq!(ua::status(&other.request(&text)), 200);
}
