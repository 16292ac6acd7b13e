//! Hole 1: open relay through `Route`. A request from someone the node has not
//! authenticated, with a preloaded `Route: <sip:HOST:PORT;lr>`, must not make the node send
//! anything to HOST:PORT; nor may a To tag or a forged Record-Route token pass for a dialog,
//! nor a response with a Via of ours be reflected to the Via below it. The trust domain, an
//! authenticated user and a dialog the node is really on still route as before.

use std::net::SocketAddr;
use std::time::Duration;

use cpm_sip::{Header, HeaderName, Message, StatusCode};
use cpm_sip_core::transaction::response_to;

use crate::common::Node;
use crate::ua::{self, Tcp, Udp, status};

/// How long the victim listens for anything the node might send it.
const LISTEN: Duration = Duration::from_secs(2);

fn route_to(v: SocketAddr) -> String {
    format!("Route: <sip:{v};lr>\n")
}

#[test]
fn a_stranger_cannot_make_the_node_send_to_a_preloaded_route() {
    let _g = ua::shared();
    let victim = ua::udp_from("127.0.0.9");
    let v = victim.addr();
    let node = Node::start(&[("bob@localhost", "bobpw")], &[]);
    let attacker = Udp::new();
    let a = attacker.addr();
    let cases = [
        ("MESSAGE", "sip:x@victim.test"),
        ("MESSAGE", "sip:bob@localhost"),
        ("INVITE", "sip:x@victim.test"),
        ("INVITE", "sip:bob@localhost"),
    ];
    for (i, (method, ruri)) in cases.iter().enumerate() {
        let text = ua::request(
            method,
            ruri,
            "sip:mallory@evil.test",
            a,
            "UDP",
            &format!("relay-udp-{i}"),
            &route_to(v),
            "hi",
        );
        let r = attacker.request(node.sip, &text);
        assert_eq!(status(&r), 403, "{method} {ruri}: {r:?}");
    }
    // The same over TCP.
    let mut tcp = Tcp::connect(node.sip);
    let text = ua::message(
        "sip:x@victim.test",
        "sip:mallory@evil.test",
        tcp.addr(),
        "TCP",
        "relay-tcp",
        &route_to(v),
        "hi",
    );
    assert_eq!(status(&tcp.request(&text)), 403);
    // A local user's name without its password is challenged, never routed.
    let text = ua::message(
        "sip:x@victim.test",
        "sip:bob@localhost",
        a,
        "UDP",
        "relay-local",
        &route_to(v),
        "hi",
    );
    assert_eq!(status(&attacker.request(node.sip, &text)), 407);
    let (n, bytes) = ua::drain(&victim.sock, LISTEN);
    assert_eq!(
        n, 0,
        "the node sent {n} datagrams ({bytes} bytes) to the Route's host"
    );
    assert!(node.metric("cpm_sip_sender_refused_total").unwrap_or(0) >= 5);
}

#[test]
fn a_peer_core_cannot_route_through_us_to_anywhere() {
    let _g = ua::shared();
    let victim = ua::udp_from("127.0.0.9");
    let v = victim.addr();
    // evil.test is a peer domain: its core's requests pass the sender rule, but the relay
    // rule still holds for the Route they carry.
    let peer = Udp::new();
    let flag = format!("evil.test={}", peer.addr());
    let node = Node::start(&[("bob@localhost", "bobpw")], &["--peer-domain", &flag]);
    for (i, method) in ["MESSAGE", "INVITE"].iter().enumerate() {
        let text = ua::request(
            method,
            "sip:bob@localhost",
            "sip:mallory@evil.test",
            peer.addr(),
            "UDP",
            &format!("relay-peer-{i}"),
            &route_to(v),
            "hi",
        );
        let r = peer.request(node.sip, &text);
        assert_eq!(status(&r), 403, "{method}: {r:?}");
        assert_eq!(r.map(|r| r.reason).as_deref(), Some("Route Not Allowed"));
    }
    let (n, _) = ua::drain(&victim.sock, LISTEN);
    assert_eq!(n, 0, "nothing reaches the Route's host");
    assert_eq!(node.metric("cpm_sip_relay_refused_total"), Some(2));
}

#[test]
fn a_to_tag_or_a_forged_token_is_no_dialog_and_stray_responses_are_not_reflected() {
    let _g = ua::shared();
    let victim = ua::udp_from("127.0.0.9");
    let v = victim.addr();
    let peer = Udp::new();
    let flag = format!("evil.test={}", peer.addr());
    let node = Node::start(&[("bob@localhost", "bobpw")], &["--peer-domain", &flag]);
    let s = node.sip;
    // "In-dialog" requests: a To tag, a Route naming the node (without, then with a forged
    // dialog token) and then the victim.
    for (i, token) in ["", ";cpm-d=0123456789abcdef"].iter().enumerate() {
        let text = format!(
            "BYE sip:x@{v} SIP/2.0\nVia: SIP/2.0/UDP {p};branch=z9hG4bKdlg{i}\nMax-Forwards: 70\n\
             From: <sip:mallory@evil.test>;tag=m\nTo: <sip:bob@localhost>;tag=b\n\
             Call-ID: fake-dialog-{i}\nCSeq: 2 BYE\nRoute: <sip:{s};lr{token}>, <sip:{v};lr>\n\
             Content-Length: 0\n\n",
            p = peer.addr()
        );
        let r = peer.request(s, &text);
        assert!(matches!(status(&r), 403 | 404), "token {token:?}: {r:?}");
    }
    // An ACK (stateless) the same way.
    let ack = format!(
        "ACK sip:x@{v} SIP/2.0\nVia: SIP/2.0/UDP {p};branch=z9hG4bKack1\nMax-Forwards: 70\n\
         From: <sip:mallory@evil.test>;tag=m\nTo: <sip:bob@localhost>;tag=b\nCall-ID: fake-ack\n\
         CSeq: 1 ACK\nRoute: <sip:{s};lr>, <sip:{v};lr>\nContent-Length: 0\n\n",
        p = peer.addr()
    );
    peer.send(s, &ack);
    // A response with a Via of the node on top and the victim below it.
    let stray = format!(
        "SIP/2.0 200 OK\nVia: SIP/2.0/UDP {s};branch=z9hG4bK-cpm-0000000000000000-0a\n\
         Via: SIP/2.0/UDP {v};branch=z9hG4bKvictim\nFrom: <sip:a@evil.test>;tag=1\n\
         To: <sip:b@localhost>;tag=2\nCall-ID: stray\nCSeq: 1 MESSAGE\nContent-Length: 0\n\n"
    );
    peer.send(s, &stray);
    let (n, _) = ua::drain(&victim.sock, LISTEN);
    assert_eq!(n, 0, "nothing reaches the victim");
}

#[test]
fn the_trust_domain_an_authenticated_user_and_a_real_dialog_still_route() {
    let _g = ua::shared();
    let victim = ua::udp_from("127.0.0.9");
    let v = victim.addr();
    let node = Node::start(
        &[("alice@localhost", "alicepw"), ("bob@localhost", "bobpw")],
        &["--trusted-peer", "127.0.0.2"],
    );
    // A trusted peer (an SBC in front) routes where it likes.
    let sbc = ua::udp_from("127.0.0.2");
    let text = ua::message(
        "sip:x@victim.test",
        "sip:someone@elsewhere.test",
        sbc.addr(),
        "UDP",
        "trusted-route",
        &route_to(v),
        "hi",
    );
    sbc.send(node.sip, &text);
    let got = victim.recv_request(Duration::from_secs(3));
    assert!(
        got.is_some(),
        "the trusted peer's request follows its Route"
    );

    // alice, authenticated by her registration, may preload a Route too.
    let alice = Udp::new();
    ua::register_udp(&alice, node.sip, "alice", "alicepw");
    let text = ua::message(
        "sip:x@victim.test",
        "sip:alice@localhost",
        alice.addr(),
        "UDP",
        "alice-route",
        &route_to(v),
        "hi",
    );
    alice.send(node.sip, &text);
    assert!(victim.recv_request(Duration::from_secs(3)).is_some());

    // A call alice -> bob: the BYE along the node's signed Record-Route reaches bob.
    let bob = Udp::new();
    ua::register_udp(&bob, node.sip, "bob", "bobpw");
    let invite = ua::request(
        "INVITE",
        "sip:bob@localhost",
        "sip:alice@localhost",
        alice.addr(),
        "UDP",
        "call-1",
        "",
        "",
    );
    alice.send(node.sip, &invite);
    let inv = bob
        .recv_request(Duration::from_secs(3))
        .expect("bob gets the INVITE");
    let rr: Vec<Header> = inv
        .headers
        .get_all(&HeaderName::RecordRoute)
        .cloned()
        .collect();
    assert!(!rr.is_empty(), "the node Record-Routes the call");
    let mut ok = response_to(&inv, StatusCode::OK, Some("bobtag"));
    ok.reason = "OK".into();
    ok.headers.push(Header::new(
        HeaderName::Contact,
        &format!("<sip:bob@{}>", bob.addr()),
    ));
    for h in &rr {
        ok.headers.push(h.clone());
    }
    bob.sock.send_to(&ok.to_bytes(), node.sip).expect("send");
    let answer = alice
        .final_response(Duration::from_secs(3))
        .expect("alice gets the 200");
    assert_eq!(answer.status, StatusCode::OK);
    let route: Vec<String> = answer
        .headers
        .get_all(&HeaderName::RecordRoute)
        .map(|h| h.value().expect("text").into_owned())
        .collect();
    let bye = format!(
        "BYE sip:bob@{b} SIP/2.0\nVia: SIP/2.0/UDP {a};branch=z9hG4bKbye-call-1\nMax-Forwards: 70\n\
         From: <sip:alice@localhost>;tag=fcall-1\nTo: <sip:bob@localhost>;tag=bobtag\n\
         Call-ID: call-1\nCSeq: 2 BYE\nRoute: {}\nContent-Length: 0\n\n",
        route.join(", "),
        a = alice.addr(),
        b = bob.addr()
    );
    alice.send(node.sip, &bye);
    let got = loop {
        match bob.recv(Duration::from_secs(3)) {
            Some(Message::Request(r)) if r.method.as_str() == "BYE" => break Some(r),
            Some(_) => continue,
            None => break None,
        }
    };
    assert!(got.is_some(), "the BYE of a real dialog reaches bob");
    assert_eq!(node.metric("cpm_sip_relay_refused_total"), Some(0));
}
