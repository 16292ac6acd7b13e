//! Hole 2: digest replay. A captured `Authorization` (or `Proxy-Authorization`) header, sent
//! again by someone else, must get a fresh challenge and never a 2xx: not for registering
//! the attacker's Contact, not for `Contact: *`, not for sending as the user, not for reading
//! the user's history over HTTP. A legitimate client that reuses its nonce with the next nonce
//! count still gets in.

use std::time::Duration;

use cpm_sip::HeaderName;

use crate::common::Node;

/// A CPM pager message's service (the Participating Function stores it).
const CPM: &str = "P-Preferred-Service: urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg\n";
use crate::ua::{self, Udp, status};

/// A REGISTER for bob from `from` with this Contact line and Authorization.
fn register_with(from: std::net::SocketAddr, cseq: u32, contact: &str, auth: &str) -> String {
    format!(
        "REGISTER sip:localhost SIP/2.0\nVia: SIP/2.0/UDP {from};branch=z9hG4bKrep{cseq}x{p}\n\
         Max-Forwards: 70\nFrom: <sip:bob@localhost>;tag=r{p}\nTo: <sip:bob@localhost>\n\
         Call-ID: replay-{p}\nCSeq: {cseq} REGISTER\n{contact}Authorization: {auth}\n\
         Content-Length: 0\n\n",
        p = from.port()
    )
}

fn is_stale_challenge(r: &ua::Answer) -> bool {
    r.as_ref().is_some_and(|r| {
        r.status.as_u16() == 401
            && r.headers
                .get(&HeaderName::WwwAuthenticate)
                .and_then(|h| h.value().ok().map(|v| v.contains("stale=true")))
                .unwrap_or(false)
    })
}

#[test]
fn a_captured_register_authorization_cannot_be_replayed() {
    let _g = ua::shared();
    let node = Node::start(&[("bob@localhost", "bobpw")], &[]);
    // bob registers; the attacker captures his Authorization header.
    let bob = Udp::new();
    let r = bob
        .request(node.sip, &ua::register("bob", bob.addr(), "UDP", 1, None))
        .expect("401");
    let captured = ua::answer(&r, "REGISTER", "sip:localhost", "bob", "bobpw", 1);
    let r = bob.request(
        node.sip,
        &ua::register("bob", bob.addr(), "UDP", 2, Some(&captured)),
    );
    assert_eq!(status(&r), 200);
    // The replay registers the attacker's own Contact...
    let mallory = Udp::new();
    let m = mallory.addr();
    let contact = format!("Contact: <sip:bob@{m}>\nExpires: 300\n");
    let r = mallory.request(node.sip, &register_with(m, 1, &contact, &captured));
    assert!(is_stale_challenge(&r), "a fresh challenge, not {r:?}");
    // ...or removes every binding of bob's.
    let r = mallory.request(
        node.sip,
        &register_with(m, 2, "Contact: *\nExpires: 0\n", &captured),
    );
    assert!(is_stale_challenge(&r), "a fresh challenge, not {r:?}");
    assert_eq!(
        node.wait_metric("cpm_registrations", |v| v == 1, Duration::from_secs(2)),
        Some(1),
        "bob's own binding is still the only one"
    );
    // Metrics are published after the loop turn that answered.
    assert_eq!(
        node.wait_metric(
            "cpm_auth_replays_refused_total",
            |v| v == 2,
            Duration::from_secs(2)
        ),
        Some(2)
    );
    // A message to bob still reaches bob's real device, not the attacker.
    let text = ua::message(
        "sip:bob@localhost",
        "sip:bob@localhost",
        bob.addr(),
        "UDP",
        "after-replay",
        "",
        "still mine",
    );
    bob.send(node.sip, &text);
    assert!(bob.recv_request(Duration::from_secs(3)).is_some());
    assert!(mallory.recv_request(Duration::from_millis(300)).is_none());

    // Legitimate reuse: bob refreshes with the same nonce and the next count.
    let ch = r_first_challenge(&node, &bob);
    let first = ua::answer(&ch, "REGISTER", "sip:localhost", "bob", "bobpw", 1);
    let second = ua::answer(&ch, "REGISTER", "sip:localhost", "bob", "bobpw", 2);
    let r = bob.request(
        node.sip,
        &ua::register("bob", bob.addr(), "UDP", 6, Some(&first)),
    );
    assert_eq!(status(&r), 200);
    let r = bob.request(
        node.sip,
        &ua::register("bob", bob.addr(), "UDP", 7, Some(&second)),
    );
    assert_eq!(status(&r), 200, "the next nonce count is fine");
    let r = bob.request(
        node.sip,
        &ua::register("bob", bob.addr(), "UDP", 8, Some(&second)),
    );
    assert!(is_stale_challenge(&r), "the same count twice is not");
}

/// A fresh 401 for bob.
fn r_first_challenge(node: &Node, bob: &Udp) -> cpm_sip::Response {
    bob.request(node.sip, &ua::register("bob", bob.addr(), "UDP", 3, None))
        .expect("a 401")
}

#[test]
fn a_captured_proxy_authorization_cannot_send_as_the_user() {
    let _g = ua::shared();
    let node = Node::start(
        &[("alice@localhost", "alicepw"), ("bob@localhost", "bobpw")],
        &[],
    );
    // alice, not registered, sends bob a message with proxy authentication.
    let alice = Udp::new();
    let text = ua::message(
        "sip:bob@localhost",
        "sip:alice@localhost",
        alice.addr(),
        "UDP",
        "pa-1",
        CPM,
        "hello",
    );
    let r = alice.request(node.sip, &text).expect("407");
    assert_eq!(r.status.as_u16(), 407);
    let auth = ua::answer(&r, "MESSAGE", "sip:bob@localhost", "alice", "alicepw", 1);
    let signed = ua::message(
        "sip:bob@localhost",
        "sip:alice@localhost",
        alice.addr(),
        "UDP",
        "pa-2",
        &format!("Proxy-Authorization: {auth}\n{CPM}"),
        "hello",
    );
    // bob is offline: the message waits (202).
    assert_eq!(status(&alice.request(node.sip, &signed)), 202);
    // The attacker sends its own message with alice's captured header.
    let mallory = Udp::new();
    let forged = ua::message(
        "sip:bob@localhost",
        "sip:alice@localhost",
        mallory.addr(),
        "UDP",
        "pa-3",
        &format!("Proxy-Authorization: {auth}\n{CPM}"),
        "send me your password",
    );
    let r = mallory.request(node.sip, &forged);
    assert_eq!(status(&r), 407, "a fresh challenge, not {r:?}");
    // Metrics are published after the loop turn that answered.
    assert_eq!(
        node.wait_metric("cpm_pf_deferred_total", |v| v == 1, Duration::from_secs(2)),
        Some(1)
    );
}

#[test]
fn a_captured_http_authorization_cannot_read_the_history_again() {
    let _g = ua::shared();
    let node = Node::start(&[("alice@localhost", "alicepw")], &[]);
    let path = "/api/v1/history";
    let r = ua::http_get("127.0.0.1", node.http, path, None);
    assert_eq!(r.status, 401);
    let captured = ua::http_answer(&r, path, "alice", "alicepw", 1);
    let r = ua::http_get("127.0.0.1", node.http, path, Some(&captured));
    assert_eq!(r.status, 200, "{}", r.body);
    // The replay, from anywhere, gets a fresh challenge.
    for from in ["127.0.0.1", "127.0.0.7"] {
        let r = ua::http_get(from, node.http, path, Some(&captured));
        assert_eq!(r.status, 401, "replay from {from}: {}", r.body);
        assert!(
            r.header("www-authenticate")
                .is_some_and(|v| v.contains("stale=true"))
        );
    }
    // The next nonce count is a legitimate client's.
    let r0 = ua::http_get("127.0.0.1", node.http, path, None);
    let c1 = ua::http_answer(&r0, path, "alice", "alicepw", 1);
    let c2 = ua::http_answer(&r0, path, "alice", "alicepw", 2);
    assert_eq!(
        ua::http_get("127.0.0.1", node.http, path, Some(&c1)).status,
        200
    );
    assert_eq!(
        ua::http_get("127.0.0.1", node.http, path, Some(&c2)).status,
        200
    );
}
